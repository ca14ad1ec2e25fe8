//! The built-in criteria and triggers: the quantified go/no-go table of API.md as data.
//!
//! Worker series are `mineru_worker_*{namespace, revision}` (`revision` set by the worker from
//! its pod label, `namespace` by the PodMonitor). A request counts as an error when the canary
//! is to blame — `outcome` `error`, `timeout` or `rejected` (at capacity, breaker open) — and
//! not when the client sent a bad document (`client_error`). vLLM series get `revision` from the pod label `mineru.dev/revision` through
//! scrape relabeling. Windows are one analysis `interval`, so every round judges fresh traffic.
//!
//! Two built-ins may share a name when they gate different steps with different thresholds
//! (error-ratio leaving 10% and leaving 50%); a user entry of that name replaces both.
//!
//! Beyond the table, two checks watch the GPU tier itself, holding on failure: `vllm-queue-depth`
//! (canary vLLM queue at most twice stable's) and `vllm-ttft-p95` (time to first token at most
//! 1.10 × stable's): a canary model that serves as well per request but slower per token shows
//! up there before it shows up in worker latency.

use std::time::Duration;

use mineru_crds::{CheckKind, Policy, QualitySpec, Tier};

use super::{Check, Samples, Source, Threshold};

/// Every built-in query selects the object's namespace and the judged revision: `$SEL` below.
fn query(template: &str) -> String {
    template.replace(
        "$SEL",
        r#"namespace="{{namespace}}",revision="{{revision}}""#,
    )
}

/// Worker requests finished in the window: the samples behind every worker ratio.
fn worker_requests() -> String {
    query("sum(increase(mineru_worker_requests_total{$SEL}[{{interval}}]))")
}

fn worker_error_ratio() -> String {
    query(concat!(
        r#"sum(rate(mineru_worker_requests_total{$SEL,outcome=~"error|timeout|rejected"}[{{interval}}]))"#,
        " / sum(rate(mineru_worker_requests_total{$SEL}[{{interval}}]))"
    ))
}

fn worker_latency_p95() -> String {
    query(concat!(
        "histogram_quantile(0.95, sum by (le) ",
        "(rate(mineru_worker_request_duration_seconds_bucket{$SEL}[{{interval}}])))"
    ))
}

/// Worker-seconds per page (pods / pages per second): throughput per worker, inverted so that
/// "at least 0.95 × stable" becomes a `maxRatioToStable` of 1 / 0.95.
fn worker_seconds_per_page() -> String {
    query(concat!(
        "count(count by (pod) (mineru_worker_pages_total{$SEL}))",
        " / sum(rate(mineru_worker_pages_total{$SEL}[{{interval}}]))"
    ))
}

fn worker_pages() -> String {
    query("sum(increase(mineru_worker_pages_total{$SEL}[{{interval}}]))")
}

/// Breaker openings of the canary over the last day. Canary series exist only since the rollout
/// began, so for rollouts shorter than a day this is the count during the rollout — stricter
/// than the daily rate it approximates.
fn worker_breaker_opens_per_day() -> String {
    query("sum(increase(mineru_worker_breaker_opens_total{$SEL}[1d]))")
}

fn vllm_queue_waiting() -> String {
    query("avg(vllm:num_requests_waiting{$SEL})")
}

fn vllm_ttft_p95() -> String {
    query(concat!(
        "histogram_quantile(0.95, sum by (le) ",
        "(rate(vllm:time_to_first_token_seconds_bucket{$SEL}[{{interval}}])))"
    ))
}

fn vllm_requests() -> String {
    query("sum(increase(vllm:request_success_total{$SEL}[{{interval}}]))")
}

/// Fewer requests than this in one interval say nothing about a ratio or a percentile.
const MIN_REQUESTS: f64 = 20.0;

fn criterion(
    name: &str,
    tier: Tier,
    source: Source,
    threshold: Threshold,
    samples: Option<Samples>,
    after_steps: &[i32],
    on_fail: Policy,
) -> Check {
    Check {
        name: name.into(),
        kind: CheckKind::Promotion,
        tier,
        source,
        threshold,
        samples,
        after_steps: after_steps.to_vec(),
        on_fail,
        sustained_for: Duration::ZERO,
    }
}

fn trigger(
    name: &str,
    tier: Tier,
    source: Source,
    threshold: Threshold,
    samples: Option<Samples>,
    sustained_for: Duration,
) -> Check {
    Check {
        name: name.into(),
        kind: CheckKind::Trigger,
        tier,
        source,
        threshold,
        samples,
        after_steps: Vec::new(),
        on_fail: Policy::Rollback,
        sustained_for,
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

fn requests() -> Option<Samples> {
    Some(Samples {
        query: worker_requests(),
        min: MIN_REQUESTS,
    })
}

/// Error ratios below 1% and p95 latencies below 1 s are noise, not a regression.
const ERROR_RATIO_FLOOR: f64 = 0.01;
const LATENCY_FLOOR_SECONDS: f64 = 1.0;
/// Time to first token below 100 ms is scheduling noise.
const TTFT_FLOOR_SECONDS: f64 = 0.1;
const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

/// Pages per second per worker a canary must reach, relative to stable's.
const THROUGHPUT_TO_STABLE: f64 = 0.95;
/// The same when migrating from a monolithic legacy Service: splitting the tiers is worth its
/// extra moving parts only if it is clearly faster.
const THROUGHPUT_TO_LEGACY: f64 = 1.15;

/// The built-in checks of `defaultCriteria`. `migrating`: the canary is compared with a legacy
/// Service rather than stable revisions.
pub fn checks(migrating: bool) -> Vec<Check> {
    let throughput = if migrating {
        THROUGHPUT_TO_LEGACY
    } else {
        THROUGHPUT_TO_STABLE
    };
    use Policy::{Hold, Rollback};
    use Source::{CanaryVllmRestarts, Query};
    let (first, second) = (&[0][..], &[1][..]);
    vec![
        // Leaving 10% a regression rolls back; leaving 50% it holds for a person to look.
        criterion(
            "error-ratio",
            Tier::Worker,
            Query(worker_error_ratio()),
            ratio(1.05, ERROR_RATIO_FLOOR),
            requests(),
            first,
            Rollback,
        ),
        criterion(
            "latency-p95",
            Tier::Worker,
            Query(worker_latency_p95()),
            ratio(1.10, LATENCY_FLOOR_SECONDS),
            requests(),
            first,
            Rollback,
        ),
        criterion(
            "error-ratio",
            Tier::Worker,
            Query(worker_error_ratio()),
            ratio(1.02, ERROR_RATIO_FLOOR),
            requests(),
            second,
            Hold,
        ),
        criterion(
            "latency-p95",
            Tier::Worker,
            Query(worker_latency_p95()),
            ratio(1.05, LATENCY_FLOOR_SECONDS),
            requests(),
            second,
            Hold,
        ),
        criterion(
            "throughput",
            Tier::Worker,
            Query(worker_seconds_per_page()),
            ratio(1.0 / throughput, 0.0),
            Some(Samples {
                query: worker_pages(),
                min: MIN_REQUESTS,
            }),
            second,
            Hold,
        ),
        criterion(
            "vllm-restarts",
            Tier::Model,
            CanaryVllmRestarts,
            max(0.0),
            None,
            &[],
            Rollback,
        ),
        // "< 5 openings per day": increase() extrapolates, so 4.x openings still count as 5.
        criterion(
            "breaker-opens",
            Tier::Worker,
            Query(worker_breaker_opens_per_day()),
            max(4.0),
            None,
            &[],
            Rollback,
        ),
        criterion(
            "vllm-queue-depth",
            Tier::Model,
            Query(vllm_queue_waiting()),
            ratio(2.0, 1.0),
            Some(Samples {
                query: vllm_requests(),
                min: MIN_REQUESTS,
            }),
            &[],
            Hold,
        ),
        criterion(
            "vllm-ttft-p95",
            Tier::Model,
            Query(vllm_ttft_p95()),
            ratio(1.10, TTFT_FLOOR_SECONDS),
            Some(Samples {
                query: vllm_requests(),
                min: MIN_REQUESTS,
            }),
            &[],
            Hold,
        ),
        trigger(
            "error-spike",
            Tier::Worker,
            Query(worker_error_ratio()),
            ratio(1.20, ERROR_RATIO_FLOOR),
            requests(),
            FIFTEEN_MINUTES,
        ),
        trigger(
            "latency-spike",
            Tier::Worker,
            Query(worker_latency_p95()),
            max(120.0),
            requests(),
            FIFTEEN_MINUTES,
        ),
        // "> 3 restarts in 30m", counted over the canary pods' life: stricter, and it needs no
        // restart history.
        trigger(
            "vllm-crashloop",
            Tier::Model,
            CanaryVllmRestarts,
            max(3.0),
            None,
            Duration::ZERO,
        ),
    ]
}

/// The checks of a configured quality gate: leaving 10% a regression rolls back, leaving 50%
/// it holds; a collapse on any run rolls back.
pub fn quality_checks(quality: &QualitySpec) -> Vec<Check> {
    use Policy::{Hold, Rollback};
    let (first, second) = (&[0][..], &[1][..]);
    vec![
        criterion(
            "quality",
            Tier::Worker,
            Source::Quality,
            max(quality.max_regression),
            None,
            first,
            Rollback,
        ),
        criterion(
            "quality",
            Tier::Worker,
            Source::Quality,
            max(quality.max_regression),
            None,
            second,
            Hold,
        ),
        trigger(
            "quality-collapse",
            Tier::Worker,
            Source::Quality,
            max(0.05),
            None,
            Duration::ZERO,
        ),
    ]
}
