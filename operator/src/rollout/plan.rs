//! Replicas per revision and tier for a status, and what the entry Service selects.
//!
//! Replica-ratio routing (the default, no mesh): while the canary takes traffic the entry
//! Service selects stable and canary workers alike, so the canary's share is its share of
//! workers — `ceil(weight × total)` canary workers, the rest stable (at least one before the
//! last step) — and canary workers exist only once the canary may take traffic. Outside a
//! step the entry Service selects the stable revision alone, so a rolled-back canary's workers
//! leave it at once, before they are scaled down.
//! Gateway API routing: the HTTPRoute weights split the traffic, so stable keeps its full size
//! (a rollback needs no scale-up) and the canary workers start before any weight reaches them,
//! as many as give each canary worker the load of a stable one: comparisons of latency and
//! throughput are then made at equal load.

use k8s_openapi::jiff::Timestamp;
use mineru_crds::{MineruDeploymentStatus, RetiredRevision, Revisions, RolloutSpec};

use super::{
    Input, Plan, Scale,
    state::{Stage, later, stage, weight_of},
};

fn push(list: &mut Vec<Scale>, revision: &str, replicas: i32) {
    if !list.iter().any(|s| s.revision == revision) {
        list.push(Scale {
            revision: revision.to_owned(),
            replicas,
        });
    }
}

fn gateway(input: &Input) -> bool {
    routes_by_gateway(&input.rollout)
}

fn routes_by_gateway(rollout: &RolloutSpec) -> bool {
    rollout.traffic_routing.gateway_api.is_some()
}

/// Canary and stable workers at `weight` out of the `total` the spec asks for. Replica routing
/// splits by pods: `ceil(weight × total)` canary workers and the rest stable — at least one
/// before the last step, even when the canary's share rounds up to all of them (one worker at
/// 10%): 50% beats 100%. Gateway API routing keeps every stable pod and gives the canary
/// `ceil(weight / (100 − weight) × total)`, stable's per-pod load (all `total` at 100%).
fn worker_split(rollout: &RolloutSpec, weight: i32, total: i32) -> (i32, i32) {
    if routes_by_gateway(rollout) {
        let canary = if weight >= 100 {
            total
        } else {
            ((weight * total + (99 - weight)) / (100 - weight)).min(total)
        };
        return (canary, total);
    }
    let canary = (weight * total + 99) / 100;
    let stable = if weight < 100 && total > 0 {
        (total - canary).max(1)
    } else {
        (total - canary).max(0)
    };
    (canary, stable)
}

/// The share of traffic (0–1) a step of `weight` gives the canary when all workers are ready:
/// the weight through a Gateway, the canary's share of workers by replica ratio.
pub fn step_share(rollout: &RolloutSpec, worker_replicas: i32, weight: i32) -> f64 {
    if routes_by_gateway(rollout) || worker_replicas <= 0 {
        return f64::from(weight) / 100.0;
    }
    let (canary, stable) = worker_split(rollout, weight, worker_replicas);
    f64::from(canary) / f64::from((canary + stable).max(1))
}

/// The canary's traffic percentage in this status.
pub(super) fn canary_weight(input: &Input, status: &MineruDeploymentStatus) -> i32 {
    match stage(input, status) {
        Stage::Stepping(index) => weight_of(input, index),
        _ => 0,
    }
}

/// Canary worker replicas in this status.
pub(super) fn canary_workers(input: &Input, status: &MineruDeploymentStatus) -> i32 {
    let total = input.sizes.worker_replicas;
    let canary_at = |weight| worker_split(&input.rollout, weight, total).0;
    match stage(input, status) {
        Stage::Warming if gateway(input) => canary_at(weight_of(input, 0)),
        Stage::Stepping(index) => canary_at(weight_of(input, index)),
        _ => 0,
    }
}

/// The planned replicas of both tiers for this status at `now`.
pub(super) fn compute(input: &Input, status: &MineruDeploymentStatus, now: Timestamp) -> Plan {
    let sizes = input.sizes;
    let stable = status.stable.as_ref();
    let mut model = Vec::new();
    let mut worker = Vec::new();
    match (&status.canary, stable) {
        (None, None) => {}
        (None, Some(stable)) => {
            push(&mut model, &stable.model_revision, sizes.model_replicas);
            push(&mut worker, &stable.worker_revision, sizes.worker_replicas);
        }
        (Some(canary), stable) => {
            match stable {
                Some(stable) if canary.model_revision == stable.model_revision => {
                    push(&mut model, &stable.model_revision, sizes.model_replicas);
                }
                Some(stable) => {
                    let stopped = status.in_place_model_replicas.unwrap_or(0);
                    push(
                        &mut model,
                        &stable.model_revision,
                        (sizes.model_replicas - stopped).max(0),
                    );
                }
                // Migrating: the legacy Service is the baseline; it is not ours to size.
                None => {}
            }
            push(
                &mut model,
                &canary.model_revision,
                input.rollout.canary_model_replicas,
            );
            let canary_workers = canary_workers(input, status);
            let stable_workers = worker_split(
                &input.rollout,
                canary_weight(input, status),
                sizes.worker_replicas,
            )
            .1;
            if let Some(stable) = stable {
                push(&mut worker, &stable.worker_revision, stable_workers);
            }
            push(&mut worker, &canary.worker_revision, canary_workers);
        }
    }
    let waiting = stable.is_some_and(|stable| {
        waits_for_stable(
            input,
            &stable.model_revision,
            ready(input, stable, &model, &worker),
        )
    });
    for retired in &status.retired {
        let keep = keeps_replicas(input, retired, waiting, now);
        let replicas = |n: i32| if keep { n } else { 0 };
        push(
            &mut model,
            &retired.revisions.model_revision,
            replicas(retired.model_replicas),
        );
        push(
            &mut worker,
            &retired.revisions.worker_revision,
            replicas(retired.worker_replicas),
        );
    }
    Plan {
        stable: stable.cloned(),
        canary: status.canary.clone(),
        canary_weight: canary_weight(input, status),
        entry: entry(input, status),
        model,
        worker,
    }
}

/// The worker revision the entry Service selects; `None`: every worker revision. Only a canary
/// taking traffic by replica ratio shares it with stable.
fn entry(input: &Input, status: &MineruDeploymentStatus) -> Option<String> {
    let sharing = !gateway(input) && matches!(stage(input, status), Stage::Stepping(_));
    match (&status.stable, sharing) {
        (Some(stable), false) => Some(stable.worker_revision.clone()),
        _ => None,
    }
}

/// The canary's real share of traffic, in percent: the weight with Gateway API routing; by
/// replica ratio, its share of the ready workers behind the entry Service (of the planned
/// ones while none is ready).
pub(super) fn canary_share(input: &Input, plan: &Plan) -> i32 {
    let Some(canary) = &plan.canary else {
        return 0;
    };
    if gateway(input) || plan.canary_weight == 0 {
        return plan.canary_weight;
    }
    let serving = |ready: &dyn Fn(&Scale) -> i32| -> (i32, i32) {
        plan.worker
            .iter()
            .filter(|s| plan.entry.as_ref().is_none_or(|entry| *entry == s.revision))
            .fold((0, 0), |(canary_pods, all), s| {
                let pods = ready(s).min(s.replicas).max(0);
                let mine = if s.revision == canary.worker_revision {
                    pods
                } else {
                    0
                };
                (canary_pods + mine, all + pods)
            })
    };
    let observed = &input.observed;
    let (mut mine, mut all) = serving(&|s| observed.workers_ready(&s.revision));
    if all == 0 {
        (mine, all) = serving(&|s| s.replicas);
    }
    if all == 0 {
        0
    } else {
        ((f64::from(mine) * 100.0 / f64::from(all)).round()) as i32
    }
}

/// Whether a retired revision still runs its replicas: for `scaleDownDelay`, and longer while
/// retired revisions wait for stable — but not forever: a stable that cannot start because
/// the retired pods hold its GPUs gets them after the progress deadline at the latest.
pub(super) fn keeps_replicas(
    input: &Input,
    retired: &RetiredRevision,
    waiting_for_stable: bool,
    now: Timestamp,
) -> bool {
    let since = retired.since.0;
    now < later(since, input.rollout.scale_down_delay.get())
        || (waiting_for_stable && now < later(since, input.rollout.progress_deadline.get()))
}

/// Retired revisions keep serving until stable is ready, unless stable's vLLM pods cannot be
/// scheduled for lack of GPUs: then the retired ones are what holds those GPUs.
fn waits_for_stable(input: &Input, stable_model: &str, stable_ready: bool) -> bool {
    !stable_ready && !input.observed.unschedulable.contains(stable_model)
}

/// Planned replicas of a revision in a plan's list.
pub(super) fn replicas_of(list: &[Scale], revision: &str) -> i32 {
    list.iter()
        .find(|s| s.revision == revision)
        .map_or(0, |s| s.replicas)
}

fn ready(input: &Input, revisions: &Revisions, model: &[Scale], worker: &[Scale]) -> bool {
    let observed = &input.observed;
    let (model_revision, worker_revision) = (&revisions.model_revision, &revisions.worker_revision);
    observed.models_ready(model_revision) >= replicas_of(model, model_revision)
        && observed.workers_ready(worker_revision) >= replicas_of(worker, worker_revision)
}

/// Whether the stable revisions run all their planned replicas, ready (a legacy Service
/// serving instead is not the operator's to judge).
pub(super) fn stable_ready(input: &Input, status: &MineruDeploymentStatus, now: Timestamp) -> bool {
    let plan = compute(input, status, now);
    plan.stable
        .as_ref()
        .is_none_or(|stable| ready(input, stable, &plan.model, &plan.worker))
}

/// Whether retired revisions keep their replicas for stable's sake in this status.
pub(super) fn retired_wait(input: &Input, status: &MineruDeploymentStatus, now: Timestamp) -> bool {
    status.stable.as_ref().is_some_and(|stable| {
        waits_for_stable(
            input,
            &stable.model_revision,
            stable_ready(input, status, now),
        )
    })
}
