//! What the operator's background work (golden-document rounds, probe traffic) shares: a task
//! that stops when its owner drops it, and a lock that outlives a holder that panicked.

use std::{
    future::Future,
    sync::{Mutex, MutexGuard},
};

use tokio::task::JoinHandle;

/// A spawned task, aborted when dropped: replacing or forgetting its owner stops the work.
pub struct Task(JoinHandle<()>);

impl Task {
    pub fn spawn(work: impl Future<Output = ()> + Send + 'static) -> Task {
        Task(tokio::spawn(work))
    }

    /// Whether the work has ended (done, or given up).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Locks `mutex`, taking over its data if a holder panicked: the data are counters and
/// results, whole at every await point.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
