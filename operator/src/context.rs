//! What every reconcile shares: the client, the event recorder, metrics, settings, the clock and
//! the per-object error backoff.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::Client;

use crate::{
    crashpoints::CrashPoints,
    drive::RolloutIo,
    error::{Error, Result},
    leader::Leadership,
    liveness::Liveness,
    metrics::Metrics,
    reconcile::Settings,
    recorder::Recorder,
};

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
    /// Versions of each object this operator has written past.
    pub outdated: OutdatedVersions,
    /// Whether this replica may write (leader election).
    pub leadership: Arc<Leadership>,
    /// The reconciles in flight, for `/healthz`.
    pub liveness: Arc<Liveness>,
    /// Where the crash-safety tests stop the process; disabled otherwise.
    pub crash_points: CrashPoints,
    /// Since when each API key version is known (rotation).
    pub key_versions: crate::rotation::FirstSeen,
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
        Context {
            recorder: Recorder::new(client.clone(), instance),
            client,
            metrics,
            settings,
            rollout_io,
            clock,
            outdated: OutdatedVersions::default(),
            leadership: Arc::new(Leadership::unconditional()),
            liveness: Arc::default(),
            crash_points: CrashPoints::disabled(),
            key_versions: Default::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// This context, writing only while `leadership` holds.
    pub fn with_leadership(mut self, leadership: Arc<Leadership>) -> Self {
        self.leadership = leadership;
        self
    }

    /// This context, reporting its reconciles to `liveness`.
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// This context, crashing after writes as `crash_points` says.
    pub fn with_crash_points(mut self, crash_points: CrashPoints) -> Self {
        self.crash_points = crash_points;
        self
    }

    /// Fails with [`Error::NotLeading`] unless this replica may write now.
    pub fn ensure_leading(&self) -> Result<()> {
        if self.leadership.holds() {
            Ok(())
        } else {
            Err(Error::NotLeading)
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

/// How many superseded versions are remembered per object; the watch delivers a write within a
/// few versions, so an older one is never seen again.
const OUTDATED_KEPT: usize = 8;

/// The resourceVersions of each object that this operator's own writes have superseded. The
/// watch cache can still hand one of them to a reconcile that starts right after a write: a
/// decision from it would act on a status older than the one recorded. resourceVersions are
/// opaque (no ordering may be assumed), so versions are remembered rather than compared.
#[derive(Default)]
pub struct OutdatedVersions {
    versions: Mutex<HashMap<(String, String), VecDeque<String>>>,
}

impl OutdatedVersions {
    /// Remembers that `version` of the object was written past.
    pub fn superseded(&self, namespace: &str, name: &str, version: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let kept = versions
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        if !kept.iter().any(|v| v == version) {
            kept.push_back(version.to_owned());
        }
        while kept.len() > OUTDATED_KEPT {
            kept.pop_front();
        }
    }

    /// True when `version` of the object is known to have been written past.
    pub fn contains(&self, namespace: &str, name: &str, version: &str) -> bool {
        let versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions
            .get(&(namespace.to_owned(), name.to_owned()))
            .is_some_and(|kept| kept.iter().any(|v| v == version))
    }

    /// Drops what is known of a deleted object.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions.remove(&(namespace.to_owned(), name.to_owned()));
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
    fn outdated_versions_are_kept_per_object_and_the_oldest_forgotten_first() {
        let outdated = OutdatedVersions::default();
        for version in 1..=OUTDATED_KEPT + 1 {
            outdated.superseded("parsing", "docs", &version.to_string());
        }
        assert!(
            !outdated.contains("parsing", "docs", "1"),
            "the oldest is dropped"
        );
        assert!(outdated.contains("parsing", "docs", "2"));
        assert!(!outdated.contains("parsing", "other", "2"), "per object");
        outdated.forget("parsing", "docs");
        assert!(!outdated.contains("parsing", "docs", "2"));
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
