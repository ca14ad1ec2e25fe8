//! Crash points for the crash-safety tests (the hidden `--crash-after-writes FILE` flag): the
//! process aborts right after a write it has not crashed after before, as a `kill -9` would
//! stop it, so that a test can walk a rollout with a crash after every distinct write of a
//! reconcile. The file lists the writes already crashed after, one per line, and outlives the
//! process; each restart gets one write further. Disabled, it costs one branch per write.

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// Where to crash, if anywhere; clones share what was crashed after.
#[derive(Clone, Debug, Default)]
pub struct CrashPoints {
    armed: Option<Arc<Armed>>,
}

#[derive(Debug)]
struct Armed {
    file: PathBuf,
    crashed: Mutex<HashSet<String>>,
}

impl CrashPoints {
    /// Never crashes.
    pub fn disabled() -> Self {
        CrashPoints::default()
    }

    /// Crashes once after each write not yet listed in `file` (created when missing).
    pub fn from_file(file: &Path) -> std::io::Result<Self> {
        let crashed = match std::fs::read_to_string(file) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(error) => return Err(error),
        };
        Ok(CrashPoints {
            armed: Some(Arc::new(Armed {
                file: file.to_owned(),
                crashed: Mutex::new(crashed),
            })),
        })
    }

    /// Called right after `write` (a one-line description naming the write and its content)
    /// succeeded: aborts the process unless it crashed after the same write before.
    pub fn after(&self, write: impl FnOnce() -> String) {
        let Some(armed) = &self.armed else {
            return;
        };
        let write = write().replace('\n', " ");
        let mut crashed = armed.crashed.lock().unwrap_or_else(|e| e.into_inner());
        if crashed.contains(&write) {
            return;
        }
        crashed.insert(write.clone());
        // Written and flushed to disk before dying, or the next process would crash here again.
        let noted = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&armed.file)
            .and_then(|mut file| {
                writeln!(file, "{write}")?;
                file.sync_all()
            });
        match noted {
            Ok(()) => {
                tracing::warn!(%write, "crash point: aborting after this write");
                std::process::abort();
            }
            // Crashing without a note would crash here forever: carry on instead.
            Err(error) => tracing::error!(%error, %write, "crash point not noted; not crashing"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_switch_never_asks_what_was_written() {
        CrashPoints::disabled().after(|| unreachable!("not evaluated when disabled"));
    }

    #[test]
    fn writes_listed_in_the_file_do_not_crash_again() {
        let dir = std::env::temp_dir().join(format!("crashpoints-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("crashed");
        std::fs::write(&file, "status step=1\nroute 10\n").unwrap();
        let points = CrashPoints::from_file(&file).unwrap();
        // Both were crashed after by an earlier process: this one goes on.
        points.after(|| "status step=1".into());
        points.after(|| "route 10".into());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
