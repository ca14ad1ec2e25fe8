//! Analysis rounds: which checks run when, and what their verdicts do.
//!
//! A round counts once: only when it is due (`interval` after the last counted one), so that a
//! replay of the same round changes no counter. Query errors (of any check) and inconclusive
//! criteria have their own counters and never count as a pass; a failed criterion counts toward
//! `failureLimit` for the current step; a trigger breach must last its `for` before it rolls back.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mineru_crds::{
    CheckKind, CheckStatus, LegacyRole, MineruDeploymentStatus, Policy, QualityResult, Revisions,
    RollbackReason, Verdict,
};

use super::{
    AnalysisRequest, AnalysisRound, Baseline, CheckResult, EventReason, Input,
    machine::{Evidence, Machine, Stage, later, stage, whole_second},
};
use crate::gates::{
    self, Check, Source,
    verdict::{self, Evaluation, Reading, Readings},
};

/// The revisions judged and what they are compared with, when analysis runs at all: during
/// steps (canary against stable, or against the legacy Service when migrating) and during the
/// post-promotion window (the promoted revisions alone).
fn judged(status: &MineruDeploymentStatus, stage: Stage) -> Option<(Revisions, Option<Baseline>)> {
    match stage {
        Stage::Stepping(_) => {
            let baseline = match &status.stable {
                Some(stable) => Baseline::Stable(stable.clone()),
                None => Baseline::Legacy,
            };
            Some((status.canary.clone()?, Some(baseline)))
        }
        Stage::Verifying => Some((status.stable.clone()?, None)),
        Stage::Steady | Stage::Warming => None,
    }
}

/// Every check of this rollout; the canary of a migration is held to the migration's bar.
pub(super) fn checks(input: &Input, status: &MineruDeploymentStatus) -> Vec<Check> {
    let migrating = status.legacy == Some(LegacyRole::Serving);
    gates::checks(&input.rollout.analysis, migrating)
}

/// The checks that run in this stage. After promotion there is no stable traffic left to
/// compare with, so ratio checks (and the golden-document comparison) stop there.
pub(super) fn applicable(
    input: &Input,
    status: &MineruDeploymentStatus,
    checks: &[Check],
) -> Vec<Check> {
    let stage = stage(input, status);
    let Some((judged, baseline)) = judged(status, stage) else {
        return Vec::new();
    };
    let model_changed = match (&baseline, &status.previous_stable) {
        (Some(Baseline::Stable(stable)), _) | (None, Some(stable)) => {
            stable.model_revision != judged.model_revision
        }
        // A migrated stack's vLLM is new whatever the legacy Service ran.
        (Some(Baseline::Legacy), _) => true,
        (None, None) => status.legacy == Some(LegacyRole::Standby),
    };
    let last = input.rollout.steps.len() as i32 - 1;
    checks
        .iter()
        .filter(|check| match stage {
            Stage::Stepping(index) => check.kind == CheckKind::Trigger || check.gates_step(index),
            _ => {
                (check.kind == CheckKind::Trigger || check.gates_step(last))
                    && !check.threshold.compares_with_stable()
                    && check.source != Source::Quality
            }
        })
        // Without a model canary there are no canary vLLM pods to watch.
        .filter(|check| model_changed || check.source != Source::CanaryVllmRestarts)
        .cloned()
        .collect()
}

fn due(input: &Input, status: &MineruDeploymentStatus, at: Timestamp) -> bool {
    let interval = input.rollout.analysis.interval.get();
    status
        .last_analysis_at
        .as_ref()
        .is_none_or(|last| at >= later(last.0, interval))
}

/// The golden documents run once per step that a quality criterion gates, and again only
/// when the last run could not decide; the step says how many.
fn quality_due(input: &Input, status: &MineruDeploymentStatus, checks: &[Check]) -> Option<usize> {
    let quality = input.rollout.analysis.quality.as_ref()?;
    let since = status.step_started_at.as_ref();
    let due = checks
        .iter()
        .filter(|c| c.source == Source::Quality && c.kind == CheckKind::Promotion)
        .any(|c| {
            !status.checks.iter().any(|s| {
                s.name == c.name
                    && s.kind == c.kind
                    && since.is_some_and(|since| s.evaluated_at > *since)
                    && matches!(s.verdict, Verdict::Pass | Verdict::Fail)
            })
        });
    let step = status.current_step.unwrap_or(0).max(0) as usize;
    let counts = &quality.documents_per_step;
    let count = counts.get(step).or(counts.last()).copied().unwrap_or(1);
    due.then_some(count.max(1) as usize)
}

/// What the controller should measure now; `None` when no round is due.
pub fn analysis_request(input: &Input) -> Option<AnalysisRequest> {
    let status = &input.status;
    let (judged, baseline) = judged(status, stage(input, status))?;
    if !due(input, status, whole_second(input.now)) {
        return None;
    }
    let checks = applicable(input, status, &checks(input, status));
    let quality = quality_due(input, status, &checks);
    let checks = checks
        .into_iter()
        .filter(|c| matches!(c.source, Source::Query(_)))
        .collect();
    Some(AnalysisRequest {
        checks,
        judged,
        baseline,
        quality,
    })
}

impl Machine<'_> {
    /// Counts a round of results and applies what they call for.
    pub fn consume(&mut self, round: &AnalysisRound) {
        let Some((judged, _)) = judged(&self.s, self.stage()) else {
            return;
        };
        let at = whole_second(round.at);
        if !due(self.input, &self.s, at) {
            return;
        }
        self.s.last_analysis_at = Some(Time(at));
        if !round.quality.is_empty() {
            self.s.quality = round.quality.clone();
        }
        let mut answered = Vec::new();
        let mut verdicts = Vec::new();
        for check in applicable(self.input, &self.s, &self.checks) {
            let revision = judged.of(check.tier);
            let result = match check.source {
                Source::CanaryVllmRestarts => Some(self.restarts(&check, revision)),
                Source::Quality => {
                    (!round.quality.is_empty()).then(|| quality(&check, revision, &round.quality))
                }
                Source::Query(_) => round
                    .results
                    .iter()
                    .find(|r| {
                        r.name == check.name && r.kind == check.kind && r.revision == revision
                    })
                    .cloned(),
            };
            if let Some(result) = result {
                verdicts.push((check.kind, result.evaluation.verdict));
                self.record(&check, result, at);
                answered.push(check);
            }
        }
        let any = |verdict| verdicts.iter().any(|(_, v)| *v == verdict);
        self.s.consecutive_errors = bump(self.s.consecutive_errors, any(Verdict::Error));
        // Too little data only matters to a decision to promote: a trigger without data is
        // simply not in breach.
        let undecided = verdicts.contains(&(CheckKind::Promotion, Verdict::Inconclusive));
        self.s.consecutive_inconclusive = bump(self.s.consecutive_inconclusive, undecided);
        // Only what this round answered is acted on: a verdict kept from an earlier round (the
        // golden documents run once a step) has had its effect already.
        self.judge(&answered, at);
    }

    fn restarts(&self, check: &Check, revision: &str) -> CheckResult {
        let restarts = self.input.observed.restarts(revision);
        CheckResult {
            name: check.name.clone(),
            kind: check.kind,
            revision: revision.to_owned(),
            query: None,
            evaluation: judge_restarts(check, restarts),
        }
    }

    fn record(&mut self, check: &Check, result: CheckResult, at: Timestamp) {
        let previous = self
            .s
            .checks
            .iter()
            .position(|s| s.name == check.name && s.kind == check.kind)
            .map(|i| self.s.checks.remove(i));
        let verdict = result.evaluation.verdict;
        let failures = previous.as_ref().map_or(0, |p| p.failures)
            + i32::from(verdict == Verdict::Fail && check.kind == CheckKind::Promotion);
        let since = previous.and_then(|p| p.breaching_since);
        let breaching_since = match (check.kind, verdict) {
            (CheckKind::Trigger, Verdict::Fail) => since.or(Some(Time(at))),
            (CheckKind::Trigger, Verdict::Pass) => None,
            _ => since,
        };
        self.s.checks.push(CheckStatus {
            name: check.name.clone(),
            kind: check.kind,
            revision: result.revision,
            value: result.evaluation.value,
            stable_value: result.evaluation.stable_value,
            threshold: check.threshold.describe(),
            samples: result.evaluation.samples,
            verdict,
            failures,
            message: result.evaluation.message,
            query: result.query,
            breaching_since,
            evaluated_at: Time(at),
        });
    }

    fn status_of(&self, check: &Check) -> Option<&CheckStatus> {
        self.s
            .checks
            .iter()
            .find(|s| s.name == check.name && s.kind == check.kind)
    }

    /// Applies, in order of severity: a sustained trigger breach, a criterion failed beyond
    /// `failureLimit`, too many query errors, too many inconclusive rounds.
    fn judge(&mut self, checks: &[Check], at: Timestamp) {
        let analysis = &self.input.rollout.analysis;
        for check in checks.iter().filter(|c| c.kind == CheckKind::Trigger) {
            let Some(status) = self.status_of(check) else {
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
                let evidence = evidence(reason, status, message);
                self.rollback(evidence);
                return;
            }
        }
        for check in checks.iter().filter(|c| c.kind == CheckKind::Promotion) {
            let Some(status) = self.status_of(check) else {
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
                    let evidence = evidence(
                        quality_or(check, RollbackReason::CriterionFailed),
                        status,
                        message,
                    );
                    self.rollback(evidence);
                    return;
                }
                Policy::Hold if status.failures == analysis.failure_limit + 1 => {
                    self.event(
                        EventReason::Holding,
                        format!("{message}; holding at this step"),
                    );
                }
                Policy::Hold => {}
            }
        }
        let limits = [
            (
                self.s.consecutive_errors,
                analysis.consecutive_error_limit,
                analysis.on_error,
                Verdict::Error,
                RollbackReason::AnalysisError,
                "query errors",
            ),
            (
                self.s.consecutive_inconclusive,
                analysis.inconclusive_limit,
                analysis.on_inconclusive,
                Verdict::Inconclusive,
                RollbackReason::Inconclusive,
                "inconclusive rounds",
            ),
        ];
        for (count, limit, policy, verdict, reason, what) in limits {
            if count <= limit {
                continue;
            }
            let message = format!("{count} {what} in a row (limit {limit})");
            let culprit = checks
                .iter()
                .filter_map(|c| self.status_of(c))
                .find(|s| s.verdict == verdict && s.evaluated_at.0 == at);
            match policy {
                Policy::Rollback => {
                    let evidence = match culprit {
                        Some(status) => evidence(reason, status, message),
                        None => Evidence::plain(reason, message),
                    };
                    self.rollback(evidence);
                    return;
                }
                Policy::Hold if count == limit + 1 => {
                    self.event(
                        EventReason::Holding,
                        format!("{message}; holding at this step"),
                    );
                }
                Policy::Hold => {}
            }
        }
    }
}

/// A quality check from one golden-document comparison: the share of documents that
/// regressed, judged by the check's threshold.
fn quality(check: &Check, revision: &str, documents: &[QualityResult]) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        kind: check.kind,
        revision: revision.to_owned(),
        query: None,
        evaluation: verdict::evaluate_quality(&check.threshold, documents),
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

fn bump(count: i32, this_round: bool) -> i32 {
    if this_round { count + 1 } else { 0 }
}

fn quality_or(check: &Check, reason: RollbackReason) -> RollbackReason {
    if check.source == Source::Quality {
        RollbackReason::QualityRegressed
    } else {
        reason
    }
}

fn evidence(reason: RollbackReason, status: &CheckStatus, message: String) -> Evidence {
    let detail = status
        .message
        .as_deref()
        .map_or(String::new(), |m| format!(" ({m})"));
    Evidence {
        reason,
        check: Some(status.name.clone()),
        query: status.query.clone(),
        value: status.value,
        threshold: Some(status.threshold.clone()),
        message: format!("{message}{detail}"),
    }
}

/// A duration the way people say it: `15m`, `1h30m`, `45s`.
pub(super) fn human(duration: std::time::Duration) -> String {
    let total = duration.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
