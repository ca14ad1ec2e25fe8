//! Writes the generated artefacts of the API types:
//! `crdgen [manifest|reference] [PATH]` — the CRD manifest (default) or the Markdown field
//! reference, to PATH or stdout.

use std::{env, fs, process::ExitCode};

fn main() -> ExitCode {
    let mut args = env::args().skip(1).peekable();
    let text = match args.peek().map(String::as_str) {
        Some("reference") => {
            args.next();
            mineru_crds::crd_reference()
        }
        Some("manifest") => {
            args.next();
            mineru_crds::crd_yaml()
        }
        _ => mineru_crds::crd_yaml(),
    };
    match args.next() {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match fs::write(&path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: cannot write {path}: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
