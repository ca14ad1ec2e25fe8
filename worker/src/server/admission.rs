//! Bounded admission: at most `limit` documents in progress; the next request is refused at once
//! (429) rather than queued, so a loaded worker sheds load instead of hiding it in latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// What a refused caller is told to wait: documents take seconds, so sooner is a busy loop.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
    inflight: Gauge,
    closed: AtomicBool,
}

/// A place among the documents in progress, held until the response is ready.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
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
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            inflight,
            closed: AtomicBool::new(false),
        }
    }

    pub fn enter(&self) -> Result<Ticket, ApiError> {
        if self.is_closed() {
            return Err(ApiError::ShuttingDown);
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy {
                limit: self.limit,
                retry_after: BUSY_RETRY_AFTER,
            })?;
        self.inflight.inc();
        Ok(Ticket {
            _permit: permit,
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
