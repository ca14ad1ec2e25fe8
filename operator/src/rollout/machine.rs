//! The transitions: start, warm up, step, promote, verify, roll back, and manual commands.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use mineru_crds::{
    CheckKind, LegacyRole, MineruDeploymentStatus, RetiredRevision, Revisions, RollbackReason,
    RollbackRecord, Step, Verdict,
};

use super::{
    Command, Decision, Event, EventReason, Input, Notification, NotificationKind, analysis, plan,
    report,
};
use crate::gates::{Check, Source};

/// Where a rollout stands, derived from status alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Stable serves everything; nothing to watch.
    Steady,
    /// Promoted; the post-promotion window is running.
    Verifying,
    /// The canary is starting and warming up; no traffic yet.
    Warming,
    /// The canary takes the weight of this step (0-based).
    Stepping(i32),
}

pub(super) fn stage(input: &Input, status: &MineruDeploymentStatus) -> Stage {
    match (&status.canary, status.canary_weight.unwrap_or(0)) {
        (Some(_), 0) => Stage::Warming,
        (Some(_), _) => {
            let last = input.rollout.steps.len() as i32 - 1;
            Stage::Stepping(status.current_step.unwrap_or(0).clamp(0, last.max(0)))
        }
        (None, _)
            if status.promoted_at.is_some()
                && (status.previous_stable.is_some()
                    || status.legacy == Some(LegacyRole::Standby)) =>
        {
            Stage::Verifying
        }
        (None, _) => Stage::Steady,
    }
}

/// Status stores whole seconds; deciding on the same truncated instant keeps a decision and
/// its replay from a persisted status identical.
pub(super) fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

pub(super) fn later(t: Timestamp, by: Duration) -> Timestamp {
    t.checked_add(by).unwrap_or(Timestamp::MAX)
}

pub(super) fn reached(now: Timestamp, since: Option<&Time>, after: Duration) -> bool {
    since.is_some_and(|since| now >= later(since.0, after))
}

pub(super) fn show(revisions: &Revisions) -> String {
    format!("{}/{}", revisions.model_revision, revisions.worker_revision)
}

/// Revisions in words, or the legacy Service that stands in for them.
pub(super) fn show_or_legacy(input: &Input, revisions: Option<&Revisions>) -> String {
    match (revisions, input.rollout.legacy_backend()) {
        (Some(revisions), _) => show(revisions),
        (None, Some(legacy)) => format!("legacy Service {}", legacy.name),
        (None, None) => "nothing".to_owned(),
    }
}

/// Why a rollback happened, with what proves it.
pub(super) struct Evidence {
    pub reason: RollbackReason,
    pub check: Option<String>,
    pub query: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<String>,
    pub message: String,
}

impl Evidence {
    pub fn plain(reason: RollbackReason, message: String) -> Evidence {
        Evidence {
            reason,
            check: None,
            query: None,
            value: None,
            threshold: None,
            message,
        }
    }
}

pub(super) struct Machine<'a> {
    pub input: &'a Input,
    pub now: Timestamp,
    pub checks: Vec<Check>,
    pub s: MineruDeploymentStatus,
    pub events: Vec<Event>,
    pub notifications: Vec<Notification>,
}

pub(super) fn run(input: &Input) -> Decision {
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
    m.checks = analysis::checks(input, &m.s);
    // A failed revision stays blocked only while the spec still asks for it.
    m.s.failed_revisions.retain(|r| *r == input.desired);
    for command in &input.commands {
        m.command(*command);
    }
    m.follow_spec();
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
    report::finish(m)
}

impl Machine<'_> {
    pub fn stage(&self) -> Stage {
        stage(self.input, &self.s)
    }

    fn steps(&self) -> &[Step] {
        &self.input.rollout.steps
    }

    fn weight_of(&self, index: i32) -> i32 {
        plan::weight_of(self.input, index)
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

    /// The stable revisions; none while the legacy Service is the baseline.
    pub fn stable(&self) -> Option<&Revisions> {
        self.s.stable.as_ref()
    }

    /// What serves the traffic the canary does not, in words.
    pub fn baseline_name(&self) -> String {
        show_or_legacy(self.input, self.stable())
    }

    /// A model canary: a new vLLM to warm up (always, when migrating from a legacy Service).
    pub fn model_changed(&self) -> bool {
        self.s.canary.as_ref().is_some_and(|c| {
            self.stable()
                .is_none_or(|stable| c.model_revision != stable.model_revision)
        })
    }

    pub fn event(&mut self, reason: EventReason, message: String) {
        self.events.push(Event { reason, message });
    }

    fn notify(
        &mut self,
        kind: NotificationKind,
        revisions: Revisions,
        step: Option<i32>,
        message: &str,
    ) {
        self.notifications.push(Notification {
            kind,
            revisions,
            step,
            weight: self.s.canary_weight.unwrap_or(0),
            message: message.to_owned(),
        });
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
                if self.stable() == Some(&desired) || blocked {
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
            None if self.stable() != Some(&desired) && !blocked => self.start(),
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
        self.s.consecutive_inconclusive = 0;
        let tiers = match (self.stable(), self.model_changed()) {
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
        self.event(EventReason::RolloutStarted, message);
        self.s.in_place_model_replicas = self.initial_in_place();
    }

    /// Stable replicas to stop up front when the canary's GPUs may not be added. A legacy
    /// Service's GPUs are not the operator's to free.
    fn initial_in_place(&mut self) -> Option<i32> {
        if !self.model_changed() || self.stable().is_none() {
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

    /// Moves the rollout forward by one stage when its conditions hold.
    fn advance(&mut self) -> bool {
        match self.stage() {
            Stage::Steady => false,
            Stage::Verifying => {
                let window = self.input.rollout.post_promotion_window.get();
                // A window in which every query failed verified nothing: keep the way back
                // until a round answers.
                if !reached(self.now, self.s.promoted_at.as_ref(), window)
                    || self.s.consecutive_errors > 0
                {
                    return false;
                }
                let message = format!(
                    "{} passed the {} post-promotion window",
                    self.baseline_name(),
                    self.input.rollout.post_promotion_window
                );
                self.end_verification();
                self.event(EventReason::Verified, message);
                true
            }
            Stage::Warming => self.advance_warming(),
            Stage::Stepping(index) => self.advance_step(index),
        }
    }

    fn advance_warming(&mut self) -> bool {
        let canary_model = self.s.canary.as_ref().map(|c| c.model_revision.clone());
        let full_replacement = self
            .input
            .rollout
            .canary_model_replicas
            .min(self.input.sizes.model_replicas);
        if self.model_changed()
            && self.stable().is_some()
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
        if report::canary_ready(self).is_ok() {
            self.s.current_step = Some(0);
            self.s.canary_weight = Some(self.weight_of(0));
            self.s.step_started_at = Some(Time(self.now));
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
                let evaluation = analysis::judge_restarts(check, restarts);
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
        let missing = report::canary_ready(self).err().unwrap_or_default();
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
        match (report::canary_ready(self), &self.s.canary_unready_since) {
            (Err(_), None) => {
                self.s.canary_unready_since = Some(Time(self.now));
                return true;
            }
            (Err(_), since) => return self.deadline_passed(since.clone()),
            (Ok(()), Some(_)) => self.s.canary_unready_since = None,
            (Ok(()), None) => {}
        }
        let step = &self.steps()[index as usize];
        let pause_over = step
            .pause
            .as_ref()
            .is_none_or(|p| reached(self.now, self.s.step_started_at.as_ref(), p.get()));
        let gates = report::gates(self);
        if self.s.paused
            || !pause_over
            || !gates.passing()
            || report::trigger_breaching(self).is_some()
            || step.require_approval
        {
            return false;
        }
        self.complete_step(index, "gates passed");
        true
    }

    fn complete_step(&mut self, index: i32, why: &str) {
        let last = self.steps().len() as i32 - 1;
        if index >= last {
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
        self.s.paused = false;
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

    fn promote(&mut self, why: &str) {
        let Some(canary) = self.s.canary.clone() else {
            return;
        };
        let previous = self.stable().cloned();
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
        self.clear_rollout();
        self.s.stable = Some(canary.clone());
        self.s.previous_stable = previous;
        self.s.promoted_at = Some(Time(self.now));
        let message = format!(
            "promoted {} ({why}); {kept} for the {} post-promotion window",
            show(&canary),
            self.input.rollout.post_promotion_window
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
            self.s.consecutive_inconclusive = 0;
        }
    }

    /// Sends all traffic back to what served it before: the stable revisions (or the legacy
    /// Service) during a rollout, the previous ones during the post-promotion window.
    pub fn rollback(&mut self, evidence: Evidence) {
        let legacy_standby = self.s.legacy == Some(LegacyRole::Standby);
        let (failed, restored) = match (
            self.s.canary.clone(),
            self.s.previous_stable.clone(),
            self.stable().cloned(),
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
        if restored.is_none() {
            self.s.legacy = Some(LegacyRole::Serving);
        }
        self.s.stable = restored;
        self.s.consecutive_errors = 0;
        self.s.consecutive_inconclusive = 0;
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
        self.s.in_place_model_replicas = None;
        self.s.canary_unready_since = None;
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
