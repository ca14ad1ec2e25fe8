//! Whole rollouts through the real engine on simulated document traffic: a thousand canaries
//! as good as stable, and a thousand with three times its error ratio. Every round the engine
//! asks for its readings (`rollout::needs`), gets the counts and histogram buckets the worker
//! would have exported for exactly the revision and window asked, and decides (`rollout::step`).
//!
//! What must hold: equal canaries are rolled back in under 1% of rollouts, regressed ones are
//! stopped (rolled back or held) in at least 95%, and the documents each step needed are
//! reported, and match what `kubectl mineru plan` forecasts for the same traffic.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mineru_crds::{MineruDeploymentStatus, Revisions, RolloutSpec};
use mineru_operator::{
    evidence::Histogram,
    gates::{
        Source,
        reading::{Measured, Reading},
    },
    planner::{self, Canary, Traffic},
    rollout::{
        AnalysisRound, Input, Needs, Observed, ReadingRequest, ReadingResult, Sizes, needs, step,
    },
};
use mineru_protocol::worker::{DOCUMENT_SECONDS_BUCKETS, PAGE_SECONDS_BUCKETS};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

const ROLLOUTS: usize = 1000;
/// Busy enough that a rollout takes tens of rounds, not thousands: the statistics see the same
/// documents whatever the clock says, so only the round count matters to how long this runs.
const DOCUMENTS_PER_HOUR: f64 = 600.0;
const INTERVAL: Duration = Duration::from_secs(10 * 60);
const WORKERS: i32 = 4;
/// A rollout still undecided after this long has been held (or starved) for good.
const GIVE_UP: Duration = Duration::from_secs(21 * 24 * 3600);

fn rollout() -> RolloutSpec {
    serde_json::from_value(json!({
        "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "interval": "10m"}
    }))
    .unwrap()
}

fn stable() -> Revisions {
    Revisions {
        model_revision: "m-41aa".into(),
        worker_revision: "w-88c2".into(),
    }
}

fn canary() -> Revisions {
    Revisions {
        model_revision: "m-41aa".into(),
        worker_revision: "w-5d10".into(),
    }
}

/// What one revision's workers exported over one interval.
#[derive(Clone, Default)]
struct Counts {
    documents: f64,
    errors: f64,
    seconds: Vec<f64>,
    page_seconds: Vec<f64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.documents += other.documents;
        self.errors += other.errors;
        for (a, b) in self.seconds.iter_mut().zip(&other.seconds) {
            *a += b;
        }
        for (a, b) in self.page_seconds.iter_mut().zip(&other.page_seconds) {
            *a += b;
        }
    }

    fn histogram(&self, bounds: &[f64], counts: &[f64]) -> Reading {
        if self.documents == 0.0 {
            return Reading::Empty;
        }
        let mut buckets: Vec<(f64, f64)> =
            bounds.iter().copied().zip(counts.iter().copied()).collect();
        buckets.push((f64::INFINITY, self.documents));
        Reading::Buckets(Histogram::new(buckets).unwrap())
    }
}

/// Every interval's counts per revision, so a window is a sum of whole intervals.
struct Exported {
    start: Timestamp,
    by_interval: Vec<Vec<(String, Counts)>>,
}

impl Exported {
    fn window(&self, revision: &str, at: Timestamp, window: Duration) -> Counts {
        let index = |t: Timestamp| {
            ((t.as_second() - self.start.as_second()) as f64 / INTERVAL.as_secs_f64()).round()
                as i64
        };
        let last = index(at);
        let first = last - (window.as_secs_f64() / INTERVAL.as_secs_f64()).round() as i64;
        let mut sum = Counts {
            seconds: vec![0.0; DOCUMENT_SECONDS_BUCKETS.len()],
            page_seconds: vec![0.0; PAGE_SECONDS_BUCKETS.len()],
            ..Counts::default()
        };
        for interval in (first.max(0)..last).filter_map(|i| self.by_interval.get(i as usize)) {
            for (_, counts) in interval.iter().filter(|(r, _)| r == revision) {
                sum.add(counts);
            }
        }
        sum
    }

    fn read(&self, request: &ReadingRequest) -> ReadingResult {
        let counts = self.window(&request.revision, request.at, request.window);
        let measured = match &request.source {
            // Both revisions read documents alike: nothing flagged, the same mix of blocks.
            Source::Proportion { bad, .. } if bad.contains("flagged_documents") => {
                Measured::Proportion {
                    bad: Reading::Value(0.0),
                    total: Reading::Value(counts.documents),
                }
            }
            Source::Distribution { .. } => Measured::Distribution {
                counts: Reading::Counts(
                    [("text", 7.0), ("table", 3.0)]
                        .into_iter()
                        .map(|(kind, per_document)| {
                            (kind.to_owned(), per_document * counts.documents)
                        })
                        .collect(),
                ),
                units: Reading::Value(counts.documents),
            },
            Source::Proportion { .. } => Measured::Proportion {
                bad: Reading::Value(counts.errors),
                total: Reading::Value(counts.documents),
            },
            Source::Quantile { buckets, .. } if buckets.contains("page_duration") => {
                Measured::Quantile {
                    buckets: counts.histogram(&PAGE_SECONDS_BUCKETS, &counts.page_seconds),
                }
            }
            Source::Quantile { .. } => Measured::Quantile {
                buckets: counts.histogram(&DOCUMENT_SECONDS_BUCKETS, &counts.seconds),
            },
            // breaker-opens: the vLLM tier never failed.
            Source::Value { .. } => Measured::Value {
                value: Reading::Value(0.0),
                samples: None,
            },
            other => panic!("not read from Prometheus: {other:?}"),
        };
        ReadingResult {
            check: request.check.clone(),
            kind: request.kind,
            role: request.role,
            revision: request.revision.clone(),
            query: None,
            measured,
        }
    }
}

fn lognormal(rng: &mut StdRng, median: f64, p95: f64, factor: f64) -> f64 {
    let sigma = (p95 / median).ln() / 1.644_853_6;
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
    median * factor * (sigma * z).exp()
}

/// How one rollout ended, and the canary documents each step it completed had seen.
#[derive(Debug)]
struct Outcome {
    promoted: bool,
    rolled_back: bool,
    documents_per_step: Vec<f64>,
}

fn simulate(traffic: &Traffic, canary_errors: f64, rng: &mut StdRng) -> Outcome {
    let now: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    let mut input = Input {
        generation: Some(2),
        rollout: rollout(),
        sizes: Sizes {
            model_replicas: 2,
            gpus_per_replica: 1,
            worker_replicas: WORKERS,
            worker_concurrency: 4,
        },
        desired: canary(),
        status: MineruDeploymentStatus {
            stable: Some(stable()),
            ..MineruDeploymentStatus::default()
        },
        observed: Observed::default(),
        analysis: None,
        commands: Vec::new(),
        now,
    };
    let mut exported = Exported {
        start: now,
        by_interval: Vec::new(),
    };
    let mut documents_per_step = Vec::new();
    let mut canary_documents = 0.0;
    let per_interval = traffic.documents_per_hour * INTERVAL.as_secs_f64() / 3600.0;
    loop {
        // The cluster does what the last decision said: every planned replica ready.
        let decision = step(&input);
        let before = input.status.current_step;
        input.status = decision.status;
        input.analysis = None;
        input.observed.worker_ready = decision
            .plan
            .worker
            .iter()
            .map(|s| (s.revision.clone(), s.replicas))
            .collect();
        input.observed.model_ready = decision
            .plan
            .model
            .iter()
            .map(|s| (s.revision.clone(), s.replicas))
            .collect();
        let status = &input.status;
        if status.current_step != before && before.is_some() {
            documents_per_step.push(canary_documents);
            canary_documents = 0.0;
        }
        if status.last_rollback.is_some() {
            return Outcome {
                promoted: false,
                rolled_back: true,
                documents_per_step,
            };
        }
        if status.stable == Some(canary()) && status.promoted_at.is_none() {
            return Outcome {
                promoted: true,
                rolled_back: false,
                documents_per_step,
            };
        }
        if input.now.as_second() - now.as_second() > GIVE_UP.as_secs() as i64 {
            return Outcome {
                promoted: false,
                rolled_back: false,
                documents_per_step,
            };
        }
        // One interval of documents, split as the entry Service splits them.
        let share = match (&status.canary, &status.stable) {
            (Some(_), _) => f64::from(status.canary_share.unwrap_or(0)) / 100.0,
            (None, Some(stable)) if *stable == canary() => 1.0,
            _ => 0.0,
        };
        let mut interval = vec![
            (canary().worker_revision, Counts::default()),
            (stable().worker_revision, Counts::default()),
        ];
        for (_, counts) in &mut interval {
            counts.seconds = vec![0.0; DOCUMENT_SECONDS_BUCKETS.len()];
            counts.page_seconds = vec![0.0; PAGE_SECONDS_BUCKETS.len()];
        }
        let arrivals = poisson(rng, per_interval);
        for _ in 0..arrivals {
            let to_canary = rng.random::<f64>() < share;
            let (counts, errors) = if to_canary {
                canary_documents += 1.0;
                (&mut interval[0].1, canary_errors)
            } else {
                (&mut interval[1].1, 1.0)
            };
            counts.documents += 1.0;
            if rng.random::<f64>() < traffic.error_ratio * errors {
                counts.errors += 1.0;
            }
            let seconds = lognormal(rng, traffic.latency.median, traffic.latency.p95, 1.0);
            let page = lognormal(
                rng,
                traffic.page_seconds.median,
                traffic.page_seconds.p95,
                1.0,
            );
            for (count, bound) in counts.seconds.iter_mut().zip(DOCUMENT_SECONDS_BUCKETS) {
                *count += f64::from(u8::from(seconds <= bound));
            }
            for (count, bound) in counts.page_seconds.iter_mut().zip(PAGE_SECONDS_BUCKETS) {
                *count += f64::from(u8::from(page <= bound));
            }
        }
        exported.by_interval.push(interval);
        input.now = input.now.checked_add(INTERVAL).unwrap();
        let Needs { readings, .. } = needs(&input);
        if !readings.is_empty() {
            input.analysis = Some(AnalysisRound {
                at: input.now,
                readings: readings.iter().map(|r| exported.read(r)).collect(),
                quality: Vec::new(),
                quality_documents: None,
            });
        }
    }
}

fn poisson(rng: &mut StdRng, mean: f64) -> u32 {
    // Knuth's method in chunks, so that a large mean does not underflow e^-mean.
    let mut left = mean;
    let mut count = 0;
    while left > 0.0 {
        let chunk = left.min(30.0);
        left -= chunk;
        let limit = (-chunk).exp();
        let mut product: f64 = rng.random();
        while product > limit {
            count += 1;
            product *= rng.random::<f64>();
        }
    }
    count
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn traffic() -> Traffic {
    Traffic {
        documents_per_hour: DOCUMENTS_PER_HOUR,
        ..Traffic::default()
    }
}

fn share(outcomes: &[Outcome], wanted: fn(&Outcome) -> bool) -> f64 {
    outcomes.iter().filter(|o| wanted(o)).count() as f64 / outcomes.len() as f64
}

#[test]
fn equal_canaries_are_promoted_and_almost_never_rolled_back() {
    let mut rng = StdRng::seed_from_u64(11);
    let equal: Vec<Outcome> = (0..ROLLOUTS)
        .map(|_| simulate(&traffic(), 1.0, &mut rng))
        .collect();
    let false_rollbacks = share(&equal, |o| o.rolled_back);
    let promoted = share(&equal, |o| o.promoted);
    let mut documents: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for outcome in equal.iter().filter(|o| o.promoted) {
        for (step, n) in outcome.documents_per_step.iter().enumerate() {
            documents[step].push(*n);
        }
    }
    let needed: Vec<f64> = documents.iter_mut().map(|d| median(d)).collect();
    eprintln!(
        "equal canaries at {DOCUMENTS_PER_HOUR} documents/hour, 2% errors: {:.1}% promoted, {:.2}% rolled back; canary documents each step needed (median): {needed:?}",
        promoted * 100.0,
        false_rollbacks * 100.0,
    );
    assert!(false_rollbacks < 0.01, "false rollbacks {false_rollbacks}");
    assert!(promoted >= 0.95, "equal canaries promoted {promoted}");

    // The planner's forecast of the same traffic agrees on the documents each step needs.
    let forecast = planner::forecast(&rollout(), WORKERS, &traffic(), Canary::EQUAL, 400, 5);
    for (step, engine) in forecast.iter().zip(&needed) {
        let planned = step.documents_median.unwrap();
        assert!(
            (planned / engine - 1.0).abs() < 0.35,
            "step {}: the planner forecasts {planned} documents, the engine needed {engine}",
            step.index + 1
        );
    }
}

#[test]
fn canaries_with_three_times_the_errors_are_stopped() {
    let mut rng = StdRng::seed_from_u64(12);
    let regressed: Vec<Outcome> = (0..ROLLOUTS)
        .map(|_| simulate(&traffic(), 3.0, &mut rng))
        .collect();
    let caught = share(&regressed, |o| !o.promoted);
    let rolled_back = share(&regressed, |o| o.rolled_back);
    eprintln!(
        "canaries with 3x the errors: {:.1}% stopped, {:.1}% of them rolled back (the rest held at 50% or 100%)",
        caught * 100.0,
        rolled_back * 100.0
    );
    assert!(caught >= 0.95, "caught {caught}");
}
