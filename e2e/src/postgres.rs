//! A real PostgreSQL (Debian's) on loopback, for the workers' shared `/v1` job store: a fresh
//! cluster in a temporary directory, run as the `postgres` user (PostgreSQL refuses root), with
//! durability off, since a test database needs none.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::process::{Supervised, free_port};
use crate::wait_until;

/// The database the tests use.
const DATABASE: &str = "mineru";

pub struct Postgres {
    port: u16,
    dir: tempfile::TempDir,
    process: Option<Supervised>,
}

/// Debian's server binaries (`/usr/lib/postgresql/<major>/bin`), the newest installed.
fn bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed: run e2e/scripts/install-deps.sh")?
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .context("no /usr/lib/postgresql/*/bin/initdb: run e2e/scripts/install-deps.sh")
}

/// uid and gid of the `postgres` user.
fn postgres_user() -> Result<(u32, u32)> {
    let name = std::ffi::CString::new("postgres")?;
    // SAFETY: getpwnam returns a pointer into static storage, read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("there is no postgres user: run e2e/scripts/install-deps.sh");
    }
    // SAFETY: non-null, just returned by getpwnam.
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

fn as_postgres(program: &Path) -> Result<Command> {
    let (uid, gid) = postgres_user()?;
    let mut command = Command::new(program);
    command.uid(uid).gid(gid);
    Ok(command)
}

impl Postgres {
    /// initdb, start, and create the test database.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("mineru-pg-").tempdir()?;
        let (uid, gid) = postgres_user()?;
        // The postgres user must reach its data directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
        let init = as_postgres(&bin.join("initdb"))?
            .args([
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ])
            .env("LC_ALL", "C.UTF-8")
            .output()
            .context("running initdb")?;
        if !init.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        }
        let mut postgres = Self {
            port: free_port()?,
            dir,
            process: None,
        };
        postgres.run()?;
        let create = Command::new(bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &postgres.port.to_string(),
                "-U",
                "postgres",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {DATABASE}"))
            .output()
            .context("running psql")?;
        if !create.status.success() {
            bail!(
                "creating the database failed: {}",
                String::from_utf8_lossy(&create.stderr)
            );
        }
        Ok(postgres)
    }

    fn run(&mut self) -> Result<()> {
        let bin = bin_dir()?;
        let data = self.dir.path().join("data");
        let mut command = as_postgres(&bin.join("postgres"))?;
        command
            .args([
                "-D",
                &data.display().to_string(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-k", &data.display().to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        let mut process = Supervised::spawn("postgres", command, self.dir.path())?;
        let port = self.port.to_string();
        let ready = bin.join("pg_isready");
        // A server that exited fails at once, with its log, rather than at the deadline.
        let started = wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(30),
            || {
                if let Err(exited) = process.ensure_running() {
                    return Ok(Some(Err(exited)));
                }
                let status = Command::new(&ready)
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-q"])
                    .status()?;
                Ok(status.success().then_some(Ok(())))
            },
        )
        .and_then(|started| started)
        .with_context(|| process.log());
        self.process = Some(process);
        started
    }

    /// `postgres://postgres@127.0.0.1:PORT/mineru`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The loopback port it listens on (kept across [`Postgres::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` with `psql` as the `postgres` user in the test database; its output, unaligned
    /// and without headers (`-At`).
    pub fn psql(&self, sql: &str) -> Result<String> {
        let output = Command::new(bin_dir()?.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                DATABASE,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
            ])
            .arg(sql)
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim_end().to_owned())
    }

    /// Stops the server (fast shutdown: open connections are cut), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop_with(libc::SIGINT, Duration::from_secs(10));
        }
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.run()
    }

    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(Supervised::log)
            .unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
