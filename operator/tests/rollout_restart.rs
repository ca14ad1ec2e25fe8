//! Restart safety: status is the engine's only memory.
//!
//! Two ways an operator dies, both tested at every point of whole rollouts:
//! - after writing status: the next call, with the same facts and time, must change nothing
//!   (no step repeated, no event or notification sent twice) — `verify_replay` checks this
//!   after every single decision;
//! - before writing status: the decision is lost (`crash_at`), and the rollout must still
//!   complete every step exactly once from the older status.

mod rollout_support;

use mineru_crds::{Phase, Revisions, RollbackReason};
use mineru_operator::rollout::{Command, EventReason};
use rollout_support::{Answer, World, new_model, new_worker, old};
use serde_json::json;

fn replaying(extra: serde_json::Value) -> World {
    let mut world = World::new(extra);
    world.verify_replay = true;
    world
}

fn start(world: &mut World, to: Revisions) {
    world.ship(to);
    world.decide();
    world.converge();
    world.decide();
    world.converge();
    world.decide();
}

/// Rounds of passing checks, the cluster converging after each, until `done` or `limit`.
fn run(world: &mut World, limit: usize, done: impl Fn(&World) -> bool) {
    for _ in 0..limit {
        if done(world) {
            return;
        }
        world.round(Answer::Pass);
        world.converge();
        world.decide();
    }
    assert!(done(world), "did not finish: {}", world.message());
}

#[test]
fn every_decision_of_a_full_rollout_replays_as_a_no_op() {
    let mut world = replaying(json!({}));
    start(&mut world, new_model());
    run(&mut world, 60, |w| w.phase() == Phase::Healthy);
    assert_eq!(world.status().stable, Some(new_model()));
    assert_eq!(world.emitted(EventReason::StepCompleted), 2);
    assert_eq!(world.emitted(EventReason::Promoted), 1);
    assert_eq!(world.emitted(EventReason::Verified), 1);
}

#[test]
fn every_decision_of_a_trigger_rollback_replays_as_a_no_op() {
    let mut world = replaying(json!({}));
    start(&mut world, new_model());
    world.pass_step(10);
    for _ in 0..16 {
        world.wait(60);
        world.answer(Answer::Pass, &[("error-spike", Answer::Fail)]);
        world.decide();
        world.converge();
        world.decide();
    }
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::TriggerFired)
    );
    assert_eq!(
        world.emitted(EventReason::RolledBack(RollbackReason::TriggerFired)),
        1
    );
}

#[test]
fn every_decision_with_approval_pause_and_resume_replays_as_a_no_op() {
    let steps = json!({"steps": [{"weight": 10, "requireApproval": true}, {"weight": 50, "pause": "2m"}, {"weight": 100}]});
    let mut world = replaying(steps);
    start(&mut world, new_worker());
    for _ in 0..3 {
        world.round(Answer::Pass);
    }
    assert_eq!(world.phase(), Phase::Paused, "{}", world.message());
    world.command(Command::PromoteStep);
    world.decide();
    world.command(Command::Pause);
    world.decide();
    world.round(Answer::Pass);
    world.command(Command::Resume);
    world.decide();
    run(&mut world, 30, |w| w.phase() == Phase::Healthy);
    assert_eq!(world.status().stable, Some(new_worker()));
}

#[test]
fn every_decision_of_a_post_promotion_rollback_replays_as_a_no_op() {
    let mut world = replaying(json!({}));
    start(&mut world, new_model());
    run(&mut world, 40, |w| w.status().promoted_at.is_some());
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 4);
    run(&mut world, 3, |w| w.status().stable == Some(old()));
    world.wait(60);
    world.converge();
    world.decide();
    assert_eq!(world.phase(), Phase::Degraded);
}

#[test]
fn every_decision_of_an_in_place_rollout_replays_as_a_no_op() {
    let mut world = replaying(json!({}));
    world.ship(new_model());
    world.decide();
    world.input.observed.unschedulable.insert("m-7f3c".into());
    world.decide();
    world.converge();
    world.decide();
    run(&mut world, 40, |w| w.phase() == Phase::Healthy);
    assert_eq!(world.emitted(EventReason::InPlaceReplacement), 1);
}

#[test]
fn every_decision_under_a_dead_prometheus_replays_as_a_no_op() {
    let mut world = replaying(json!({"analysis": {"onError": "Rollback"}}));
    start(&mut world, new_model());
    for _ in 0..5 {
        world.round(Answer::Error);
    }
    assert_eq!(
        world.status().last_rollback.as_ref().map(|r| r.reason),
        Some(RollbackReason::AnalysisError)
    );
}

#[test]
fn every_decision_of_a_superseded_rollout_replays_as_a_no_op() {
    let mut world = replaying(json!({}));
    start(&mut world, new_model());
    world.pass_step(10);
    start(&mut world, new_worker());
    run(&mut world, 60, |w| w.phase() == Phase::Healthy);
    assert_eq!(world.status().stable, Some(new_worker()));
}

fn full_rollout(crash_at: Option<usize>) -> World {
    let mut world = World::new(json!({}));
    world.crash_at = crash_at.map(|n| n + world.decisions);
    start(&mut world, new_model());
    run(&mut world, 60, |w| w.phase() == Phase::Healthy);
    world
}

#[test]
fn losing_any_one_decision_neither_skips_nor_repeats_a_step() {
    let decisions = full_rollout(None).decisions;
    for crash_at in 1..decisions {
        let world = full_rollout(Some(crash_at));
        let context = format!("decision {crash_at} lost");
        assert_eq!(world.status().stable, Some(new_model()), "{context}");
        assert_eq!(world.emitted(EventReason::RolloutStarted), 1, "{context}");
        assert_eq!(world.emitted(EventReason::CanaryReady), 1, "{context}");
        assert_eq!(world.emitted(EventReason::StepCompleted), 2, "{context}");
        assert_eq!(world.emitted(EventReason::Promoted), 1, "{context}");
        assert_eq!(world.emitted(EventReason::Verified), 1, "{context}");
    }
}

#[test]
fn steps_advance_one_at_a_time_through_a_whole_rollout() {
    let mut world = World::new(json!({}));
    world.ship(new_model());
    let mut seen = Vec::new();
    for _ in 0..60 {
        world.decide();
        world.converge();
        let status = world.status();
        let now = (status.current_step, status.canary_weight);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if status.promoted_at.is_some() {
            break;
        }
        world.wait(60);
        world.answer(Answer::Pass, &[]);
    }
    assert_eq!(
        seen,
        vec![
            (Some(0), Some(0)),
            (Some(0), Some(10)),
            (Some(1), Some(50)),
            (Some(2), Some(100)),
            (None, None)
        ]
    );
}
