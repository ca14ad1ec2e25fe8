//! Liveness tied to reconcile progress: `/healthz` fails while a reconcile has been running
//! for longer than a deadline (an API call or a probe hung past every timeout), so the kubelet
//! restarts a replica that holds the Lease but no longer gets anything done.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The reconciles in flight, and how long one may take.
#[derive(Debug)]
pub struct Liveness {
    deadline: Duration,
    next: AtomicU64,
    in_flight: Mutex<HashMap<u64, Instant>>,
}

/// A reconcile in flight; it is done when this is dropped (also on an error or a panic).
#[must_use = "the reconcile counts as done when this is dropped"]
pub struct Reconciling {
    liveness: Arc<Liveness>,
    id: u64,
}

impl Drop for Reconciling {
    fn drop(&mut self) {
        let mut in_flight = self.liveness.lock();
        in_flight.remove(&self.id);
    }
}

impl Default for Liveness {
    /// Five minutes: longer than every timeout a reconcile waits on, put together.
    fn default() -> Self {
        Liveness::new(Duration::from_secs(300))
    }
}

impl Liveness {
    /// A reconcile may take up to `deadline`.
    pub fn new(deadline: Duration) -> Self {
        Liveness {
            deadline,
            next: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Marks a reconcile as started now.
    pub fn reconciling(self: &Arc<Self>) -> Reconciling {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Instant::now());
        Reconciling {
            liveness: self.clone(),
            id,
        }
    }

    /// How long the oldest reconcile in flight has been running, when that is past the deadline.
    pub fn stalled(&self) -> Option<Duration> {
        let oldest = self.lock().values().min().copied()?;
        Some(oldest.elapsed()).filter(|age| *age > self.deadline)
    }

    /// The deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reconcile_still_running_past_the_deadline_is_a_stall() {
        let liveness = Arc::new(Liveness::new(Duration::ZERO));
        assert_eq!(liveness.stalled(), None, "nothing in flight");
        let running = liveness.reconciling();
        std::thread::sleep(Duration::from_millis(2));
        assert!(liveness.stalled().is_some());
        drop(running);
        assert_eq!(liveness.stalled(), None, "done: no longer counted");

        let patient = Arc::new(Liveness::new(Duration::from_secs(3600)));
        let _running = patient.reconciling();
        assert_eq!(patient.stalled(), None, "within the deadline");
    }
}
