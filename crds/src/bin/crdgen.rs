//! Writes the MineruDeployment CRD manifest to stdout, or to the path given as the only argument.

use std::{env, fs, process::ExitCode};

fn main() -> ExitCode {
    let yaml = mineru_crds::crd_yaml();
    match env::args().nth(1) {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some(path) => match fs::write(&path, yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: cannot write {path}: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
