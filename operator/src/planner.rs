//! Forecasts of a rollout at a given traffic: how long each step takes to decide, and how often
//! it decides wrong — by sending simulated documents through the same sequential tests
//! ([`crate::evidence`]) and the same bucket bounds the engine judges real documents with.
//!
//! Each step is simulated on its own, as the engine judges it: its evidence starts with its
//! traffic; its statistical criteria pass once (and keep their Pass); a criterion's Fail does
//! what its `onFail` says; a trigger in breach for its `for` rolls back; the step is left once
//! its pause is over and every simulated criterion passed, and gives up at `maxDuration`.
//! Checks that read what only their author knows (user queries, golden documents, pod status,
//! GPU-tier series) are assumed to pass and are listed as not simulated.

use std::time::Duration;

use mineru_crds::{CheckKind, Policy, RolloutSpec};
use mineru_protocol::worker::{DOCUMENT_SECONDS_BUCKETS, PAGE_SECONDS_BUCKETS};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    evidence::{self, Confidence, Counts, Histogram, Judged, Outcome},
    gates::{self, Check, Measure, Source},
    rollout,
};

/// A log-normal spread, given by its median and 95th percentile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub p95: f64,
}

impl Spread {
    fn sample(&self, rng: &mut StdRng, factor: f64) -> f64 {
        let sigma = (self.p95 / self.median).max(1.0).ln() / 1.644_853_6;
        self.median * factor * (sigma * standard_normal(rng)).exp()
    }
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    // Box–Muller; 1 − u keeps the logarithm finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// The traffic a forecast assumes: documents arrive at random (Poisson) at this rate, fail
/// independently at this ratio, and take these times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    pub documents_per_hour: f64,
    pub error_ratio: f64,
    pub latency: Spread,
    pub page_seconds: Spread,
}

impl Default for Traffic {
    /// The change's plan: 60 documents an hour, P95 at 90 s; errors at the SLO's 2%, where the
    /// ratio checks take longest.
    fn default() -> Self {
        Traffic {
            documents_per_hour: 60.0,
            error_ratio: 0.02,
            latency: Spread {
                median: 30.0,
                p95: 90.0,
            },
            page_seconds: Spread {
                median: 2.0,
                p95: 4.0,
            },
        }
    }
}

/// How a canary differs from its baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Canary {
    /// Its error ratio, as a multiple of the baseline's.
    pub errors: f64,
    /// Its document and per-page times, as multiples of the baseline's.
    pub slowdown: f64,
}

impl Canary {
    /// A canary exactly as good as its baseline.
    pub const EQUAL: Canary = Canary {
        errors: 1.0,
        slowdown: 1.0,
    };
}

/// How a simulated step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// Left (or promoted) after this long, with this many canary documents seen.
    Passed { after: Duration, documents: f64 },
    /// A criterion failed with `onFail: Rollback`, or a trigger fired.
    RolledBack { after: Duration, by: String },
    /// A criterion failed with `onFail: Hold`.
    Held { after: Duration, by: String },
    /// `maxDuration` passed without a decision.
    Undecided,
}

/// A step's forecast over many simulated runs of an equal canary and of a regressed one.
#[derive(Clone, Debug, PartialEq)]
pub struct StepForecast {
    /// 0-based index and weight.
    pub index: usize,
    pub weight: i32,
    /// The canary's real share of documents (replica routing rounds to whole workers).
    pub share: f64,
    /// The step's longest wait for evidence.
    pub max_duration: Duration,
    /// Simulated criteria and triggers, and those assumed to pass.
    pub simulated: Vec<String>,
    pub not_simulated: Vec<String>,
    /// An equal canary: when it passes (median and 90th percentile of the runs that did),
    /// the canary documents that took, and how often it does something else.
    pub passed_median: Option<Duration>,
    pub passed_p90: Option<Duration>,
    pub documents_median: Option<f64>,
    pub undecided: f64,
    pub false_rollback: f64,
    pub false_hold: f64,
    /// Which checks rolled back or held the equal canary, with how often.
    pub wrongly_stopped_by: Vec<(String, f64)>,
    /// A regressed canary: how often the step lets it through, and how soon it is stopped.
    pub missed_regression: f64,
    pub caught_median: Option<Duration>,
}

/// Per document, what the simulated checks read.
#[derive(Clone, Debug)]
struct Side {
    errors: f64,
    documents: f64,
    seconds: Vec<f64>,
    page_seconds: Vec<f64>,
}

impl Side {
    fn new() -> Side {
        Side {
            errors: 0.0,
            documents: 0.0,
            seconds: vec![0.0; DOCUMENT_SECONDS_BUCKETS.len()],
            page_seconds: vec![0.0; PAGE_SECONDS_BUCKETS.len()],
        }
    }

    fn add(&mut self, error: bool, seconds: f64, page_seconds: f64) {
        self.documents += 1.0;
        self.errors += f64::from(u8::from(error));
        for (count, bound) in self.seconds.iter_mut().zip(DOCUMENT_SECONDS_BUCKETS) {
            *count += f64::from(u8::from(seconds <= bound));
        }
        for (count, bound) in self.page_seconds.iter_mut().zip(PAGE_SECONDS_BUCKETS) {
            *count += f64::from(u8::from(page_seconds <= bound));
        }
    }

    fn histogram(&self, measure: Measure) -> Histogram {
        let (bounds, counts): (&[f64], &[f64]) = match measure {
            Measure::SecondsPerPage => (&PAGE_SECONDS_BUCKETS, &self.page_seconds),
            _ => (&DOCUMENT_SECONDS_BUCKETS, &self.seconds),
        };
        let mut buckets: Vec<(f64, f64)> =
            bounds.iter().copied().zip(counts.iter().copied()).collect();
        buckets.push((f64::INFINITY, self.documents));
        Histogram::new(buckets).unwrap_or_default()
    }

    fn counts(&self) -> Counts {
        Counts {
            bad: self.errors,
            total: self.documents,
        }
    }
}

/// The verdict of a simulated check on the documents so far.
fn judge(check: &Check, canary: &Side, baseline: &Side, confidence: &Confidence) -> Outcome {
    let measure = check.measure.expect("only measured checks are simulated");
    let judged: Judged = match (&check.source, measure) {
        (Source::Proportion { .. }, _) => evidence::proportion(
            canary.counts(),
            Some(baseline.counts()),
            &check.threshold,
            confidence,
        ),
        (Source::Quantile { q, .. }, measure) => evidence::quantile(
            &canary.histogram(measure),
            Some(&baseline.histogram(measure)),
            *q,
            &check.threshold,
            confidence,
        ),
        _ => unreachable!("measured checks are statistical"),
    };
    judged.outcome
}

/// One run of one step.
#[allow(clippy::too_many_arguments)]
fn run_step(
    criteria: &[Check],
    triggers: &[Check],
    traffic: &Traffic,
    canary_kind: Canary,
    canary_rate: f64,
    baseline_rate: f64,
    pause: Duration,
    max_duration: Duration,
    interval: Duration,
    failure_limit: i32,
    confidence: &Confidence,
    rng: &mut StdRng,
) -> Ending {
    let mut canary = Side::new();
    let mut baseline = Side::new();
    let total_rate = (canary_rate + baseline_rate) / 3600.0;
    let canary_odds = canary_rate / 3600.0 / total_rate.max(f64::MIN_POSITIVE);
    let error_ratio = |factor: f64| (traffic.error_ratio * factor).min(1.0);
    let mut passed = vec![false; criteria.len()];
    let mut failures = vec![0; criteria.len()];
    let mut breaching: Vec<Option<f64>> = vec![None; triggers.len()];
    let mut next_arrival = exponential(rng, total_rate);
    let (interval, end) = (interval.as_secs_f64(), max_duration.as_secs_f64());
    let mut now = interval;
    let mut changed = false;
    while now <= end {
        while next_arrival <= now {
            let (side, factor) = if rng.random::<f64>() < canary_odds {
                (&mut canary, canary_kind)
            } else {
                (&mut baseline, Canary::EQUAL)
            };
            let error = rng.random::<f64>() < error_ratio(factor.errors);
            side.add(
                error,
                traffic.latency.sample(rng, factor.slowdown),
                traffic.page_seconds.sample(rng, factor.slowdown),
            );
            next_arrival += exponential(rng, total_rate);
            changed = true;
        }
        let after = Duration::from_secs_f64(now);
        if changed {
            for (index, check) in triggers.iter().enumerate() {
                let breach = judge(check, &canary, &baseline, confidence) == Outcome::Reject;
                breaching[index] = breach.then(|| breaching[index].unwrap_or(now));
            }
            for (index, check) in criteria.iter().enumerate() {
                if passed[index] {
                    continue;
                }
                match judge(check, &canary, &baseline, confidence) {
                    Outcome::Accept => passed[index] = true,
                    Outcome::Reject => {
                        failures[index] += 1;
                        if failures[index] > failure_limit {
                            let by = check.name.clone();
                            return match check.on_fail {
                                Policy::Rollback => Ending::RolledBack { after, by },
                                Policy::Hold => Ending::Held { after, by },
                            };
                        }
                    }
                    Outcome::Continue => {}
                }
            }
            changed = false;
        }
        let fired = triggers.iter().zip(&breaching).find(|(check, since)| {
            since.is_some_and(|since| now - since >= check.sustained_for.as_secs_f64())
        });
        if let Some((check, _)) = fired {
            return Ending::RolledBack {
                after,
                by: check.name.clone(),
            };
        }
        let breach = breaching.iter().any(Option::is_some);
        if now >= pause.as_secs_f64() && passed.iter().all(|p| *p) && !breach {
            return Ending::Passed {
                after,
                documents: canary.documents,
            };
        }
        now += interval;
    }
    Ending::Undecided
}

fn exponential(rng: &mut StdRng, rate: f64) -> f64 {
    if rate <= 0.0 {
        return f64::INFINITY;
    }
    -(1.0 - rng.random::<f64>()).ln() / rate
}

/// What `value` says of each ending that has it, sorted.
fn sorted(endings: &[Ending], value: impl Fn(&Ending) -> Option<f64>) -> Vec<f64> {
    let mut values: Vec<f64> = endings.iter().filter_map(value).collect();
    values.sort_by(f64::total_cmp);
    values
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[rank])
}

/// Forecasts every step of `rollout` with `worker_replicas` workers at `traffic`: `runs`
/// simulated runs each of an equal canary and of `regressed`, from `seed`.
pub fn forecast(
    rollout: &RolloutSpec,
    worker_replicas: i32,
    traffic: &Traffic,
    regressed: Canary,
    runs: usize,
    seed: u64,
) -> Vec<StepForecast> {
    let analysis = &rollout.analysis;
    let checks = gates::checks(analysis, &rollout.steps, false);
    let confidence = Confidence::from(&analysis.evidence);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut previous_share = 0.0;
    // Probe documents per hour to each side, when they count as evidence.
    let probes = analysis
        .quality
        .as_ref()
        .map(|q| &q.probes)
        .filter(|p| p.count_as_evidence)
        .map_or(0.0, |p| p.documents_per_hour);
    rollout
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let applies = |c: &&Check| c.kind == CheckKind::Trigger || c.gates_step(index as i32);
            let (measured, unmeasured): (Vec<&Check>, Vec<&Check>) = checks
                .iter()
                .filter(applies)
                .partition(|c| c.measure.is_some());
            let criteria: Vec<Check> = measured
                .iter()
                .filter(|c| c.kind == CheckKind::Promotion)
                .map(|c| (*c).clone())
                .collect();
            let triggers: Vec<Check> = measured
                .iter()
                .filter(|c| c.kind == CheckKind::Trigger)
                .map(|c| (*c).clone())
                .collect();
            let share = rollout::step_share(rollout, worker_replicas, step.weight);
            // Beside a 100% canary no baseline traffic is left: its documents of the step before
            // stand in, at the rate it served them then. With probes, each comparison is judged
            // on clients' documents and on probes apart, and the faster decides: simulated as
            // one test at the higher of the two rates (probes go to both sides while they split
            // the traffic). The last step's SLOs count every document the canary gets.
            let clients_baseline = if step.weight >= 100 {
                traffic.documents_per_hour * (1.0 - previous_share)
            } else {
                traffic.documents_per_hour * (1.0 - share)
            };
            let clients_canary = traffic.documents_per_hour * share;
            let (canary_rate, baseline_rate) = if step.weight >= 100 {
                (clients_canary + probes, clients_baseline)
            } else if probes > clients_canary {
                (probes, probes)
            } else {
                (clients_canary, clients_baseline)
            };
            previous_share = share;
            let pause = step.pause.as_ref().map_or(Duration::ZERO, |p| p.get());
            let mut simulate = |kind: Canary| -> Vec<Ending> {
                (0..runs)
                    .map(|_| {
                        run_step(
                            &criteria,
                            &triggers,
                            traffic,
                            kind,
                            canary_rate,
                            baseline_rate,
                            pause,
                            step.max_duration.get(),
                            analysis.interval.get(),
                            analysis.failure_limit,
                            &confidence,
                            &mut rng,
                        )
                    })
                    .collect()
            };
            let equal = simulate(Canary::EQUAL);
            let worse = simulate(regressed);
            let rate = |endings: &[Ending], wanted: fn(&Ending) -> bool| {
                endings.iter().filter(|e| wanted(e)).count() as f64 / runs.max(1) as f64
            };
            let passed_after = sorted(&equal, |e| match e {
                Ending::Passed { after, .. } => Some(after.as_secs_f64()),
                _ => None,
            });
            let documents = sorted(&equal, |e| match e {
                Ending::Passed { documents, .. } => Some(*documents),
                _ => None,
            });
            let caught_after = sorted(&worse, |e| match e {
                Ending::RolledBack { after, .. } | Ending::Held { after, .. } => {
                    Some(after.as_secs_f64())
                }
                _ => None,
            });
            let seconds = |s: Option<f64>| s.map(Duration::from_secs_f64);
            let mut wrongly_stopped_by: Vec<(String, f64)> = Vec::new();
            for ending in &equal {
                if let Ending::RolledBack { by, .. } | Ending::Held { by, .. } = ending {
                    match wrongly_stopped_by.iter_mut().find(|(name, _)| name == by) {
                        Some((_, share)) => *share += 1.0 / runs as f64,
                        None => wrongly_stopped_by.push((by.clone(), 1.0 / runs as f64)),
                    }
                }
            }
            StepForecast {
                index,
                weight: step.weight,
                share,
                max_duration: step.max_duration.get(),
                simulated: measured.iter().map(|c| c.name.clone()).collect(),
                not_simulated: unmeasured.iter().map(|c| c.name.clone()).collect(),
                passed_median: seconds(quantile(&passed_after, 0.5)),
                passed_p90: seconds(quantile(&passed_after, 0.9)),
                documents_median: quantile(&documents, 0.5),
                undecided: rate(&equal, |e| matches!(e, Ending::Undecided)),
                false_rollback: rate(&equal, |e| matches!(e, Ending::RolledBack { .. })),
                false_hold: rate(&equal, |e| matches!(e, Ending::Held { .. })),
                wrongly_stopped_by,
                missed_regression: rate(&worse, |e| matches!(e, Ending::Passed { .. })),
                caught_median: seconds(quantile(&caught_after, 0.5)),
            }
        })
        .collect()
}
