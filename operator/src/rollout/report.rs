//! What people read: phase, the one-line message, conditions, tier counts and the canary's
//! real share of traffic; and when to look again.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use mineru_crds::{CheckKind, MineruDeploymentStatus, Phase, TierStatus, TierStatuses, Verdict};

use super::{
    Decision, Event, Input, Notification, NotificationKind, Plan,
    analysis::{self, canary_ready, gates, trigger_breaching},
    outbox, plan,
    state::{Stage, View, human, later, show, show_or_legacy},
};
use crate::gates::Check;

fn awaiting_approval(m: &View<'_>, index: i32) -> bool {
    let step = &m.input.rollout.steps[index as usize];
    step.require_approval && canary_ready(m).is_ok() && gates(m).open(step.skip_analysis)
}

fn remaining(m: &View<'_>, since: Option<&Time>, length: std::time::Duration) -> Option<String> {
    let end = later(since?.0, length);
    (m.now < end).then(|| {
        let left = (end.as_second() - m.now.as_second()).max(0) as u64;
        human(std::time::Duration::from_secs(left))
    })
}

/// Says so when stable vLLM replicas were stopped to make room for the canary.
fn in_place(m: &View<'_>) -> String {
    match m.s.in_place_model_replicas {
        Some(1) => "; 1 stable vLLM replica stopped in place for lack of GPUs".to_owned(),
        Some(n) => format!("; {n} stable vLLM replicas stopped in place for lack of GPUs"),
        None => String::new(),
    }
}

fn message(m: &View<'_>, failed: bool, plan: &Plan) -> String {
    let stable = m.baseline_name();
    match m.stage() {
        Stage::Steady if failed => {
            let why =
                m.s.last_rollback
                    .as_ref()
                    .map_or("", |r| r.message.as_str());
            format!(
                "rolled back {} ({why}); {stable} serves all traffic; change the spec or run `kubectl mineru retry`",
                show(&m.input.desired)
            )
        }
        Stage::Steady => {
            let Some(revisions) = &plan.stable else {
                return format!("{stable} serves all traffic");
            };
            let observed = &m.input.observed;
            let (model, worker) = (&revisions.model_revision, &revisions.worker_revision);
            let (models, workers) = (
                plan::replicas_of(&plan.model, model),
                plan::replicas_of(&plan.worker, worker),
            );
            if observed.models_ready(model) >= models && observed.workers_ready(worker) >= workers {
                format!("{stable} serves all traffic")
            } else {
                format!(
                    "{stable} starting: vLLM {}/{models}, workers {}/{workers} ready",
                    observed.models_ready(model),
                    observed.workers_ready(worker)
                )
            }
        }
        Stage::Verifying => {
            let left = remaining(m, m.s.promoted_at.as_ref(), m.verification_window());
            match left {
                Some(left) => {
                    format!("promoted {stable}; post-promotion verification, {left} left")
                }
                None => {
                    let previous = show_or_legacy(m.input, m.s.previous_stable.as_ref());
                    let since = m.s.promoted_at.as_ref();
                    let failed = m.s.checks.iter().find(|c| {
                        c.kind == CheckKind::Promotion
                            && c.verdict == Verdict::Fail
                            && since.is_some_and(|since| c.evaluated_at > *since)
                    });
                    match failed {
                        Some(check) => format!(
                            "promoted {stable}; post-promotion window over, but {} failed: keeping {previous} as the way back until it passes, or a person aborts or promotes",
                            check.name
                        ),
                        None => format!(
                            "promoted {stable}; post-promotion window over, waiting for a round of checks that answers before letting {previous} go"
                        ),
                    }
                }
            }
        }
        Stage::Warming => {
            let canary = show(m.s.canary.as_ref().unwrap_or(&m.input.desired));
            let state = match canary_ready(m) {
                Ok(()) => "ready".to_owned(),
                Err(missing) => missing,
            };
            let paused = if m.s.paused { "paused; " } else { "" };
            let deadline = remaining(
                m,
                m.s.step_started_at.as_ref(),
                m.input.rollout.progress_deadline.get(),
            )
            .map_or("progress deadline reached".to_owned(), |left| {
                format!("{left} to the progress deadline")
            });
            format!(
                "{paused}starting canary {canary} before any traffic: {state}; {deadline}{}",
                in_place(m)
            )
        }
        Stage::Stepping(index) => {
            let canary = show(m.s.canary.as_ref().unwrap_or(&m.input.desired));
            let total = m.input.rollout.steps.len();
            let weight = plan::canary_weight(m.input, m.s);
            let share = plan::canary_share(m.input, plan);
            let traffic = if share == weight {
                format!("{weight}%")
            } else {
                format!("{weight}% (really {share}% by replicas)")
            };
            let step = &m.input.rollout.steps[index as usize];
            let gates = gates(m);
            let gate_text = if gates.total == 0 && step.skip_analysis {
                "no gates (skipAnalysis)".to_owned()
            } else if gates.total == 0 {
                "no criterion gates this step: add one, or set skipAnalysis".to_owned()
            } else if gates.open(step.skip_analysis) {
                format!("gates passing ({}/{})", gates.passing, gates.total)
            } else if gates.passing == gates.total {
                "every criterion passed, none on documents: add one backed by data, or set skipAnalysis".to_owned()
            } else {
                format!(
                    "gates {}/{} passing, waiting on {}",
                    gates.passing,
                    gates.total,
                    gates.blocking.unwrap_or_default()
                )
            };
            let state = if m.s.paused {
                "paused by a person".to_owned()
            } else if let Err(missing) = canary_ready(m) {
                format!("canary not ready: {missing}")
            } else if let Some(trigger) = trigger_breaching(m.s) {
                format!("rollback trigger {trigger} in breach")
            } else if m.s.consecutive_errors > 0 {
                "waiting for a round whose queries answer".to_owned()
            } else if awaiting_approval(m, index) {
                "waiting for approval (`kubectl mineru promote`)".to_owned()
            } else if let Some(left) = step
                .pause
                .as_ref()
                .and_then(|p| remaining(m, m.s.step_started_at.as_ref(), p.get()))
            {
                format!("{left} left")
            } else if m.s.evidence_overdue {
                format!(
                    "past its maxDuration of {} without enough evidence, holding",
                    step.max_duration
                )
            } else {
                match remaining(m, m.s.step_started_at.as_ref(), step.max_duration.get()) {
                    Some(left) => format!("waiting for evidence, {left} to its maxDuration"),
                    None => "waiting for gates".to_owned(),
                }
            };
            format!(
                "step {}/{total}: {traffic} to canary {canary}, {gate_text}, {state}{}",
                index + 1,
                in_place(m)
            )
        }
    }
}

fn tier(ready: i32, desired: i32, canary_ready: Option<i32>) -> TierStatus {
    TierStatus {
        ready,
        desired,
        canary_ready,
    }
}

fn tiers(m: &View<'_>, plan: &Plan) -> TierStatuses {
    let observed = &m.input.observed;
    let sum = |list: &[super::Scale], ready: &dyn Fn(&str) -> i32| {
        list.iter().fold((0, 0), |(r, d), s| {
            (r + ready(&s.revision).min(s.replicas), d + s.replicas)
        })
    };
    let (model_ready, model_desired) = sum(&plan.model, &|r| observed.models_ready(r));
    let (worker_ready, worker_desired) = sum(&plan.worker, &|r| observed.workers_ready(r));
    let canary_model = plan
        .canary
        .as_ref()
        .filter(|c| {
            plan.stable
                .as_ref()
                .is_none_or(|stable| c.model_revision != stable.model_revision)
        })
        .map(|c| observed.models_ready(&c.model_revision));
    let canary_worker = plan
        .canary
        .as_ref()
        .map(|c| observed.workers_ready(&c.worker_revision));
    TierStatuses {
        model: tier(model_ready, model_desired, canary_model),
        worker: tier(worker_ready, worker_desired, canary_worker),
    }
}

fn condition_true(status: &MineruDeploymentStatus, kind: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

fn condition(m: &View<'_>, kind: &str, on: bool, reason: &str, message: &str) -> Condition {
    let status = if on { "True" } else { "False" };
    let since = m
        .input
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or(Time(m.now), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: since,
        observed_generation: m.s.observed_generation,
    }
}

/// `ModelServerFailing`: vLLM containers of a revision keep exiting, and what they said last.
/// A crash loop otherwise shows only as a tier that never gets ready.
fn model_server_failing(m: &View<'_>) -> Condition {
    let failures = &m.input.observed.vllm_failures;
    let message = failures
        .iter()
        .map(|(revision, why)| format!("revision {revision}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    let failing = !failures.is_empty();
    condition(
        m,
        "ModelServerFailing",
        failing,
        if failing {
            "ContainerExiting"
        } else {
            "AsExpected"
        },
        &message,
    )
}

/// The next instant at which time alone changes something.
fn requeue_at(m: &View<'_>, plan: &Plan) -> Option<Timestamp> {
    let rollout = &m.input.rollout;
    let mut at = Vec::new();
    let stage = m.stage();
    if !analysis::applicable(m).is_empty() {
        // The next round; when one is overdue (the controller sent none), a full interval on.
        let interval = rollout.analysis.interval.get();
        let next = m.s.last_analysis_at.as_ref().map(|t| later(t.0, interval));
        at.push(
            next.filter(|t| *t > m.now)
                .unwrap_or(later(m.now, interval)),
        );
    }
    let started = m.s.step_started_at.as_ref();
    match stage {
        Stage::Warming => {
            at.extend(started.map(|t| later(t.0, rollout.progress_deadline.get())));
            // A warm-up that answers and a preflight problem that is fixed make no watch event:
            // look again every interval.
            at.push(later(m.now, rollout.analysis.interval.get()));
        }
        Stage::Stepping(index) => {
            let unready = m.s.canary_unready_since.as_ref();
            at.extend(unready.map(|t| later(t.0, rollout.progress_deadline.get())));
            let step = &rollout.steps[index as usize];
            at.extend(
                started
                    .zip(step.pause.as_ref())
                    .map(|(t, p)| later(t.0, p.get())),
            );
            at.extend(started.map(|t| later(t.0, step.max_duration.get())));
        }
        Stage::Verifying => at.extend(
            m.s.promoted_at
                .as_ref()
                .map(|t| later(t.0, m.verification_window())),
        ),
        Stage::Steady => {}
    }
    let delay = rollout.scale_down_delay.get();
    let retired_running = |r: &&mineru_crds::RetiredRevision| {
        plan::replicas_of(&plan.model, &r.revisions.model_revision) > 0
            || plan::replicas_of(&plan.worker, &r.revisions.worker_revision) > 0
    };
    at.extend(
        m.s.retired
            .iter()
            .filter(retired_running)
            .map(|r| later(r.since.0, delay)),
    );
    at.into_iter().filter(|t| *t > m.now).min()
}

/// Available: the stable revisions can answer, i.e. each tier the spec sizes above zero has a
/// ready replica (all of them being ready is `stable_ready`, which a scale-up briefly is not;
/// a stable vLLM stopped in place for the canary is not available). A legacy Service serving
/// instead is taken as available: its health is not the operator's to judge.
fn serving(m: &View<'_>, plan: &Plan) -> bool {
    let Some(stable) = &plan.stable else {
        return true;
    };
    let (observed, sizes) = (&m.input.observed, m.input.sizes);
    let tier = |size: i32, ready: i32| size == 0 || ready > 0;
    let model = observed.models_ready(&stable.model_revision);
    let worker = observed.workers_ready(&stable.worker_revision);
    tier(sizes.model_replicas, model) && tier(sizes.worker_replicas, worker)
}

pub(super) fn finish(
    input: &Input,
    now: Timestamp,
    checks: &[Check],
    mut s: MineruDeploymentStatus,
    events: Vec<Event>,
    mut notifications: Vec<Notification>,
) -> Decision {
    let m = View {
        input,
        s: &s,
        checks,
        now,
    };
    let plan = plan::compute(m.input, m.s, m.now);
    let failed = m.s.failed_revisions.contains(&m.input.desired);
    let stage = m.stage();
    let stable_ready = plan::stable_ready(m.input, m.s, m.now);
    let serving = serving(&m, &plan);
    let waiting_for_person = match stage {
        Stage::Stepping(index) => m.s.paused || awaiting_approval(&m, index),
        Stage::Warming => m.s.paused,
        _ => false,
    };
    let in_rollout = matches!(
        stage,
        Stage::Warming | Stage::Stepping(_) | Stage::Verifying
    );
    let preflight_failed =
        matches!(stage, Stage::Warming) && !m.input.observed.preflight.is_empty();
    let phase = if waiting_for_person {
        Phase::Paused
    } else if failed {
        Phase::Degraded
    } else if in_rollout || !stable_ready {
        Phase::Progressing
    } else {
        Phase::Healthy
    };
    let text = message(&m, failed, &plan);
    let about_rollout = |kind, message: String| Notification {
        kind,
        revisions: m
            .s
            .canary
            .clone()
            .unwrap_or_else(|| m.input.desired.clone()),
        step: m.s.current_step,
        weight: plan.canary_weight,
        message,
        rollback: None,
    };
    if preflight_failed && !condition_true(&m.input.status, "PreflightFailed") {
        let why = m.input.observed.preflight.join("; ");
        notifications.push(about_rollout(
            NotificationKind::PreflightFailed,
            format!("preflight failed, waiting without a deadline: {why}"),
        ));
    }
    if phase == Phase::Paused && m.input.status.phase != Some(Phase::Paused) {
        notifications.push(about_rollout(NotificationKind::Paused, text.clone()));
    }
    let rollback_reason =
        m.s.last_rollback
            .as_ref()
            .map_or("RolledBack".to_owned(), |r| format!("{:?}", r.reason));
    let conditions = vec![
        condition(
            &m,
            "Available",
            serving,
            match (serving, &plan.stable) {
                (true, Some(_)) => "StableServing",
                (true, None) => "LegacyServing",
                (false, _) => "StableNotServing",
            },
            &match &plan.stable {
                Some(_) => format!("stable {}", m.baseline_name()),
                None => format!("{} serves the stable share", m.baseline_name()),
            },
        ),
        condition(
            &m,
            "Progressing",
            in_rollout,
            match stage {
                Stage::Verifying => "PostPromotionVerification",
                Stage::Warming | Stage::Stepping(_) => "RolloutInProgress",
                Stage::Steady => "NoRollout",
            },
            &text,
        ),
        condition(
            &m,
            "Degraded",
            failed,
            if failed {
                &rollback_reason
            } else {
                "AsExpected"
            },
            if failed { &text } else { "" },
        ),
        condition(
            &m,
            "PreflightFailed",
            preflight_failed,
            if preflight_failed {
                "PreflightFailed"
            } else {
                "PreflightPassed"
            },
            &if preflight_failed {
                m.input.observed.preflight.join("; ")
            } else {
                String::new()
            },
        ),
        model_server_failing(&m),
        condition(
            &m,
            "RolledBack",
            failed,
            if failed {
                &rollback_reason
            } else {
                "NotRolledBack"
            },
            if failed { &text } else { "" },
        ),
    ];
    // Conditions owned by others are kept as they are.
    let ours = [
        "Available",
        "Progressing",
        "Degraded",
        "PreflightFailed",
        "ModelServerFailing",
        "RolledBack",
    ];
    let mut all: Vec<Condition> =
        m.s.conditions
            .iter()
            .filter(|c| !ours.contains(&c.type_.as_str()))
            .cloned()
            .collect();
    all.extend(conditions);
    let tiers = tiers(&m, &plan);
    let requeue_at = requeue_at(&m, &plan);
    let webhook = m.input.rollout.notifications.is_some();
    let share = plan::canary_share(m.input, &plan);
    s.conditions = all;
    s.phase = Some(phase);
    s.message = Some(text);
    s.canary_weight = s.canary.as_ref().map(|_| plan.canary_weight);
    s.canary_share = s.canary.as_ref().map(|_| share);
    s.tiers = Some(tiers);
    outbox::record(&mut s.pending_notifications, &notifications, webhook, now);
    let requeue_at = [
        requeue_at,
        outbox::next_attempt(&s.pending_notifications, now),
    ]
    .into_iter()
    .flatten()
    .min();
    Decision {
        plan,
        status: s,
        events,
        notifications,
        requeue_at,
    }
}
