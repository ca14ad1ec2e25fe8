//! Analysis: which checks run when, what they read over which window, and how the current
//! step's gates stand.
//!
//! A round counts once: only when it is due (`interval` after the last counted one), so that a
//! replay of the same round changes no counter. Every Prometheus check reads the *evidence
//! window* — the time since the stage's traffic began (at least one interval) — so that the
//! documents of a long, quiet step add up instead of each round starting from nothing.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mineru_crds::{CheckKind, LegacyRole, MineruDeploymentStatus, Revisions, Tier, Verdict};

use super::{
    Baseline, Input, ProbeRequest, QualityRequest, ReadingRequest, Role, plan,
    state::{Stage, View, elapsed, later, weight_of, whole_second},
};
use crate::gates::{self, Check, Source};

/// The revisions judged and what they are compared with, when analysis runs at all: during
/// steps (canary against stable, or against the legacy Service when migrating) and during the
/// post-promotion window (the promoted revisions against the ones they replaced).
pub(super) fn judged(
    status: &MineruDeploymentStatus,
    stage: Stage,
) -> Option<(Revisions, Option<Baseline>)> {
    match stage {
        Stage::Stepping(_) => {
            let baseline = match &status.stable {
                Some(stable) => Baseline::Stable(stable.clone()),
                None => Baseline::Legacy,
            };
            Some((status.canary.clone()?, Some(baseline)))
        }
        Stage::Verifying => {
            let baseline = match (&status.previous_stable, status.legacy) {
                (Some(previous), _) => Some(Baseline::Stable(previous.clone())),
                (None, Some(LegacyRole::Standby)) => Some(Baseline::Legacy),
                (None, _) => None,
            };
            Some((status.stable.clone()?, baseline))
        }
        Stage::Steady | Stage::Warming => None,
    }
}

/// Every check of this rollout; the canary of a migration is held to the migration's bar.
pub(super) fn all_checks(input: &Input, status: &MineruDeploymentStatus) -> Vec<Check> {
    let migrating = status.legacy == Some(LegacyRole::Serving);
    gates::checks(&input.rollout.analysis, &input.rollout.steps, migrating)
}

/// A check that applies in this stage, or the reason it is skipped.
#[derive(Clone, Debug)]
pub(super) struct Applicable {
    pub check: Check,
    pub skipped: Option<String>,
}

/// The checks of this stage: during a step, the triggers and the criteria gating it; after
/// promotion, the triggers and the last step's criteria, against what was replaced (the
/// golden-document comparison needs the replaced revision serving, and stops there).
pub(super) fn applicable(view: &View<'_>) -> Vec<Applicable> {
    let stage = view.stage();
    let Some((judged, baseline)) = judged(view.s, stage) else {
        return Vec::new();
    };
    let last = view.input.rollout.steps.len() as i32 - 1;
    let model_changed = match &baseline {
        Some(Baseline::Stable(stable)) => stable.model_revision != judged.model_revision,
        // A migrated stack's vLLM is new whatever the legacy Service ran.
        Some(Baseline::Legacy) | None => true,
    };
    view.checks
        .iter()
        .filter(|check| match stage {
            Stage::Stepping(index) => check.kind == CheckKind::Trigger || check.gates_step(index),
            _ => {
                (check.kind == CheckKind::Trigger || check.gates_step(last))
                    && check.source != Source::Quality
            }
        })
        .map(|check| {
            let skipped = match &check.source {
                Source::CanaryVllmRestarts if !model_changed => {
                    Some("a worker-only rollout has no canary vLLM".to_owned())
                }
                source
                    if source.reads_prometheus() && check.tier == Tier::Model && !model_changed =>
                {
                    Some(format!(
                        "the canary shares the stable vLLM {}: nothing of its own to judge",
                        judged.model_revision
                    ))
                }
                _ => None,
            };
            Applicable {
                check: check.clone(),
                skipped,
            }
        })
        .collect()
}

pub(super) fn due(input: &Input, status: &MineruDeploymentStatus, at: Timestamp) -> bool {
    let interval = input.rollout.analysis.interval.get();
    status
        .last_analysis_at
        .as_ref()
        .is_none_or(|last| at >= later(last.0, interval))
}

/// The latest status of a check.
pub(super) fn status_of<'a>(
    status: &'a MineruDeploymentStatus,
    check: &Check,
) -> Option<&'a mineru_crds::CheckStatus> {
    status
        .checks
        .iter()
        .find(|s| s.name == check.name && s.kind == check.kind)
}

/// A statistical criterion that passed during this step has decided: its test stops, and its
/// Pass holds for the rest of the step. Guards (values, pod status) keep being read.
pub(super) fn decided(view: &View<'_>, check: &Check) -> bool {
    // A distribution's pass is a point estimate, not a sequential test's verdict: it is read
    // again every round, and a later significant difference still fails it.
    let statistical = matches!(
        check.source,
        Source::Proportion { .. } | Source::Quantile { .. }
    );
    statistical
        && check.kind == CheckKind::Promotion
        && matches!(view.stage(), Stage::Stepping(_))
        && passed_in_stage(view, check)
}

/// Whether the check's latest verdict is a Pass evaluated during this stage.
pub(super) fn passed_in_stage(view: &View<'_>, check: &Check) -> bool {
    let since = view.stage_started();
    status_of(view.s, check).is_some_and(|s| {
        s.verdict == Verdict::Pass && since.is_some_and(|since| s.evaluated_at > *since)
    })
}

/// How many golden documents the current step compares: its entry of `documentsPerStep`, the
/// last one past the end.
pub(super) fn quality_documents(view: &View<'_>) -> Option<usize> {
    let quality = view.input.rollout.analysis.quality.as_ref()?;
    let step = view.s.current_step.unwrap_or(0).max(0) as usize;
    let counts = &quality.documents_per_step;
    let count = counts.get(step).or(counts.last()).copied().unwrap_or(1);
    Some(count.max(1) as usize)
}

/// A round of golden documents runs for each step that a quality criterion gates, until the
/// criterion has decided in this step.
fn quality_due(view: &View<'_>, applicable: &[Applicable]) -> Option<usize> {
    let count = quality_documents(view)?;
    let since = view.s.step_started_at.as_ref();
    let due = applicable
        .iter()
        .map(|a| &a.check)
        .filter(|c| c.source == Source::Quality && c.kind == CheckKind::Promotion)
        .any(|c| {
            !status_of(view.s, c).is_some_and(|s| {
                since.is_some_and(|since| s.evaluated_at > *since)
                    && matches!(s.verdict, Verdict::Pass | Verdict::Fail)
            })
        });
    due.then_some(count)
}

/// Probe traffic flows during every step when the quality gate configures a rate: to the canary
/// and the baseline alike while they split traffic, to the canary alone at a 100% step (whose
/// SLO checks judge it alone).
pub(super) fn probes(view: &View<'_>) -> Option<ProbeRequest> {
    let spec = &view.input.rollout.analysis.quality.as_ref()?.probes;
    let Stage::Stepping(index) = view.stage() else {
        return None;
    };
    if spec.documents_per_hour <= 0.0 {
        return None;
    }
    let (judged, baseline) = judged(view.s, view.stage())?;
    let slots = view.input.sizes.worker_concurrency as f64 * spec.max_share;
    Some(ProbeRequest {
        judged: judged.worker_revision,
        baseline: baseline.filter(|_| view.weight_of(index) < 100),
        documents_per_hour: spec.documents_per_hour,
        concurrency: (slots.floor() as usize).max(1),
    })
}

/// The judged revision's evidence window: from the stage's start to now, at least an interval
/// (Prometheus needs two samples in a range), as (end, length).
fn judged_window(view: &View<'_>, now: Timestamp) -> (Timestamp, Duration) {
    let interval = view.input.rollout.analysis.interval.get();
    let length = view
        .stage_started()
        .map_or(interval, |since| elapsed(since.0, now))
        .max(interval);
    (now, length)
}

/// The baseline's window: the judged one while the baseline shares the traffic; once the
/// canary takes it all (a 100% step, the post-promotion window), the time the baseline last
/// served beside it, stretched back to at least the judged window's length so that both sides
/// weigh alike.
fn baseline_window(view: &View<'_>, judged: (Timestamp, Duration)) -> (Timestamp, Duration) {
    let alone = match view.stage() {
        Stage::Stepping(index) => weight_of(view.input, index) >= 100,
        Stage::Verifying => true,
        Stage::Steady | Stage::Warming => false,
    };
    match (&view.s.baseline_window, alone) {
        (Some(window), true) => {
            let served = elapsed(window.from.0, window.until.0);
            (window.until.0, served.max(judged.1))
        }
        _ => judged,
    }
}

/// What to read from Prometheus this round (nothing when no round is due), and the golden
/// documents to compare — for as long as the step's quality criterion has not decided, since
/// the round runs in the background between rounds of readings.
pub(super) fn requests(view: &View<'_>) -> (Vec<ReadingRequest>, Option<QualityRequest>) {
    let now = whole_second(view.now);
    let Some((judged, baseline)) = judged(view.s, view.stage()) else {
        return (Vec::new(), None);
    };
    let applicable = applicable(view);
    let quality = quality_due(view, &applicable).and_then(|documents| {
        baseline.clone().map(|baseline| QualityRequest {
            judged: judged.worker_revision.clone(),
            baseline,
            documents,
        })
    });
    if !due(view.input, view.s, now) {
        return (Vec::new(), quality);
    }
    let judged_window = judged_window(view, now);
    let baseline_window = baseline_window(view, judged_window);
    let mut requests = Vec::new();
    for Applicable { check, skipped } in &applicable {
        if skipped.is_some() || !check.source.reads_prometheus() || decided(view, check) {
            continue;
        }
        let revision = judged.of(check.tier).to_owned();
        let baseline_revision = baseline.as_ref().map(|b| b.revision(check.tier).to_owned());
        let request = |role, revision: &str, (at, window): (Timestamp, Duration)| ReadingRequest {
            check: check.name.clone(),
            kind: check.kind,
            tier: check.tier,
            source: check.source.clone(),
            role,
            revision: revision.to_owned(),
            canary_revision: judged.of(check.tier).to_owned(),
            stable_revision: baseline_revision
                .clone()
                .unwrap_or_else(|| revision.to_owned()),
            window,
            at,
        };
        requests.push(request(Role::Judged, &revision, judged_window));
        if let Some(baseline) = baseline_revision
            .as_deref()
            .filter(|_| check.threshold.compares_with_stable())
        {
            requests.push(request(Role::Baseline, baseline, baseline_window));
        }
    }
    (requests, quality)
}

/// Whether the canary can take its planned traffic; otherwise what is missing, in words. The
/// warm-up gates the first traffic only: from then on the checks judge the canary vLLM.
pub(super) fn canary_ready(view: &View<'_>) -> Result<(), String> {
    let Some(canary) = &view.s.canary else {
        return Err("no canary".into());
    };
    let observed = &view.input.observed;
    let mut missing = Vec::new();
    if view.model_changed() {
        let ready = observed.models_ready(&canary.model_revision);
        let wanted = view.input.rollout.canary_model_replicas;
        if ready < wanted {
            missing.push(format!("vLLM {ready}/{wanted} ready"));
        }
        if view.stage() == Stage::Warming && !observed.warmed_up.contains(&canary.model_revision) {
            missing.push("vLLM not warmed up".to_owned());
        }
        if observed.unschedulable.contains(&canary.model_revision) {
            missing.push("vLLM pods unschedulable for lack of GPUs".to_owned());
        }
    }
    if !observed.preflight.is_empty() {
        missing.push(format!(
            "preflight failed: {}",
            observed.preflight.join("; ")
        ));
    }
    let wanted = plan::canary_workers(view.input, view.s);
    let ready = observed.workers_ready(&canary.worker_revision);
    if ready < wanted {
        missing.push(format!("workers {ready}/{wanted} ready"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

/// How the current step's criteria stand.
pub(super) struct Gates {
    /// Criteria gating the step (skipped ones aside).
    pub total: usize,
    /// Those that passed during the step.
    pub passing: usize,
    /// Whether one of the passing ones stands on documents actually seen.
    pub evidence: bool,
    /// The first criterion not passing, with why.
    pub blocking: Option<String>,
}

impl Gates {
    /// Every criterion passed, and at least one on evidence (or the step needs none).
    pub fn open(&self, skip_analysis: bool) -> bool {
        self.passing == self.total && (self.evidence || skip_analysis)
    }
}

pub(super) fn gates(view: &View<'_>) -> Gates {
    let since = view.stage_started();
    let mut gates = Gates {
        total: 0,
        passing: 0,
        evidence: false,
        blocking: None,
    };
    let criteria: Vec<Check> = applicable(view)
        .into_iter()
        .filter(|a| a.check.kind == CheckKind::Promotion && a.skipped.is_none())
        .map(|a| a.check)
        .collect();
    let in_stage = |check: &Check| {
        status_of(view.s, check).filter(|s| since.is_some_and(|since| s.evaluated_at > *since))
    };
    // A comparison passes when it, or its twin on the operator's documents, passed.
    for check in criteria.iter().filter(|c| c.stands_for.is_none()) {
        let twin = criteria
            .iter()
            .find(|t| t.stands_for.as_ref() == Some(&check.name))
            .and_then(in_stage);
        let status = in_stage(check);
        if status.is_some_and(|s| s.verdict == Verdict::Skipped) && twin.is_none() {
            // Judged not to apply here (no baseline series to compare with): it gates nothing.
            continue;
        }
        gates.total += 1;
        let passed = [status, twin]
            .into_iter()
            .flatten()
            .find(|s| s.verdict == Verdict::Pass);
        match (passed, status) {
            (Some(s), _) => {
                gates.passing += 1;
                gates.evidence |=
                    check.source.evidence_backed() && s.samples.is_some_and(|n| n > 0.0);
            }
            (None, Some(s)) => {
                let why = s.message.as_deref().unwrap_or("");
                gates
                    .blocking
                    .get_or_insert_with(|| format!("{} {:?}: {why}", s.name, s.verdict));
            }
            (None, None) => {
                gates
                    .blocking
                    .get_or_insert_with(|| format!("{} not evaluated yet", check.name));
            }
        }
    }
    gates
}

/// The first rollback trigger currently in breach, if any.
pub(super) fn trigger_breaching(status: &MineruDeploymentStatus) -> Option<String> {
    status
        .checks
        .iter()
        .find(|s| s.kind == CheckKind::Trigger && s.verdict == Verdict::Fail)
        .map(|s| s.name.clone())
}
