//! Random walks through the engine: time passing, rounds with any verdicts, the cluster
//! catching up or not, commands, spec changes, crashing vLLM pods and lost decisions, in any
//! order. After every decision the invariants below must hold, and a replay from the persisted
//! status must change nothing (`verify_replay`).

mod rollout_support;

use mineru_crds::{CheckKind, LegacyRole, MineruDeploymentStatus, Revisions, Verdict};
use mineru_operator::rollout::{Command, EventReason};
use rollout_support::{Answer, World, new_model, new_worker, old, revisions};
use serde_json::json;

/// A small deterministic generator, so that a failing walk can be replayed by its seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % sides
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.roll(items.len() as u64) as usize].clone()
    }
}

fn answer(dice: &mut Dice) -> Answer {
    match dice.roll(20) {
        0 => Answer::Fail,
        1 => Answer::Inconclusive,
        2 => Answer::Error,
        _ => Answer::Pass,
    }
}

struct Before {
    status: MineruDeploymentStatus,
    desired: Revisions,
    commands: Vec<Command>,
}

fn check_invariants(world: &World, before: &Before, seed: u64, action: &str) {
    let context = format!("seed {seed}, after {action}: {}", world.message());
    let status = world.status();
    let input = &world.input;

    assert_eq!(status.observed_generation, input.generation, "{context}");
    assert!(
        !status.message.as_deref().unwrap_or("").is_empty(),
        "{context}"
    );
    let json = serde_json::to_string(status).unwrap();
    assert!(!json.contains(":null"), "no NaN written as null: {context}");

    let plan = &world.last.as_ref().unwrap().plan;
    for scale in plan.model.iter().chain(&plan.worker) {
        assert!(scale.replicas >= 0, "{context}");
    }
    assert_eq!(plan.stable, status.stable, "{context}");
    // The entry Service takes in every worker revision only while a canary shares the traffic
    // by replica ratio; otherwise stable's alone, so a rolled-back canary is out of it at once.
    let sharing = input.rollout.traffic_routing.gateway_api.is_none()
        && status.canary.is_some()
        && status.canary_weight.unwrap_or(0) > 0;
    if status.stable.is_some() {
        assert_eq!(
            plan.entry.is_none(),
            sharing,
            "entry selects {:?}: {context}",
            plan.entry
        );
    }
    if let (Some(share), Some(weight)) = (status.canary_share, status.canary_weight) {
        assert!((0..=100).contains(&share), "{context}");
        if input.rollout.traffic_routing.gateway_api.is_some() {
            assert_eq!(share, weight, "{context}");
        }
    }
    // Without stable revisions the legacy Service serves, and only it.
    let legacy_configured = input.rollout.legacy_backend().is_some();
    assert_eq!(
        status.stable.is_none(),
        legacy_configured && status.legacy == Some(LegacyRole::Serving),
        "{context}"
    );
    if status.legacy == Some(LegacyRole::Standby) {
        assert!(status.promoted_at.is_some(), "{context}");
    }

    // Traffic reaches a model canary only once its vLLM is ready and warmed up.
    if let Some(canary) = &status.canary {
        let model_changed = plan
            .stable
            .as_ref()
            .is_none_or(|stable| canary.model_revision != stable.model_revision);
        let starts_traffic = status.canary_weight.unwrap_or(0) > 0
            && (before.status.canary.as_ref() != Some(canary)
                || before.status.canary_weight.unwrap_or(0) == 0);
        if model_changed && starts_traffic {
            assert!(
                input.observed.warmed_up.contains(&canary.model_revision),
                "{context}"
            );
            assert!(
                input.observed.models_ready(&canary.model_revision)
                    >= input.rollout.canary_model_replicas,
                "{context}"
            );
        }
        // Within one rollout steps never go back, and advance one at a time.
        if before.status.canary.as_ref() == Some(canary) {
            let (was, now) = (
                before.status.current_step.unwrap(),
                status.current_step.unwrap(),
            );
            assert!(now == was || now == was + 1, "{was} -> {now}: {context}");
        }
    }

    // A promotion happens by a person's command, or with every gating criterion passing (or
    // skipped for a reason) and at least one of them on documents actually seen.
    let promoted = before.status.canary.is_some() && before.status.canary == status.stable;
    let promote_command = before
        .commands
        .iter()
        .any(|c| matches!(c, Command::PromoteFull | Command::PromoteStep));
    if promoted && !promote_command {
        let since = before.status.step_started_at.clone().unwrap();
        let gating: Vec<_> = status
            .checks
            .iter()
            .filter(|c| c.kind == CheckKind::Promotion && c.evaluated_at > since)
            .collect();
        let index = before.status.current_step.unwrap_or(0) as usize;
        let skipped = input.rollout.steps[index].skip_analysis;
        assert!(!gating.is_empty() || skipped, "{context}");
        assert!(
            gating
                .iter()
                .all(|c| matches!(c.verdict, Verdict::Pass | Verdict::Skipped)),
            "{gating:?} {context}"
        );
        assert!(
            skipped
                || gating
                    .iter()
                    .any(|c| c.verdict == Verdict::Pass && c.samples.is_some_and(|n| n > 0.0)),
            "promoted without evidence: {gating:?} {context}"
        );
    }

    // A failed revision is not started again unless the spec moved or a person asked.
    let retried = before.commands.contains(&Command::Retry);
    if before.status.failed_revisions.contains(&input.desired)
        && before.desired == input.desired
        && !retried
    {
        assert_ne!(status.canary.as_ref(), Some(&input.desired), "{context}");
    }
}

/// Runs one walk; returns how many promotions and rollbacks it saw.
fn walk(seed: u64) -> (usize, usize) {
    let mut dice = Dice(seed);
    let specs = [
        json!({}),
        json!({"maxSurgeGPUs": 0}),
        json!({"steps": [{"weight": 10, "requireApproval": true}, {"weight": 50, "pause": "3m"}, {"weight": 100}]}),
        json!({"trafficRouting": {"gatewayAPI": {"httpRoute": {"name": "docs"}}}, "analysis": {"onError": "Rollback", "failureLimit": 1}}),
        json!({"analysis": {"onInconclusive": "Rollback", "quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}},
               "steps": [{"weight": 10, "pause": "1m", "maxDuration": "5m"}, {"weight": 50, "maxDuration": "5m"}, {"weight": 100, "maxDuration": "5m"}]}),
        json!({"analysis": {"defaultCriteria": false, "rollbackTriggers": [{"name": "t", "query": "q", "max": 1}]},
               "steps": [{"weight": 25, "pause": "2m", "skipAnalysis": true}, {"weight": 100, "skipAnalysis": true}]}),
    ];
    // Every sixth walk starts as a migration from a legacy Service.
    let mut world = if seed % 6 == 5 {
        let mut world = World::migrating(dice.pick(&specs));
        world.decide();
        world
    } else {
        World::new(dice.pick(&specs))
    };
    world.verify_replay = true;
    let targets = [
        old(),
        new_model(),
        new_worker(),
        revisions("m-99aa", "w-77bb"),
    ];
    let commands = [
        Command::PromoteStep,
        Command::PromoteFull,
        Command::Abort,
        Command::Retry,
        Command::Pause,
        Command::Resume,
    ];
    for _ in 0..120 {
        let before = |world: &World| Before {
            status: world.status().clone(),
            desired: world.input.desired.clone(),
            commands: world.input.commands.clone(),
        };
        let action = match dice.roll(10) {
            0 => {
                world.ship(dice.pick(&targets));
                "a spec change"
            }
            1 => {
                world.command(dice.pick(&commands));
                "a command"
            }
            2 | 3 => {
                world.wait(60);
                let (default, odd) = (answer(&mut dice), answer(&mut dice));
                let name = dice.pick(&["error-ratio", "latency-spike", "quality", "breaker-opens"]);
                world.answer(default, &[(name, odd)]);
                "a round"
            }
            4 => {
                world.converge();
                "the cluster catching up"
            }
            5 => {
                world.converge();
                if let Some(canary) = world.status().canary.clone() {
                    world
                        .input
                        .observed
                        .warmed_up
                        .remove(&canary.model_revision);
                }
                "the cluster catching up with a cold canary vLLM"
            }
            6 => {
                if let Some(canary) = world.status().canary.clone() {
                    *world
                        .input
                        .observed
                        .vllm_restarts
                        .entry(canary.model_revision)
                        .or_default() += 1;
                }
                "a vLLM restart"
            }
            7 => {
                if let Some(canary) = world.status().canary.clone() {
                    world
                        .input
                        .observed
                        .unschedulable
                        .insert(canary.model_revision);
                }
                "unschedulable canary pods"
            }
            8 => {
                world.crash_at = Some(world.decisions + 1);
                "a lost decision"
            }
            _ => {
                world.wait(dice.roll(900));
                "time passing"
            }
        };
        let snapshot = before(&world);
        world.decide();
        if world.crash_at == Some(world.decisions) {
            world.crash_at = None;
            assert_eq!(
                *world.status(),
                snapshot.status,
                "a lost decision wrote nothing"
            );
            continue;
        }
        check_invariants(&world, &snapshot, seed, action);
    }
    let count =
        |reason: fn(&EventReason) -> bool| world.events.iter().filter(|(r, _)| reason(r)).count();
    (
        count(|r| *r == EventReason::Promoted),
        count(|r| matches!(r, EventReason::RolledBack(_))),
    )
}

#[test]
fn random_walks_keep_every_invariant() {
    let (mut promotions, mut rollbacks) = (0, 0);
    for seed in 0..200 {
        let (promoted, rolled_back) = walk(seed);
        promotions += promoted;
        rollbacks += rolled_back;
    }
    // The walks must reach both ends, or they test little.
    assert!(promotions >= 50, "{promotions} promotions");
    assert!(rollbacks >= 100, "{rollbacks} rollbacks");
}
