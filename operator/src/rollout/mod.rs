//! The rollout engine: a pure state machine from what is known now to what should be.
//!
//! [`step`] takes an [`Input`] — the rollout spec, the desired revisions, the status written last
//! time (the engine's only memory), observed facts, this round's check results, consumed manual
//! commands and the time — and returns a [`Decision`]: the plan to apply, the status to write,
//! events and notifications to send, and when to look again. It does no IO and reads no clock,
//! so calling it again with the status it returned, at the same time and with nothing new
//! observed, changes nothing: that is what makes a restart at any moment safe.
//!
//! How a rollout goes:
//! - A new desired revision pair (not failed) starts a rollout at step 0 with no traffic. When
//!   the model changed, the canary vLLM (`canaryModelReplicas`) must be ready and warmed up
//!   before any traffic; canary workers talk only to it. Not ready by `progressDeadline`:
//!   rollback. GPUs short (`maxSurgeGPUs`, free capacity, or canary pods unschedulable): stable
//!   vLLM replicas are stopped in place instead of waiting forever.
//! - A step is left when its pause is over, the canary is fully ready, every criterion gating
//!   it has passed in a round evaluated during the step, no trigger is in breach, the rollout is
//!   not paused, and — with `requireApproval` — a person promoted. Leaving the last step
//!   promotes; the previous revisions stay, scaled down, for `postPromotionWindow`, while the
//!   checks that need no stable keep running and can still roll back.
//! - Rollback (trigger sustained for its `for`; criterion failed beyond `failureLimit` with
//!   `onFail: Rollback`; errors or inconclusive criteria beyond their limits with a Rollback
//!   policy; progress deadline; `abort`) sends all traffic back at once, keeps the canary's
//!   replicas for `scaleDownDelay`, and remembers the revisions as failed until the spec moves
//!   on or a person runs `retry`. Errors and inconclusive verdicts never pass a gate.
//!
//! The controller's side of the contract:
//! 1. Ask [`needs`] what to measure: a warm-up probe of the canary vLLM, preflight, GPU
//!    capacity, the Prometheus readings of the checks due this round (each with its revision,
//!    evidence window and evaluation time) and the golden documents to compare. Fetch them — a
//!    query that cannot even be rendered is a [`Reading::Error`](crate::gates::reading::Reading)
//!    — and pass them in [`Input::observed`] and [`Input::analysis`]. The engine judges every
//!    reading itself: Prometheus values and sequential tests, pod restarts, golden documents.
//! 2. Remove consumed command annotations before writing status, so a command is applied at
//!    most once even across a crash.
//! 3. Write [`Decision::status`], then apply [`Decision::plan`] (every revision listed is kept
//!    at the given replicas; owned revisions not listed are deleted), emit the events, deliver
//!    what the status's outbox holds (`pendingNotifications`, which already includes this
//!    decision's [`Decision::notifications`]) and requeue at [`Decision::requeue_at`].

mod analysis;
mod judge;
mod machine;
mod outbox;
mod plan;
mod report;
mod state;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use mineru_crds::{
    CheckKind, MineruDeploymentSpec, MineruDeploymentStatus, QualityResult, Revisions,
    RollbackReason, RollbackRecord, RolloutSpec, Tier,
};

use crate::gates::{Source, reading::Measured};

/// Everything a decision depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// `metadata.generation`, echoed as `status.observedGeneration`.
    pub generation: Option<i64>,
    /// `spec.rollout`.
    pub rollout: RolloutSpec,
    /// Replica counts and GPU size of both tiers from the spec.
    pub sizes: Sizes,
    /// The revisions the spec asks for now.
    pub desired: Revisions,
    /// The status written last time; `Default` for a new object.
    pub status: MineruDeploymentStatus,
    /// Facts read from the cluster this round.
    pub observed: Observed,
    /// Readings of this round, when [`needs`] asked for some.
    pub analysis: Option<AnalysisRound>,
    /// Manual commands consumed from annotations, in the order given.
    pub commands: Vec<Command>,
    /// The time of this decision.
    pub now: Timestamp,
}

/// Sizes of both tiers as the spec sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `spec.model.replicas`.
    pub model_replicas: i32,
    /// `spec.model.gpusPerReplica`.
    pub gpus_per_replica: i32,
    /// `spec.worker.replicas`.
    pub worker_replicas: i32,
    /// `spec.worker.maxConcurrentDocuments`: one worker's document slots.
    pub worker_concurrency: i32,
}

impl Sizes {
    /// The sizes a spec asks for.
    pub fn of(spec: &MineruDeploymentSpec) -> Sizes {
        Sizes {
            model_replicas: spec.model.replicas,
            gpus_per_replica: spec.model.gpus_per_replica,
            worker_replicas: spec.worker.replicas,
            worker_concurrency: spec.worker.max_concurrent_documents,
        }
    }
}

/// Facts about the revisions' pods, keyed by revision so that no fact is read for the wrong one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Ready vLLM replicas per model revision.
    pub model_ready: BTreeMap<String, i32>,
    /// Ready worker replicas per worker revision.
    pub worker_ready: BTreeMap<String, i32>,
    /// Model revisions whose vLLM lists the expected model at `/v1/models` and completed a
    /// warm-up request (`/health` is 200 long before that).
    pub warmed_up: BTreeSet<String>,
    /// Model revisions with pods that cannot be scheduled for lack of GPUs.
    pub unschedulable: BTreeSet<String>,
    /// Container restarts of vLLM pods per model revision.
    pub vllm_restarts: BTreeMap<String, i32>,
    /// Why the vLLM containers of a model revision keep exiting, from their last words.
    pub vllm_failures: BTreeMap<String, String>,
    /// GPUs free in the cluster for the canary, when known.
    pub free_gpus: Option<i32>,
    /// What the canary needs and lacks before its first traffic (Prometheus unreachable, a gate
    /// query refused, a Secret or ConfigMap missing); empty when preflight passed or was not run.
    pub preflight: Vec<String>,
}

impl Observed {
    /// Ready vLLM replicas of a model revision (0 when it has none).
    pub fn models_ready(&self, revision: &str) -> i32 {
        self.model_ready.get(revision).copied().unwrap_or(0)
    }

    /// Ready worker replicas of a worker revision (0 when it has none).
    pub fn workers_ready(&self, revision: &str) -> i32 {
        self.worker_ready.get(revision).copied().unwrap_or(0)
    }

    /// vLLM container restarts of a model revision (0 when unknown).
    pub fn restarts(&self, revision: &str) -> i32 {
        self.vllm_restarts.get(revision).copied().unwrap_or(0)
    }
}

/// A manual command, read from a `mineru.dev/*` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `promote: step` — leave the current step now, gates, pause and approval notwithstanding.
    PromoteStep,
    /// `promote: full` — promote the canary now.
    PromoteFull,
    /// `abort` — roll back now.
    Abort,
    /// `retry` — forget that the desired revisions failed and roll them out again.
    Retry,
    /// `pause` — stop advancing; triggers keep watching.
    Pause,
    /// `resume` — advance again.
    Resume,
}

/// What was read in one round of analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRound {
    /// When the readings were taken.
    pub at: Timestamp,
    /// One per [`ReadingRequest`] of [`Needs::readings`].
    pub readings: Vec<ReadingResult>,
    /// Per-document outcome of the golden-document round so far; the engine judges the quality
    /// checks from it. Empty: nothing compared yet, the checks stay unanswered.
    pub quality: Vec<QualityResult>,
    /// How many documents the round compares once it has read them (fewer than the step asks
    /// for when the golden set is smaller); unknown before.
    pub quality_documents: Option<usize>,
}

/// What the engine needs to know before it can decide, as [`needs`] says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Needs {
    /// Probe this model revision's vLLM: it is ready and must answer before any traffic.
    pub warmup: Option<String>,
    /// Check what these canary revisions need before their first traffic (Prometheus answering
    /// every query, Secrets, golden documents, the legacy Service).
    pub preflight: Option<Revisions>,
    /// Count GPU capacity for a canary vLLM.
    pub capacity: Option<CapacityRead>,
    /// Prometheus readings for this round; empty when no round is due.
    pub readings: Vec<ReadingRequest>,
    /// Compare golden documents this round.
    pub quality: Option<QualityRequest>,
    /// Keep probe traffic flowing to both sides; none sent without.
    pub probes: Option<ProbeRequest>,
}

/// How much of the cluster a GPU capacity count reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityRead {
    /// The rollout starts now: free GPUs (every pod's requests) decide in-place replacement.
    Free,
    /// While the canary warms up: only whether any allowed node could host a replica, which
    /// needs no cluster-wide pod list.
    Nodes,
}

/// Which side of a comparison a reading is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The revision judged (canary, or the promoted one after promotion).
    Judged,
    /// What it is compared with (stable, the legacy Service, the previous stable).
    Baseline,
}

/// One check's readings for one revision, over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadingRequest {
    /// The check's name and kind (a criterion and a trigger may share a name).
    pub check: String,
    pub kind: CheckKind,
    /// The check's tier.
    pub tier: Tier,
    /// Its queries.
    pub source: Source,
    /// Judged or baseline.
    pub role: Role,
    /// `{{revision}}`.
    pub revision: String,
    /// `{{canaryRevision}}` (the judged revision).
    pub canary_revision: String,
    /// `{{stableRevision}}` (the baseline's, or the judged one's when there is none).
    pub stable_revision: String,
    /// `{{window}}`: how far back the counts reach from `at`.
    pub window: Duration,
    /// The instant the queries are evaluated at.
    pub at: Timestamp,
}

/// What Prometheus answered for a [`ReadingRequest`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReadingResult {
    /// The request answered.
    pub check: String,
    pub kind: CheckKind,
    pub role: Role,
    pub revision: String,
    /// The main query as rendered (value, bad count or buckets), kept as evidence.
    pub query: Option<String>,
    /// The raw readings.
    pub measured: Measured,
}

/// Golden documents to compare this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualityRequest {
    /// The judged worker revision.
    pub judged: String,
    /// What its answers are compared with.
    pub baseline: Baseline,
    /// How many documents.
    pub documents: usize,
}

/// Probe traffic to send while the current step gathers evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRequest {
    /// The judged worker revision.
    pub judged: String,
    /// The side it is compared with, which gets the same documents; none at a 100% step,
    /// where the canary is judged alone (by the SLOs).
    pub baseline: Option<Baseline>,
    /// Documents per hour to each side.
    pub documents_per_hour: f64,
    /// Probes in flight at once on each side.
    pub concurrency: usize,
}

/// `revision` label value of the legacy Service's series during a migration: relabel its
/// scrape targets with it, and ratio checks compare the canary with the legacy Service.
pub const LEGACY_REVISION: &str = "legacy";

/// What a canary is compared with, and where traffic goes back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// The stable revisions of this stack.
    Stable(Revisions),
    /// The legacy Service being migrated from.
    Legacy,
}

impl Baseline {
    /// The `revision` label of the baseline's series of a tier.
    pub fn revision(&self, tier: Tier) -> &str {
        match self {
            Baseline::Stable(revisions) => revisions.of(tier),
            Baseline::Legacy => LEGACY_REVISION,
        }
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas and traffic to apply.
    pub plan: Plan,
    /// The status to write (always, with phase, message and observedGeneration).
    pub status: MineruDeploymentStatus,
    /// Kubernetes Events to record.
    pub events: Vec<Event>,
    /// Webhook notifications to send.
    pub notifications: Vec<Notification>,
    /// When to decide again even if nothing is watched to change.
    pub requeue_at: Option<Timestamp>,
}

/// Replicas per revision and tier, and the canary's share of traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The revisions serving as stable; none while the legacy Service is the baseline.
    pub stable: Option<Revisions>,
    /// The canary, when a rollout is under way.
    pub canary: Option<Revisions>,
    /// Percentage of traffic for the canary (Gateway API weights; informational in replica mode,
    /// where the replica counts below are the split).
    pub canary_weight: i32,
    /// The worker revision the entry Service selects; `None`: every worker revision.
    pub entry: Option<String>,
    /// vLLM replicas per model revision; a revision with 0 keeps its objects.
    pub model: Vec<Scale>,
    /// Worker replicas per worker revision; a revision with 0 keeps its objects.
    pub worker: Vec<Scale>,
}

/// The replicas of one revision of one tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    /// The revision hash.
    pub revision: String,
    /// Replicas it should run.
    pub replicas: i32,
}

/// A Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The Event reason.
    pub reason: EventReason,
    /// A sentence for people.
    pub message: String,
}

/// Event reasons; rollbacks carry their countable reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// A rollout began.
    RolloutStarted,
    /// Stable vLLM replicas are stopped to make room for the canary.
    InPlaceReplacement,
    /// The canary is ready and warmed up and receives its first traffic.
    CanaryReady,
    /// A step's gates passed (or a person promoted) and the next step began.
    StepCompleted,
    /// The canary became stable.
    Promoted,
    /// The post-promotion window passed without a breach.
    Verified,
    /// Traffic went back to stable.
    RolledBack(RollbackReason),
    /// The spec went back to the stable revisions mid-rollout.
    RolloutCancelled,
    /// A newer spec replaced the canary mid-rollout.
    RolloutSuperseded,
    /// A person paused the rollout.
    Paused,
    /// A person resumed the rollout.
    Resumed,
    /// A person asked to retry failed revisions.
    Retried,
    /// A command that does not apply now.
    CommandIgnored,
    /// A limit was reached and the policy is to hold.
    Holding,
}

impl EventReason {
    /// The reason string of the Event.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventReason::RolloutStarted => "RolloutStarted",
            EventReason::InPlaceReplacement => "InPlaceReplacement",
            EventReason::CanaryReady => "CanaryReady",
            EventReason::StepCompleted => "StepCompleted",
            EventReason::Promoted => "Promoted",
            EventReason::Verified => "Verified",
            EventReason::RolledBack(_) => "RolledBack",
            EventReason::RolloutCancelled => "RolloutCancelled",
            EventReason::RolloutSuperseded => "RolloutSuperseded",
            EventReason::Paused => "Paused",
            EventReason::Resumed => "Resumed",
            EventReason::Retried => "Retried",
            EventReason::CommandIgnored => "CommandIgnored",
            EventReason::Holding => "Holding",
        }
    }

    /// Warning Events are the ones someone should look at.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            EventReason::RolledBack(_)
                | EventReason::InPlaceReplacement
                | EventReason::CommandIgnored
                | EventReason::Holding
        )
    }
}

/// A webhook notification, as decided; status records it in its outbox
/// (`pendingNotifications`) until it is delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// What happened.
    pub kind: NotificationKind,
    /// The revisions rolled out.
    pub revisions: Revisions,
    /// The step (0-based) concerned, when there is one.
    pub step: Option<i32>,
    /// The canary weight after the change.
    pub weight: i32,
    /// A sentence for people.
    pub message: String,
    /// The evidence, for a rollback.
    pub rollback: Option<RollbackRecord>,
}

pub use mineru_crds::NotificationKind;
pub use plan::step_share;

/// What to measure before deciding with `input` (its `analysis` and the probed parts of
/// `observed` are ignored). Pure.
pub fn needs(input: &Input) -> Needs {
    machine::needs(input)
}

/// Decides what to do now. Pure: the same input always gives the same decision.
pub fn step(input: &Input) -> Decision {
    machine::run(input)
}
