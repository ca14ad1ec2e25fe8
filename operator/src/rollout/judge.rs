//! Judging: every reading of a round — Prometheus values, sequential tests on counts and
//! histograms, pod restarts, golden documents — becomes a verdict here, and the verdicts a
//! [`Judgement`] the state machine applies.
//!
//! Query errors (of any check) have their own counter and never count as a pass; a failed
//! criterion counts toward `failureLimit` for the current step; a trigger breach must last its
//! `for` before it rolls back. A statistical trigger passes unless its evidence establishes a
//! breach: too few documents are simply no breach.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mineru_crds::{CheckKind, CheckStatus, Policy, RollbackReason, Verdict};

use super::{
    AnalysisRound, ReadingResult, Role,
    analysis::{self, Applicable, status_of},
    state::{Evidence, View, human, later},
};
use crate::{
    evidence::{self, Categories, Confidence, Counts, Histogram, Judged, Outcome},
    gates::{
        Check, Source,
        reading::{Measured, Reading},
        verdict::{self, Evaluation, Readings},
    },
};

/// What a round of readings calls for.
#[derive(Debug, Default)]
pub(super) struct Judgement {
    /// The new status of every check answered this round, in the order judged.
    pub records: Vec<CheckStatus>,
    /// Whether a query failed this round.
    pub error: bool,
    /// Send all traffic back, for this reason.
    pub rollback: Option<Evidence>,
    /// Limits reached with a policy to hold: stay at this step and say why (once each).
    pub holds: Vec<String>,
}

/// Judges `round` for the checks of this stage. `consecutive_errors` is the count before it.
pub(super) fn judge(
    view: &View<'_>,
    round: &AnalysisRound,
    at: Timestamp,
    consecutive_errors: i32,
) -> Judgement {
    let Some((judged, _)) = analysis::judged(view.s, view.stage()) else {
        return Judgement::default();
    };
    let confidence = Confidence::from(&view.input.rollout.analysis.evidence);
    let mut judgement = Judgement::default();
    let mut answered = Vec::new();
    for Applicable { check, skipped } in analysis::applicable(view) {
        let revision = judged.of(check.tier).to_owned();
        let evaluation = match (&skipped, &check.source) {
            (Some(why), _) => Some(skip(why)),
            (None, Source::CanaryVllmRestarts) => Some(judge_restarts(
                &check,
                view.input.observed.restarts(&revision),
            )),
            (None, Source::Quality) => (!round.quality.is_empty()).then(|| {
                let wanted = round
                    .quality_documents
                    .or(analysis::quality_documents(view))
                    .unwrap_or(round.quality.len());
                verdict::evaluate_quality(&check.threshold, &round.quality, wanted)
            }),
            (None, _) => judge_readings(&check, &revision, &round.readings, &confidence),
        };
        let Some(evaluation) = evaluation else {
            continue;
        };
        let query = query_of(&check, &revision, &round.readings);
        judgement.error |= evaluation.verdict == Verdict::Error;
        let record = record(view, &check, revision, query, evaluation, at);
        judgement.records.push(record);
        answered.push(check);
    }
    let errors = if judgement.error {
        consecutive_errors + 1
    } else {
        0
    };
    // Only what this round answered is acted on: a verdict kept from an earlier round (the
    // golden documents run once a step) has had its effect already.
    act(view, &answered, errors, at, &mut judgement);
    judgement
}

fn skip(why: &str) -> Evaluation {
    Evaluation {
        verdict: Verdict::Skipped,
        value: None,
        stable_value: None,
        samples: None,
        stable_samples: None,
        needed: None,
        message: Some(why.to_owned()),
    }
}

fn find<'a>(
    readings: &'a [ReadingResult],
    check: &Check,
    role: Role,
    revision: Option<&str>,
) -> Option<&'a ReadingResult> {
    readings.iter().find(|r| {
        r.check == check.name
            && r.kind == check.kind
            && r.role == role
            && revision.is_none_or(|revision| r.revision == revision)
    })
}

fn query_of(check: &Check, revision: &str, readings: &[ReadingResult]) -> Option<String> {
    find(readings, check, Role::Judged, Some(revision)).and_then(|r| r.query.clone())
}

/// A Prometheus check from its readings; `None` when the round did not read it (a result for
/// another revision is stale and ignored).
fn judge_readings(
    check: &Check,
    revision: &str,
    readings: &[ReadingResult],
    confidence: &Confidence,
) -> Option<Evaluation> {
    let judged = &find(readings, check, Role::Judged, Some(revision))?.measured;
    let baseline = find(readings, check, Role::Baseline, None).map(|r| &r.measured);
    if check.threshold.compares_with_stable() && baseline.is_none() {
        return None;
    }
    if let Some(error) = judged.error().or(baseline.and_then(Measured::error)) {
        return Some(error_evaluation(format!("query failed: {error}")));
    }
    let evaluation = match (judged, &check.source) {
        (
            Measured::Value { value, samples },
            Source::Value {
                samples: wanted, ..
            },
        ) => {
            let stable = match baseline {
                Some(Measured::Value { value, .. }) => Some(value.clone()),
                _ => None,
            };
            verdict::evaluate(
                &check.threshold,
                wanted.as_ref().map(|s| s.min),
                &Readings {
                    value: value.clone(),
                    stable,
                    samples: samples.clone(),
                },
            )
        }
        (Measured::Proportion { bad, total }, Source::Proportion { .. }) => {
            let counts = |bad: &Reading, total: &Reading| match (bad.count(), total.count()) {
                (Some(bad), Some(total)) => Ok(Counts { bad, total }),
                _ => Err(format!(
                    "the counts are not numbers (bad {bad:?}, total {total:?})"
                )),
            };
            let canary = match counts(bad, total) {
                Ok(counts) => counts,
                Err(error) => return Some(error_evaluation(error)),
            };
            let baseline = match baseline {
                Some(Measured::Proportion { bad, total }) => match counts(bad, total) {
                    Ok(counts) => Some(counts),
                    Err(error) => return Some(error_evaluation(error)),
                },
                _ => None,
            };
            statistical(
                check,
                evidence::proportion(canary, baseline, &check.threshold, confidence),
            )
        }
        (Measured::Quantile { buckets }, Source::Quantile { q, .. }) => {
            let histogram = |reading: &Reading| match reading {
                Reading::Buckets(histogram) => Ok(histogram.clone()),
                Reading::Empty => Ok(Histogram::default()),
                other => Err(format!("not histogram buckets: {other:?}")),
            };
            let canary = match histogram(buckets) {
                Ok(histogram) => histogram,
                Err(error) => return Some(error_evaluation(error)),
            };
            let baseline = match baseline {
                Some(Measured::Quantile { buckets }) => match histogram(buckets) {
                    Ok(histogram) => Some(histogram),
                    Err(error) => return Some(error_evaluation(error)),
                },
                _ => None,
            };
            statistical(
                check,
                evidence::quantile(&canary, baseline.as_ref(), *q, &check.threshold, confidence),
            )
        }
        (Measured::Distribution { counts, units }, Source::Distribution { min_samples, .. }) => {
            let side = |counts: &Reading, units: &Reading| match (counts, units.count()) {
                (Reading::Counts(by_category), Some(documents)) => Ok(Some(Categories {
                    counts: by_category.clone(),
                    documents,
                })),
                // No such series at all: a worker from before these metrics.
                (Reading::Empty, _) => Ok(None),
                (other, _) => Err(format!(
                    "not counts by category and documents: {other:?} {units:?}"
                )),
            };
            let canary = match side(counts, units) {
                Ok(canary) => canary.unwrap_or_default(),
                Err(error) => return Some(error_evaluation(error)),
            };
            let baseline = match baseline {
                Some(Measured::Distribution { counts, units }) => match side(counts, units) {
                    Ok(Some(baseline)) => baseline,
                    Ok(None) => {
                        return Some(skip(
                            "the baseline exports no block counts (a worker older than these metrics, or a legacy Service)",
                        ));
                    }
                    Err(error) => return Some(error_evaluation(error)),
                },
                _ => return Some(skip("no baseline to compare the distribution with")),
            };
            statistical(
                check,
                evidence::distribution(
                    &canary,
                    &baseline,
                    *min_samples,
                    &check.threshold,
                    confidence,
                ),
            )
        }
        _ => error_evaluation("the readings do not match the check's source".into()),
    };
    Some(evaluation)
}

/// A sequential test's verdict: a criterion passes or fails once the evidence says so; a
/// trigger is in breach only once the evidence establishes it.
fn statistical(check: &Check, judged: Judged) -> Evaluation {
    let verdict = match (check.kind, judged.outcome) {
        (_, Outcome::Reject) => Verdict::Fail,
        (CheckKind::Promotion, Outcome::Accept) => Verdict::Pass,
        (CheckKind::Promotion, Outcome::Continue) => Verdict::Inconclusive,
        (CheckKind::Trigger, _) => Verdict::Pass,
    };
    let message = match verdict {
        Verdict::Pass if check.kind == CheckKind::Trigger => Some(format!(
            "no breach established over {} documents",
            judged.samples.round()
        )),
        _ => judged.reason,
    };
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    Evaluation {
        verdict,
        value: finite(judged.value),
        stable_value: finite(judged.baseline_value),
        samples: Some(judged.samples),
        stable_samples: judged.baseline_samples,
        needed: judged
            .needed
            .filter(|n| verdict == Verdict::Inconclusive && n.is_finite())
            .map(f64::ceil),
        message,
    }
}

fn error_evaluation(message: String) -> Evaluation {
    Evaluation {
        verdict: Verdict::Error,
        value: None,
        stable_value: None,
        samples: None,
        stable_samples: None,
        needed: None,
        message: Some(message),
    }
}

/// A pod-status check: the restart count judged like any other value.
pub(super) fn judge_restarts(check: &Check, restarts: i32) -> Evaluation {
    let readings = Readings {
        value: Reading::Value(f64::from(restarts)),
        stable: None,
        samples: None,
    };
    verdict::evaluate(&check.threshold, None, &readings)
}

/// The check's new status, carrying its failure count and breach start forward.
fn record(
    view: &View<'_>,
    check: &Check,
    revision: String,
    query: Option<String>,
    evaluation: Evaluation,
    at: Timestamp,
) -> CheckStatus {
    let previous = status_of(view.s, check);
    let verdict = evaluation.verdict;
    let failures = previous.map_or(0, |p| p.failures)
        + i32::from(verdict == Verdict::Fail && check.kind == CheckKind::Promotion);
    let since = previous.and_then(|p| p.breaching_since.clone());
    let breaching_since = match (check.kind, verdict) {
        (CheckKind::Trigger, Verdict::Fail) => since.or(Some(Time(at))),
        (CheckKind::Trigger, Verdict::Pass | Verdict::Skipped) => None,
        _ => since,
    };
    CheckStatus {
        name: check.name.clone(),
        kind: check.kind,
        revision,
        value: evaluation.value,
        stable_value: evaluation.stable_value,
        threshold: check.threshold.describe(),
        samples: evaluation.samples,
        stable_samples: evaluation.stable_samples,
        needed: evaluation.needed,
        verdict,
        failures,
        message: evaluation.message,
        query,
        breaching_since,
        evaluated_at: Time(at),
    }
}

/// In order of severity: a sustained trigger breach, a criterion failed beyond
/// `failureLimit`, too many query errors in a row.
fn act(
    view: &View<'_>,
    answered: &[Check],
    consecutive_errors: i32,
    at: Timestamp,
    judgement: &mut Judgement,
) {
    let analysis = &view.input.rollout.analysis;
    let records = &judgement.records;
    let record_of = |check: &Check| {
        records
            .iter()
            .find(|r| r.name == check.name && r.kind == check.kind)
    };
    for check in answered.iter().filter(|c| c.kind == CheckKind::Trigger) {
        let Some(status) = record_of(check) else {
            continue;
        };
        let sustained = status
            .breaching_since
            .as_ref()
            .is_some_and(|since| at >= later(since.0, check.sustained_for));
        if status.verdict == Verdict::Fail && sustained {
            let reason = quality_or(check, RollbackReason::TriggerFired);
            let message = format!(
                "rollback trigger {} breached for {}",
                check.name,
                human(check.sustained_for)
            );
            judgement.rollback = Some(evidence(reason, status, message));
            return;
        }
    }
    let mut holds = Vec::new();
    for check in answered.iter().filter(|c| c.kind == CheckKind::Promotion) {
        let Some(status) = record_of(check) else {
            continue;
        };
        if status.verdict != Verdict::Fail || status.failures <= analysis.failure_limit {
            continue;
        }
        let message = format!(
            "promotion criterion {} failed {} time(s) in this step (failureLimit {})",
            check.name, status.failures, analysis.failure_limit
        );
        match check.on_fail {
            Policy::Rollback => {
                let reason = quality_or(check, RollbackReason::CriterionFailed);
                judgement.rollback = Some(evidence(reason, status, message));
                return;
            }
            Policy::Hold if status.failures == analysis.failure_limit + 1 => {
                holds.push(format!(
                    "{}; holding at this step",
                    with_detail(&message, status)
                ));
            }
            Policy::Hold => {}
        }
    }
    let limit = analysis.consecutive_error_limit;
    if consecutive_errors > limit {
        let message = format!("{consecutive_errors} query errors in a row (limit {limit})");
        let culprit = records.iter().find(|s| s.verdict == Verdict::Error);
        match analysis.on_error {
            Policy::Rollback => {
                let reason = RollbackReason::AnalysisError;
                judgement.rollback = Some(match culprit {
                    Some(status) => evidence(reason, status, message),
                    None => Evidence::plain(reason, message),
                });
                return;
            }
            Policy::Hold if consecutive_errors == limit + 1 => {
                holds.push(format!("{message}; holding at this step"));
            }
            Policy::Hold => {}
        }
    }
    judgement.holds = holds;
}

fn quality_or(check: &Check, reason: RollbackReason) -> RollbackReason {
    if check.source == Source::Quality {
        RollbackReason::QualityRegressed
    } else {
        reason
    }
}

fn with_detail(message: &str, status: &CheckStatus) -> String {
    match &status.message {
        Some(detail) => format!("{message} ({detail})"),
        None => message.to_owned(),
    }
}

fn evidence(reason: RollbackReason, status: &CheckStatus, message: String) -> Evidence {
    Evidence {
        reason,
        check: Some(status.name.clone()),
        query: status.query.clone(),
        value: status.value,
        threshold: Some(status.threshold.clone()),
        message: with_detail(&message, status),
    }
}
