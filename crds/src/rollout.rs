//! `spec.rollout`: steps, traffic routing, capacity policy and the analysis that gates each step.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{self, Duration};
use crate::tiers::default_true;

/// How a change to either tier is shipped: traffic steps, each gated by analysis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.analysis.promotionCriteria) || self.analysis.promotionCriteria.all(c, !has(c.afterSteps) || c.afterSteps.all(i, i >= 0 && i < size(self.steps)))").message("promotionCriteria afterSteps must be indexes (0-based) of the rollout steps"))]
pub struct RolloutSpec {
    /// Canary traffic steps, in order. Weights rise strictly from 1 to a final 100.
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(
        validation = Rule::new("self[size(self) - 1].weight == 100").message("the last rollout step must have weight 100"),
        validation = Rule::new("size(self) < 2 || self.map(s, s.weight).isSorted()").message("rollout step weights must be strictly increasing"),
        validation = Rule::new("self.all(s, self.exists_one(t, t.weight == s.weight))").message("rollout step weights must be strictly increasing"),
    )]
    pub steps: Vec<Step>,

    /// How canary traffic is routed: `replicas` (default) or `gatewayAPI`, not both.
    #[serde(default)]
    pub traffic_routing: TrafficRouting,

    /// vLLM replicas the canary runs before promotion.
    #[serde(default = "default_canary_model_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub canary_model_replicas: i32,

    /// Extra GPUs a canary may use beyond the stable tier. 0 replaces stable vLLM replicas in
    /// place. Unset: `gpusPerReplica × canaryModelReplicas`.
    #[serde(
        default,
        rename = "maxSurgeGPUs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 10000))]
    pub max_surge_gpus: Option<i32>,

    /// A canary not ready and warmed up by then is rolled back.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,

    /// How long a rolled-back or superseded revision is kept before it is scaled down.
    #[serde(default = "default_scale_down_delay")]
    pub scale_down_delay: Duration,

    /// After 100% the gates keep running this long; a breach still rolls back, so the previous
    /// revision is kept (scaled down) until the window passes.
    #[serde(default = "default_post_promotion_window")]
    pub post_promotion_window: Duration,

    /// Go/no-go analysis. Required, so that running without gates is a written decision
    /// (`defaultCriteria: false`), never an accident.
    pub analysis: AnalysisSpec,

    /// Where rollout events are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
}

/// One traffic step of a rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.pause) && has(self.requireApproval) && self.requireApproval)").message("a step either pauses for a duration or waits for approval, not both"),
    validation = Rule::new("!has(self.pause) || !has(self.maxDuration) || duration(self.pause) <= duration(self.maxDuration)").message("a step's maxDuration must not be shorter than its pause"),
)]
pub struct Step {
    /// Percentage of traffic sent to the canary during this step (1–100).
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,

    /// How long the step lasts once its gates pass; the next step follows. Unset: move on as
    /// soon as the gates pass (or wait for approval when `requireApproval` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Duration>,

    /// Hold at this step until a person promotes (`kubectl mineru promote`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,

    /// How long the step may wait for its criteria to have enough evidence once its pause is
    /// over; then `analysis.onInconclusive` applies. Sized for the slowest traffic the step
    /// must decide at: the default lets 60 documents an hour decide (`kubectl mineru plan`).
    #[serde(default = "default_max_step_duration")]
    pub max_duration: Duration,

    /// Leave this step on its pause (or approval) alone, with no criterion backed by data:
    /// status and the Event then say "without analysis". Rollback triggers keep watching.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_analysis: bool,
}

impl RolloutSpec {
    /// The unmanaged Service a first rollout migrates from, when Gateway API routing names one.
    pub fn legacy_backend(&self) -> Option<&LegacyBackend> {
        let gateway = self.traffic_routing.gateway_api.as_ref()?;
        gateway.legacy_backend.as_ref()
    }
}

fn step(weight: i32, pause: Option<&str>, max_duration: &str) -> Step {
    Step {
        weight,
        pause: pause.map(duration::literal),
        require_approval: false,
        max_duration: duration::literal(max_duration),
        skip_analysis: false,
    }
}

/// The change's phase plan: 10% for up to 96 hours, 50% for up to 7 days, then 100%; each step
/// leaves as soon as its evidence is enough, after a short pause.
fn default_steps() -> Vec<Step> {
    vec![
        step(10, Some("5m"), "96h"),
        step(50, Some("10m"), "168h"),
        step(100, None, "168h"),
    ]
}

/// Traffic routing mode. Neither field set means `replicas`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.gatewayAPI))").message("trafficRouting takes one mode: replicas or gatewayAPI"))]
pub struct TrafficRouting {
    /// No mesh: the canary's share of traffic is its share of worker replicas behind the entry
    /// Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaRouting>,

    /// Exact weights on the backendRefs of a Gateway API HTTPRoute.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
}

/// Replica-ratio routing has no settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaRouting {}

/// HTTPRoute weight routing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// The HTTPRoute, in the MineruDeployment's namespace, whose backendRefs the operator sets.
    pub http_route: LocalRef,

    /// An existing, unmanaged MinerU Service whose traffic the first rollout moves to this stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_backend: Option<LegacyBackend>,
}

/// A reference by name to an object in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LocalRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A Service outside the operator's control that currently receives the traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!has(self.tier) || self.api == 'v1'").message("legacyBackend.tier names a MinerU 4 tier: it needs api: v1"))]
pub struct LegacyBackend {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Port of the Service.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The API the legacy Service speaks, which the quality gate's golden documents use:
    /// `fileParse`, the `POST /file_parse` of MinerU 2 and 3's `mineru-api`, or `v1`, the
    /// `POST /v1/file_parse` of MinerU 4's `mineru-api` (which serves no `/file_parse`).
    #[serde(default)]
    pub api: LegacyApi,
    /// With `api: v1`, the MinerU tier the golden documents are parsed on (`flash`, `basic`,
    /// `standard`, `advanced`); absent: the server's default, which a flash-only MinerU server
    /// does not have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<LegacyTier>,
}

/// The API of a legacy MinerU Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LegacyApi {
    /// MinerU 2 and 3: `POST /file_parse`.
    #[default]
    FileParse,
    /// MinerU 4: `POST /v1/file_parse`.
    V1,
}

/// MinerU 4's parse tiers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LegacyTier {
    Flash,
    Basic,
    Standard,
    Advanced,
}

impl LegacyTier {
    pub fn as_str(self) -> &'static str {
        match self {
            LegacyTier::Flash => "flash",
            LegacyTier::Basic => "basic",
            LegacyTier::Standard => "standard",
            LegacyTier::Advanced => "advanced",
        }
    }
}

/// What to do when analysis cannot decide or cannot run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Stay at the current step, keep evaluating, and say why in status.
    #[default]
    Hold,
    /// Send all traffic back to stable and scale the canary down.
    Rollback,
}

/// Go/no-go analysis: promotion criteria checked before leaving a step, rollback triggers
/// watched all the time, and the output-quality comparison.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.prometheus) || (!self.defaultCriteria && !has(self.promotionCriteria) && !has(self.rollbackTriggers))").message("analysis.prometheus is required unless defaultCriteria is false and no promotionCriteria or rollbackTriggers are given"))]
pub struct AnalysisSpec {
    /// The Prometheus server gates are evaluated against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,

    /// Evaluation period of criteria and triggers.
    #[serde(default = "default_interval")]
    pub interval: Duration,

    /// Failed evaluations tolerated per step before a criterion's `onFail` applies.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub failure_limit: i32,

    /// Query errors in a row (Prometheus down, bad query) before `onError` applies. Errors never
    /// count toward promotion.
    #[serde(default = "default_consecutive_error_limit")]
    #[schemars(range(min = 0, max = 1000))]
    pub consecutive_error_limit: i32,

    /// Policy once `consecutiveErrorLimit` is reached. `Hold` also keeps a step from being left
    /// while any check's last query failed.
    #[serde(default)]
    pub on_error: Policy,

    /// Policy once a step reaches its `maxDuration` without enough evidence to decide.
    #[serde(default)]
    pub on_inconclusive: Policy,

    /// How sure the statistical checks (`proportion`, `quantile`) must be before they pass or
    /// fail.
    #[serde(default)]
    pub evidence: EvidenceSpec,

    /// Include the built-in criteria and triggers (error ratio, p95 latency, throughput, the
    /// SLOs at 100%, vLLM restarts, breaker openings, error and latency spikes, crash loops); a
    /// user entry of the same name replaces a built-in. The quality gate's checks come with
    /// `quality` either way.
    #[serde(default = "default_true")]
    pub default_criteria: bool,

    /// Checks that must pass before leaving a step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("promotionCriteria names must be unique"))]
    pub promotion_criteria: Vec<PromotionCriterion>,

    /// Abort conditions checked every interval; a breach sustained for `for` rolls back at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("rollbackTriggers names must be unique"))]
    pub rollback_triggers: Vec<RollbackTrigger>,

    /// Canary vs stable output on golden documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualitySpec>,
}

/// The error rates of the sequential tests that judge `proportion` and `quantile` checks.
/// A check passes once the evidence is enough at these rates, fails once it is enough the other
/// way, and is Inconclusive until then (docs/gates.md explains the statistics).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceSpec {
    /// 1 − α: a canary that meets a threshold is failed by it at most `1 − confidence` of the
    /// time.
    #[serde(default = "default_confidence")]
    #[x_kube(validation = Rule::new("self >= 0.5 && self < 1.0").message("evidence.confidence must be in [0.5, 1)"))]
    pub confidence: f64,

    /// 1 − β: a canary `regression` times worse than a threshold allows is caught at least this
    /// often.
    #[serde(default = "default_power")]
    #[x_kube(validation = Rule::new("self >= 0.5 && self < 1.0").message("evidence.power must be in [0.5, 1)"))]
    pub power: f64,

    /// How much worse than its threshold a canary must be for `power` to apply: the odds of a
    /// bad document (an error, a document over the latency limit) multiplied by this.
    #[serde(default = "default_regression")]
    #[x_kube(validation = Rule::new("self > 1.0 && self <= 100.0").message("evidence.regression must be in (1, 100]"))]
    pub regression: f64,

    /// Documents each side must have extracted before its distributions of blocks
    /// (`layout-mix`, `blocks-per-page`) are compared with the baseline's: below it the
    /// distance between two samples of one mix is mostly noise.
    #[serde(default = "default_min_documents")]
    #[x_kube(validation = Rule::new("self >= 1.0").message("evidence.minDocuments must be at least 1"))]
    pub min_documents: f64,
}

impl Default for EvidenceSpec {
    fn default() -> Self {
        EvidenceSpec {
            confidence: default_confidence(),
            power: default_power(),
            regression: default_regression(),
            min_documents: default_min_documents(),
        }
    }
}

/// Where and how to reach Prometheus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheus.address must be an http:// or https:// URL"))]
    pub address: String,

    /// Timeout of one query.
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,

    /// Secret with credentials: key `token` (Bearer) or keys `username` and `password` (basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<LocalRef>,
}

/// The tier whose series a check reads; templates get it as `{{tier}}`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The GPU tier (vLLM).
    Model,
    /// The CPU tier (mineru-worker).
    #[default]
    Worker,
}

/// A go/no-go check that must pass before a step is left.
///
/// Queries are PromQL templates: `{{namespace}}`, `{{name}}`, `{{revision}}` (the revision
/// judged), `{{canaryRevision}}`, `{{stableRevision}}`, `{{tier}}`, `{{interval}}`, and
/// `{{window}}`: the evidence window, i.e. the time since the step's traffic began (at least one
/// `interval`), so that `increase(x[{{window}}])` counts everything the step has seen.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.max) || has(self.min) || has(self.maxRatioToStable)").message("a check needs at least one threshold: max, min or maxRatioToStable"),
    validation = Rule::new("!(has(self.max) && has(self.min)) || self.min <= self.max").message("min must not exceed max"),
    validation = Rule::new("!has(self.ratioFloor) || has(self.maxRatioToStable)").message("ratioFloor only applies with maxRatioToStable"),
    validation = Rule::new("!has(self.minSamples) || has(self.samplesQuery)").message("minSamples needs a samplesQuery"),
    validation = Rule::new("(has(self.query) ? 1 : 0) + (has(self.proportion) ? 1 : 0) + (has(self.quantile) ? 1 : 0) == 1").message("a check reads exactly one of query, proportion or quantile"),
    validation = Rule::new("!has(self.samplesQuery) || has(self.query)").message("samplesQuery and minSamples apply to query checks; proportion and quantile checks count their own documents"),
    validation = Rule::new("!has(self.proportion) || ((!has(self.max) || (self.max > 0.0 && self.max < 1.0)) && (!has(self.min) || (self.min > 0.0 && self.min < 1.0)))").message("a proportion's max and min are shares in (0, 1)"),
)]
pub struct PromotionCriterion {
    /// Name of the check; a built-in of the same name is replaced.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// Tier whose series the query reads.
    #[serde(default)]
    pub tier: Tier,

    /// PromQL template returning one value for the judged revision, judged against the
    /// thresholds as it is (no statistics: use `samplesQuery` and `minSamples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,

    /// A share of bad documents, judged by a sequential test at `analysis.evidence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proportion: Option<ProportionQuery>,

    /// A quantile of a histogram (e.g. latency), judged by a sequential test at
    /// `analysis.evidence`; thresholds are in the histogram's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<QuantileQuery>,

    /// PromQL template counting the samples behind the value (e.g. requests in the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub samples_query: Option<String>,

    /// Below this many samples the verdict is Inconclusive: hold, never pass or fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_samples: Option<f64>,

    /// Pass when value ≤ max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// Pass when value ≥ min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// Pass when canary ≤ maxRatioToStable × max(stable, ratioFloor), both read in the same round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_ratio_to_stable: Option<f64>,

    /// Lower bound for the stable value in ratio checks, so a stable value of 0 does not make
    /// every canary blip a breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ratio_floor: Option<f64>,

    /// Indexes (0-based) of the steps this check gates; every step when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub after_steps: Vec<i32>,

    /// What a failed check does once `failureLimit` is exceeded.
    #[serde(default = "default_on_fail")]
    pub on_fail: Policy,
}

fn default_on_fail() -> Policy {
    Policy::Rollback
}

/// An abort condition watched every interval for the whole rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.max) || has(self.min) || has(self.maxRatioToStable)").message("a check needs at least one threshold: max, min or maxRatioToStable"),
    validation = Rule::new("!(has(self.max) && has(self.min)) || self.min <= self.max").message("min must not exceed max"),
    validation = Rule::new("!has(self.ratioFloor) || has(self.maxRatioToStable)").message("ratioFloor only applies with maxRatioToStable"),
    validation = Rule::new("(has(self.query) ? 1 : 0) + (has(self.proportion) ? 1 : 0) + (has(self.quantile) ? 1 : 0) == 1").message("a check reads exactly one of query, proportion or quantile"),
    validation = Rule::new("!has(self.proportion) || ((!has(self.max) || (self.max > 0.0 && self.max < 1.0)) && (!has(self.min) || (self.min > 0.0 && self.min < 1.0)))").message("a proportion's max and min are shares in (0, 1)"),
)]
pub struct RollbackTrigger {
    /// Name of the trigger; a built-in of the same name is replaced.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// Tier whose series the query reads.
    #[serde(default)]
    pub tier: Tier,

    /// PromQL template returning one value for the judged revision; a breach is that value
    /// beyond the thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,

    /// A share of bad documents; a breach is evidence, at `analysis.evidence`, that the share
    /// is beyond the thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proportion: Option<ProportionQuery>,

    /// A quantile of a histogram; a breach is evidence, at `analysis.evidence`, that the
    /// quantile is beyond the thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<QuantileQuery>,

    /// Breach when value > max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// Breach when value < min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// Breach when canary > maxRatioToStable × max(stable, ratioFloor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_ratio_to_stable: Option<f64>,

    /// Lower bound for the stable value in ratio checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ratio_floor: Option<f64>,

    /// How long a breach must last before it rolls back; `0s` rolls back on the first breach.
    #[serde(default = "default_trigger_for", rename = "for")]
    pub sustained_for: Duration,
}

/// A share of documents read as two counts over the evidence window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProportionQuery {
    /// PromQL template counting the bad documents, e.g.
    /// `sum(increase(mineru_worker_requests_total{...,outcome="error"}[{{window}}]))`.
    #[schemars(length(min = 1, max = 4096))]
    pub bad: String,

    /// PromQL template counting all documents judged, over the same window.
    #[schemars(length(min = 1, max = 4096))]
    pub total: String,
}

/// A quantile read from histogram buckets over the evidence window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuantileQuery {
    /// The quantile judged, e.g. 0.95.
    #[x_kube(validation = Rule::new("self > 0.0 && self < 1.0").message("quantile.q must be in (0, 1)"))]
    pub q: f64,

    /// PromQL template returning the cumulative bucket counts by `le`, e.g.
    /// `sum by (le) (increase(mineru_worker_request_duration_seconds_bucket{...}[{{window}}]))`.
    #[schemars(length(min = 1, max = 4096))]
    pub buckets: String,
}

/// Output-quality gate: golden documents parsed by canary and stable, compared.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QualitySpec {
    /// ConfigMaps holding the golden PDF documents.
    pub golden_documents: GoldenDocuments,

    /// Similarity (structure and text, 0–1) at which a document matches.
    #[serde(default = "default_min_similarity")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("minSimilarity must be in [0, 1]"))]
    pub min_similarity: f64,

    /// Share of golden documents (0–1) allowed not to match before the gate fails.
    #[serde(default = "default_max_regression")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("maxRegression must be in [0, 1]"))]
    pub max_regression: f64,

    /// Golden documents compared before leaving each step, by step index; steps past the end
    /// use the last count. Which documents is a fixed shuffle per canary, so every rollout
    /// covers a different sample of a large set and a restart compares the same one.
    #[serde(default = "default_documents_per_step")]
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.all(n, n >= 1 && n <= 10000)").message("documentsPerStep counts must be in [1, 10000]"))]
    pub documents_per_step: Vec<i32>,

    /// Golden documents sent as probe traffic while a step gathers evidence, so that a rollout
    /// with little real traffic still decides.
    #[serde(default)]
    pub probes: ProbeSpec,
}

/// Probe traffic: golden documents sent to the canary and the baseline workers alike, marked
/// `X-Mineru-Source: probe` so the workers count them apart (`source="probe"`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Documents sent to each side per hour during a step that splits traffic; 0 sends none.
    #[serde(default = "default_probes_per_hour")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 3600.0").message("probes.documentsPerHour must be in [0, 3600]"))]
    pub documents_per_hour: f64,

    /// Share (0–1] of one worker's `maxConcurrentDocuments` that probes may hold at once on
    /// each side (at least one document); a tick that finds them all busy sends nothing. The
    /// workers themselves never give probes more than a quarter of their slots, nor the last
    /// free one.
    #[serde(default = "default_probe_share")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("probes.maxShare must be in (0, 1]"))]
    pub max_share: f64,

    /// Whether the built-in checks count the operator's documents (probes and golden-document
    /// rounds) as evidence; when false they read clients' documents only
    /// (`source!~"probe|golden"`).
    #[serde(default = "default_true")]
    pub count_as_evidence: bool,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            documents_per_hour: default_probes_per_hour(),
            max_share: default_probe_share(),
            count_as_evidence: true,
        }
    }
}

/// Where golden documents come from: the PDFs (`binaryData` or `data` entries) of one ConfigMap,
/// or of every ConfigMap with the given labels (a ConfigMap holds at most 1 MiB, so a set of a hundred
/// documents is split over several).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapRef) != has(self.configMapLabels)").message("goldenDocuments takes either configMapRef or configMapLabels"))]
pub struct GoldenDocuments {
    /// One ConfigMap, in the MineruDeployment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalRef>,

    /// Every ConfigMap in the MineruDeployment's namespace carrying all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("configMapLabels needs at least one label"))]
    pub config_map_labels: Option<BTreeMap<String, String>>,
}

/// Rollout event delivery.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// Rollout events (started, preflight failed, step completed, holding, paused, promoted,
    /// verified, rolled back) POSTed to a URL, each retried with backoff until it is taken.
    pub webhook: Webhook,
}

/// A webhook endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// URL the events are POSTed to.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("webhook.url must be an http:// or https:// URL"))]
    pub url: String,

    /// Secret whose key `token` is sent as a Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,

    /// The body: a CloudEvents 1.0 JSON event (`application/cloudevents+json`), or
    /// `{"text": ...}` for a Slack-compatible incoming webhook.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// How a notification is written.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebhookFormat {
    /// CloudEvents 1.0, structured JSON; `id` is the same on every redelivery.
    #[default]
    CloudEvents,
    /// A Slack incoming-webhook message.
    Slack,
}

fn default_documents_per_step() -> Vec<i32> {
    vec![50, 100]
}
fn default_canary_model_replicas() -> i32 {
    1
}
fn default_progress_deadline() -> Duration {
    duration::literal("30m")
}
fn default_scale_down_delay() -> Duration {
    duration::literal("30s")
}
fn default_post_promotion_window() -> Duration {
    duration::literal("10m")
}
fn default_interval() -> Duration {
    duration::literal("1m")
}
fn default_consecutive_error_limit() -> i32 {
    4
}
fn default_max_step_duration() -> Duration {
    duration::literal("168h")
}
fn default_confidence() -> f64 {
    0.995
}
fn default_power() -> f64 {
    0.95
}
fn default_regression() -> f64 {
    3.0
}
fn default_min_documents() -> f64 {
    30.0
}
fn default_probes_per_hour() -> f64 {
    12.0
}
fn default_probe_share() -> f64 {
    0.25
}
fn default_query_timeout() -> Duration {
    duration::literal("10s")
}
fn default_trigger_for() -> Duration {
    duration::literal("0s")
}
fn default_min_similarity() -> f64 {
    0.95
}
fn default_max_regression() -> f64 {
    0.01
}
