//! Fault injection: latency, 503s, dropped connections. Changeable at run time through the admin
//! endpoint, so a test can break the server mid-run and heal it again.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fixed delay before every chat answer.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// Share (0..=1) of chat requests answered 503.
    pub error_rate: f64,
    /// Share (0..=1) of chat requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// The next N chat requests are answered 503 (before `error_rate` applies).
    pub fail_next: u64,
    /// The next N chat requests are dropped (before `drop_rate` applies).
    pub drop_next: u64,
    /// `Retry-After` (seconds) sent with injected 503s, as an overloaded proxy would.
    pub retry_after_secs: Option<u64>,
}

/// What happens to one chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Nothing,
    ServiceUnavailable,
    DropConnection,
}

impl Faults {
    /// Decides the fault for one request, consuming the `*_next` budgets first.
    pub fn draw(&mut self, rng: &mut impl Rng) -> Injected {
        if self.drop_next > 0 {
            self.drop_next -= 1;
            return Injected::DropConnection;
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Injected::ServiceUnavailable;
        }
        if self.drop_rate > 0.0 && rng.random::<f64>() < self.drop_rate {
            return Injected::DropConnection;
        }
        if self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate {
            return Injected::ServiceUnavailable;
        }
        Injected::Nothing
    }

    pub fn latency(&self, rng: &mut impl Rng) -> Duration {
        let jitter = if self.latency_jitter_ms > 0 {
            rng.random_range(0..=self.latency_jitter_ms)
        } else {
            0
        };
        Duration::from_millis(self.latency_ms.saturating_add(jitter))
    }
}
