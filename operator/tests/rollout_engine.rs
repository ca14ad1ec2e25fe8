//! The rollout engine as a specification: one behaviour per test, driven through a small world
//! (see `rollout_support`) where the cluster does what the plan says and the test chooses what
//! Prometheus answers.

mod rollout_support;

use mineru_crds::{CheckKind, Phase, QualityResult, RollbackReason, Verdict};
use mineru_operator::{
    gates::Source,
    rollout::{CapacityRead, Command, EventReason, NotificationKind, Role},
};
use rollout_support::{Answer, World, new_model, new_worker, old};
use serde_json::json;

fn defaults() -> serde_json::Value {
    json!({})
}

// ---- steady state ----

#[test]
fn a_new_object_makes_its_first_revisions_stable_without_a_rollout() {
    let world = World::new(defaults());
    assert_eq!(world.status().stable, Some(old()));
    assert_eq!(world.status().canary, None);
    assert_eq!(world.status().observed_generation, Some(1));
    assert_eq!(world.message(), "m-41aa/w-88c2 serves all traffic");
    assert_eq!(world.replicas("m-41aa"), Some(2));
    assert_eq!(world.replicas("w-88c2"), Some(4));
}

#[test]
fn steady_state_decides_nothing_new() {
    let mut world = World::new(defaults());
    world.wait(3600);
    let decision = world.decide().clone();
    assert!(decision.events.is_empty());
    assert_eq!(decision.requeue_at, None);
    assert_eq!(world.phase(), Phase::Healthy);
}

// ---- two-tier ordering ----

#[test]
fn a_model_change_starts_canary_vllm_with_no_traffic() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    assert_eq!(world.phase(), Phase::Progressing);
    assert_eq!(world.weight(), 0);
    assert_eq!(world.replicas("m-7f3c"), Some(1), "canaryModelReplicas");
    assert_eq!(
        world.replicas("w-19ab"),
        Some(0),
        "no canary worker before vLLM is warm"
    );
    assert_eq!(world.replicas("m-41aa"), Some(2));
    assert_eq!(world.replicas("w-88c2"), Some(4));
    assert_eq!(world.emitted(EventReason::RolloutStarted), 1);
}

#[test]
fn a_ready_but_cold_canary_vllm_gets_no_traffic() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    world.converge();
    world.input.observed.warmed_up.remove("m-7f3c");
    world.decide();
    assert_eq!(world.weight(), 0);
    assert!(
        world.message().contains("vLLM not warmed up"),
        "{}",
        world.message()
    );
}

#[test]
fn a_warmed_up_canary_vllm_gets_the_first_step_of_traffic() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    world.converge();
    world.decide();
    assert_eq!(world.step_index(), Some(0));
    assert_eq!(world.weight(), 10);
    assert_eq!(world.replicas("w-19ab"), Some(1), "ceil(10% of 4)");
    assert_eq!(world.replicas("w-88c2"), Some(3));
    assert_eq!(world.emitted(EventReason::CanaryReady), 1);
}

#[test]
fn a_failed_preflight_holds_before_any_traffic_without_a_deadline_and_says_why() {
    let mut world = World::new(defaults());
    world.ship(new_worker());
    world.input.observed.preflight = vec!["Secret parsing/vllm-api-key not found".into()];
    world.decide();
    world.converge();
    world.decide();
    assert_eq!(world.weight(), 0);
    let preflight = |world: &World| {
        world
            .status()
            .conditions
            .iter()
            .find(|c| c.type_ == "PreflightFailed")
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    assert_eq!(
        preflight(&world),
        Some((
            "True".to_owned(),
            "Secret parsing/vllm-api-key not found".to_owned()
        ))
    );
    assert!(
        world.message().contains("preflight failed"),
        "{}",
        world.message()
    );
    // Holding is not failing: past the progress deadline nothing is rolled back.
    world.wait(31 * 60);
    world.decide();
    assert!(world.status().last_rollback.is_none());
    assert_eq!(world.phase(), Phase::Progressing);
    // Once what was missing is there, the canary gets its first step.
    world.input.observed.preflight.clear();
    world.decide();
    assert_eq!(world.weight(), 10);
    assert_eq!(
        preflight(&world).map(|(status, _)| status),
        Some("False".to_owned())
    );
}

#[test]
fn only_a_ready_canary_vllm_before_its_first_traffic_is_probed_and_preflighted() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    // The rollout starts in this decision: free GPUs are counted, nothing is ready to probe.
    let needs = world.needs();
    assert_eq!(needs.warmup, None);
    assert_eq!(needs.capacity, Some(CapacityRead::Free));
    assert_eq!(needs.preflight, Some(new_model()));
    world.decide();
    world.converge();
    world.input.observed.warmed_up.clear();
    let needs = world.needs();
    assert_eq!(needs.warmup.as_deref(), Some("m-7f3c"), "ready: probe it");
    assert_eq!(needs.capacity, Some(CapacityRead::Nodes));
    world.input.observed.warmed_up.insert("m-7f3c".into());
    world.decide();
    assert_eq!(world.weight(), 10);
    // Once it took traffic, the checks judge it: a later failure is a breach, not "cold".
    let needs = world.needs();
    assert_eq!(
        (needs.warmup, needs.preflight, needs.capacity),
        (None, None, None)
    );

    // A worker-only change keeps the stable vLLM: nothing to warm up or count.
    let mut world = World::new(defaults());
    world.ship(new_worker());
    let needs = world.needs();
    assert_eq!((needs.warmup, needs.capacity), (None, None));
    assert_eq!(needs.preflight, Some(new_worker()));
    // The first deployment has no traffic to protect.
    let world = World::new(defaults());
    assert_eq!(world.needs(), Default::default());
}

#[test]
fn a_worker_only_change_runs_no_vllm_canary() {
    let world = World::at_first_step(defaults(), new_worker());
    let plan = &world.last.as_ref().unwrap().plan;
    assert_eq!(plan.model.len(), 1, "{plan:?}");
    assert_eq!(world.replicas("m-41aa"), Some(2));
    assert_eq!(world.replicas("w-5d10"), Some(1));
}

#[test]
fn a_canary_not_ready_and_warm_by_the_progress_deadline_is_rolled_back() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    world.wait(29 * 60);
    world.decide();
    assert_eq!(world.status().canary, Some(new_model()));
    world.wait(60);
    world.decide();
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::ProgressDeadlineExceeded);
    assert!(
        rollback.message.contains("vLLM 0/1 ready"),
        "{}",
        rollback.message
    );
    assert_eq!(world.phase(), Phase::Degraded);
    assert_eq!(world.status().failed_revisions, vec![new_model()]);
}

#[test]
fn gateway_routing_starts_canary_workers_before_any_weight() {
    let routing = json!({"trafficRouting": {"gatewayAPI": {"httpRoute": {"name": "docs"}}}});
    let mut world = World::new(routing);
    world.ship(new_model());
    world.decide();
    assert_eq!(world.weight(), 0);
    assert_eq!(world.replicas("w-19ab"), Some(1));
    assert_eq!(world.replicas("w-88c2"), Some(4), "stable keeps full size");
    world.converge();
    world.input.observed.worker_ready.insert("w-19ab".into(), 0);
    world.decide();
    assert_eq!(world.weight(), 0, "canary workers not ready");
    world.converge();
    world.decide();
    assert_eq!(world.weight(), 10);
}

#[test]
fn replica_routing_gives_the_canary_ceil_weight_times_total_workers() {
    // (step weights, workers) -> (canary, stable) workers at each step
    let cases = [
        (vec![10, 50, 100], 4, vec![(1, 3), (2, 2), (4, 0)]),
        (vec![10, 50, 100], 10, vec![(1, 9), (5, 5), (10, 0)]),
        (vec![25, 100], 3, vec![(1, 2), (3, 0)]),
        // One worker cannot be split: stable keeps one until the last step.
        (vec![1, 100], 1, vec![(1, 1), (1, 0)]),
        (vec![60, 100], 2, vec![(2, 1), (2, 0)]),
    ];
    for (weights, total, expected) in cases {
        let steps: Vec<_> = weights.iter().map(|w| json!({"weight": w})).collect();
        let mut world = World::new(json!({"steps": steps, "analysis": {"defaultCriteria": false}}));
        world.input.sizes.worker_replicas = total;
        world.decide();
        world.converge();
        world.ship(new_worker());
        world.decide();
        let mut seen = Vec::new();
        for _ in &weights {
            seen.push((
                world.replicas("w-5d10").unwrap(),
                world.replicas("w-88c2").unwrap(),
            ));
            world.converge();
            world.command(Command::PromoteStep);
            world.decide();
        }
        assert_eq!(seen, expected, "{weights:?} x {total}");
    }
}

// ---- steps, pauses, gates ----

#[test]
fn a_step_lasts_its_pause_even_when_gates_pass() {
    let mut world = World::at_first_step(defaults(), new_model());
    for _ in 0..4 {
        world.round(Answer::Pass);
        assert_eq!(world.step_index(), Some(0), "{}", world.message());
    }
    world.round(Answer::Pass);
    assert_eq!(world.step_index(), Some(1), "5m pause over");
    assert_eq!(world.weight(), 50);
}

#[test]
fn the_status_message_says_step_weight_canary_gates_and_time_left() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.round(Answer::Pass);
    assert_eq!(
        world.message(),
        "step 1/3: 10% (really 25% by replicas) to canary m-7f3c/w-19ab, gates passing (11/11), 4m left"
    );
}

#[test]
fn gates_must_pass_within_the_step_being_left() {
    let steps = json!({"steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}]});
    let mut world = World::at_first_step(steps, new_model());
    world.round(Answer::Pass);
    assert_eq!(
        world.step_index(),
        Some(1),
        "no pause: leaves on the first pass"
    );
    world.converge();
    world.decide();
    assert_eq!(
        world.step_index(),
        Some(1),
        "step 2's gates have not run yet"
    );
    world.round(Answer::Pass);
    assert_eq!(world.step_index(), Some(2));
}

#[test]
fn completing_a_step_emits_an_event_and_a_notification() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.wait(4 * 60);
    world.decide();
    let decision = world.round(Answer::Pass);
    let notification = decision.notifications.first().expect("notified").clone();
    assert_eq!(notification.kind, NotificationKind::StepCompleted);
    assert_eq!(notification.step, Some(0));
    assert_eq!(notification.weight, 50);
    assert_eq!(notification.revisions, new_model());
    assert_eq!(
        notification.message,
        "step 1/3 (10%) completed: gates passed; now 50% to canary m-7f3c/w-19ab"
    );
    assert_eq!(world.emitted(EventReason::StepCompleted), 1);
}

#[test]
fn a_healthy_canary_walks_10_50_100_and_is_promoted() {
    let mut world = World::at_first_step(defaults(), new_model());
    let mut notifications = Vec::new();
    for _ in 0..40 {
        let decision = world.round(Answer::Pass).clone();
        notifications.extend(decision.notifications.iter().map(|n| n.kind));
        world.converge();
        world.decide();
        if world.status().canary.is_none() {
            break;
        }
    }
    assert_eq!(world.status().stable, Some(new_model()));
    assert_eq!(world.status().previous_stable, Some(old()));
    assert_eq!(
        notifications,
        vec![
            NotificationKind::StepCompleted,
            NotificationKind::StepCompleted,
            NotificationKind::Promoted
        ]
    );
    assert_eq!(world.emitted(EventReason::StepCompleted), 2);
    assert_eq!(world.emitted(EventReason::Promoted), 1);
    assert_eq!(world.phase(), Phase::Progressing, "post-promotion window");
    assert_eq!(world.replicas("m-7f3c"), Some(2));
    assert_eq!(world.replicas("w-19ab"), Some(4));
}

#[test]
fn the_previous_revision_is_scaled_down_after_the_delay_but_kept_during_the_window() {
    let mut world = promoted();
    assert_eq!(world.replicas("m-41aa"), Some(2), "kept for scaleDownDelay");
    world.wait(30);
    world.decide();
    assert_eq!(
        world.replicas("m-41aa"),
        Some(0),
        "scaled down, not deleted"
    );
    assert_eq!(world.replicas("w-88c2"), Some(0));
    // The window is the longest trigger's 15m (latency-spike), beyond the 10m default.
    for _ in 0..15 {
        world.round(Answer::Pass);
    }
    assert_eq!(world.phase(), Phase::Healthy, "{}", world.message());
    assert_eq!(world.replicas("m-41aa"), None, "deleted after the window");
    assert_eq!(world.status().previous_stable, None);
    assert_eq!(world.emitted(EventReason::Verified), 1);
}

fn promoted() -> World {
    let mut world = World::at_first_step(defaults(), new_model());
    for _ in 0..40 {
        world.round(Answer::Pass);
        world.converge();
        if world.status().canary.is_none() {
            break;
        }
        world.decide();
    }
    assert!(world.status().promoted_at.is_some(), "{}", world.message());
    world
}

// ---- approval, pause, manual commands ----

#[test]
fn a_step_that_requires_approval_waits_for_promote() {
    let steps = json!({"steps": [{"weight": 10, "requireApproval": true}, {"weight": 100}]});
    let mut world = World::at_first_step(steps, new_model());
    let mut paused_notifications = 0;
    for _ in 0..5 {
        let decision = world.round(Answer::Pass);
        paused_notifications += decision
            .notifications
            .iter()
            .filter(|n| n.kind == NotificationKind::Paused)
            .count();
    }
    assert_eq!(world.step_index(), Some(0));
    assert_eq!(world.phase(), Phase::Paused);
    assert!(
        world.message().contains("waiting for approval"),
        "{}",
        world.message()
    );
    assert_eq!(paused_notifications, 1, "notified once, not every round");
    world.command(Command::PromoteStep);
    world.decide();
    assert_eq!(world.step_index(), Some(1));
    assert_eq!(world.phase(), Phase::Progressing);
}

#[test]
fn promote_step_leaves_the_step_without_waiting_for_gates_or_pause() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::PromoteStep);
    world.decide();
    assert_eq!(world.step_index(), Some(1));
    assert_eq!(world.weight(), 50);
}

#[test]
fn promote_full_promotes_now() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::PromoteFull);
    world.decide();
    assert_eq!(world.status().stable, Some(new_model()));
    assert_eq!(world.status().canary, None);
    assert_eq!(world.emitted(EventReason::Promoted), 1);
}

#[test]
fn promote_is_refused_while_the_canary_is_warming_up() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    world.command(Command::PromoteFull);
    world.decide();
    assert_eq!(world.weight(), 0);
    assert_eq!(world.status().stable, Some(old()));
    assert_eq!(world.emitted(EventReason::CommandIgnored), 1);
}

#[test]
fn pause_stops_the_steps_and_resume_continues() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Pause);
    world.decide();
    assert_eq!(world.phase(), Phase::Paused);
    for _ in 0..10 {
        world.round(Answer::Pass);
    }
    assert_eq!(world.step_index(), Some(0), "paused");
    world.command(Command::Resume);
    world.decide();
    assert_eq!(world.phase(), Phase::Progressing);
    world.round(Answer::Pass);
    assert_eq!(world.step_index(), Some(1));
}

#[test]
fn a_paused_rollout_still_rolls_back_on_a_trigger() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Pause);
    world.decide();
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 4);
    world.round(Answer::Pass);
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::TriggerFired);
    assert_eq!(rollback.check.as_deref(), Some("vllm-crashloop"));
}

#[test]
fn abort_rolls_back_at_once() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Abort);
    world.decide();
    assert_eq!(world.weight(), 0);
    assert_eq!(world.status().canary, None);
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::Aborted)
    );
    assert_eq!(world.phase(), Phase::Degraded);
    assert_eq!(
        world.emitted(EventReason::RolledBack(RollbackReason::Aborted)),
        1
    );
}

#[test]
fn commands_that_do_not_apply_are_reported_and_change_nothing() {
    let cases = [
        Command::Abort,
        Command::PromoteStep,
        Command::PromoteFull,
        Command::Pause,
        Command::Retry,
        Command::Resume,
    ];
    for command in cases {
        let mut world = World::new(defaults());
        let before = world.status().clone();
        world.command(command);
        world.decide();
        assert_eq!(world.emitted(EventReason::CommandIgnored), 1, "{command:?}");
        assert_eq!(world.status().stable, before.stable, "{command:?}");
        assert_eq!(world.phase(), Phase::Healthy, "{command:?}");
    }
}

// ---- failed revisions and retry ----

#[test]
fn a_failed_revision_is_not_retried_until_asked() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Abort);
    world.decide();
    for _ in 0..5 {
        world.wait(600);
        world.decide();
    }
    assert_eq!(world.status().canary, None);
    assert_eq!(world.phase(), Phase::Degraded);
    world.command(Command::Retry);
    world.decide();
    assert_eq!(world.status().canary, Some(new_model()));
    assert_eq!(world.status().failed_revisions, vec![]);
    assert_eq!(world.emitted(EventReason::Retried), 1);
}

#[test]
fn a_spec_change_after_a_failure_starts_the_new_revisions() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Abort);
    world.decide();
    world.ship(new_worker());
    world.decide();
    assert_eq!(world.status().canary, Some(new_worker()));
    assert_eq!(
        world.status().failed_revisions,
        vec![],
        "forgotten once the spec moved on"
    );
}

#[test]
fn a_rolled_back_canary_keeps_its_replicas_for_the_scale_down_delay_then_scales_to_zero() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Abort);
    world.decide();
    assert_eq!(world.replicas("w-19ab"), Some(1));
    assert_eq!(
        world.replicas("w-88c2"),
        Some(4),
        "stable back to full at once"
    );
    assert_eq!(world.replicas("m-7f3c"), Some(1));
    world.converge();
    world.wait(30);
    world.decide();
    assert_eq!(world.replicas("w-19ab"), Some(0));
    assert_eq!(
        world.replicas("m-7f3c"),
        Some(0),
        "kept at zero while the spec names it"
    );
}

#[test]
fn a_spec_change_mid_rollout_supersedes_the_canary() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.ship(new_worker());
    world.decide();
    assert_eq!(world.status().canary, Some(new_worker()));
    assert_eq!(world.step_index(), Some(0));
    assert_eq!(world.emitted(EventReason::RolloutSuperseded), 1);
    assert_eq!(
        world.replicas("w-19ab"),
        Some(1),
        "old canary drains for the delay"
    );
    assert!(world.status().failed_revisions.is_empty());
}

#[test]
fn reverting_the_spec_mid_rollout_cancels_without_a_failure() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.ship(old());
    world.decide();
    assert_eq!(world.status().canary, None);
    assert_eq!(world.emitted(EventReason::RolloutCancelled), 1);
    assert_eq!(world.status().last_rollback, None);
    world.converge();
    world.decide();
    assert_eq!(world.phase(), Phase::Healthy);
}

// ---- promotion criteria ----

#[test]
fn a_failed_criterion_leaving_the_first_step_rolls_back_with_evidence() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.wait(60);
    world.answer(Answer::Pass, &[("error-ratio", Answer::Fail)]);
    world.decide();
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::CriterionFailed);
    assert_eq!(rollback.check.as_deref(), Some("error-ratio"));
    assert!(
        rollback
            .query
            .unwrap()
            .contains("mineru_worker_requests_total")
    );
    assert!(rollback.value.is_some());
    assert_eq!(
        rollback.threshold.as_deref(),
        Some("<= 1.05 x max(stable, 0.01)")
    );
    assert_eq!(world.weight(), 0);
}

#[test]
fn a_failed_criterion_leaving_the_second_step_holds_there() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.pass_step(10);
    for _ in 0..15 {
        world.wait(60);
        world.answer(Answer::Pass, &[("latency-p95", Answer::Fail)]);
        world.decide();
    }
    assert_eq!(world.step_index(), Some(1));
    assert_eq!(world.status().last_rollback, None);
    assert_eq!(world.emitted(EventReason::Holding), 1, "said once");
    assert!(
        world.message().contains("waiting on latency-p95 Fail"),
        "{}",
        world.message()
    );
    world.round(Answer::Pass);
    assert_eq!(world.step_index(), Some(2), "moves on once it passes");
}

#[test]
fn failure_limit_tolerates_that_many_failures_per_step() {
    let mut world = World::at_first_step(json!({"analysis": {"failureLimit": 2}}), new_model());
    for _ in 0..2 {
        world.wait(60);
        world.answer(Answer::Pass, &[("error-ratio", Answer::Fail)]);
        world.decide();
    }
    assert_eq!(world.status().canary, Some(new_model()));
    assert_eq!(
        world
            .check("error-ratio", CheckKind::Promotion)
            .unwrap()
            .failures,
        2
    );
    world.wait(60);
    world.answer(Answer::Pass, &[("error-ratio", Answer::Fail)]);
    world.decide();
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::CriterionFailed)
    );
}

#[test]
fn failures_are_counted_per_step() {
    let mut world = World::at_first_step(json!({"analysis": {"failureLimit": 1}}), new_model());
    world.wait(60);
    world.answer(Answer::Pass, &[("vllm-queue-depth", Answer::Fail)]);
    world.decide();
    world.pass_step(10);
    assert_eq!(
        world
            .check("vllm-queue-depth", CheckKind::Promotion)
            .unwrap()
            .failures,
        0
    );
}

/// The checks a round reads for the judged revision, by name, in order.
fn judged_reads(world: &World, kind: Option<CheckKind>) -> Vec<String> {
    world
        .needs()
        .readings
        .iter()
        .filter(|r| r.role == Role::Judged && kind.is_none_or(|k| r.kind == k))
        .map(|r| r.check.clone())
        .collect()
}

#[test]
fn a_criterion_limited_to_other_steps_is_not_run() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.wait(60);
    let names = judged_reads(&world, Some(CheckKind::Promotion));
    assert_eq!(
        names,
        [
            "error-ratio",
            "latency-p95",
            "truncated-answers",
            "repetition",
            "empty-pages",
            "layout-mix",
            "blocks-per-page",
            "breaker-opens",
            "vllm-queue-depth",
            "vllm-ttft-p95",
        ]
    );
}

#[test]
fn without_criteria_a_step_holds_and_says_what_it_lacks() {
    let mut world =
        World::at_first_step(json!({"analysis": {"defaultCriteria": false}}), new_model());
    world.wait(5 * 60);
    world.decide();
    assert_eq!(world.step_index(), Some(0), "no evidence, no promotion");
    assert!(
        world.message().contains("no criterion gates this step"),
        "{}",
        world.message()
    );
}

#[test]
fn a_step_that_skips_analysis_ends_with_its_pause_and_says_so() {
    let steps = json!({"analysis": {"defaultCriteria": false}, "steps": [
        {"weight": 10, "pause": "5m", "skipAnalysis": true},
        {"weight": 100, "skipAnalysis": true}
    ]});
    let mut world = World::at_first_step(steps, new_model());
    world.wait(5 * 60);
    world.decide();
    world.converge();
    world.decide();
    assert_eq!(
        world.status().stable,
        Some(new_model()),
        "{}",
        world.message()
    );
    let notes: Vec<_> = world
        .events
        .iter()
        .filter(|(r, _)| matches!(r, EventReason::StepCompleted | EventReason::Promoted))
        .map(|(_, note)| note.clone())
        .collect();
    assert!(
        notes[0].contains("without analysis") && notes[1].contains("promoted without analysis"),
        "{notes:?}"
    );
}

#[test]
fn passing_guards_alone_are_no_evidence() {
    // Every criterion of this step passes, but none stands on a document: no promotion.
    let spec = json!({"analysis": {"defaultCriteria": false, "promotionCriteria": [
        {"name": "bare-value", "query": "vector(0)", "max": 1}
    ]}});
    let mut world = World::at_first_step(spec, new_worker());
    for _ in 0..10 {
        world.round(Answer::Pass);
    }
    assert_eq!(world.step_index(), Some(0));
    assert!(
        world.message().contains("none on documents"),
        "{}",
        world.message()
    );
}

// ---- rollback triggers ----

#[test]
fn a_trigger_breach_shorter_than_its_for_does_not_roll_back() {
    let mut world = World::at_first_step(defaults(), new_model());
    for _ in 0..14 {
        world.wait(60);
        world.answer(Answer::Pass, &[("latency-spike", Answer::Fail)]);
        world.decide();
    }
    assert_eq!(world.status().canary, Some(new_model()));
    assert_eq!(
        world.step_index(),
        Some(0),
        "a breaching trigger also blocks the step"
    );
    assert!(
        world.message().contains("latency-spike in breach"),
        "{}",
        world.message()
    );
}

#[test]
fn a_trigger_breach_sustained_for_its_duration_rolls_back() {
    let mut world = World::at_first_step(defaults(), new_model());
    for _ in 0..16 {
        world.wait(60);
        world.answer(Answer::Pass, &[("latency-spike", Answer::Fail)]);
        world.decide();
    }
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::TriggerFired);
    assert_eq!(rollback.check.as_deref(), Some("latency-spike"));
    assert_eq!(rollback.threshold.as_deref(), Some("<= 120"));
}

#[test]
fn a_passing_round_restarts_a_trigger_breach() {
    let mut world = World::at_first_step(defaults(), new_model());
    for minute in 0..20 {
        world.wait(60);
        let answer = if minute == 10 {
            Answer::Pass
        } else {
            Answer::Fail
        };
        world.answer(Answer::Pass, &[("latency-spike", answer)]);
        world.decide();
    }
    assert_eq!(
        world.status().canary,
        Some(new_model()),
        "9 + 9 minutes, never 15 in a row"
    );
}

#[test]
fn a_crash_looping_canary_vllm_rolls_back_at_once() {
    let mut world = World::at_first_step(defaults(), new_model());
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 4);
    world.round(Answer::Pass);
    assert_eq!(
        world
            .status()
            .last_rollback
            .as_ref()
            .and_then(|r| r.check.clone())
            .as_deref(),
        Some("vllm-crashloop")
    );
}

#[test]
fn any_canary_vllm_restart_fails_the_step() {
    let mut world = World::at_first_step(defaults(), new_model());
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 1);
    world.round(Answer::Pass);
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.check.as_deref(), Some("vllm-restarts"));
    assert_eq!(rollback.value, Some(1.0));
}

// ---- errors and inconclusive ----

#[test]
fn a_dead_prometheus_never_promotes() {
    let mut world = World::at_first_step(defaults(), new_model());
    for _ in 0..120 {
        world.round(Answer::Error);
    }
    assert_eq!(world.step_index(), Some(0));
    assert_eq!(world.status().canary, Some(new_model()));
    assert_eq!(
        world.emitted(EventReason::Holding),
        1,
        "onError: Hold, said once"
    );
}

#[test]
fn query_errors_beyond_the_limit_roll_back_when_on_error_is_rollback() {
    let mut world = World::at_first_step(json!({"analysis": {"onError": "Rollback"}}), new_model());
    for _ in 0..4 {
        world.round(Answer::Error);
    }
    assert_eq!(world.status().consecutive_errors, 4);
    assert_eq!(
        world.status().canary,
        Some(new_model()),
        "4 errors are tolerated"
    );
    world.round(Answer::Error);
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::AnalysisError)
    );
}

#[test]
fn a_clean_round_resets_the_error_count() {
    let mut world = World::at_first_step(json!({"analysis": {"onError": "Rollback"}}), new_model());
    for _ in 0..4 {
        world.round(Answer::Error);
    }
    world.round(Answer::Pass);
    for _ in 0..4 {
        world.round(Answer::Error);
    }
    assert_eq!(world.status().canary, Some(new_model()));
}

#[test]
fn inconclusive_holds_and_never_promotes() {
    let mut world = World::at_first_step(defaults(), new_model());
    for _ in 0..30 {
        world.round(Answer::Inconclusive);
    }
    assert_eq!(world.step_index(), Some(0));
    assert_eq!(world.status().canary, Some(new_model()));
    let check = world.check("error-ratio", CheckKind::Promotion).unwrap();
    assert_eq!(check.value, None, "no documents: no share");
    assert_eq!(check.samples, Some(0.0));
    assert!(
        check
            .message
            .as_deref()
            .unwrap()
            .contains("0 documents seen"),
        "{check:?}"
    );
}

#[test]
fn a_step_without_evidence_by_its_max_duration_rolls_back_when_on_inconclusive_is_rollback() {
    let spec = json!({"analysis": {"onInconclusive": "Rollback"}, "steps": [
        {"weight": 10, "pause": "1m", "maxDuration": "10m"}, {"weight": 100}
    ]});
    let mut world = World::at_first_step(spec, new_model());
    for _ in 0..9 {
        world.round(Answer::Inconclusive);
    }
    assert_eq!(
        world.status().canary,
        Some(new_model()),
        "{}",
        world.message()
    );
    world.round(Answer::Inconclusive);
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::Inconclusive);
    assert!(
        rollback.message.contains("maxDuration of 10m"),
        "{}",
        rollback.message
    );
}

#[test]
fn a_step_without_evidence_by_its_max_duration_holds_once_and_still_decides_later() {
    let spec = json!({"steps": [
        {"weight": 10, "pause": "1m", "maxDuration": "10m"}, {"weight": 100}
    ]});
    let mut world = World::at_first_step(spec, new_model());
    for _ in 0..15 {
        world.round(Answer::Inconclusive);
    }
    assert_eq!(world.step_index(), Some(0));
    assert!(world.status().evidence_overdue);
    assert_eq!(world.emitted(EventReason::Holding), 1, "said once");
    assert!(
        world.message().contains("past its maxDuration"),
        "{}",
        world.message()
    );
    // The evidence arrives late: the step is decided on it all the same.
    world.pass_step(5);
    assert_eq!(world.step_index(), Some(1));
    assert!(!world.status().evidence_overdue);
}

#[test]
fn a_round_is_counted_once_per_interval() {
    let mut world = World::at_first_step(json!({"analysis": {"onError": "Rollback"}}), new_model());
    world.wait(10);
    assert!(world.answer(Answer::Error, &[]));
    let eager = world.input.analysis.clone().unwrap();
    // A controller that measures every 10 s: only one round per minute counts.
    for _ in 0..12 {
        let mut round = eager.clone();
        round.at = world.input.now;
        world.input.analysis = Some(round);
        world.decide();
        world.wait(10);
    }
    assert_eq!(world.status().consecutive_errors, 2);
    assert_eq!(world.status().canary, Some(new_model()));
}

// ---- post-promotion window ----

#[test]
fn a_breach_after_promotion_rolls_back_to_the_previous_revision() {
    let mut world = promoted();
    world.wait(30);
    world.decide();
    world.converge();
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 5);
    world.round(Answer::Pass);
    assert_eq!(world.status().stable, Some(old()));
    assert_eq!(world.status().failed_revisions, vec![new_model()]);
    assert_eq!(world.replicas("m-41aa"), Some(2), "previous scaled back up");
    assert_eq!(world.replicas("w-88c2"), Some(4));
    assert_eq!(
        world.replicas("w-19ab"),
        Some(4),
        "promoted keeps serving until previous is ready"
    );
    assert_eq!(world.phase(), Phase::Degraded);
    world.wait(60);
    world.converge();
    world.decide();
    assert_eq!(world.replicas("w-19ab"), Some(0));
}

#[test]
fn after_promotion_the_last_steps_checks_and_the_triggers_compare_with_the_previous_revision() {
    let mut world = promoted();
    world.wait(60);
    assert_eq!(
        judged_reads(&world, None),
        [
            "slo-error-ratio",
            "slo-latency-p95",
            "breaker-opens",
            "vllm-queue-depth",
            "vllm-ttft-p95",
            "error-spike",
            "latency-spike"
        ]
    );
    let needs = world.needs();
    let baseline: Vec<_> = needs
        .readings
        .iter()
        .filter(|r| r.role == Role::Baseline)
        .map(|r| (r.check.as_str(), r.revision.as_str()))
        .collect();
    assert_eq!(
        baseline,
        [
            ("vllm-queue-depth", "m-41aa"),
            ("vllm-ttft-p95", "m-41aa"),
            ("error-spike", "w-88c2")
        ]
    );
    // The previous revision's documents of the time it served beside the canary.
    let window = world.status().baseline_window.clone().expect("recorded");
    let spike = needs
        .readings
        .iter()
        .find(|r| r.check == "error-spike" && r.role == Role::Baseline)
        .unwrap();
    assert_eq!(spike.at, window.until.0);
    assert!(needs.quality.is_none());
}

#[test]
fn the_post_promotion_window_lasts_at_least_the_longest_trigger() {
    // 10m by default, but latency-spike needs 15m of breach to roll back.
    let mut world = promoted();
    world.wait(11 * 60);
    world.decide();
    assert!(world.status().promoted_at.is_some(), "{}", world.message());
    world.wait(5 * 60);
    world.answer(Answer::Pass, &[]);
    world.decide();
    assert_eq!(world.status().promoted_at, None, "{}", world.message());
    assert_eq!(world.emitted(EventReason::Verified), 1);
}

// ---- GPU-aware surge ----

#[test]
fn max_surge_gpus_zero_replaces_stable_vllm_in_place() {
    let mut world = World::new(json!({"maxSurgeGPUs": 0}));
    world.ship(new_model());
    world.decide();
    assert_eq!(world.replicas("m-41aa"), Some(1));
    assert_eq!(world.replicas("m-7f3c"), Some(1));
    assert_eq!(world.status().in_place_model_replicas, Some(1));
    assert_eq!(world.emitted(EventReason::InPlaceReplacement), 1);
    assert!(
        world
            .message()
            .ends_with("; 1 stable vLLM replica stopped in place for lack of GPUs"),
        "{}",
        world.message()
    );
}

#[test]
fn no_free_gpus_replaces_stable_vllm_in_place() {
    let mut world = World::new(defaults());
    world.input.observed.free_gpus = Some(0);
    world.ship(new_model());
    world.decide();
    assert_eq!(world.replicas("m-41aa"), Some(1));
}

#[test]
fn an_unschedulable_canary_vllm_switches_to_in_place_instead_of_deadlocking() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    assert_eq!(world.replicas("m-41aa"), Some(2));
    world.input.observed.unschedulable.insert("m-7f3c".into());
    world.decide();
    assert_eq!(world.replicas("m-41aa"), Some(1));
    assert_eq!(world.emitted(EventReason::InPlaceReplacement), 1);
    world.decide();
    assert_eq!(
        world.emitted(EventReason::InPlaceReplacement),
        1,
        "said once"
    );
}

#[test]
fn in_place_replicas_come_back_on_promotion() {
    let mut world = World::at_first_step(json!({"maxSurgeGPUs": 0}), new_model());
    world.command(Command::PromoteFull);
    world.decide();
    assert_eq!(world.replicas("m-7f3c"), Some(2));
    assert_eq!(world.status().in_place_model_replicas, None);
}

// ---- how the canary reads ----

#[test]
fn a_canary_that_reads_another_mix_of_blocks_is_rolled_back_at_the_first_step() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.wait(60);
    world.answer(Answer::Pass, &[("layout-mix", Answer::Fail)]);
    world.decide();
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::CriterionFailed);
    assert_eq!(rollback.check.as_deref(), Some("layout-mix"));
}

#[test]
fn a_comparison_passes_on_its_twin_of_probe_documents_and_fails_on_either() {
    let quality = json!({"analysis": {"quality": {
        "goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    // At night: clients' documents say nothing, the probes decide.
    let mut world = World::at_first_step(quality.clone(), new_model());
    for _ in 0..15 {
        world.wait(60);
        world.answer(Answer::Pass, &[("error-ratio", Answer::Inconclusive)]);
        world.decide();
        world.converge();
        if world.weight() == 50 {
            break;
        }
    }
    assert_eq!(
        world.weight(),
        50,
        "passed on error-ratio-probes: {}",
        world.message()
    );
    // A regression on clients' documents rolls back whatever the probes say.
    let mut world = World::at_first_step(quality, new_model());
    world.wait(60);
    world.answer(Answer::Pass, &[("error-ratio", Answer::Fail)]);
    world.decide();
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.check.as_deref(), Some("error-ratio"));
}

#[test]
fn probes_flow_to_both_sides_while_a_step_splits_traffic_and_to_the_canary_at_100() {
    let quality = json!({"analysis": {"quality": {
        "goldenDocuments": {"configMapRef": {"name": "golden"}},
        "probes": {"documentsPerHour": 30, "maxShare": 0.5}}}});
    let mut world = World::at_first_step(quality, new_model());
    let probes = world.needs().probes.expect("probes at 10%");
    assert!(probes.baseline.is_some(), "to both sides");
    assert_eq!(probes.documents_per_hour, 30.0);
    assert_eq!(probes.concurrency, 2, "half of a worker's 4 slots");
    assert_eq!(
        Some(probes.judged),
        world
            .status()
            .canary
            .as_ref()
            .map(|c| c.worker_revision.clone())
    );
    world.pass_step(50);
    assert_eq!(world.weight(), 50);
    assert!(world.needs().probes.is_some(), "probes at 50%");
    world.pass_step(50);
    assert_eq!(world.weight(), 100);
    let alone = world.needs().probes.expect("probes at 100%");
    assert_eq!(alone.baseline, None, "the canary alone, judged by the SLOs");

    let off = json!({"analysis": {"quality": {
        "goldenDocuments": {"configMapRef": {"name": "golden"}},
        "probes": {"documentsPerHour": 0}}}});
    let world = World::at_first_step(off, new_model());
    assert_eq!(world.needs().probes, None, "documentsPerHour 0 sends none");
    let world = World::at_first_step(defaults(), new_model());
    assert_eq!(world.needs().probes, None, "no golden documents, no probes");
}

// ---- quality gate ----

#[test]
fn the_golden_documents_run_once_per_gated_step_and_a_regression_rolls_back() {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    world.wait(60);
    let request = world.needs().quality.unwrap();
    assert_eq!(request.documents, 50, "50 documents leaving 10%");
    world.answer(Answer::Pass, &[("quality", Answer::Fail)]);
    world.decide();
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::QualityRegressed);
}

#[test]
fn the_engine_judges_the_quality_checks_from_the_golden_documents() {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    world.wait(60);
    let needs = world.needs();
    assert!(needs.quality.is_some());
    assert!(
        needs.readings.iter().all(|r| r.source != Source::Quality),
        "not a Prometheus check"
    );
    world.answer(Answer::Pass, &[]);
    // A golden set of 20: the round compares all of them.
    let round = world.input.analysis.as_mut().unwrap();
    round.quality = golden(20, 2, 0);
    round.quality_documents = Some(20);
    world.decide();
    assert_eq!(world.status().quality.len(), 20, "documents kept in status");
    let collapse = world.check("quality-collapse", CheckKind::Trigger).unwrap();
    assert_eq!((collapse.value, collapse.samples), (Some(0.1), Some(20.0)));
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::QualityRegressed);
    assert_eq!(
        rollback.check.as_deref(),
        Some("quality-collapse"),
        "the trigger acts first"
    );
}

/// `total` golden documents, the first `regressed` of them regressed, the next `errors` not
/// comparable.
fn golden(total: usize, regressed: usize, errors: usize) -> Vec<QualityResult> {
    (0..total)
        .map(|i| {
            let (similarity, verdict) = if i < regressed {
                (0.5, Verdict::Fail)
            } else if i < regressed + errors {
                (0.0, Verdict::Error)
            } else {
                (0.99, Verdict::Pass)
            };
            QualityResult {
                document: format!("doc-{i:03}.pdf"),
                similarity,
                verdict,
                message: None,
                differences: Vec::new(),
            }
        })
        .collect()
}

/// A round of `results` so far at the first step, which compares 50 documents.
fn quality_round(world: &mut World, results: Vec<QualityResult>) {
    world.wait(60);
    world.answer(Answer::Pass, &[]);
    world.input.analysis.as_mut().unwrap().quality = results;
    world.decide();
}

fn golden_world() -> World {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    World::at_first_step(quality, new_model())
}

#[test]
fn a_round_streams_into_status_and_decides_once_all_its_documents_are_in() {
    let mut world = golden_world();
    quality_round(&mut world, golden(10, 0, 0));
    assert_eq!(world.status().quality.len(), 10, "streamed into status");
    let check = world.check("quality", CheckKind::Promotion).unwrap();
    assert_eq!(check.verdict, Verdict::Inconclusive);
    assert_eq!(check.needed, Some(40.0));
    assert_eq!(
        check.message.as_deref(),
        Some("10 of 50 documents compared, 0 regressed")
    );
    assert!(world.needs().quality.is_some(), "the round goes on");
    // Triggers and commands are acted on while it runs: nothing waits for the round.
    quality_round(&mut world, golden(50, 0, 0));
    let check = world.check("quality", CheckKind::Promotion).unwrap();
    assert_eq!((check.verdict, check.samples), (Verdict::Pass, Some(50.0)));
}

#[test]
fn a_round_beyond_its_threshold_fails_before_its_last_document() {
    let mut world = golden_world();
    // 2 regressed of the 50 the round compares is 4% whatever the others say: beyond 1%.
    quality_round(&mut world, golden(5, 2, 0));
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::QualityRegressed);
    assert!(
        rollback
            .message
            .contains("5 of 50 documents compared, 2 regressed"),
        "{}",
        rollback.message
    );
}

#[test]
fn documents_nobody_could_parse_are_recorded_but_not_counted() {
    let mut world = golden_world();
    quality_round(&mut world, golden(50, 0, 3));
    let check = world.check("quality", CheckKind::Promotion).unwrap();
    assert_eq!(
        (check.verdict, check.samples, check.value),
        (Verdict::Pass, Some(47.0), Some(0.0)),
        "{check:?}"
    );
    assert_eq!(world.status().quality.len(), 50);
}

#[test]
fn a_small_golden_set_is_compared_whole() {
    let mut world = golden_world();
    world.wait(60);
    world.answer(Answer::Pass, &[]);
    let round = world.input.analysis.as_mut().unwrap();
    round.quality = golden(3, 0, 0);
    round.quality_documents = Some(3);
    world.decide();
    let check = world.check("quality", CheckKind::Promotion).unwrap();
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
}

#[test]
fn golden_documents_that_could_not_be_compared_leave_the_quality_check_unanswered() {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    for _ in 0..10 {
        world.wait(60);
        world.answer(Answer::Pass, &[("quality", Answer::Error)]);
        world.decide();
    }
    assert_eq!(world.step_index(), Some(0), "{}", world.message());
    assert_eq!(world.check("quality", CheckKind::Promotion), None);
    world.wait(60);
    assert!(world.needs().quality.is_some(), "asked again");
}

#[test]
fn a_passing_quality_run_is_not_repeated_within_the_step() {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    world.round(Answer::Pass);
    world.wait(60);
    assert_eq!(world.needs().quality, None);
}

#[test]
fn each_step_compares_as_many_golden_documents_as_it_asks_for() {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    world.pass_step(10);
    assert_eq!(world.step_index(), Some(1), "{}", world.message());
    world.wait(60);
    let request = world.needs().quality.unwrap();
    assert_eq!(request.documents, 100, "100 documents leaving 50%");

    let one_count = json!({"analysis": {"quality": {
        "goldenDocuments": {"configMapRef": {"name": "golden"}}, "documentsPerStep": [7]}}});
    let mut world = World::at_first_step(one_count, new_model());
    world.wait(60);
    assert_eq!(world.needs().quality.map(|q| q.documents), Some(7));
}

// ---- requeue ----

#[test]
fn the_engine_asks_to_look_again_at_the_next_round_or_deadline() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    let warming = world.decide().requeue_at.unwrap();
    assert_eq!(
        warming.as_second() - world.input.now.as_second(),
        60,
        "warm-up and preflight are polled every interval"
    );
    world.converge();
    world.decide();
    world.converge();
    world.round(Answer::Pass);
    let stepping = world.last.as_ref().unwrap().requeue_at.unwrap();
    assert_eq!(
        stepping.as_second() - world.input.now.as_second(),
        60,
        "next round"
    );
}

#[test]
fn without_checks_the_engine_looks_again_only_when_a_pause_ends() {
    let spec = json!({"analysis": {"defaultCriteria": false}});
    let world = World::at_first_step(spec, new_model());
    let requeue = world.last.as_ref().unwrap().requeue_at.unwrap();
    assert_eq!(requeue.as_second() - world.input.now.as_second(), 5 * 60);
}

#[test]
fn an_overdue_round_is_asked_for_again_an_interval_later_not_in_a_busy_loop() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.wait(10 * 60);
    let requeue = world.decide().requeue_at.unwrap();
    assert_eq!(requeue.as_second() - world.input.now.as_second(), 60);
}

// ---- more rollback paths ----

#[test]
fn a_canary_vllm_crash_looping_while_warming_up_is_rolled_back_before_the_deadline() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 4);
    world.wait(60);
    world.decide();
    let rollback = world.status().last_rollback.clone().expect("rolled back");
    assert_eq!(rollback.reason, RollbackReason::TriggerFired);
    assert_eq!(rollback.check.as_deref(), Some("vllm-crashloop"));
    assert_eq!(rollback.value, Some(4.0));
}

#[test]
fn abort_during_the_post_promotion_window_restores_the_previous_revision() {
    let mut world = promoted();
    world.command(Command::Abort);
    world.decide();
    assert_eq!(world.status().stable, Some(old()));
    assert_eq!(world.status().failed_revisions, vec![new_model()]);
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::Aborted)
    );
}

#[test]
fn a_held_failure_after_promotion_keeps_the_way_back_until_a_person_promotes() {
    let mut world = promoted();
    world.wait(60);
    world.answer(Answer::Pass, &[("slo-error-ratio", Answer::Fail)]);
    world.decide();
    assert_eq!(
        world.status().stable,
        Some(new_model()),
        "onFail: Hold, no rollback"
    );
    world.wait(20 * 60);
    world.decide();
    assert!(
        world.status().promoted_at.is_some(),
        "window over, still held"
    );
    assert!(
        world.message().contains("slo-error-ratio failed"),
        "{}",
        world.message()
    );
    assert_eq!(world.status().previous_stable, Some(old()));
    world.command(Command::PromoteFull);
    world.decide();
    assert_eq!(world.status().promoted_at, None);
    assert_eq!(world.status().previous_stable, None);
    assert_eq!(world.emitted(EventReason::Verified), 1);
    assert_eq!(world.emitted(EventReason::CommandIgnored), 0);
}

#[test]
fn the_post_promotion_window_stays_open_while_prometheus_is_down() {
    let mut world = promoted();
    for _ in 0..15 {
        world.round(Answer::Error);
    }
    assert_eq!(
        world.status().previous_stable,
        Some(old()),
        "{}",
        world.message()
    );
    world.round(Answer::Pass);
    assert_eq!(world.status().previous_stable, None);
    assert_eq!(world.phase(), Phase::Healthy);
}

#[test]
fn short_of_gpus_a_promotion_frees_the_old_vllm_at_once() {
    let mut world = World::at_first_step(json!({"maxSurgeGPUs": 0}), new_model());
    world.command(Command::PromoteFull);
    world.decide();
    assert_eq!(
        world.replicas("m-41aa"),
        Some(0),
        "its GPU is needed by the new stable"
    );
    assert_eq!(world.replicas("m-7f3c"), Some(2));
}

#[test]
fn short_of_gpus_a_rollback_frees_the_canary_vllm_at_once() {
    let mut world = World::at_first_step(json!({"maxSurgeGPUs": 0}), new_model());
    world.command(Command::Abort);
    world.decide();
    assert_eq!(world.replicas("m-7f3c"), Some(0));
    assert_eq!(world.replicas("m-41aa"), Some(2));
    assert_eq!(
        world.replicas("w-19ab"),
        Some(1),
        "canary workers still drain"
    );
}

#[test]
fn a_retired_revision_is_scaled_down_after_the_progress_deadline_even_if_stable_never_gets_ready() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Abort);
    world.decide();
    world.input.observed.model_ready.insert("m-41aa".into(), 1);
    world.wait(60);
    world.decide();
    assert_eq!(
        world.replicas("w-19ab"),
        Some(1),
        "stable not ready: canary keeps serving"
    );
    world.wait(30 * 60);
    world.decide();
    assert_eq!(world.replicas("w-19ab"), Some(0));
}

#[test]
fn a_canary_pod_lost_late_in_a_long_step_gets_the_progress_deadline_from_that_moment() {
    let steps = json!({"steps": [{"weight": 10, "pause": "2h"}, {"weight": 100}]});
    let mut world = World::at_first_step(steps, new_model());
    world.wait(90 * 60);
    world.decide();
    world.input.observed.worker_ready.insert("w-19ab".into(), 0);
    world.decide();
    assert_eq!(
        world.status().canary,
        Some(new_model()),
        "not rolled back at once"
    );
    assert!(
        world
            .message()
            .contains("canary not ready: workers 0/1 ready"),
        "{}",
        world.message()
    );
    world.wait(29 * 60);
    world.decide();
    assert_eq!(world.status().canary, Some(new_model()));
    world.wait(60);
    world.decide();
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::ProgressDeadlineExceeded)
    );
}

#[test]
fn a_canary_that_recovers_within_the_deadline_carries_on() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.input.observed.worker_ready.insert("w-19ab".into(), 0);
    world.decide();
    world.wait(20 * 60);
    world.decide();
    world.converge();
    world.decide();
    assert_eq!(world.status().canary_unready_since, None);
    world.wait(20 * 60);
    world.decide();
    assert_eq!(world.status().canary, Some(new_model()));
}

#[test]
fn time_spent_paused_does_not_count_toward_the_progress_deadline() {
    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    world.command(Command::Pause);
    world.decide();
    world.wait(60 * 60);
    world.decide();
    world.command(Command::Resume);
    world.decide();
    assert_eq!(
        world.status().canary,
        Some(new_model()),
        "{}",
        world.message()
    );
    world.wait(29 * 60);
    world.decide();
    assert_eq!(world.status().canary, Some(new_model()));
    world.wait(60);
    world.decide();
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::ProgressDeadlineExceeded)
    );
}

// ---- what people read ----

#[test]
fn messages_say_where_the_rollout_stands() {
    let mut world = World::new(defaults());
    world.input.observed = Default::default();
    world.decide();
    assert_eq!(
        world.message(),
        "m-41aa/w-88c2 starting: vLLM 0/2, workers 0/4 ready"
    );
    assert_eq!(world.phase(), Phase::Progressing);

    let mut world = World::new(defaults());
    world.ship(new_model());
    world.decide();
    assert_eq!(
        world.message(),
        "starting canary m-7f3c/w-19ab before any traffic: vLLM 0/1 ready, vLLM not warmed up; 30m to the progress deadline"
    );

    let mut world = promoted();
    world.wait(150);
    world.decide();
    assert_eq!(
        world.message(),
        "promoted m-7f3c/w-19ab; post-promotion verification, 12m30s left"
    );

    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::Abort);
    world.decide();
    assert_eq!(
        world.message(),
        "rolled back m-7f3c/w-19ab (aborted by a person); m-41aa/w-88c2 serves all traffic; change the spec or run `kubectl mineru retry`"
    );
}

fn condition(world: &World, kind: &str) -> (String, String, String) {
    let c = world
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("{kind} missing"));
    (
        c.status.clone(),
        c.reason.clone(),
        c.last_transition_time.0.to_string(),
    )
}

#[test]
fn conditions_follow_the_rollout_and_keep_their_transition_time() {
    let mut world = World::at_first_step(defaults(), new_model());
    let progressing = condition(&world, "Progressing");
    assert_eq!(
        (progressing.0.as_str(), progressing.1.as_str()),
        ("True", "RolloutInProgress")
    );
    world.wait(120);
    world.decide();
    assert_eq!(
        condition(&world, "Progressing").2,
        progressing.2,
        "no transition, same time"
    );
    assert_eq!(condition(&world, "RolledBack").0, "False");

    world.command(Command::Abort);
    world.decide();
    let rolled_back = condition(&world, "RolledBack");
    assert_eq!(
        (rolled_back.0.as_str(), rolled_back.1.as_str()),
        ("True", "Aborted")
    );
    assert_eq!(condition(&world, "Degraded").0, "True");
    assert_eq!(condition(&world, "Progressing").0, "False");
    assert_eq!(condition(&world, "Available").0, "True");
    assert_ne!(rolled_back.2, progressing.2, "a transition gets a new time");
}

#[test]
fn conditions_written_by_others_are_kept() {
    let mut world = World::new(defaults());
    world
        .input
        .status
        .conditions
        .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "ChangeFreeze".into(),
            status: "True".into(),
            reason: "HolidayFreeze".into(),
            message: "set by the release calendar".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                world.input.now,
            ),
            observed_generation: Some(1),
        });
    world.decide();
    assert_eq!(condition(&world, "ChangeFreeze").1, "HolidayFreeze");
    assert_eq!(world.status().conditions.len(), 7, "six of ours and theirs");
}

#[test]
fn a_vllm_that_keeps_exiting_is_named_with_its_reason_until_it_runs() {
    let mut world = World::at_first_step(defaults(), new_model());
    assert_eq!(condition(&world, "ModelServerFailing").0, "False");
    let revision = world.status().canary.clone().unwrap().model_revision;
    let why = "vLLM exits at start: its image lacks mineru_vl_utils";
    world
        .input
        .observed
        .vllm_failures
        .insert(revision.clone(), why.into());
    world.decide();
    let failing = world
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == "ModelServerFailing")
        .cloned()
        .unwrap();
    assert_eq!(
        (failing.status.as_str(), failing.reason.as_str()),
        ("True", "ContainerExiting")
    );
    assert_eq!(failing.message, format!("revision {revision}: {why}"));

    world.input.observed.vllm_failures.clear();
    world.decide();
    assert_eq!(condition(&world, "ModelServerFailing").0, "False");
}

#[test]
fn a_trigger_without_data_is_not_in_breach_and_not_inconclusive() {
    let spec = json!({"analysis": {"onInconclusive": "Rollback"}});
    let mut world = World::at_first_step(spec, new_model());
    for _ in 0..6 {
        world.wait(60);
        world.answer(Answer::Pass, &[("error-spike", Answer::Inconclusive)]);
        world.decide();
    }
    let spike = world.check("error-spike", CheckKind::Trigger).unwrap();
    assert_eq!(spike.verdict, Verdict::Pass, "{spike:?}");
    assert_eq!(
        world.step_index(),
        Some(1),
        "criteria passed, the step completed"
    );
}

#[test]
fn a_promoted_vllm_short_of_gpus_gets_the_old_ones_after_the_scale_down_delay() {
    let mut world = World::at_first_step(defaults(), new_model());
    world.command(Command::PromoteFull);
    world.decide();
    world.input.observed.unschedulable.insert("m-7f3c".into());
    world.input.observed.model_ready.insert("m-7f3c".into(), 1);
    world.decide();
    assert_eq!(
        world.replicas("m-41aa"),
        Some(2),
        "in-flight work drains first"
    );
    world.wait(30);
    world.decide();
    assert_eq!(
        world.replicas("m-41aa"),
        Some(0),
        "not held until the progress deadline"
    );
}

#[test]
fn a_held_quality_failure_is_announced_once_though_its_verdict_stays() {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    world.pass_step(10);
    world.wait(60);
    world.answer(Answer::Pass, &[("quality", Answer::Fail)]);
    world.decide();
    for _ in 0..5 {
        world.round(Answer::Pass);
    }
    assert_eq!(world.step_index(), Some(1), "held at 50%");
    assert_eq!(world.emitted(EventReason::Holding), 1);
    assert!(
        world.message().contains("waiting on quality Fail"),
        "{}",
        world.message()
    );
}
