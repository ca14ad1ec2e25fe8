//! The operator's Prometheus metrics, all prefixed `mineru_operator_`.

use std::{
    sync::atomic::AtomicU64,
    time::{Duration, SystemTime},
};

use mineru_crds::{Phase, RollbackReason};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Label of a failure: the error kind from `Error::metric_label`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The error kind.
    pub error: String,
}

/// Labels of a rollback: the object and its countable reason (TriggerFired, CriterionFailed, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    /// Namespace of the MineruDeployment.
    pub namespace: String,
    /// Name of the MineruDeployment.
    pub name: String,
    /// The reason.
    pub reason: String,
}

/// Labels of the phase gauge: one series per object and phase, 1 for the current phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Namespace of the MineruDeployment.
    pub namespace: String,
    /// Name of the MineruDeployment.
    pub name: String,
    /// Healthy, Progressing, Paused or Degraded.
    pub phase: String,
}

/// Labels of a per-object series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// Namespace of the MineruDeployment.
    pub namespace: String,
    /// Name of the MineruDeployment.
    pub name: String,
}

/// Labels of a held rollout: the object and why it holds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabels {
    /// Namespace of the MineruDeployment.
    pub namespace: String,
    /// Name of the MineruDeployment.
    pub name: String,
    /// `EvidenceOverdue` or `PreflightFailed`.
    pub reason: String,
}

/// Labels of a probe document: the object, the side it went to, how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `namespace/name` of the MineruDeployment.
    pub object: String,
    /// `canary` or `baseline`.
    pub side: String,
    /// `answered`, `refused` or `skipped`.
    pub result: String,
}

const PHASES: [Phase; 4] = [
    Phase::Healthy,
    Phase::Progressing,
    Phase::Paused,
    Phase::Degraded,
];

/// What an object's series show after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectState {
    pub phase: Phase,
    /// The canary's traffic: the step's nominal weight and the share it really gets, in percent.
    pub weight: i32,
    pub share: i32,
    /// Analysis rounds in a row whose gate queries failed.
    pub gate_errors: i32,
    /// Why the rollout cannot move on by itself, if it cannot.
    pub holding: Option<Hold>,
}

/// Why a rollout holds where it is until something changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The step passed its `maxDuration` without the evidence to decide (`onInconclusive: Hold`).
    EvidenceOverdue,
    /// Something the canary needs before its first traffic is missing.
    PreflightFailed,
}

const HOLDS: [Hold; 2] = [Hold::EvidenceOverdue, Hold::PreflightFailed];

/// Reconcile counters, durations, and each object's phase and canary traffic.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<FailureLabels, Counter>,
    duration: Histogram,
    last_reconcile: Gauge<f64, AtomicU64>,
    phase: Family<PhaseLabels, Gauge>,
    canary_weight: Family<ObjectLabels, Gauge>,
    canary_share: Family<ObjectLabels, Gauge>,
    gate_errors: Family<ObjectLabels, Gauge>,
    holding: Family<HoldLabels, Gauge>,
    rollbacks: Family<RollbackLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mineru_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        // 5 ms to ~20 s: a reconcile is a handful of API calls.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let last_reconcile = Gauge::<f64, AtomicU64>::default();
        let phase = Family::<PhaseLabels, Gauge>::default();
        let canary_weight = Family::<ObjectLabels, Gauge>::default();
        let canary_share = Family::<ObjectLabels, Gauge>::default();
        let gate_errors = Family::<ObjectLabels, Gauge>::default();
        let holding = Family::<HoldLabels, Gauge>::default();
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        let probes = Family::<ProbeLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            duration.clone(),
        );
        registry.register(
            "last_reconcile_timestamp_seconds",
            "When this replica last finished a reconcile (a standby never does): a stale value on the leader means the control loop stopped",
            last_reconcile.clone(),
        );
        registry.register(
            "phase",
            "Phase of each MineruDeployment (1 for the current phase)",
            phase.clone(),
        );
        registry.register(
            "canary_weight",
            "Percentage of traffic the current step gives each MineruDeployment's canary (0 without a rollout)",
            canary_weight.clone(),
        );
        registry.register(
            "canary_share",
            "Percentage of traffic each MineruDeployment's canary really receives: its share of ready workers with replica routing, the weight with Gateway API routing",
            canary_share.clone(),
        );
        registry.register(
            "analysis_consecutive_errors",
            "Analysis rounds in a row whose gate queries failed, per MineruDeployment (0 when the gates read fine)",
            gate_errors.clone(),
        );
        registry.register(
            "rollout_holding",
            "1 while a MineruDeployment's rollout holds and cannot move on by itself, by reason (no series otherwise)",
            holding.clone(),
        );
        registry.register(
            "rollbacks",
            "Rollbacks, by object and reason",
            rollbacks.clone(),
        );
        registry.register(
            "probe_documents",
            "Probe documents (golden documents sent as evidence traffic), by object, side and result",
            probes.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            last_reconcile,
            phase,
            canary_weight,
            canary_share,
            gate_errors,
            holding,
            rollbacks,
            probes,
        }
    }
}

impl Metrics {
    /// Counts a rollback of an object under its reason.
    pub fn rolled_back(&self, namespace: &str, name: &str, reason: RollbackReason) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                reason: format!("{reason:?}"),
            })
            .inc();
    }

    /// Counts a probe document sent to (or skipped for) one side of `object`'s rollout.
    pub fn probe(&self, object: &str, side: &str, result: &str) {
        self.probes
            .get_or_create(&ProbeLabels {
                object: object.to_owned(),
                side: side.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a finished reconcile and its duration.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reconcile.set(now.as_secs_f64());
    }

    /// Counts a failed reconcile by error kind.
    pub fn failed(&self, error_label: String) {
        self.failures
            .get_or_create(&FailureLabels { error: error_label })
            .inc();
    }

    /// Sets the object's series: phase (1 for the current one, 0 for the others), canary
    /// traffic, gate errors, and the hold (a series for its reason only while it holds).
    pub fn set_state(&self, namespace: &str, name: &str, state: ObjectState) {
        for candidate in PHASES {
            let value = i64::from(candidate == state.phase);
            self.phase
                .get_or_create(&phase_labels(namespace, name, candidate))
                .set(value);
        }
        let labels = object_labels(namespace, name);
        self.canary_weight
            .get_or_create(&labels)
            .set(i64::from(state.weight));
        self.canary_share
            .get_or_create(&labels)
            .set(i64::from(state.share));
        self.gate_errors
            .get_or_create(&labels)
            .set(i64::from(state.gate_errors));
        for hold in HOLDS {
            let labels = hold_labels(namespace, name, hold);
            if state.holding == Some(hold) {
                self.holding.get_or_create(&labels).set(1);
            } else {
                self.holding.remove(&labels);
            }
        }
    }

    /// Drops the series of an object that no longer exists.
    pub fn forget(&self, namespace: &str, name: &str) {
        for candidate in PHASES {
            self.phase.remove(&phase_labels(namespace, name, candidate));
        }
        self.canary_weight.remove(&object_labels(namespace, name));
        self.canary_share.remove(&object_labels(namespace, name));
        self.gate_errors.remove(&object_labels(namespace, name));
        for hold in HOLDS {
            self.holding.remove(&hold_labels(namespace, name, hold));
        }
    }

    /// The text exposition format served at `/metrics`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

fn object_labels(namespace: &str, name: &str) -> ObjectLabels {
    ObjectLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn hold_labels(namespace: &str, name: &str, hold: Hold) -> HoldLabels {
    HoldLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason: format!("{hold:?}"),
    }
}

fn phase_labels(namespace: &str, name: &str, phase: Phase) -> PhaseLabels {
    PhaseLabels {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        phase: format!("{phase:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_failures_are_exposed_with_the_prefix() {
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(20));
        metrics.failed("apply_409".into());
        let text = metrics.render();
        assert!(
            text.contains("mineru_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"mineru_operator_reconcile_failures_total{error="apply_409"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("mineru_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn phase_gauge_marks_only_the_current_phase() {
        let metrics = Metrics::default();
        metrics.set_state("parsing", "docs", state(Phase::Progressing, 50, 50));
        metrics.set_state("parsing", "docs", state(Phase::Healthy, 0, 0));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"mineru_operator_phase{namespace="parsing",name="docs",phase="Healthy"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mineru_operator_phase{namespace="parsing",name="docs",phase="Progressing"} 0"#
            ),
            "{text}"
        );
    }

    #[test]
    fn rollbacks_are_counted_per_object_and_reason() {
        let metrics = Metrics::default();
        metrics.rolled_back("parsing", "docs", RollbackReason::TriggerFired);
        metrics.rolled_back("parsing", "docs", RollbackReason::TriggerFired);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"mineru_operator_rollbacks_total{namespace="parsing",name="docs",reason="TriggerFired"} 2"#
            ),
            "{text}"
        );
    }

    fn state(phase: Phase, weight: i32, share: i32) -> ObjectState {
        ObjectState {
            phase,
            weight,
            share,
            gate_errors: 0,
            holding: None,
        }
    }

    #[test]
    fn canary_weight_and_real_share_follow_the_rollout() {
        let metrics = Metrics::default();
        metrics.set_state("parsing", "docs", state(Phase::Progressing, 10, 50));
        let text = metrics.render();
        assert!(
            text.contains(r#"mineru_operator_canary_weight{namespace="parsing",name="docs"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mineru_operator_canary_share{namespace="parsing",name="docs"} 50"#),
            "{text}"
        );
        metrics.set_state("parsing", "docs", state(Phase::Healthy, 0, 0));
        assert!(
            metrics
                .render()
                .contains(r#"mineru_operator_canary_weight{namespace="parsing",name="docs"} 0"#)
        );
    }

    #[test]
    fn forgotten_objects_leave_no_phase_series() {
        let metrics = Metrics::default();
        metrics.set_state(
            "parsing",
            "docs",
            ObjectState {
                holding: Some(Hold::EvidenceOverdue),
                ..state(Phase::Progressing, 10, 10)
            },
        );
        metrics.forget("parsing", "docs");
        assert!(!metrics.render().contains("name=\"docs\""));
    }

    #[test]
    fn a_hold_has_a_series_for_its_reason_only_while_it_lasts() {
        let metrics = Metrics::default();
        let held = |holding| ObjectState {
            gate_errors: 3,
            holding,
            ..state(Phase::Progressing, 10, 10)
        };
        metrics.set_state("parsing", "docs", held(Some(Hold::PreflightFailed)));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"mineru_operator_rollout_holding{namespace="parsing",name="docs",reason="PreflightFailed"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"reason="EvidenceOverdue""#), "{text}");
        assert!(
            text.contains(
                r#"mineru_operator_analysis_consecutive_errors{namespace="parsing",name="docs"} 3"#
            ),
            "{text}"
        );
        metrics.set_state("parsing", "docs", held(None));
        assert!(
            !metrics.render().contains("rollout_holding{"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn a_finished_reconcile_stamps_the_time() {
        let metrics = Metrics::default();
        assert!(
            metrics
                .render()
                .contains("mineru_operator_last_reconcile_timestamp_seconds 0")
        );
        metrics.reconciled(Duration::from_millis(1));
        let text = metrics.render();
        let stamp: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("mineru_operator_last_reconcile_timestamp_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(stamp > 1.7e9, "{text}");
    }
}
