//! Every manual command in every state, as one table: where it leads, and whether it was
//! ignored (with a `CommandIgnored` event) because it does not apply there. The cluster is
//! frozen at the moment of the command, so a retried canary that is still warm takes traffic
//! at once.

mod rollout_support;

use mineru_crds::Phase;
use mineru_operator::rollout::{Command, EventReason};
use rollout_support::{Answer, World, new_model};
use serde_json::json;

fn show(revisions: &mineru_crds::Revisions) -> String {
    format!("{}/{}", revisions.model_revision, revisions.worker_revision)
}

/// The state in one line: phase, then what runs.
fn state(world: &World) -> String {
    let status = world.status();
    let stable = show(status.stable.as_ref().unwrap());
    let phase = world.phase();
    match (
        &status.canary,
        status.current_step,
        status.promoted_at.is_some(),
    ) {
        (Some(canary), Some(step), _) if world.weight() > 0 => format!(
            "{phase:?}: canary {} at step {} ({}%)",
            show(canary),
            step + 1,
            world.weight()
        ),
        (Some(canary), _, _) => format!("{phase:?}: warming {}", show(canary)),
        (None, _, true) => format!("{phase:?}: verifying {stable}"),
        (None, _, false) if phase == Phase::Degraded => format!(
            "{phase:?}: {stable}, {} failed",
            show(&status.failed_revisions[0])
        ),
        (None, _, false) => format!("{phase:?}: {stable}"),
    }
}

/// Builds a world in one state.
type Setup = fn() -> World;

fn steady() -> World {
    World::new(json!({}))
}

fn warming() -> World {
    let mut world = World::new(json!({}));
    world.ship(new_model());
    world.decide();
    world
}

fn stepping() -> World {
    World::at_first_step(json!({}), new_model())
}

fn awaiting_approval() -> World {
    let steps = json!({"steps": [{"weight": 10, "requireApproval": true}, {"weight": 50}, {"weight": 100}]});
    let mut world = World::at_first_step(steps, new_model());
    world.round(Answer::Pass);
    assert_eq!(world.phase(), Phase::Paused, "{}", world.message());
    world
}

fn paused() -> World {
    let mut world = stepping();
    world.command(Command::Pause);
    world.decide();
    world
}

fn verifying() -> World {
    let mut world = stepping();
    world.command(Command::PromoteFull);
    world.decide();
    world
}

fn degraded() -> World {
    let mut world = stepping();
    world.command(Command::Abort);
    world.decide();
    world
}

const STEADY: &str = "Healthy: m-41aa/w-88c2";
const WARMING: &str = "Progressing: warming m-7f3c/w-19ab";
const PAUSED_WARMING: &str = "Paused: warming m-7f3c/w-19ab";
const STEP_1: &str = "Progressing: canary m-7f3c/w-19ab at step 1 (10%)";
const PAUSED_STEP_1: &str = "Paused: canary m-7f3c/w-19ab at step 1 (10%)";
const STEP_2: &str = "Progressing: canary m-7f3c/w-19ab at step 2 (50%)";
const VERIFYING: &str = "Progressing: verifying m-7f3c/w-19ab";
/// Verified early; the promoted vLLM still grows to its full size.
const VERIFIED: &str = "Progressing: m-7f3c/w-19ab";
const DEGRADED: &str = "Degraded: m-41aa/w-88c2, m-7f3c/w-19ab failed";

#[test]
fn every_command_in_every_state() {
    use Command::*;
    // (state, command, resulting state, ignored)
    let table: [(&str, Setup, Command, &str, bool); 42] = [
        ("steady", steady, PromoteStep, STEADY, true),
        ("steady", steady, PromoteFull, STEADY, true),
        ("steady", steady, Abort, STEADY, true),
        ("steady", steady, Retry, STEADY, true),
        ("steady", steady, Pause, STEADY, true),
        ("steady", steady, Resume, STEADY, true),
        ("warming", warming, PromoteStep, WARMING, true),
        ("warming", warming, PromoteFull, WARMING, true),
        ("warming", warming, Abort, DEGRADED, false),
        ("warming", warming, Retry, WARMING, true),
        ("warming", warming, Pause, PAUSED_WARMING, false),
        ("warming", warming, Resume, WARMING, true),
        ("stepping", stepping, PromoteStep, STEP_2, false),
        ("stepping", stepping, PromoteFull, VERIFYING, false),
        ("stepping", stepping, Abort, DEGRADED, false),
        ("stepping", stepping, Retry, STEP_1, true),
        ("stepping", stepping, Pause, PAUSED_STEP_1, false),
        ("stepping", stepping, Resume, STEP_1, true),
        (
            "awaiting approval",
            awaiting_approval,
            PromoteStep,
            STEP_2,
            false,
        ),
        (
            "awaiting approval",
            awaiting_approval,
            PromoteFull,
            VERIFYING,
            false,
        ),
        (
            "awaiting approval",
            awaiting_approval,
            Abort,
            DEGRADED,
            false,
        ),
        (
            "awaiting approval",
            awaiting_approval,
            Retry,
            PAUSED_STEP_1,
            true,
        ),
        (
            "awaiting approval",
            awaiting_approval,
            Pause,
            PAUSED_STEP_1,
            false,
        ),
        (
            "awaiting approval",
            awaiting_approval,
            Resume,
            PAUSED_STEP_1,
            true,
        ),
        ("paused", paused, PromoteStep, STEP_2, false),
        ("paused", paused, PromoteFull, VERIFYING, false),
        ("paused", paused, Abort, DEGRADED, false),
        ("paused", paused, Retry, PAUSED_STEP_1, true),
        ("paused", paused, Pause, PAUSED_STEP_1, true),
        ("paused", paused, Resume, STEP_1, false),
        // Promoting during the window accepts the promoted revisions: the way back goes.
        ("verifying", verifying, PromoteStep, VERIFIED, false),
        ("verifying", verifying, PromoteFull, VERIFIED, false),
        ("verifying", verifying, Abort, DEGRADED, false),
        ("verifying", verifying, Retry, VERIFYING, true),
        ("verifying", verifying, Pause, VERIFYING, true),
        ("verifying", verifying, Resume, VERIFYING, true),
        ("degraded", degraded, PromoteStep, DEGRADED, true),
        ("degraded", degraded, PromoteFull, DEGRADED, true),
        ("degraded", degraded, Abort, DEGRADED, true),
        ("degraded", degraded, Retry, STEP_1, false),
        ("degraded", degraded, Pause, DEGRADED, true),
        ("degraded", degraded, Resume, DEGRADED, true),
    ];
    for (from, setup, command, expected, ignored) in table {
        let mut world = setup();
        let ignored_before = world.emitted(EventReason::CommandIgnored);
        world.command(command);
        world.decide();
        assert_eq!(state(&world), expected, "{command:?} when {from}");
        assert_eq!(
            world.emitted(EventReason::CommandIgnored) - ignored_before,
            usize::from(ignored),
            "{command:?} when {from}: ignored?"
        );
    }
}

#[test]
fn states_read_as_expected_before_any_command() {
    let cases: [(&str, Setup, &str); 7] = [
        ("steady", steady, STEADY),
        ("warming", warming, WARMING),
        ("stepping", stepping, STEP_1),
        ("awaiting approval", awaiting_approval, PAUSED_STEP_1),
        ("paused", paused, PAUSED_STEP_1),
        ("verifying", verifying, VERIFYING),
        ("degraded", degraded, DEGRADED),
    ];
    for (name, setup, expected) in cases {
        assert_eq!(state(&setup()), expected, "{name}");
    }
}

fn trigger_fires() -> World {
    let mut world = stepping();
    world
        .input
        .observed
        .vllm_restarts
        .insert("m-7f3c".into(), 4);
    world.round(Answer::Pass);
    world
}

fn criterion_fails() -> World {
    let mut world = stepping();
    world.wait(60);
    world.answer(Answer::Pass, &[("latency-p95", Answer::Fail)]);
    world.decide();
    world
}

fn quality_regresses() -> World {
    let quality =
        json!({"analysis": {"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}});
    let mut world = World::at_first_step(quality, new_model());
    world.wait(60);
    world.answer(Answer::Pass, &[("quality", Answer::Fail)]);
    world.decide();
    world
}

fn prometheus_dies() -> World {
    let mut world = World::at_first_step(json!({"analysis": {"onError": "Rollback"}}), new_model());
    for _ in 0..5 {
        world.round(Answer::Error);
    }
    world
}

fn data_never_comes() -> World {
    let spec = json!({"analysis": {"onInconclusive": "Rollback"}, "steps": [
        {"weight": 10, "pause": "1m", "maxDuration": "3m"}, {"weight": 100}
    ]});
    let mut world = World::at_first_step(spec, new_model());
    for _ in 0..3 {
        world.round(Answer::Inconclusive);
    }
    world
}

fn never_warms_up() -> World {
    let mut world = warming();
    world.wait(30 * 60);
    world.decide();
    world
}

fn aborted() -> World {
    degraded()
}

#[test]
fn every_rollback_reason_has_the_same_outcome_and_its_own_evidence() {
    use mineru_crds::RollbackReason::*;
    // (reason, how it happens, the check named in the evidence)
    let table: [(mineru_crds::RollbackReason, Setup, Option<&str>); 7] = [
        (TriggerFired, trigger_fires, Some("vllm-crashloop")),
        (CriterionFailed, criterion_fails, Some("latency-p95")),
        (QualityRegressed, quality_regresses, Some("quality")),
        (AnalysisError, prometheus_dies, Some("error-ratio")),
        (Inconclusive, data_never_comes, Some("error-ratio")),
        (ProgressDeadlineExceeded, never_warms_up, None),
        (Aborted, aborted, None),
    ];
    for (reason, setup, check) in table {
        let world = setup();
        let record = world.status().last_rollback.clone().expect("rolled back");
        assert_eq!(record.reason, reason);
        assert_eq!(record.check.as_deref(), check, "{reason:?}");
        assert_eq!(record.canary, new_model(), "{reason:?}");
        assert_eq!(state(&world), DEGRADED, "{reason:?}");
        assert_eq!(world.weight(), 0, "{reason:?}");
        assert_eq!(
            world.emitted(EventReason::RolledBack(reason)),
            1,
            "{reason:?}"
        );
        let rolled_back_events = world
            .events
            .iter()
            .filter(|(r, _)| matches!(r, EventReason::RolledBack(_)))
            .count();
        assert_eq!(rolled_back_events, 1, "{reason:?}");
    }
}
