//! MinerU 4 itself, from PyPI: `mineru-api` in its model-free `flash` tier (its other tiers fetch
//! models from a hub this machine cannot reach) as the reference server of the `/v1` contract,
//! and the virtualenv's Python for MinerU's own client. `e2e/scripts/install-deps.sh mineru4`
//! builds the virtualenv (cached by version).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::process::{Supervised, free_port};
use crate::{repo_path, wait_until};

/// The MinerU 4 virtualenv, installed when missing.
pub fn venv() -> Result<PathBuf> {
    install_venv("mineru4")
}

/// The virtualenv `install-deps.sh <which>` installs (`mineru4`, `mineru3`), cached by version.
pub fn install_venv(which: &str) -> Result<PathBuf> {
    let output = Command::new("bash")
        .arg(repo_path("e2e/scripts/install-deps.sh"))
        .arg(which)
        .output()
        .with_context(|| format!("running install-deps.sh {which}"))?;
    if !output.status.success() {
        bail!(
            "install-deps.sh {which} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// MinerU 4's Python, with `mineru` importable.
pub fn python() -> Result<PathBuf> {
    Ok(venv()?.join("bin/python"))
}

pub struct MineruApi {
    port: u16,
    process: Supervised,
    _uploads: tempfile::TempDir,
}

impl MineruApi {
    /// `mineru-api --tier flash` on a free loopback port, ready when `/v1/health` answers.
    pub fn start_flash() -> Result<Self> {
        Self::start_flash_with(&[])
    }

    /// As [`MineruApi::start_flash`], with more of `mineru-api`'s options, e.g.
    /// `["--concurrency", "2"]` or `["--retention-seconds", "60"]`.
    pub fn start_flash_with(options: &[&str]) -> Result<Self> {
        let venv = venv()?;
        let uploads = tempfile::Builder::new().prefix("mineru-api-").tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(venv.join("bin/mineru-api"));
        command
            .args(["--tier", "flash", "--host", "127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!(
                "--upload-dir={}",
                uploads.path().join("store").display()
            ))
            .args(options)
            .env("HF_HUB_OFFLINE", "1")
            .env("MINERU_API_ENABLE_FASTAPI_DOCS", "0");
        let process = Supervised::spawn("mineru-api", command, uploads.path())?;
        let mut api = Self {
            port,
            process,
            _uploads: uploads,
        };
        let health = format!("{}/v1/health", api.url());
        let client = reqwest::blocking::Client::new();
        // A server that exited fails at once, with its log, rather than at the deadline.
        wait_until("mineru-api to serve", Duration::from_secs(120), || {
            if let Err(exited) = api.process.ensure_running() {
                return Ok(Some(Err(exited)));
            }
            Ok(client
                .get(&health)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| Ok(())))
        })??;
        Ok(api)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
