//! Runs MinerU 3.4.5's own `vlm-http-client` pipeline and `mineru-worker parse --backend vlm`
//! against one vLLM simulator per golden scenario on the golden PDFs, and prints, document by
//! document, how their content lists and Markdown agree block for block.
//!
//! `compare-mineru` compares with the committed MinerU outputs and rewrites the report
//! (e2e/golden/mineru-3.4.5/report.txt, which e2e/tests/mineru_reference.rs holds the worker
//! to); `compare-mineru --regenerate` runs MinerU first (installing it, about 850 MB) and rewrites
//! its golden outputs too.

use std::process::ExitCode;

use anyhow::{Result, bail};
use mineru_e2e::mineru_reference::{golden_dir, mineru_venv, run_comparison};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("compare-mineru: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let regenerate = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--regenerate") => true,
        Some(other) => bail!("unknown argument {other:?} (expected nothing or --regenerate)"),
    };
    let venv = regenerate.then(mineru_venv).transpose()?;
    let report = run_comparison(venv.as_deref())?;
    print!("{report}");
    std::fs::write(golden_dir().join("report.txt"), &report)?;
    Ok(())
}
