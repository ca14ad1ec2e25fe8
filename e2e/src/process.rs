//! Child processes that log to a file and die with the test: on drop, on panic, and when the test
//! process itself is killed (PR_SET_PDEATHSIG).

use std::{
    collections::BTreeSet,
    fs::File,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// A running component with its output captured in `<logs>/<name>.log`.
pub struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command`, sending stdout and stderr to `<logs>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, logs: &Path) -> Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Supervised {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process id (of the group's leader).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails with the tail of the log when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// Sends SIGKILL to the process group, as a crash would.
    pub fn kill(&mut self) {
        signal_group(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Freezes the process group (SIGSTOP), as a stalled node or a debugger would.
    pub fn freeze(&self) {
        signal_group(&self.child, libc::SIGSTOP);
    }

    /// Lets a frozen process group run again (SIGCONT).
    pub fn thaw(&self) {
        signal_group(&self.child, libc::SIGCONT);
    }

    /// Waits up to `budget` for the process to exit; true if it did.
    pub fn exits_within(&mut self, budget: Duration) -> bool {
        let deadline = std::time::Instant::now() + budget;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        self.stop_with(libc::SIGTERM, grace);
    }

    /// Sends `signal` (a component's own way to stop, e.g. SIGINT for PostgreSQL's fast
    /// shutdown) and waits up to `grace` before SIGKILL.
    pub fn stop_with(&mut self, signal: i32, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal_group(&self.child, signal);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn signal_group(child: &Child, signal: i32) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: signalling our own child's process group.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    tail_text(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

/// The last `lines` lines of `text`.
pub fn tail_text(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port free now, for a component to bind. Taken from below the kernel's ephemeral
/// range (32768 and up on Linux), so that no outgoing connection (kubectl's, a client's) can take
/// it before the component binds it, and never handed out twice by this process.
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const RANGE: std::ops::Range<u32> = 20_000..32_000;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Start somewhere different in each process, so concurrent test binaries rarely meet.
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let span = RANGE.end - RANGE.start;
    for step in 0..span {
        let port = (RANGE.start + (seed.wrapping_add(step.wrapping_mul(7_919)) % span)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port between {} and {}", RANGE.start, RANGE.end)
}

/// Runs `command` to completion; its stdout, or its stderr as the error.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
