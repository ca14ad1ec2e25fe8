//! Circuit breaker toward the vLLM tier. After `failures` consecutive failed calls it opens: new
//! documents are refused at once (503 + Retry-After) and documents in progress send no call
//! while it stays open (a call waits the hold out within its retry budget, then fails with a
//! retryable 503, instead of spending its retries on a dead server). Readiness is not touched:
//! a blip upstream must not take every worker out of the Service at once. After the cool-down
//! one document is let through as a probe (half-open); a successful call closes the breaker, a
//! failed one opens it again.
//!
//! Time is passed in, so the state machine is tested without sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::metrics::BreakerGauge;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    failures: u32,
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

/// What one call's result did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened,
    Closed,
}

/// Leave to run one document. A probe gives its turn back when dropped, so a probe that never
/// reached the server (a bad PDF) does not leave the breaker half-open with no one probing.
#[derive(Debug)]
pub struct Pass {
    breaker: Arc<Breaker>,
    probe: bool,
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe {
            let mut inner = self.breaker.lock();
            if inner.phase == (Phase::HalfOpen { probing: true }) {
                inner.phase = Phase::HalfOpen { probing: false };
            }
        }
    }
}

impl Breaker {
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cool_down,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain state: a panicking holder cannot leave it half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state at `now`, moving from open to half-open once the cool-down has passed.
    pub fn state(&self, now: Instant) -> BreakerGauge {
        let mut inner = self.lock();
        Self::advance(&mut inner, now);
        match inner.phase {
            Phase::Closed => BreakerGauge::Closed,
            Phase::HalfOpen { .. } => BreakerGauge::HalfOpen,
            Phase::Open { .. } => BreakerGauge::Open,
        }
    }

    fn advance(inner: &mut Inner, now: Instant) {
        if let Phase::Open { until } = inner.phase
            && now >= until
        {
            inner.phase = Phase::HalfOpen { probing: false };
        }
    }

    /// Lets a document run, or says how long to wait: the rest of the cool-down, or a second
    /// while another document probes.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<Pass, Duration> {
        let mut inner = self.lock();
        Self::advance(&mut inner, now);
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } => return Err(until - now),
            Phase::HalfOpen { probing: true } => return Err(Duration::from_secs(1)),
            Phase::HalfOpen { probing: false } => {
                inner.phase = Phase::HalfOpen { probing: true };
                true
            }
        };
        Ok(Pass {
            breaker: self.clone(),
            probe,
        })
    }

    /// How long until the breaker lets a probe through (zero when it is not open).
    pub fn retry_after(&self, now: Instant) -> Duration {
        let mut inner = self.lock();
        Self::advance(&mut inner, now);
        match inner.phase {
            Phase::Open { until } => until - now,
            _ => Duration::ZERO,
        }
    }

    /// Records one call to the server: `ok` when it answered (even with a refusal), not when it
    /// was unreachable, failed or overloaded.
    pub fn record(&self, ok: bool, now: Instant) -> Transition {
        let mut inner = self.lock();
        Self::advance(&mut inner, now);
        if ok {
            inner.failures = 0;
            if inner.phase == Phase::Closed {
                return Transition::None;
            }
            inner.phase = Phase::Closed;
            return Transition::Closed;
        }
        inner.failures = inner.failures.saturating_add(1);
        let opens = match inner.phase {
            Phase::Closed => inner.failures >= self.failures,
            Phase::HalfOpen { .. } => true,
            Phase::Open { .. } => false,
        };
        if opens {
            inner.phase = Phase::Open {
                until: now + self.cool_down,
            };
            Transition::Opened
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(10);

    fn breaker() -> Arc<Breaker> {
        Arc::new(Breaker::new(3, COOL_DOWN))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        let t = Instant::now();
        assert_eq!(b.record(false, t), Transition::None);
        assert_eq!(b.record(false, t), Transition::None);
        assert_eq!(b.record(true, t), Transition::None);
        assert_eq!(b.record(false, t), Transition::None);
        assert_eq!(b.record(false, t), Transition::None);
        assert_eq!(b.state(t), BreakerGauge::Closed);
        assert_eq!(b.record(false, t), Transition::Opened);
        assert_eq!(b.state(t), BreakerGauge::Open);
        assert_eq!(b.record(false, t), Transition::None, "already open");
    }

    #[test]
    fn refuses_with_the_rest_of_the_cool_down_while_open() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(false, t);
        }
        let wait = b.admit(t + Duration::from_secs(4)).expect_err("open");
        assert_eq!(wait, Duration::from_secs(6));
        assert_eq!(b.retry_after(t + Duration::from_secs(4)), wait);
    }

    #[test]
    fn half_opens_after_the_cool_down_and_lets_one_probe_through() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(false, t);
        }
        let later = t + COOL_DOWN;
        assert_eq!(b.state(later), BreakerGauge::HalfOpen);
        let probe = b.admit(later).expect("the probe");
        assert!(b.admit(later).is_err(), "one probe at a time");
        assert_eq!(b.record(true, later), Transition::Closed);
        drop(probe);
        assert_eq!(b.state(later), BreakerGauge::Closed);
        assert!(b.admit(later).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(false, t);
        }
        let later = t + COOL_DOWN;
        let _probe = b.admit(later).expect("the probe");
        assert_eq!(b.record(false, later), Transition::Opened);
        assert_eq!(b.admit(later).expect_err("open"), COOL_DOWN);
    }

    #[test]
    fn a_probe_that_never_called_the_server_gives_its_turn_back() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.record(false, t);
        }
        let later = t + COOL_DOWN;
        drop(b.admit(later).expect("the probe"));
        assert!(b.admit(later).is_ok(), "the next document probes");
    }
}
