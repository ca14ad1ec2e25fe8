//! The transitions: start, warm up, step, promote, verify, roll back, and manual commands.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mineru_crds::{
    BaselineWindow, CheckKind, LegacyRole, MineruDeploymentStatus, Policy, RetiredRevision,
    Revisions, RollbackReason, RollbackRecord, Step, Verdict,
};

use super::{
    AnalysisRound, CapacityRead, Command, Decision, Event, EventReason, Input, Needs, Notification,
    NotificationKind, analysis, judge, plan, report,
    state::{Evidence, Stage, View, human, reached, show, show_or_legacy, whole_second},
};
use crate::{
    gates::{Check, Source},
    quality,
};

pub(super) struct Machine<'a> {
    pub input: &'a Input,
    pub now: Timestamp,
    pub checks: Vec<Check>,
    pub s: MineruDeploymentStatus,
    pub events: Vec<Event>,
    pub notifications: Vec<Notification>,
}

/// Commands and the spec, applied to the status written last time: the state the rest of a
/// decision — and what it needs measured — starts from.
fn prepare(input: &Input) -> Machine<'_> {
    let mut m = Machine {
        input,
        now: whole_second(input.now),
        checks: Vec::new(),
        s: input.status.clone(),
        events: Vec::new(),
        notifications: Vec::new(),
    };
    m.s.observed_generation = input.generation.or(m.s.observed_generation);
    m.follow_legacy();
    m.checks = analysis::all_checks(input, &m.s);
    // A failed revision stays blocked only while the spec still asks for it.
    m.s.failed_revisions.retain(|r| *r == input.desired);
    for command in &input.commands {
        m.command(*command);
    }
    m.follow_spec();
    m
}

pub(super) fn needs(input: &Input) -> Needs {
    let m = prepare(input);
    let view = m.view();
    let stage = view.stage();
    let warming = stage == Stage::Warming;
    let canary = m.s.canary.as_ref();
    let model_canary = warming && view.model_changed();
    let warmup = canary
        .map(|c| &c.model_revision)
        .filter(|revision| model_canary && input.observed.models_ready(revision) > 0)
        .cloned();
    // Free GPUs decide in-place replacement when the rollout starts; later rounds only ask
    // whether any node could fit a replica, which needs no cluster-wide pod list.
    let starting = canary != input.status.canary.as_ref();
    let capacity = model_canary.then_some(if starting {
        CapacityRead::Free
    } else {
        CapacityRead::Nodes
    });
    let (readings, quality) = analysis::requests(&view);
    Needs {
        warmup,
        preflight: canary.filter(|_| warming).cloned(),
        capacity,
        readings,
        quality,
        probes: analysis::probes(&view),
    }
}

pub(super) fn run(input: &Input) -> Decision {
    let mut m = prepare(input);
    if let Some(round) = &input.analysis {
        m.consume(round);
    }
    // Each pass moves one stage forward; several may follow at once (no pause, no gates), and
    // looping to a fixed point is what makes a replay of the same input a no-op.
    for _ in 0..input.rollout.steps.len() + 3 {
        if !m.advance() {
            break;
        }
    }
    m.prune_retired();
    report::finish(m.input, m.now, &m.checks, m.s, m.events, m.notifications)
}

impl Machine<'_> {
    pub fn view(&self) -> View<'_> {
        View {
            input: self.input,
            s: &self.s,
            checks: &self.checks,
            now: self.now,
        }
    }

    fn stage(&self) -> Stage {
        self.view().stage()
    }

    fn steps(&self) -> &[Step] {
        &self.input.rollout.steps
    }

    fn weight_of(&self, index: i32) -> i32 {
        self.view().weight_of(index)
    }

    fn baseline_name(&self) -> String {
        self.view().baseline_name()
    }

    fn model_changed(&self) -> bool {
        self.view().model_changed()
    }

    /// The first revisions ever deployed are stable at once, unless a legacy Service serves
    /// the traffic: then they are the canary of a migration from it. Dropping `legacyBackend`
    /// from the spec hands all traffic to the stack.
    fn follow_legacy(&mut self) {
        let legacy = self.input.rollout.legacy_backend().is_some();
        if self.s.stable.is_none() && self.s.legacy.is_none() {
            if legacy {
                self.s.legacy = Some(LegacyRole::Serving);
            } else {
                self.s.stable = Some(self.input.desired.clone());
            }
        }
        if !legacy && self.s.legacy.take().is_some() && self.s.stable.is_none() {
            self.s.stable = Some(self.s.canary.clone().unwrap_or(self.input.desired.clone()));
            self.clear_rollout();
            self.end_verification();
        }
    }

    fn event(&mut self, reason: EventReason, message: String) {
        self.events.push(Event { reason, message });
    }

    fn notify(
        &mut self,
        kind: NotificationKind,
        revisions: Revisions,
        step: Option<i32>,
        message: &str,
    ) {
        let rollback = match kind {
            NotificationKind::RolledBack => self.s.last_rollback.clone(),
            _ => None,
        };
        self.notifications.push(Notification {
            kind,
            revisions,
            step,
            weight: self.s.canary_weight.unwrap_or(0),
            message: message.to_owned(),
            rollback,
        });
    }

    /// An Event, and the same sentence as a notification about the rollout under way.
    fn hold(&mut self, message: String) {
        let revisions = self
            .s
            .canary
            .clone()
            .unwrap_or_else(|| self.input.desired.clone());
        let step = self.s.current_step;
        self.notify(NotificationKind::Holding, revisions, step, &message);
        self.event(EventReason::Holding, message);
    }

    /// The promoted revisions are let go of their way back: an Event and a notification.
    fn verified(&mut self, message: String) {
        let revisions = self
            .s
            .stable
            .clone()
            .unwrap_or_else(|| self.input.desired.clone());
        self.end_verification();
        self.notify(NotificationKind::Verified, revisions, None, &message);
        self.event(EventReason::Verified, message);
    }

    fn command(&mut self, command: Command) {
        let stage = self.stage();
        match (command, stage) {
            (Command::Abort, Stage::Warming | Stage::Stepping(_)) => self.rollback(
                Evidence::plain(RollbackReason::Aborted, "aborted by a person".into()),
            ),
            (Command::Abort, Stage::Verifying) => self.rollback(Evidence::plain(
                RollbackReason::Aborted,
                "aborted by a person during the post-promotion window".into(),
            )),
            (Command::Retry, _) if !self.s.failed_revisions.is_empty() => {
                self.s.failed_revisions.clear();
                let message = format!("retrying {}", show(&self.input.desired));
                self.event(EventReason::Retried, message);
            }
            (Command::Pause, Stage::Warming | Stage::Stepping(_)) if !self.s.paused => {
                self.s.paused = true;
                self.event(EventReason::Paused, "paused by a person".into());
            }
            (Command::Resume, _) if self.s.paused => {
                self.s.paused = false;
                // Time spent paused does not count toward the progress deadline.
                match stage {
                    Stage::Warming => self.s.step_started_at = Some(Time(self.now)),
                    _ => self.s.canary_unready_since = None,
                }
                self.event(EventReason::Resumed, "resumed by a person".into());
            }
            (Command::PromoteStep, Stage::Stepping(index)) => {
                self.complete_step(index, "promoted by a person")
            }
            (Command::PromoteFull, Stage::Stepping(_)) => {
                self.promote("promoted in full by a person")
            }
            // A person vouches for the promoted revisions: the way back is let go now.
            (Command::PromoteStep | Command::PromoteFull, Stage::Verifying) => {
                let message = format!(
                    "{} verified by a person before the end of the post-promotion window",
                    show_or_legacy(self.input, self.s.stable.as_ref())
                );
                self.verified(message);
            }
            (Command::PromoteStep | Command::PromoteFull, Stage::Warming) => {
                let message = "promote ignored: the canary is not ready and warmed up yet";
                self.event(EventReason::CommandIgnored, message.into())
            }
            (command, _) => self.event(
                EventReason::CommandIgnored,
                format!("{command:?} ignored: it does not apply in the current state"),
            ),
        }
    }

    /// Starts, supersedes or cancels a rollout when the desired revisions move.
    fn follow_spec(&mut self) {
        let desired = self.input.desired.clone();
        let blocked = self.s.failed_revisions.contains(&desired);
        match self.s.canary.clone() {
            Some(canary) if canary == desired => {}
            Some(canary) => {
                self.retire_active(&canary);
                self.clear_rollout();
                if self.s.stable.as_ref() == Some(&desired) || blocked {
                    let message = format!(
                        "spec no longer asks for {}; rollout cancelled, {} stays stable",
                        show(&canary),
                        self.baseline_name()
                    );
                    self.event(EventReason::RolloutCancelled, message);
                } else {
                    let message = format!("{} superseded by {}", show(&canary), show(&desired));
                    self.event(EventReason::RolloutSuperseded, message);
                    self.start();
                }
            }
            None if self.s.stable.as_ref() != Some(&desired) && !blocked => self.start(),
            None => {}
        }
    }

    fn start(&mut self) {
        let desired = self.input.desired.clone();
        self.end_verification();
        self.s.canary = Some(desired.clone());
        self.s.current_step = Some(0);
        self.s.canary_weight = Some(0);
        self.s.step_started_at = Some(Time(self.now));
        self.s.checks.clear();
        self.s.quality.clear();
        self.s.consecutive_errors = 0;
        let tiers = match (&self.s.stable, self.model_changed()) {
            (None, _) => "migrating from the legacy Service",
            (Some(_), true) => "model and worker changed",
            (Some(_), false) => "worker changed",
        };
        let weights: Vec<String> = self
            .steps()
            .iter()
            .map(|s| format!("{}%", s.weight))
            .collect();
        let message = format!(
            "rolling out {} ({tiers}) over {}",
            show(&desired),
            weights.join(" → ")
        );
        self.notify(NotificationKind::Started, desired, Some(0), &message);
        self.event(EventReason::RolloutStarted, message);
        self.s.in_place_model_replicas = self.initial_in_place();
    }

    /// Stable replicas to stop up front when the canary's GPUs may not be added. A legacy
    /// Service's GPUs are not the operator's to free.
    fn initial_in_place(&mut self) -> Option<i32> {
        if !self.model_changed() || self.s.stable.is_none() {
            return None;
        }
        let sizes = self.input.sizes;
        let needed = sizes.gpus_per_replica * self.input.rollout.canary_model_replicas;
        let surge = self.input.rollout.max_surge_gpus.unwrap_or(needed);
        let allowed = surge
            .min(self.input.observed.free_gpus.unwrap_or(surge))
            .max(0);
        if needed <= allowed {
            return None;
        }
        let stop = ((needed - allowed + sizes.gpus_per_replica - 1) / sizes.gpus_per_replica)
            .min(sizes.model_replicas);
        let message = format!(
            "the canary needs {needed} GPUs but only {allowed} may be added; stopping {stop} of {} stable vLLM replicas to make room",
            sizes.model_replicas
        );
        self.event(EventReason::InPlaceReplacement, message);
        Some(stop)
    }

    /// Counts a round of readings and applies what its judgement calls for.
    fn consume(&mut self, round: &AnalysisRound) {
        let at = whole_second(round.at);
        if analysis::judged(&self.s, self.stage()).is_none()
            || !analysis::due(self.input, &self.s, at)
        {
            return;
        }
        let judgement = judge::judge(&self.view(), round, at, self.s.consecutive_errors);
        self.s.last_analysis_at = Some(Time(at));
        if !round.quality.is_empty() {
            self.s.quality = quality::kept_in_status(round.quality.clone());
        }
        for record in judgement.records {
            self.s
                .checks
                .retain(|s| !(s.name == record.name && s.kind == record.kind));
            self.s.checks.push(record);
        }
        self.s.consecutive_errors = if judgement.error {
            self.s.consecutive_errors + 1
        } else {
            0
        };
        for message in judgement.holds {
            self.hold(message);
        }
        if let Some(evidence) = judgement.rollback {
            self.rollback(evidence);
        }
    }

    /// Moves the rollout forward by one stage when its conditions hold.
    fn advance(&mut self) -> bool {
        match self.stage() {
            Stage::Steady => false,
            Stage::Verifying => self.advance_verification(),
            Stage::Warming => self.advance_warming(),
            Stage::Stepping(index) => self.advance_step(index),
        }
    }

    /// The window is over, no check holds it, and a round answered: the previous revisions
    /// (or the legacy Service) may go.
    fn advance_verification(&mut self) -> bool {
        let window = self.view().verification_window();
        // A window in which every query failed verified nothing: keep the way back until a
        // round answers. A criterion that failed with `onFail: Hold` keeps it for a person.
        let since = self.s.promoted_at.clone();
        let failing = self.s.checks.iter().any(|c| {
            c.kind == CheckKind::Promotion
                && c.verdict == Verdict::Fail
                && since.as_ref().is_some_and(|since| c.evaluated_at > *since)
        });
        if !reached(self.now, self.s.promoted_at.as_ref(), window)
            || self.s.consecutive_errors > 0
            || failing
        {
            return false;
        }
        let message = format!(
            "{} passed the {} post-promotion window",
            self.baseline_name(),
            human(window)
        );
        self.verified(message);
        true
    }

    fn advance_warming(&mut self) -> bool {
        let canary_model = self.s.canary.as_ref().map(|c| c.model_revision.clone());
        let full_replacement = self
            .input
            .rollout
            .canary_model_replicas
            .min(self.input.sizes.model_replicas);
        if self.model_changed()
            && self.s.stable.is_some()
            && canary_model.is_some_and(|m| self.input.observed.unschedulable.contains(&m))
            && self.s.in_place_model_replicas.unwrap_or(0) < full_replacement
        {
            self.s.in_place_model_replicas = Some(full_replacement);
            let message = format!(
                "canary vLLM pods are unschedulable for lack of GPUs; stopping {full_replacement} stable vLLM replicas to make room instead of waiting"
            );
            self.event(EventReason::InPlaceReplacement, message);
            return true;
        }
        if let Some(evidence) = self.crash_loop_while_warming() {
            self.rollback(evidence);
            return true;
        }
        if self.s.paused {
            return false;
        }
        // A failed preflight holds without a deadline: the canary is not at fault, something it
        // needs (Prometheus, a Secret, the golden documents) is missing, and status says what.
        if !self.input.observed.preflight.is_empty() {
            return false;
        }
        if analysis::canary_ready(&self.view()).is_ok() {
            self.s.current_step = Some(0);
            self.s.canary_weight = Some(self.weight_of(0));
            self.s.step_started_at = Some(Time(self.now));
            self.s.traffic_started_at = Some(Time(self.now));
            self.note_baseline_window(0);
            let message = format!(
                "canary {} is ready and warmed up; sending it {}% of traffic",
                show(self.s.canary.as_ref().unwrap_or(&self.input.desired)),
                self.weight_of(0)
            );
            self.event(EventReason::CanaryReady, message);
            return true;
        }
        self.deadline_passed(self.s.step_started_at.clone())
    }

    /// Pod-status triggers need no traffic, so they watch the warm-up too: a canary vLLM that
    /// crash-loops while loading is rolled back at once rather than at the progress deadline.
    fn crash_loop_while_warming(&self) -> Option<Evidence> {
        if !self.model_changed() {
            return None;
        }
        let restarts = self
            .input
            .observed
            .restarts(&self.s.canary.as_ref()?.model_revision);
        self.checks
            .iter()
            .filter(|c| c.kind == CheckKind::Trigger && c.source == Source::CanaryVllmRestarts)
            .find_map(|check| {
                let evaluation = judge::judge_restarts(check, restarts);
                (evaluation.verdict == Verdict::Fail).then(|| Evidence {
                    reason: RollbackReason::TriggerFired,
                    check: Some(check.name.clone()),
                    query: None,
                    value: evaluation.value,
                    threshold: Some(check.threshold.describe()),
                    message: format!(
                        "rollback trigger {} breached while the canary vLLM was warming up ({})",
                        check.name,
                        evaluation.message.unwrap_or_default()
                    ),
                })
            })
    }

    /// Rolls back when the canary has not been ready for a whole `progressDeadline`.
    fn deadline_passed(&mut self, since: Option<Time>) -> bool {
        let deadline = self.input.rollout.progress_deadline.get();
        if self.s.paused || !reached(self.now, since.as_ref(), deadline) {
            return false;
        }
        let missing = analysis::canary_ready(&self.view())
            .err()
            .unwrap_or_default();
        self.rollback(Evidence::plain(
            RollbackReason::ProgressDeadlineExceeded,
            format!(
                "canary not ready and warmed up within the progress deadline of {}: {missing}",
                self.input.rollout.progress_deadline
            ),
        ));
        true
    }

    fn advance_step(&mut self, index: i32) -> bool {
        // A canary pod lost mid-step is given the progress deadline from that moment, not
        // from the step's start.
        match (
            analysis::canary_ready(&self.view()),
            &self.s.canary_unready_since,
        ) {
            (Err(_), None) => {
                self.s.canary_unready_since = Some(Time(self.now));
                return true;
            }
            (Err(_), since) => return self.deadline_passed(since.clone()),
            (Ok(()), Some(_)) => self.s.canary_unready_since = None,
            (Ok(()), None) => {}
        }
        let step = self.steps()[index as usize].clone();
        let started = self.s.step_started_at.clone();
        let pause_over = step
            .pause
            .as_ref()
            .is_none_or(|p| reached(self.now, started.as_ref(), p.get()));
        let gates = analysis::gates(&self.view());
        // A query failing now says nothing good about the canary: wait for one that answers.
        let errors_outstanding = self.s.consecutive_errors > 0;
        if self.s.paused || !pause_over || errors_outstanding {
            return false;
        }
        if !gates.open(step.skip_analysis) {
            return self.overdue(index, &step);
        }
        if analysis::trigger_breaching(&self.s).is_some() || step.require_approval {
            return false;
        }
        let why = if step.skip_analysis && !gates.evidence {
            "without analysis (skipAnalysis)"
        } else {
            "gates passed"
        };
        self.complete_step(index, why);
        true
    }

    /// A step past its `maxDuration` whose criteria still lack the evidence to decide:
    /// `onInconclusive` applies, once. A criterion that failed is a hold of its own, not this.
    fn overdue(&mut self, index: i32, step: &Step) -> bool {
        let started = self.s.step_started_at.clone();
        let failed = analysis::applicable(&self.view()).iter().any(|a| {
            a.check.gates_step(index)
                && analysis::status_of(&self.s, &a.check)
                    .is_some_and(|s| s.verdict == Verdict::Fail)
        });
        if self.s.evidence_overdue
            || failed
            || !reached(self.now, started.as_ref(), step.max_duration.get())
        {
            return false;
        }
        let gates = analysis::gates(&self.view());
        let waiting = gates
            .blocking
            .unwrap_or_else(|| "no criterion backed by documents passed".to_owned());
        let message = format!(
            "step {}/{} ({}%) has not decided within its maxDuration of {}: {waiting}",
            index + 1,
            self.steps().len(),
            self.weight_of(index),
            step.max_duration
        );
        match self.input.rollout.analysis.on_inconclusive {
            Policy::Rollback => {
                let culprit = analysis::applicable(&self.view())
                    .into_iter()
                    .filter(|a| a.check.gates_step(index) && a.skipped.is_none())
                    .find_map(|a| {
                        analysis::status_of(&self.s, &a.check)
                            .filter(|s| s.verdict != Verdict::Pass)
                            .cloned()
                    });
                let mut evidence = Evidence::plain(RollbackReason::Inconclusive, message);
                if let Some(status) = culprit {
                    evidence.check = Some(status.name);
                    evidence.query = status.query;
                    evidence.value = status.value;
                    evidence.threshold = Some(status.threshold);
                }
                self.rollback(evidence);
            }
            Policy::Hold => {
                self.s.evidence_overdue = true;
                self.hold(format!(
                    "{message}; holding at this step (onInconclusive: Hold)"
                ));
            }
        }
        true
    }

    fn complete_step(&mut self, index: i32, why: &str) {
        let last = self.steps().len() as i32 - 1;
        if index >= last {
            let why = if why.starts_with("without analysis") {
                "promoted without analysis (skipAnalysis)"
            } else {
                why
            };
            self.promote(why);
            return;
        }
        let canary = self
            .s
            .canary
            .clone()
            .unwrap_or_else(|| self.input.desired.clone());
        let next = index + 1;
        self.s.current_step = Some(next);
        self.s.canary_weight = Some(self.weight_of(next));
        self.s.step_started_at = Some(Time(self.now));
        self.s.canary_unready_since = None;
        self.s.evidence_overdue = false;
        self.s.paused = false;
        self.note_baseline_window(next);
        for check in &mut self.s.checks {
            check.failures = 0;
        }
        let message = format!(
            "step {}/{} ({}%) completed: {why}; now {}% to canary {}",
            index + 1,
            last + 1,
            self.weight_of(index),
            self.weight_of(next),
            show(&canary)
        );
        self.event(EventReason::StepCompleted, message.clone());
        self.notify(
            NotificationKind::StepCompleted,
            canary,
            Some(index),
            &message,
        );
    }

    /// Entering a step that gives the canary all traffic: see [`Self::baseline_stops_serving`].
    fn note_baseline_window(&mut self, index: i32) {
        if self.weight_of(index) >= 100 {
            self.baseline_stops_serving();
        }
    }

    /// The baseline served beside the canary from the first traffic until now; comparisons made
    /// after this read it over that time.
    fn baseline_stops_serving(&mut self) {
        if self.s.baseline_window.is_none() {
            let from = self.s.traffic_started_at.clone().unwrap_or(Time(self.now));
            self.s.baseline_window = Some(BaselineWindow {
                from,
                until: Time(self.now),
            });
        }
    }

    fn promote(&mut self, why: &str) {
        let Some(canary) = self.s.canary.clone() else {
            return;
        };
        let previous = self.s.stable.clone();
        let kept = match &previous {
            Some(previous) => {
                self.retire_active(previous);
                format!("{} kept scaled down", show(previous))
            }
            None => {
                self.s.legacy = Some(LegacyRole::Standby);
                format!("{} kept without traffic", self.baseline_name())
            }
        };
        // Promoted before any 100% step (a person promoted in full): it served until now.
        self.baseline_stops_serving();
        self.clear_rollout();
        self.s.stable = Some(canary.clone());
        self.s.previous_stable = previous;
        self.s.promoted_at = Some(Time(self.now));
        let message = format!(
            "promoted {} ({why}); {kept} for the {} post-promotion window",
            show(&canary),
            human(self.view().verification_window())
        );
        self.event(EventReason::Promoted, message.clone());
        self.notify(NotificationKind::Promoted, canary, None, &message);
    }

    fn end_verification(&mut self) {
        if self.s.promoted_at.take().is_some() {
            self.s.previous_stable = None;
            if self.s.legacy == Some(LegacyRole::Standby) {
                self.s.legacy = None;
            }
            self.s.consecutive_errors = 0;
            self.s.baseline_window = None;
        }
    }

    /// Sends all traffic back to what served it before: the stable revisions (or the legacy
    /// Service) during a rollout, the previous ones during the post-promotion window.
    pub fn rollback(&mut self, evidence: Evidence) {
        let legacy_standby = self.s.legacy == Some(LegacyRole::Standby);
        let (failed, restored) = match (
            self.s.canary.clone(),
            self.s.previous_stable.clone(),
            self.s.stable.clone(),
        ) {
            (Some(canary), _, stable) => (canary, stable),
            (None, Some(previous), Some(stable)) => (stable, Some(previous)),
            (None, None, Some(stable)) if legacy_standby => (stable, None),
            _ => return,
        };
        self.retire_active(&failed);
        self.clear_rollout();
        self.s.promoted_at = None;
        self.s.previous_stable = None;
        self.s.baseline_window = None;
        if restored.is_none() {
            self.s.legacy = Some(LegacyRole::Serving);
        }
        self.s.stable = restored;
        self.s.consecutive_errors = 0;
        if !self.s.failed_revisions.contains(&failed) {
            self.s.failed_revisions.push(failed.clone());
        }
        let message = format!(
            "rolled back {} to {}: {}",
            show(&failed),
            self.baseline_name(),
            evidence.message
        );
        self.s.last_rollback = Some(RollbackRecord {
            canary: failed.clone(),
            reason: evidence.reason,
            check: evidence.check,
            query: evidence.query,
            value: evidence.value,
            threshold: evidence.threshold,
            message: evidence.message,
            at: Time(self.now),
        });
        self.event(EventReason::RolledBack(evidence.reason), message.clone());
        self.notify(NotificationKind::RolledBack, failed, None, &message);
    }

    fn clear_rollout(&mut self) {
        self.s.canary = None;
        self.s.current_step = None;
        self.s.canary_weight = None;
        self.s.step_started_at = None;
        self.s.traffic_started_at = None;
        self.s.in_place_model_replicas = None;
        self.s.canary_unready_since = None;
        self.s.evidence_overdue = false;
        self.s.paused = false;
    }

    /// Records a revision leaving service with the replicas it runs now, which it keeps for
    /// `scaleDownDelay` so that in-flight documents finish.
    fn retire_active(&mut self, revisions: &Revisions) {
        let plan = plan::compute(self.input, &self.s, self.now);
        // Short of GPUs (in-place mode), the revision taking over needs the retiring vLLM's
        // GPUs to start: keeping it for the delay would deadlock both.
        let model_replicas = if self.s.in_place_model_replicas.is_some() {
            0
        } else {
            plan::replicas_of(&plan.model, &revisions.model_revision)
        };
        let retired = RetiredRevision {
            revisions: revisions.clone(),
            model_replicas,
            worker_replicas: plan::replicas_of(&plan.worker, &revisions.worker_revision),
            since: Time(self.now),
        };
        self.s.retired.retain(|r| r.revisions != *revisions);
        self.s.retired.push(retired);
    }

    /// Forgets retired revisions once scaled down, unless they are still a way back: the
    /// previous stable during the post-promotion window, or the failed revision the spec still
    /// names (kept at zero so that `retry` starts from existing objects).
    fn prune_retired(&mut self) {
        let active = [self.s.stable.clone(), self.s.canary.clone()];
        self.s
            .retired
            .retain(|r| !active.contains(&Some(r.revisions.clone())));
        let waiting = plan::retired_wait(self.input, &self.s, self.now);
        let (input, now) = (self.input, self.now);
        let previous = self.s.previous_stable.clone();
        let failed = self.s.failed_revisions.clone();
        self.s.retired.retain(|r| {
            let scaled_down = !plan::keeps_replicas(input, r, waiting, now);
            !scaled_down || previous.as_ref() == Some(&r.revisions) || failed.contains(&r.revisions)
        });
    }
}
