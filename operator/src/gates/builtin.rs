//! The built-in criteria and triggers: the quantified go/no-go table of API.md as data.
//!
//! Worker series are `mineru_worker_*{namespace, revision}` (`revision` set by the worker from
//! its pod label, `namespace` by the PodMonitor). A document counts as bad for the error checks
//! when the canary is to blame — `outcome` `error`, `timeout` or `rejected` (at capacity,
//! breaker open) — and not at all when the client sent a bad document (`client_error`) or a
//! probe was turned away to keep room for clients (`deferred`). vLLM
//! series get `revision` from the pod label `mineru.dev/revision` through scrape relabeling.
//!
//! Every count is read over the evidence window `{{window}}` — the time since the step's
//! traffic began — and the error, latency and throughput checks are sequential tests on those
//! documents (see [`crate::evidence`]), so that a step at tens of documents an hour decides once
//! its documents say enough, and one at thousands an hour decides within minutes.
//!
//! Which step a built-in gates follows the step list: "leaving 10%" is the first step, "leaving
//! 50%" the second when it is not the last, and the last step (the canary takes everything, no
//! baseline traffic is left beside it) is gated by the SLOs as absolute bounds.
//!
//! Two built-ins may share a name when they gate different steps with different thresholds
//! (error-ratio leaving 10% and leaving 50%); a user entry of that name replaces both.

use std::time::Duration;

use mineru_crds::{CheckKind, Policy, QualitySpec, Step, Tier};

use super::{Check, Measure, Samples, Source, Threshold};

/// Every built-in query selects the object's namespace and the judged revision: `$SEL` below.
fn query(template: &str) -> String {
    template.replace(
        "$SEL",
        r#"namespace="{{namespace}}",revision="{{revision}}""#,
    )
}

/// Documents that failed for the worker's or the GPU tier's fault, among those it judged (a
/// client's bad document says nothing about the revision).
fn document_errors() -> Source {
    Source::Proportion {
        bad: query(
            r#"sum(increase(mineru_worker_requests_total{$SEL,outcome=~"error|timeout|rejected"}[{{window}}]))"#,
        ),
        total: query(
            r#"sum(increase(mineru_worker_requests_total{$SEL,outcome!~"client_error|deferred"}[{{window}}]))"#,
        ),
    }
}

fn document_seconds(q: f64) -> Source {
    Source::Quantile {
        q,
        buckets: query(
            "sum by (le) (increase(mineru_worker_request_duration_seconds_bucket{$SEL}[{{window}}]))",
        ),
    }
}

/// Each document's seconds per page: what a worker does per page, whatever share of the
/// traffic it gets (pods ÷ pages per second would measure the split instead).
fn seconds_per_page() -> Source {
    Source::Quantile {
        q: 0.5,
        buckets: query(
            "sum by (le) (increase(mineru_worker_page_duration_seconds_bucket{$SEL}[{{window}}]))",
        ),
    }
}

/// Documents the worker flagged with `signal` (a truncated answer, degenerate repetition, an
/// empty page), among those it extracted.
fn flagged_documents(signal: &str) -> Source {
    Source::Proportion {
        bad: query(&format!(
            r#"sum(increase(mineru_worker_flagged_documents_total{{$SEL,signal="{signal}"}}[{{{{window}}}}]))"#
        )),
        total: extracted_documents(),
    }
}

/// Documents extracted: the units the distributions' counts come in.
fn extracted_documents() -> String {
    query("sum(increase(mineru_worker_documents_total{$SEL}[{{window}}]))")
}

/// The mix of block types the model finds, once there are `min_documents` a side.
fn block_mix(min_documents: f64) -> Source {
    Source::Distribution {
        counts: query(
            "sum by (block_type) (increase(mineru_worker_blocks_total{$SEL}[{{window}}]))",
        ),
        units: extracted_documents(),
        min_samples: min_documents,
    }
}

/// How many blocks the model finds per page, once there are `min_documents` a side.
fn blocks_per_page(min_documents: f64) -> Source {
    Source::Distribution {
        counts: query("sum by (le) (increase(mineru_worker_page_blocks_bucket{$SEL}[{{window}}]))"),
        units: extracted_documents(),
        min_samples: min_documents,
    }
}

/// Breaker openings of the judged revision in the window.
fn worker_breaker_opens() -> Source {
    Source::Value {
        query: query("sum(increase(mineru_worker_breaker_opens_total{$SEL}[{{window}}]))"),
        samples: None,
    }
}

fn vllm_requests() -> Option<Samples> {
    Some(Samples {
        query: query("sum(increase(vllm:request_success_total{$SEL}[{{window}}]))"),
        min: MIN_VLLM_REQUESTS,
    })
}

fn vllm_queue_waiting() -> Source {
    Source::Value {
        query: query("avg(avg_over_time(vllm:num_requests_waiting{$SEL}[{{window}}]))"),
        samples: vllm_requests(),
    }
}

fn vllm_ttft() -> Source {
    Source::Quantile {
        q: 0.95,
        buckets: query(
            "sum by (le) (increase(vllm:time_to_first_token_seconds_bucket{$SEL}[{{window}}]))",
        ),
    }
}

/// Total-variation distance between a canary's and the baseline's distributions that counts as
/// reading documents differently: a tenth of the blocks moved to another type or count.
const MAX_DISTRIBUTION_DISTANCE: f64 = 0.10;
/// Shares of flagged documents below 2% are noise (a few odd documents in any mix).
const SIGNAL_RATIO_FLOOR: f64 = 0.02;

/// An average queue length over fewer requests than this says nothing.
const MIN_VLLM_REQUESTS: f64 = 20.0;

struct Spec {
    name: &'static str,
    tier: Tier,
    source: Source,
    threshold: Threshold,
    measure: Option<Measure>,
}

fn spec(
    name: &'static str,
    tier: Tier,
    source: Source,
    threshold: Threshold,
    measure: Option<Measure>,
) -> Spec {
    Spec {
        name,
        tier,
        source,
        threshold,
        measure,
    }
}

fn criterion(spec: Spec, after_steps: &[i32], on_fail: Policy) -> Check {
    Check {
        name: spec.name.into(),
        kind: CheckKind::Promotion,
        tier: spec.tier,
        source: spec.source,
        threshold: spec.threshold,
        after_steps: after_steps.to_vec(),
        on_fail,
        sustained_for: Duration::ZERO,
        measure: spec.measure,
        stands_for: None,
    }
}

fn trigger(spec: Spec, sustained_for: Duration) -> Check {
    Check {
        name: spec.name.into(),
        kind: CheckKind::Trigger,
        tier: spec.tier,
        source: spec.source,
        threshold: spec.threshold,
        after_steps: Vec::new(),
        on_fail: Policy::Rollback,
        sustained_for,
        measure: spec.measure,
        stands_for: None,
    }
}

fn ratio(ratio: f64, floor: f64) -> Threshold {
    Threshold {
        max_ratio_to_stable: Some(ratio),
        ratio_floor: Some(floor),
        ..Threshold::default()
    }
}

fn max(max: f64) -> Threshold {
    Threshold {
        max: Some(max),
        ..Threshold::default()
    }
}

/// Error ratios below 1% and p95 latencies below 1 s are noise, not a regression.
const ERROR_RATIO_FLOOR: f64 = 0.01;
const LATENCY_FLOOR_SECONDS: f64 = 1.0;
/// Time to first token below 100 ms is scheduling noise.
const TTFT_FLOOR_SECONDS: f64 = 0.1;
/// Per-page times below 10 ms (the text backend's) are too small to matter.
const PAGE_SECONDS_FLOOR: f64 = 0.01;
const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

/// Pages per second a canary must reach, relative to stable's.
const THROUGHPUT_TO_STABLE: f64 = 0.95;
/// The same when migrating from a monolithic legacy Service: splitting the tiers is worth its
/// extra moving parts only if it is clearly faster.
const THROUGHPUT_TO_LEGACY: f64 = 1.15;

/// The change's SLOs, the evidence of the step where the canary takes all traffic.
const SLO_ERROR_RATIO: f64 = 0.02;
const SLO_LATENCY_P95_SECONDS: f64 = 90.0;

/// The steps the table's rows gate, by their place in the step list.
struct Roles {
    /// "Leaving 10%": the first step, unless it is the only one.
    first: Vec<i32>,
    /// "Leaving 50%": the second step, unless it is the last.
    second: Vec<i32>,
    /// The step that gives the canary all traffic.
    last: Vec<i32>,
}

fn roles(steps: &[Step]) -> Roles {
    let last = steps.len() as i32 - 1;
    let only_if = |index: i32| {
        if index < last {
            vec![index]
        } else {
            Vec::new()
        }
    };
    Roles {
        first: only_if(0),
        second: only_if(1),
        last: vec![last.max(0)],
    }
}

/// The built-in checks of `defaultCriteria` for a rollout over `steps`. `migrating`: the canary
/// is compared with a legacy Service rather than stable revisions; `min_documents`: the floor
/// of the distribution checks (`evidence.minDocuments`).
pub fn checks(steps: &[Step], migrating: bool, min_documents: f64) -> Vec<Check> {
    let throughput = if migrating {
        THROUGHPUT_TO_LEGACY
    } else {
        THROUGHPUT_TO_STABLE
    };
    use Policy::{Hold, Rollback};
    use Tier::{Model, Worker};
    let errors = |threshold| {
        spec(
            "error-ratio",
            Worker,
            document_errors(),
            threshold,
            Some(Measure::DocumentErrors),
        )
    };
    let latency = |name, threshold| {
        spec(
            name,
            Worker,
            document_seconds(0.95),
            threshold,
            Some(Measure::DocumentSeconds),
        )
    };
    let roles = roles(steps);
    let mut checks = Vec::new();
    // Leaving 10% a regression rolls back; leaving 50% it holds for a person to look.
    if !roles.first.is_empty() {
        checks.extend([
            criterion(
                errors(ratio(1.05, ERROR_RATIO_FLOOR)),
                &roles.first,
                Rollback,
            ),
            criterion(
                latency("latency-p95", ratio(1.10, LATENCY_FLOOR_SECONDS)),
                &roles.first,
                Rollback,
            ),
        ]);
    }
    if !roles.second.is_empty() {
        checks.extend([
            criterion(errors(ratio(1.02, ERROR_RATIO_FLOOR)), &roles.second, Hold),
            criterion(
                latency("latency-p95", ratio(1.05, LATENCY_FLOOR_SECONDS)),
                &roles.second,
                Hold,
            ),
            // "Pages/s at least 0.95 × stable's" is "seconds per page at most stable's / 0.95".
            criterion(
                spec(
                    "throughput",
                    Worker,
                    seconds_per_page(),
                    ratio(1.0 / throughput, PAGE_SECONDS_FLOOR),
                    Some(Measure::SecondsPerPage),
                ),
                &roles.second,
                Hold,
            ),
        ]);
    }
    // How the canary reads documents, by the same rule.
    for (steps, policy, signal_ratio) in
        [(&roles.first, Rollback, 1.5), (&roles.second, Hold, 1.25)]
    {
        if !steps.is_empty() {
            checks.extend(reading_checks(steps, policy, signal_ratio, min_documents));
        }
    }
    // With all traffic on the canary there is no baseline beside it: the SLOs are the bar.
    // Missing them holds at 100% for a person, as rolling back to a baseline that was sharing
    // the same traffic need not meet them either.
    checks.extend([
        criterion(
            spec(
                "slo-error-ratio",
                Worker,
                document_errors(),
                max(SLO_ERROR_RATIO),
                Some(Measure::DocumentErrors),
            ),
            &roles.last,
            Hold,
        ),
        criterion(
            latency("slo-latency-p95", max(SLO_LATENCY_P95_SECONDS)),
            &roles.last,
            Hold,
        ),
    ]);
    checks.extend([
        criterion(
            spec(
                "vllm-restarts",
                Model,
                Source::CanaryVllmRestarts,
                max(0.0),
                None,
            ),
            &[],
            Rollback,
        ),
        // "< 5 openings per day of step time", counted over the step: for steps shorter than
        // a day, stricter than the daily rate it stands for. increase() extrapolates, so 4.x
        // openings still count as 5.
        criterion(
            spec(
                "breaker-opens",
                Worker,
                worker_breaker_opens(),
                max(4.0),
                None,
            ),
            &[],
            Rollback,
        ),
        // The GPU tier itself: a canary model that serves as well per request but slower per
        // token shows up here before it does in worker latency.
        criterion(
            spec(
                "vllm-queue-depth",
                Model,
                vllm_queue_waiting(),
                ratio(2.0, 1.0),
                None,
            ),
            &[],
            Hold,
        ),
        criterion(
            spec(
                "vllm-ttft-p95",
                Model,
                vllm_ttft(),
                ratio(1.10, TTFT_FLOOR_SECONDS),
                None,
            ),
            &[],
            Hold,
        ),
        trigger(
            spec(
                "error-spike",
                Worker,
                document_errors(),
                ratio(1.20, ERROR_RATIO_FLOOR),
                Some(Measure::DocumentErrors),
            ),
            FIFTEEN_MINUTES,
        ),
        trigger(
            spec(
                "latency-spike",
                Worker,
                document_seconds(0.95),
                max(120.0),
                Some(Measure::DocumentSeconds),
            ),
            FIFTEEN_MINUTES,
        ),
        // "> 3 restarts in 30m", counted over the canary pods' life: stricter, and it needs no
        // restart history.
        trigger(
            spec(
                "vllm-crashloop",
                Model,
                Source::CanaryVllmRestarts,
                max(3.0),
                None,
            ),
            Duration::ZERO,
        ),
    ]);
    checks
}

/// How the canary reads documents, on every document it extracts, against the baseline: the
/// worker's document-level signals (docs/worker-metrics.md).
fn reading_checks(
    steps: &[i32],
    on_fail: Policy,
    signal_ratio: f64,
    min_documents: f64,
) -> Vec<Check> {
    let signal = |name, signal| {
        spec(
            name,
            Tier::Worker,
            flagged_documents(signal),
            ratio(signal_ratio, SIGNAL_RATIO_FLOOR),
            None,
        )
    };
    let distance = Threshold {
        max_distance: Some(MAX_DISTRIBUTION_DISTANCE),
        ..Threshold::default()
    };
    [
        signal("truncated-answers", "truncated"),
        signal("repetition", "repetition"),
        signal("empty-pages", "empty_page"),
        spec(
            "layout-mix",
            Tier::Worker,
            block_mix(min_documents),
            distance,
            None,
        ),
        spec(
            "blocks-per-page",
            Tier::Worker,
            blocks_per_page(min_documents),
            distance,
            None,
        ),
    ]
    .into_iter()
    .map(|spec| criterion(spec, steps, on_fail))
    .collect()
}

/// The checks of a configured quality gate: leaving 10% a regression rolls back, leaving 50%
/// it holds; a collapse on any run rolls back.
pub fn quality_checks(quality: &QualitySpec, steps: &[Step]) -> Vec<Check> {
    use Policy::{Hold, Rollback};
    let roles = roles(steps);
    let regressed = || {
        spec(
            "quality",
            Tier::Worker,
            Source::Quality,
            max(quality.max_regression),
            None,
        )
    };
    let mut checks = Vec::new();
    if !roles.first.is_empty() {
        checks.push(criterion(regressed(), &roles.first, Rollback));
    }
    if !roles.second.is_empty() {
        checks.push(criterion(regressed(), &roles.second, Hold));
    }
    checks.push(trigger(
        spec(
            "quality-collapse",
            Tier::Worker,
            Source::Quality,
            max(0.05),
            None,
        ),
        Duration::ZERO,
    ));
    checks
}
