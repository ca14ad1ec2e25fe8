//! Migration from a legacy, unmanaged MinerU Service: the first revisions are the canary, the
//! legacy Service the baseline, and traffic moves 10% → 50% → 100% to the new stack under the
//! same gates — with the throughput bar raised to 1.15 × — before the legacy Service lets go.

mod rollout_support;

use mineru_crds::{LegacyRole, Phase, RollbackReason};
use mineru_operator::rollout::{Baseline, Command, EventReason, LEGACY_REVISION, Role};
use rollout_support::{Answer, LEGACY, World, new_model, old};
use serde_json::json;

/// A migration decided, converged and warmed up: 10% to the new stack.
fn at_first_step() -> World {
    let mut world = World::migrating(json!({}));
    world.verify_replay = true;
    world.decide();
    world.converge();
    world.decide();
    assert_eq!(world.step_index(), Some(0), "{}", world.message());
    world
}

#[test]
fn the_first_revisions_are_the_canary_of_a_migration_and_start_without_traffic() {
    let mut world = World::migrating(json!({}));
    world.verify_replay = true;
    world.decide();
    let status = world.status();
    assert_eq!(status.stable, None, "no stable until the stack is promoted");
    assert_eq!(status.canary, Some(old()));
    assert_eq!(status.legacy, Some(LegacyRole::Serving));
    assert_eq!(world.weight(), 0);
    assert_eq!(world.phase(), Phase::Progressing);
    let plan = &world.last.as_ref().unwrap().plan;
    assert_eq!(plan.stable, None, "the legacy Service is not ours to size");
    assert_eq!(
        world.replicas(&old().model_revision),
        Some(1),
        "canaryModelReplicas"
    );
    assert_eq!(
        world.replicas(&old().worker_revision),
        Some(1),
        "workers for the first step's 10%, started before any weight reaches them"
    );
    let message = world.message();
    assert!(message.contains("before any traffic"), "{message}");
    let rollout_started = &world.events[0].1;
    assert!(
        rollout_started.contains("migrating from the legacy Service"),
        "{rollout_started}"
    );
    // The stack's vLLM is new: no traffic before it is ready and warmed up.
    world.converge();
    world.input.observed.warmed_up.clear();
    assert_eq!(
        world.needs().warmup.as_deref(),
        Some(old().model_revision.as_str()),
        "the migrated stack's vLLM warms up first"
    );
    world.decide();
    assert_eq!(world.weight(), 0, "{}", world.message());
    world.converge();
    world.decide();
    assert_eq!(world.weight(), 10, "{}", world.message());
}

#[test]
fn a_healthy_stack_takes_all_traffic_and_the_legacy_service_lets_go_after_verification() {
    let mut world = at_first_step();
    world.wait(60);
    let needs = world.needs();
    let error_ratio = |role| {
        needs
            .readings
            .iter()
            .find(|r| r.check == "error-ratio" && r.role == role)
            .map(|r| r.revision.clone())
    };
    assert_eq!(error_ratio(Role::Judged), Some(old().worker_revision));
    assert_eq!(
        error_ratio(Role::Baseline),
        Some(LEGACY_REVISION.to_owned())
    );
    assert_eq!(
        Baseline::Legacy.revision(mineru_crds::Tier::Worker),
        LEGACY_REVISION
    );
    assert_eq!(
        needs.quality.map(|q| q.baseline),
        None,
        "no golden documents configured"
    );
    world.pass_step(10);
    assert_eq!(world.weight(), 50, "{}", world.message());
    world.pass_step(20);
    assert_eq!(world.weight(), 100, "{}", world.message());
    world.pass_step(20);

    let status = world.status().clone();
    assert_eq!(status.stable, Some(old()), "promoted");
    assert_eq!(status.canary, None);
    assert_eq!(status.previous_stable, None);
    assert_eq!(
        status.legacy,
        Some(LegacyRole::Standby),
        "the way back during the post-promotion window"
    );
    assert!(world.emitted(EventReason::Promoted) == 1);
    let promoted = world
        .events
        .iter()
        .find(|(r, _)| *r == EventReason::Promoted);
    assert!(promoted.unwrap().1.contains(LEGACY), "{promoted:?}");
    world.converge();
    assert_eq!(world.replicas(&old().model_revision), Some(2), "full size");
    assert_eq!(world.replicas(&old().worker_revision), Some(4));

    // The window lasts the longest trigger's 15m.
    for _ in 0..16 {
        world.round(Answer::Pass);
    }
    assert_eq!(world.status().legacy, None, "migration over");
    assert_eq!(world.status().promoted_at, None);
    assert_eq!(world.phase(), Phase::Healthy, "{}", world.message());
    assert_eq!(world.emitted(EventReason::Verified), 1);

    // From here on a change is an ordinary rollout against the stack's own stable.
    world.ship(new_model());
    world.decide();
    world.converge();
    world.decide();
    world.wait(60);
    let needs = world.needs();
    let baseline = needs
        .readings
        .iter()
        .find(|r| r.check == "error-ratio" && r.role == Role::Baseline)
        .map(|r| r.revision.clone());
    assert_eq!(baseline, Some(old().worker_revision));
}

#[test]
fn a_breach_during_the_migration_sends_everything_back_to_the_legacy_service() {
    let mut world = at_first_step();
    world.wait(60);
    world.answer(Answer::Pass, &[("error-ratio", Answer::Fail)]);
    world.decide();
    let status = world.status().clone();
    assert_eq!(status.stable, None);
    assert_eq!(status.canary, None);
    assert_eq!(status.legacy, Some(LegacyRole::Serving));
    assert_eq!(status.failed_revisions, [old()]);
    assert_eq!(world.weight(), 0);
    assert_eq!(world.phase(), Phase::Degraded);
    let rollback = status.last_rollback.expect("evidence");
    assert_eq!(rollback.reason, RollbackReason::CriterionFailed);
    let message = world.message();
    assert!(
        message.contains(&format!("legacy Service {LEGACY} serves all traffic")),
        "{message}"
    );

    // The failed stack is not retried on its own; a new spec migrates again.
    world.round(Answer::Pass);
    assert_eq!(world.status().canary, None);
    world.ship(new_model());
    world.decide();
    assert_eq!(world.status().canary, Some(new_model()));
    assert_eq!(world.status().stable, None);
}

#[test]
fn a_breach_after_promotion_goes_back_to_the_legacy_service() {
    let mut world = at_first_step();
    world.command(Command::PromoteFull);
    world.decide();
    assert_eq!(world.status().legacy, Some(LegacyRole::Standby));
    world.wait(60);
    world.answer(Answer::Pass, &[("vllm-crashloop", Answer::Fail)]);
    world
        .input
        .observed
        .vllm_restarts
        .insert(old().model_revision, 9);
    world.decide();
    let status = world.status();
    assert_eq!(status.stable, None, "{}", world.message());
    assert_eq!(status.legacy, Some(LegacyRole::Serving));
    assert_eq!(status.failed_revisions, [old()]);
}

#[test]
fn dropping_the_legacy_backend_hands_all_traffic_to_the_stack() {
    let mut world = at_first_step();
    world.input.rollout.traffic_routing.gateway_api = None;
    world.decide();
    let status = world.status();
    assert_eq!(status.stable, Some(old()));
    assert_eq!(status.canary, None);
    assert_eq!(status.legacy, None);
}

#[test]
fn the_throughput_bar_is_raised_only_while_the_legacy_service_is_the_baseline() {
    let mut world = at_first_step();
    world.pass_step(10);
    world.wait(60);
    let bar = |world: &mut World| {
        world.answer(Answer::Inconclusive, &[]);
        world.decide();
        let throughput = world.check("throughput", mineru_crds::CheckKind::Promotion);
        throughput.map(|c| c.threshold.clone())
    };
    let raised = format!("<= {} x max(stable, 0.01)", 1.0 / 1.15);
    assert_eq!(bar(&mut world), Some(raised));
}
