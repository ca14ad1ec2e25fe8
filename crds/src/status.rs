//! `status`: everything a person (and the operator after a restart) needs to understand a rollout.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Tier;

/// Observed state of a MineruDeployment, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MineruDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Healthy, Progressing, Paused or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// One line for people: step, weight, revisions, gate state, time left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The revisions serving all traffic outside a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Revisions>,

    /// The revisions being rolled out; absent when there is no rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Revisions>,

    /// Index (0-based) of the rollout step in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,

    /// Percentage of traffic the current step gives the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,

    /// Percentage of traffic the canary really receives: `canaryWeight` with Gateway API
    /// routing; with replica-ratio routing, the canary's share of the ready workers behind the
    /// entry Service (10% of 2 workers is one worker of two: 50%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_share: Option<i32>,

    /// When the canary first took traffic in this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_started_at: Option<Time>,

    /// When the baseline last served traffic beside the canary, and since when: once the
    /// canary takes all traffic (a 100% step, the post-promotion window) its ratio checks
    /// compare with the baseline's documents of that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_window: Option<BaselineWindow>,

    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

    /// Readiness of both tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<TierStatuses>,

    /// Latest verdict of every promotion criterion and rollback trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,

    /// Latest output-quality comparison, per golden document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<QualityResult>,

    /// The most recent automatic or manual rollback, with its evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackRecord>,

    /// Revisions that failed; not retried until the spec changes or a person asks (`retry`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_revisions: Vec<Revisions>,

    /// Standard conditions: Available, Progressing, Degraded, RolledBack, PreflightFailed, ModelServerFailing (vLLM containers keep exiting; the message says why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// A person paused the rollout (`pause`); steps do not advance until `resume` or `promote`.
    /// Rollback triggers keep watching.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// When the last analysis round was counted; the next one is due an `interval` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_at: Option<Time>,

    /// Analysis rounds in a row with a query error; compared with `consecutiveErrorLimit`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_errors: i32,

    /// The step passed its `maxDuration` without enough evidence to decide and holds there
    /// (`onInconclusive: Hold`) until the evidence comes or a person acts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evidence_overdue: bool,

    /// When the canary stopped being ready during a step; it is rolled back if it stays so
    /// for `progressDeadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_unready_since: Option<Time>,

    /// Stable vLLM replicas stopped to make room for the canary because its GPUs did not fit
    /// (`maxSurgeGPUs` too small, or canary pods unschedulable); restored on promotion or rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_model_replicas: Option<i32>,

    /// When the current stable revisions were promoted; the post-promotion window runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,

    /// The revisions stable before the last promotion, kept (scaled down) during the
    /// post-promotion window so that a breach can still roll back to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable: Option<Revisions>,

    /// Revisions taken out of service (promoted away, rolled back or superseded) that still have
    /// objects: they keep their replicas for `scaleDownDelay`, then scale to zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredRevision>,

    /// The part the legacy Service (`trafficRouting.gatewayAPI.legacyBackend`) plays in the
    /// migration to this stack; absent once the migration is verified, or without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<LegacyRole>,

    /// Webhook notifications recorded with the decision that made them and not delivered yet:
    /// retried with backoff until the receiver takes them or newer ones supersede them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_notifications: Vec<PendingNotification>,
}

/// A webhook notification waiting for delivery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// Unique per decision and the same on every attempt: the CloudEvents `id`, by which a
    /// receiver recognises a redelivery.
    pub id: String,
    /// What happened.
    pub kind: NotificationKind,
    /// The revisions concerned.
    pub revisions: Revisions,
    /// The step (0-based) concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// The canary weight after the decision.
    pub weight: i32,
    /// A sentence for people.
    pub message: String,
    /// The evidence of a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// When it was decided.
    pub at: Time,
    /// Deliveries tried so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i32,
    /// When the next delivery is due; absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// Why the last delivery failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Kinds of webhook notification.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    /// A rollout began.
    Started,
    /// What the canary needs before its first traffic is missing; it waits without a deadline.
    PreflightFailed,
    /// A step was completed.
    StepCompleted,
    /// A limit was reached and the policy is to hold; the message says which.
    Holding,
    /// The rollout waits for a person.
    Paused,
    /// The canary became stable.
    Promoted,
    /// The post-promotion window passed, or a person verified the promoted revisions.
    Verified,
    /// The canary was rolled back; the evidence comes along.
    RolledBack,
}

impl NotificationKind {
    /// The name, as in `status` and the CloudEvents `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Started => "Started",
            NotificationKind::PreflightFailed => "PreflightFailed",
            NotificationKind::StepCompleted => "StepCompleted",
            NotificationKind::Holding => "Holding",
            NotificationKind::Paused => "Paused",
            NotificationKind::Promoted => "Promoted",
            NotificationKind::Verified => "Verified",
            NotificationKind::RolledBack => "RolledBack",
        }
    }

    /// A state rather than a step of the history: a newer notice about the same rollout
    /// makes an undelivered one stale.
    pub fn is_state(self) -> bool {
        matches!(
            self,
            NotificationKind::PreflightFailed
                | NotificationKind::Holding
                | NotificationKind::Paused
        )
    }
}

/// The time a baseline served traffic beside the canary.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineWindow {
    /// Start of the window (the canary's first traffic).
    pub from: Time,
    /// End of the window (the start of the first step that gave the canary all traffic).
    pub until: Time,
}

/// The legacy Service's part in a migration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyRole {
    /// It is the baseline: it serves the traffic the canary does not, and the canary is
    /// compared with it. `stable` stays empty until the stack is promoted.
    Serving,
    /// The stack was promoted from it: it gets no traffic but stays the way back until the
    /// post-promotion window passes.
    Standby,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// A revision out of service whose objects are kept for a while.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetiredRevision {
    /// The revisions.
    pub revisions: Revisions,
    /// vLLM replicas it ran when it was retired; kept until `scaleDownDelay` has passed.
    pub model_replicas: i32,
    /// Worker replicas it ran when it was retired; kept until `scaleDownDelay` has passed.
    pub worker_replicas: i32,
    /// When it was retired.
    pub since: Time,
}

/// Coarse state, as Argo CD and people read it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Stable revisions serve all traffic and are ready.
    Healthy,
    /// A rollout or a scale-up is under way.
    Progressing,
    /// A rollout waits for a person (approval or `pause`).
    Paused,
    /// Something needs attention: a rollback happened or a tier is unavailable.
    Degraded,
}

/// A pair of revisions: the GPU tier's and the CPU tier's.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Revisions {
    /// Hash of the vLLM pod template, e.g. `m-7f3c9a01`.
    pub model_revision: String,
    /// Hash of the worker pod template (which names its vLLM Service), e.g. `w-19ab42cd`.
    pub worker_revision: String,
}

impl Revisions {
    /// The revision of one tier.
    pub fn of(&self, tier: Tier) -> &str {
        match tier {
            Tier::Model => &self.model_revision,
            Tier::Worker => &self.worker_revision,
        }
    }
}

/// Replica counts of both tiers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TierStatuses {
    /// The GPU tier.
    pub model: TierStatus,
    /// The CPU tier.
    pub worker: TierStatus,
}

/// Replica counts of one tier.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Ready replicas across revisions.
    pub ready: i32,
    /// Replicas wanted across revisions.
    pub desired: i32,
    /// Ready replicas of the canary revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready: Option<i32>,
}

/// Which kind of check produced a verdict.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Must pass before a step is left.
    Promotion,
    /// Watched all the time; a sustained breach rolls back.
    Trigger,
}

/// The outcome of one evaluation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within threshold with enough samples.
    Pass,
    /// Outside threshold with enough samples.
    Fail,
    /// Too few samples, or no data: hold, neither pass nor fail.
    Inconclusive,
    /// The query could not be run (Prometheus unreachable, invalid query).
    Error,
    /// Not judged in this rollout, for the reason in `message` (a GPU-tier check when the canary
    /// shares the stable vLLM, a ratio with no baseline traffic left to compare with).
    Skipped,
}

/// The latest evaluation of one check.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// Name of the criterion or trigger.
    pub name: String,
    /// Promotion criterion or rollback trigger.
    pub kind: CheckKind,
    /// The revision judged.
    pub revision: String,
    /// Value for the judged revision; absent when there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Value for stable in the same round (ratio checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// The threshold in words, e.g. `<= 1.05 x stable`.
    pub threshold: String,
    /// Samples behind the value: documents for `proportion` and `quantile` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<f64>,
    /// Samples behind the stable (baseline) value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_samples: Option<f64>,
    /// About how many more documents the sequential test needs to decide, when Inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<f64>,
    /// Outcome. A `proportion` or `quantile` criterion that passed keeps its Pass for the rest of
    /// the step: its test has decided.
    pub verdict: Verdict,
    /// Failed evaluations in the current step.
    #[serde(default)]
    pub failures: i32,
    /// Why, when the verdict is not Pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The PromQL that was run, rendered; absent for checks read from pod status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Rollback triggers: when the current uninterrupted breach began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaching_since: Option<Time>,
    /// When it was evaluated.
    pub evaluated_at: Time,
}

/// The comparison of one golden document.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QualityResult {
    /// The document's key in the golden ConfigMap.
    pub document: String,
    /// Similarity of canary and stable output, 0–1 (0 when the canary failed it).
    pub similarity: f64,
    /// Pass at or above minSimilarity; Fail below it, or when only the canary failed to parse
    /// it; Error when the baseline failed too (or alone): nothing to compare, not a regression.
    pub verdict: Verdict,
    /// Why, when the verdict is not Pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a regressed document, the first blocks that differ, so that a person can judge
    /// without parsing it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<BlockDifference>,
}

/// A block that differs between the baseline's and the canary's reading of a document.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockDifference {
    /// 1-based page of the block (the baseline's, or the canary's for an added block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<i64>,
    /// Block type as MinerU's content list names it (`text`, `table`, `equation`, ...).
    pub block: String,
    /// `changed`, `missing` (only the baseline has it) or `added` (only the canary has it).
    pub change: String,
    /// The baseline's text of the block, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// The canary's text of the block, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

/// Why a rollout was rolled back.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackReason {
    /// A rollback trigger breached for its duration.
    TriggerFired,
    /// A promotion criterion failed beyond failureLimit with `onFail: Rollback`.
    CriterionFailed,
    /// The quality gate found too many regressed documents.
    QualityRegressed,
    /// Query errors reached consecutiveErrorLimit with `onError: Rollback`.
    AnalysisError,
    /// A step reached its maxDuration without enough evidence, with `onInconclusive: Rollback`.
    Inconclusive,
    /// The canary was not ready and warm within progressDeadline.
    ProgressDeadlineExceeded,
    /// A person asked (`abort`).
    Aborted,
}

/// A rollback and its evidence.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    /// The revisions rolled back.
    pub canary: Revisions,
    /// Why.
    pub reason: RollbackReason,
    /// The check that decided, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The PromQL that was run, rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The value that breached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold it breached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    /// A sentence for people.
    pub message: String,
    /// When it happened.
    pub at: Time,
}
