//! What every reconcile shares: the client, the event recorder, metrics, settings, the clock and
//! the per-object error backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};

use crate::{drive::RolloutIo, labels, metrics::Metrics, reconcile::Settings};

/// First retry delay after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay after repeated failures.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state of the controller, built once.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events about MineruDeployments.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Operator-wide settings for the object builders.
    pub settings: Settings,
    /// How the rollout driver reaches vLLM, workers, Prometheus and webhooks.
    pub rollout_io: RolloutIo,
    /// The current time, whole seconds (what a status timestamp stores), passed in so tests
    /// are deterministic.
    pub clock: fn() -> Time,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    /// A context whose Events name `instance` (the pod name) as reporter.
    pub fn new(
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        settings: Settings,
        rollout_io: RolloutIo,
        clock: fn() -> Time,
    ) -> Self {
        let reporter = Reporter {
            controller: labels::MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            rollout_io,
            clock,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failure of the object and returns how long to wait before retrying it.
    pub fn failed(&self, namespace: &str, name: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        *count += 1;
        backoff(*count)
    }

    /// Resets the object's backoff after a success.
    pub fn succeeded(&self, namespace: &str, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// The wall clock, truncated to whole seconds.
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Delay before retry number `failures` (1-based): doubling from 5 s, capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
