//! Bounded admission: at most `limit` documents in progress; the next request is refused at once
//! (429) rather than queued, so a loaded worker sheds load instead of hiding it in latency.
//!
//! Probe documents (the operator's evidence traffic) never crowd out clients: they hold at most
//! a quarter of the slots, and never the last free one (a worker with a single slot lends it).
//! The operator's documents turned away are `deferred`, never `rejected`: that outcome would
//! count against the revision.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::metrics::Source;

/// What a refused caller is told to wait: documents take seconds, so sooner is a busy loop.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    probe_permits: Arc<Semaphore>,
    limit: usize,
    probe_limit: usize,
    inflight: Gauge,
    closed: AtomicBool,
}

/// A place among the documents in progress, held until the response is ready.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    _probe_permit: Option<OwnedSemaphorePermit>,
    inflight: Gauge,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.inflight.dec();
    }
}

impl Admission {
    pub fn new(limit: usize, inflight: Gauge) -> Self {
        let limit = limit.max(1);
        let probe_limit = (limit / 4).max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            probe_permits: Arc::new(Semaphore::new(probe_limit)),
            limit,
            probe_limit,
            inflight,
            closed: AtomicBool::new(false),
        }
    }

    pub fn enter(&self, source: Source) -> Result<Ticket, ApiError> {
        if self.is_closed() {
            return Err(ApiError::ShuttingDown);
        }
        let busy = || ApiError::Busy {
            limit: self.limit,
            retry_after: BUSY_RETRY_AFTER,
        };
        let deferred = || ApiError::ProbeDeferred {
            probe_limit: self.probe_limit,
            retry_after: BUSY_RETRY_AFTER,
        };
        // The operator's documents (probes, golden documents) turned away say nothing of the
        // revision: they are deferred, not rejected.
        let operator_sent = source != Source::Traffic;
        let refused = || if operator_sent { deferred() } else { busy() };
        let probe_permit = match source {
            Source::Traffic | Source::Golden => None,
            Source::Probe => Some(
                self.probe_permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| deferred())?,
            ),
        };
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| refused())?;
        // Checked after taking the slot, so two probes racing cannot both take the last ones:
        // a probe that took the last free slot gives it back.
        if source == Source::Probe && self.limit > 1 && self.permits.available_permits() == 0 {
            return Err(deferred());
        }
        self.inflight.inc();
        Ok(Ticket {
            _permit: permit,
            _probe_permit: probe_permit,
            inflight: self.inflight.clone(),
        })
    }

    /// Refuses new documents from now on (shutdown); those in progress finish.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_hold_a_quarter_of_the_slots_and_never_the_last_free_one() {
        let admission = Admission::new(8, Gauge::default());
        let probes: Vec<_> = (0..2)
            .map(|_| admission.enter(Source::Probe).unwrap())
            .collect();
        assert!(
            admission.enter(Source::Probe).is_err(),
            "a quarter of 8 is 2"
        );
        let clients: Vec<_> = (0..6)
            .map(|_| admission.enter(Source::Traffic).unwrap())
            .collect();
        drop(probes);
        let probe = admission.enter(Source::Probe).unwrap();
        assert!(
            admission.enter(Source::Probe).is_err(),
            "the last free slot stays for a client"
        );
        let last = admission.enter(Source::Traffic).unwrap();
        assert!(admission.enter(Source::Traffic).is_err());
        drop((clients, probe, last));
        assert!(admission.enter(Source::Probe).is_ok());
    }
}
