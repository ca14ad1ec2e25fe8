//! The kube-runtime Controller: watches MineruDeployments and what they own, and runs each
//! reconcile as observe → decide → record → act → announce (docs/adr/0011).

use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::{self, Action},
        watcher,
    },
};
use mineru_crds::{MineruDeployment, MineruDeploymentStatus, Phase};
use serde_json::json;
use tracing::{Instrument, field};

use crate::{
    commands,
    context::Context,
    drive,
    error::{Error, Result},
    labels,
    metrics::{Hold, ObjectState},
    notify, observe,
    reconcile::{
        DesiredObjects, Owner, SpecRevisions, Topology, apply::ChildSet, events, recorded_templates,
    },
    rollout::EventReason,
    rotation,
    scope::{self, WatchScope},
    sources, traffic,
};

/// How often an unchanged object is looked at again; changes of owned objects trigger sooner.
const RESYNC: Duration = Duration::from_secs(600);

/// Objects per page of a watch's list (kube-runtime's default is 500).
const LIST_PAGE: u32 = 50;

/// Fails with [`Error::CrdMissing`] when MineruDeployments cannot be listed for lack of the CRD.
pub async fn ensure_crd(client: &Client, scope: &WatchScope) -> Result<()> {
    let namespace = scope.namespaces().into_iter().next().flatten();
    let api = scope::api::<MineruDeployment>(client, namespace.as_deref());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(Error::CrdMissing),
        Err(source) => Err(Error::kube(
            "list",
            "MineruDeployment",
            namespace.as_deref().unwrap_or("all namespaces"),
            source,
        )),
    }
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first. Call
/// [`ensure_crd`] before, so a missing CRD is one clear error instead of a retrying watch. With
/// listed namespaces, one controller per namespace watches only there (the Roles the chart
/// grants allow nothing else).
///
/// At most `concurrency` objects are reconciled at once per controller: a reconcile makes a
/// dozen API calls, and hundreds of objects reconciled together (a start, a resync) would
/// swamp the apiserver until the Lease could not be renewed (docs/benchmarks.md).
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let controllers = ctx
        .rollout_io
        .scope
        .namespaces()
        .into_iter()
        .map(|namespace| run_in(ctx.clone(), namespace, concurrency, shutdown.clone()));
    futures::future::join_all(controllers).await;
}

/// One controller over `namespace` (`None`: every namespace).
async fn run_in(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let namespace = namespace.as_deref();
    // Only our objects are watched, which keeps the caches small in busy clusters; lists come
    // in small pages, so that a start among hundreds of objects does not hold thousands of
    // them in memory at once.
    let listed = || watcher::Config::default().page_size(LIST_PAGE);
    let owned = || listed().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let forgetting = ctx.clone();
    Controller::new(scope::api::<MineruDeployment>(&client, namespace), listed())
        .owns(scope::api::<StatefulSet>(&client, namespace), owned())
        .owns(scope::api::<Deployment>(&client, namespace), owned())
        .owns(scope::api::<Service>(&client, namespace), owned())
        .owns(scope::api::<NetworkPolicy>(&client, namespace), owned())
        .owns(
            scope::api::<PodDisruptionBudget>(&client, namespace),
            owned(),
        )
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            let ctx = forgetting.clone();
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                    Err(controller::Error::ObjectNotFound(object)) => {
                        let namespace = object.namespace.as_deref().unwrap_or_default();
                        ctx.metrics.forget(namespace, &object.name);
                        ctx.outdated.forget(namespace, &object.name);
                        let key = format!("{namespace}/{}", object.name);
                        ctx.rollout_io.quality_rounds.cancel(&key);
                        ctx.rollout_io.probes.stop(&key);
                    }
                    // error_policy already logged it with its retry delay.
                    Err(controller::Error::ReconcilerFailed(..)) => {}
                    Err(error) => tracing::warn!(%error, "controller stream error"),
                }
            }
        })
        .await;
}

/// Reconciles one MineruDeployment: decides from its newest version, records the decision in
/// status, then writes its objects and announces what changed.
pub async fn reconcile(md: Arc<MineruDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let span = tracing::info_span!("reconcile", namespace = %namespace, name = %name, generation = field::Empty);
    if let Some(generation) = md.metadata.generation {
        span.record("generation", generation);
    }
    let started = Instant::now();
    let reconciling = ctx.liveness.reconciling();
    let result = reconcile_current(md, &ctx).instrument(span).await;
    drop(reconciling);
    ctx.metrics.reconciled(started.elapsed());
    let decided = result?;
    ctx.succeeded(&namespace, &name);
    let Some(decided) = decided else {
        return Ok(Action::requeue(OUTDATED_RETRY));
    };
    ctx.metrics.set_state(&namespace, &name, decided.state);
    Ok(Action::requeue(next_look(
        decided.requeue_at,
        (ctx.clock)().0,
        resync_of(&namespace, &name),
    )))
}

/// Decisions made in one reconcile before it gives up on an object that keeps moving on
/// between the read and the write (another writer racing this one).
const DECISION_ATTEMPTS: usize = 3;

/// How soon an object that kept moving on is looked at again.
const OUTDATED_RETRY: Duration = Duration::from_secs(1);

/// Decides from the newest version of the object: the cached one unless this operator has
/// written past it already (the watch lags behind its own writes), and from a fresh read after
/// a write found that the object had moved on. `None`: it kept moving on; nothing was recorded.
async fn reconcile_current(
    cached: Arc<MineruDeployment>,
    ctx: &Context,
) -> Result<Option<Decided>> {
    let mut md = cached;
    // Commands whose annotations were removed by a round whose status write was then refused:
    // they are acted on by the next round, not lost.
    let mut carried = commands::Requested::default();
    for _ in 0..DECISION_ATTEMPTS {
        if is_outdated(ctx, &md) {
            md = Arc::new(read_current(ctx, &md).await?);
        }
        match reconcile_objects(&md, ctx, carried).await? {
            Round::Decided(decided) => return Ok(Some(decided)),
            Round::Outdated(left) => carried = left,
        }
    }
    if !carried.commands.is_empty() {
        tracing::warn!(commands = ?carried.commands, "the object kept changing; commands consumed but not acted on");
    }
    Ok(None)
}

fn is_outdated(ctx: &Context, md: &MineruDeployment) -> bool {
    md.resource_version().is_some_and(|version| {
        ctx.outdated.contains(
            &md.namespace().unwrap_or_default(),
            &md.name_any(),
            &version,
        )
    })
}

async fn read_current(ctx: &Context, md: &MineruDeployment) -> Result<MineruDeployment> {
    let name = md.name_any();
    tracing::debug!("the cached object is outdated; reading the current one");
    api(ctx, md)
        .get(&name)
        .await
        .map_err(|source| Error::kube("get", "MineruDeployment", name, source))
}

/// When to reconcile again: when the engine asked (a pause ending, an analysis round due), and
/// at the latest after `resync`.
fn next_look(requeue_at: Option<Timestamp>, now: Timestamp, resync: Duration) -> Duration {
    let wanted = requeue_at
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .unwrap_or(resync);
    wanted.clamp(Duration::from_secs(1), resync)
}

/// The periodic look of one object: [`RESYNC`] shortened by up to a tenth, by a hash of its
/// key, so that hundreds of objects that converged together (a start, a bulk apply) do not all
/// come due in the same second and queue a rolling-out object's rounds behind them.
fn resync_of(namespace: &str, name: &str) -> Duration {
    // FNV-1a: stable across processes, so a restarted operator spreads the same way.
    let hash = namespace
        .bytes()
        .chain([b'/'])
        .chain(name.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let share = (hash % 1000) as f64 / 1000.0;
    RESYNC - (RESYNC / 10).mul_f64(share)
}

/// Counts the failure and retries the object after its own growing backoff.
pub fn error_policy(md: Arc<MineruDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    ctx.metrics.failed(error.metric_label());
    let delay = ctx.failed(&namespace, &name);
    tracing::warn!(namespace = %namespace, name = %name, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How one round of observe, decide, record, act went.
enum Round {
    /// Recorded and acted on.
    Decided(Decided),
    /// The object had moved on since it was read: nothing recorded, nothing done; the commands
    /// already consumed are left to act on.
    Outdated(commands::Requested),
}

/// One round: observe the owned objects, decide, record the decision (commands consumed, then
/// status), act on it (objects, traffic, orphans), announce it. Recording first means a crash
/// or a failed write while acting leaves a status the next round finishes acting on, never
/// objects or traffic that no recorded decision allowed (docs/adr/0011).
async fn reconcile_objects(
    md: &MineruDeployment,
    ctx: &Context,
    carried: commands::Requested,
) -> Result<Round> {
    let owner = Owner::of(md)?;
    let mut children =
        ChildSet::new(ctx.client.clone(), &owner).crashing_after_writes(ctx.crash_points.clone());
    let observed_children = children.list_all().await?;
    let model_pods = list_model_pods(ctx, &owner).await?;

    let spec_revisions = SpecRevisions::of(&owner.instance, &md.spec)?;
    let recorded = recorded_templates(
        &observed_children.statefulsets,
        &observed_children.deployments,
    );
    let requested = carried.clone().then(commands::read(md.annotations()));
    let observed = observe::observe(
        &observed_children.statefulsets,
        &observed_children.deployments,
        &model_pods,
        &md.spec.model.gpu_resource_name,
    );
    let now = (ctx.clock)();
    let decision = drive::decide(
        &ctx.client,
        &ctx.rollout_io,
        md,
        spec_revisions.revisions.clone(),
        observed,
        requested.commands.clone(),
        now.0,
    )
    .await;
    let topology = Topology::from_plan(md, &spec_revisions, &recorded, &decision.plan);
    let secrets = pod_secrets(ctx, md).await;
    let rotation = key_rotation(
        ctx,
        md,
        &observed_children.statefulsets,
        secrets.api_key.as_deref(),
        now.0,
    );
    let desired = DesiredObjects::build(
        &owner,
        &md.spec,
        &topology,
        &ctx.settings,
        rotation.version.as_deref(),
    )?;
    let old = md.status.clone().unwrap_or_default();
    let new = decision.status;

    // Record. Commands are consumed before the status that acts on them is written: a crash in
    // between loses a command rather than applying it twice. Both writes carry the
    // resourceVersion the decision was made from, so a decision from an outdated object is
    // refused and made again from the current one.
    // Checked before each phase of writes: a replica whose renewal is overdue (frozen, cut off)
    // may no longer be the leader, and writes nothing.
    ctx.ensure_leading()?;
    let mut version = md.resource_version();
    if !requested.is_empty() {
        match consume_commands(ctx, md, &requested.consumed, version.as_deref()).await? {
            Written::Now(newer) => version = superseded(ctx, md, version, newer),
            Written::Outdated => return Ok(outdated(ctx, md, carried)),
        }
        ctx.crash_points
            .after(|| format!("commands {}", requested.consumed.join(",")));
    }
    if new != old {
        match patch_status(ctx, md, &new, version.as_deref()).await? {
            Written::Now(newer) => version = superseded(ctx, md, version, newer),
            Written::Outdated => return Ok(outdated(ctx, md, requested.removed())),
        }
        ctx.crash_points
            .after(|| format!("status {}", decided_state(&new)));
    }

    // Act, from what was recorded, unless the pods would mount a Secret the platform does not
    // let the operator hand out.
    let refused = secrets.refusal;
    let acted = async {
        if let Some(reason) = &refused {
            return Err(Error::InvalidSpec {
                name: format!("{}/{}", owner.namespace, owner.instance),
                reason: reason.clone(),
            });
        }
        ctx.ensure_leading()?;
        children.apply_all(desired, &observed_children).await?;
        if traffic::route(&ctx.client, md, &owner, &decision.plan).await? {
            let plan = &decision.plan;
            ctx.crash_points.after(|| {
                format!(
                    "route {:?} {:?} {}",
                    plan.stable, plan.canary, plan.canary_weight
                )
            });
        }
        children.delete_all_orphans(&observed_children).await
    }
    .await;

    // Announce the decision, and the objects written even if acting failed part-way: the next
    // round finds them written and the status recorded, and announces neither again.
    let mut notices = events::notices(&old, &new, children.report());
    notices.extend(events::from_rollout(&decision.events));
    notices.extend(requested.refused.into_iter().map(events::refused_command));
    notices.extend(refused.map(events::refused_secret));
    publish(ctx, md, notices).await;
    deliver_notifications(ctx, md, &new, version, now.0).await;
    for event in &decision.events {
        if let EventReason::RolledBack(reason) = event.reason {
            ctx.metrics
                .rolled_back(&owner.namespace, &owner.instance, reason);
        }
    }
    acted?;
    Ok(Round::Decided(Decided {
        state: object_state(&new),
        requeue_at: [decision.requeue_at, rotation.due_at]
            .into_iter()
            .flatten()
            .min(),
    }))
}

/// What the Secrets the pods would use allow: why the pods may not use one — it lacks the
/// label the platform requires, cannot be read, or does not exist (an unlabelled one created
/// later would be mounted all the same) — and the API key they hold now.
struct PodSecrets {
    refusal: Option<String>,
    api_key: Option<String>,
}

/// Reads every Secret the pods of `md` would use: the API key, the job store URL, and any
/// `secretKeyRef` of either tier's environment.
async fn pod_secrets(ctx: &Context, md: &MineruDeployment) -> PodSecrets {
    let namespace = md.namespace().unwrap_or_default();
    let key_ref = md.spec.model.api_key_secret_ref.as_ref();
    let mut api_key = None;
    for name in mounted_secrets(md) {
        let refusal = match sources::secret(
            &ctx.client,
            &ctx.rollout_io.outbound,
            &namespace,
            &name,
        )
        .await
        {
            Ok(Some(secret)) => {
                if let Some(reference) = key_ref.filter(|r| r.name == name) {
                    api_key = secret
                        .data
                        .as_ref()
                        .and_then(|data| data.get(&reference.key))
                        .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned());
                }
                continue;
            }
            Ok(None) => format!(
                "Secret {namespace}/{name}, which the pods would use, does not exist; create it with the label the operator requires"
            ),
            Err(reason) => reason,
        };
        return PodSecrets {
            refusal: Some(refusal),
            api_key: None,
        };
    }
    PodSecrets {
        refusal: None,
        api_key,
    }
}

/// The key version the vLLM pod templates carry now (docs/security.md, rotation).
fn key_rotation(
    ctx: &Context,
    md: &MineruDeployment,
    statefulsets: &[StatefulSet],
    api_key: Option<&str>,
    now: Timestamp,
) -> rotation::Rotation {
    let current = api_key.map(rotation::version_of);
    let first_seen = current.as_deref().map_or(now, |version| {
        ctx.key_versions.since(
            &md.namespace().unwrap_or_default(),
            &md.name_any(),
            version,
            now,
        )
    });
    rotation::decide(
        rotation::observed_version(statefulsets).as_deref(),
        current.as_deref(),
        first_seen,
        now,
        ctx.rollout_io.key_propagation,
        statefulsets.is_empty(),
    )
}

/// Every Secret the pods of `md` would read, by name, once each.
fn mounted_secrets(md: &MineruDeployment) -> std::collections::BTreeSet<String> {
    let spec = &md.spec;
    let from_env = spec
        .model
        .env
        .iter()
        .chain(&spec.worker.env)
        .filter_map(|env| env.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|reference| reference.name.clone());
    let job_store = spec
        .worker
        .job_store
        .iter()
        .map(|store| &store.url_secret_ref);
    spec.model
        .api_key_secret_ref
        .iter()
        .chain(job_store)
        .map(|reference| reference.name.clone())
        .chain(from_env)
        .collect()
}

/// Delivers what the recorded outbox holds that is due, then records what was delivered,
/// conditioned on the version `status` was recorded at: a crash or a refused write in between
/// delivers the same notifications again, under the same ids, never different ones.
async fn deliver_notifications(
    ctx: &Context,
    md: &MineruDeployment,
    status: &MineruDeploymentStatus,
    version: Option<String>,
    now: Timestamp,
) {
    let outbox = &status.pending_notifications;
    let crash_points = &ctx.crash_points;
    let after = |id: &str| crash_points.after(|| format!("deliver {id}"));
    let io = &ctx.rollout_io;
    let outcomes =
        notify::deliver_due(&ctx.client, &io.http, &io.outbound, md, outbox, now, after).await;
    if outcomes.is_empty() {
        return;
    }
    let settled = MineruDeploymentStatus {
        pending_notifications: notify::settle(outbox, &outcomes, now),
        ..status.clone()
    };
    if ctx.ensure_leading().is_err() {
        return;
    }
    match patch_status(ctx, md, &settled, version.as_deref()).await {
        Ok(Written::Now(newer)) => {
            superseded(ctx, md, version, newer);
            let ids: Vec<&str> = outcomes.iter().map(|o| o.id.as_str()).collect();
            crash_points.after(|| format!("settled {}", ids.join(",")));
        }
        Ok(Written::Outdated) => {
            tracing::debug!("the object moved on; what was delivered will be delivered again");
        }
        Err(error) => tracing::warn!(%error, "recording the delivered notifications failed"),
    }
}

/// What a status write decided, for the crash points: the rollout's position and its outbox,
/// not the message or readings that change on every round.
fn decided_state(status: &MineruDeploymentStatus) -> String {
    let pending: Vec<&str> = status
        .pending_notifications
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    format!(
        "stable={:?} canary={:?} step={:?} weight={:?} phase={:?} paused={} retired={} pending={}",
        status.stable,
        status.canary,
        status.current_step,
        status.canary_weight,
        status.phase,
        status.paused,
        status.retired.len(),
        pending.join(",")
    )
}

/// Remembers that `read` was written past by `written`; returns `written`.
fn superseded(
    ctx: &Context,
    md: &MineruDeployment,
    read: Option<String>,
    written: Option<String>,
) -> Option<String> {
    if let Some(read) = read {
        ctx.outdated
            .superseded(&md.namespace().unwrap_or_default(), &md.name_any(), &read);
    }
    written
}

/// A round whose decision came from an outdated object: the version it read is known to be
/// outdated, so the next round reads the current one.
fn outdated(ctx: &Context, md: &MineruDeployment, carried: commands::Requested) -> Round {
    tracing::debug!("the object changed since it was read; deciding again");
    superseded(ctx, md, md.resource_version(), None);
    Round::Outdated(carried)
}

async fn publish(ctx: &Context, md: &MineruDeployment, notices: Vec<events::Notice>) {
    let reference = md.object_ref(&());
    for notice in notices {
        // An Event is information, not state: failing to publish one must not fail the reconcile.
        if let Err(error) = ctx.recorder.publish(&notice, &reference).await {
            tracing::warn!(reason = notice.reason, %error, "publishing event failed");
        }
    }
}

/// What a reconcile decided, for metrics and the next look.
struct Decided {
    state: ObjectState,
    requeue_at: Option<Timestamp>,
}

/// What the metrics show of a status just recorded.
fn object_state(status: &MineruDeploymentStatus) -> ObjectState {
    let preflight_failed = status
        .conditions
        .iter()
        .any(|c| c.type_ == "PreflightFailed" && c.status == "True");
    ObjectState {
        phase: status.phase.unwrap_or(Phase::Progressing),
        weight: status.canary_weight.unwrap_or(0),
        share: status.canary_share.unwrap_or(0),
        gate_errors: status.consecutive_errors,
        holding: if status.evidence_overdue {
            Some(Hold::EvidenceOverdue)
        } else if preflight_failed {
            Some(Hold::PreflightFailed)
        } else {
            None
        },
    }
}

/// The vLLM pods of this MineruDeployment (restarts, scheduling); owned by their StatefulSets.
async fn list_model_pods(ctx: &Context, owner: &Owner) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let selector = format!(
        "{}={},{}=model",
        labels::INSTANCE,
        owner.instance,
        labels::TIER
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .map_err(|source| Error::kube("list", "Pod", owner.namespace.clone(), source))
}

fn api(ctx: &Context, md: &MineruDeployment) -> Api<MineruDeployment> {
    Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default())
}

/// How a write conditioned on a resourceVersion went.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Done; the object's new resourceVersion.
    Now(Option<String>),
    /// The object had moved on: nothing was written.
    Outdated,
}

/// `patch` with the resourceVersion it was computed from, as a precondition.
fn conditioned(mut patch: serde_json::Value, version: Option<&str>) -> serde_json::Value {
    if let Some(version) = version {
        patch["metadata"]["resourceVersion"] = version.into();
    }
    patch
}

/// A conditioned write's outcome: a conflict means the object moved on. Retrying the same body
/// would undo whatever moved it, so the caller decides again instead.
fn written(
    result: kube::Result<MineruDeployment>,
    verb: &'static str,
    name: String,
) -> Result<Written> {
    match result {
        Ok(object) => Ok(Written::Now(object.resource_version())),
        Err(kube::Error::Api(status)) if status.is_conflict() => Ok(Written::Outdated),
        Err(source) => Err(Error::kube(verb, "MineruDeployment", name, source)),
    }
}

async fn consume_commands(
    ctx: &Context,
    md: &MineruDeployment,
    consumed: &[String],
    version: Option<&str>,
) -> Result<Written> {
    let name = md.name_any();
    let patch = conditioned(commands::removal_patch(consumed), version);
    let result = api(ctx, md)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await;
    written(result, "patch", name)
}

async fn patch_status(
    ctx: &Context,
    md: &MineruDeployment,
    status: &mineru_crds::MineruDeploymentStatus,
    version: Option<&str>,
) -> Result<Written> {
    let name = md.name_any();
    // The whole status under one field manager: a field left out is a field removed.
    let patch = conditioned(
        json!({
            "apiVersion": MineruDeployment::api_version(&()),
            "kind": MineruDeployment::kind(&()),
            "status": status,
        }),
        version,
    );
    let params = PatchParams::apply(labels::MANAGER).force();
    let result = api(ctx, md)
        .patch_status(&name, &params, &Patch::Apply(patch))
        .await;
    written(result, "patch status", name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::Method;
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    use serde_json::Value;

    use super::*;
    use crate::reconcile::{
        Settings,
        apiserver::{ApiServer, Call},
        fixtures::Fixture,
    };
    use crate::{drive::RolloutIo, metrics::Metrics};

    const STS: &str = "/apis/apps/v1/namespaces/parsing/statefulsets";
    const DEPLOY: &str = "/apis/apps/v1/namespaces/parsing/deployments";
    const SVC: &str = "/api/v1/namespaces/parsing/services";
    const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/parsing/networkpolicies";
    const PDB: &str = "/apis/policy/v1/namespaces/parsing/poddisruptionbudgets";
    const PODS: &str = "/api/v1/namespaces/parsing/pods";
    const PARENT: &str = "/apis/mineru.dev/v1alpha1/namespaces/parsing/minerudeployments/docs";
    const STATUS: &str =
        "/apis/mineru.dev/v1alpha1/namespaces/parsing/minerudeployments/docs/status";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/parsing/events";

    fn clock() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn the_next_look_is_what_the_engine_asked_within_a_second_and_the_resync() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |seconds: i64| Some(Timestamp::from_second(1_800_000_000 + seconds).unwrap());
        let resync = Duration::from_secs(570);
        for (requeue_at, expected) in [
            (None, 570),
            (at(30), 30),
            (at(0), 1),
            (at(-5), 570),
            (at(3600), 570),
        ] {
            assert_eq!(
                next_look(requeue_at, now, resync),
                Duration::from_secs(expected),
                "{requeue_at:?}"
            );
        }
    }

    #[test]
    fn objects_that_converged_together_come_due_spread_over_a_tenth_of_the_resync() {
        let looks: Vec<Duration> = (0..500)
            .map(|i| resync_of("resting", &format!("docs-{i:03}")))
            .collect();
        assert!(
            looks
                .iter()
                .all(|look| *look > RESYNC * 9 / 10 && *look <= RESYNC)
        );
        // No second of the minute-long spread holds more than a few of the 500.
        let mut per_second = BTreeMap::new();
        for look in &looks {
            *per_second.entry(look.as_secs()).or_insert(0) += 1;
        }
        assert!(per_second.len() > 50, "{per_second:?}");
        assert!(per_second.values().all(|&n| n <= 30), "{per_second:?}");
        assert_eq!(resync_of("a", "b"), resync_of("a", "b"));
        assert_ne!(resync_of("a", "bc"), resync_of("ab", "c"));
    }

    fn context(client: Client) -> Arc<Context> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Context::new(
            client,
            Some("test".into()),
            metrics,
            Settings::default(),
            RolloutIo {
                // The webhook receivers of these tests listen on the loopback; Secrets need
                // the default label, as in production.
                outbound: crate::outbound::OutboundPolicy::new(
                    &["127.0.0.1"],
                    Some((
                        crate::outbound::DEFAULT_SECRET_LABEL.0.into(),
                        crate::outbound::DEFAULT_SECRET_LABEL.1.into(),
                    )),
                )
                .unwrap(),
                ..RolloutIo::default()
            },
            clock,
        ))
    }

    /// Reconciles `md` against `server`; returns the outcome and every call made, in order.
    async fn run(server: ApiServer, md: &MineruDeployment) -> (Result<Action>, Vec<Call>) {
        let (client, calls) = server
            .with_parent(serde_json::to_value(md).unwrap())
            .start();
        let result = reconcile(Arc::new(md.clone()), context(client)).await;
        (result, calls.await.unwrap())
    }

    fn lines(calls: &[Call]) -> Vec<String> {
        calls.iter().map(Call::line).collect()
    }

    fn writes(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.is_write())
            .map(Call::line)
            .collect()
    }

    fn lists() -> Vec<String> {
        [STS, DEPLOY, SVC, NETPOL, PDB, PODS]
            .iter()
            .map(|p| format!("GET {p}"))
            .collect()
    }

    fn revisions(md: &MineruDeployment) -> (String, String) {
        let r = SpecRevisions::of("docs", &md.spec).unwrap().revisions;
        (r.model_revision, r.worker_revision)
    }

    /// The API server after `calls`: every applied object stored, listed back as sent.
    fn holding(calls: &[Call]) -> ApiServer {
        let mut stored: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for call in calls
            .iter()
            .filter(|c| c.method == Method::PATCH && !c.path.ends_with("/status"))
        {
            let mut segments = call.path.rsplit('/');
            let name = segments.next().unwrap().to_owned();
            let plural = segments.next().unwrap().to_owned();
            let mut object = call.body.clone();
            object["metadata"]["uid"] = Value::String(format!("uid-{name}"));
            stored.entry(plural).or_default().insert(name, object);
        }
        stored
            .into_iter()
            .fold(ApiServer::default(), |server, (plural, objects)| {
                server.with_list(&plural, objects.into_values().collect())
            })
    }

    /// `md` carrying the status the last status patch in `calls` wrote.
    fn with_written_status(mut md: MineruDeployment, calls: &[Call]) -> MineruDeployment {
        let patch = calls
            .iter()
            .rfind(|c| c.path == STATUS)
            .expect("a status patch");
        md.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
        md
    }

    /// The state after a first reconcile of the test object: its calls and the object.
    async fn settled() -> (Vec<Call>, MineruDeployment) {
        let md = MineruDeployment::test();
        let (result, calls) = run(ApiServer::default(), &md).await;
        result.unwrap();
        let md = with_written_status(md, &calls);
        (calls, md)
    }

    #[tokio::test]
    async fn first_reconcile_records_status_then_applies_the_full_object_set_then_events() {
        let md = MineruDeployment::test();
        let (m, w) = revisions(&md);
        let (result, calls) = run(ApiServer::default(), &md).await;
        assert_eq!(
            result.unwrap(),
            Action::requeue(resync_of(&md.namespace().unwrap(), &md.name_any()))
        );
        let mut expected = lists();
        expected.extend([
            format!("PATCH {STATUS}"),
            format!("PATCH {STS}/docs-vllm-{m}"),
            format!("PATCH {SVC}/docs-vllm-{m}-pods"),
            format!("PATCH {SVC}/docs-vllm-{m}"),
            format!("PATCH {SVC}/docs-worker-{w}"),
            format!("PATCH {SVC}/docs"),
            format!("PATCH {DEPLOY}/docs-worker-{w}"),
            format!("PATCH {NETPOL}/docs-vllm"),
            format!("PATCH {NETPOL}/docs-worker"),
            format!("PATCH {PDB}/docs-vllm"),
            format!("PATCH {PDB}/docs-worker"),
            format!("POST {EVENTS}"),
            format!("POST {EVENTS}"),
        ]);
        assert_eq!(lines(&calls), expected);
    }

    #[tokio::test]
    async fn objects_are_server_side_applied_by_our_field_manager_with_force() {
        let (calls, _) = settled().await;
        for call in calls.iter().filter(|c| c.method == Method::PATCH) {
            assert!(
                call.query.contains("fieldManager=mineru-operator"),
                "{}?{}",
                call.path,
                call.query
            );
            assert!(
                call.query.contains("force=true"),
                "{}?{}",
                call.path,
                call.query
            );
        }
    }

    #[tokio::test]
    async fn first_status_names_the_stable_revision_and_is_progressing() {
        let (calls, md) = settled().await;
        let (m, w) = revisions(&md);
        let status = md.status.unwrap();
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.phase, Some(Phase::Progressing));
        let stable = status.stable.unwrap();
        assert_eq!((stable.model_revision, stable.worker_revision), (m, w));
        let patch = calls.iter().find(|c| c.path == STATUS).unwrap();
        assert_eq!(patch.body["apiVersion"], "mineru.dev/v1alpha1");
        assert_eq!(patch.body["kind"], "MineruDeployment");
    }

    #[tokio::test]
    async fn first_reconcile_publishes_its_decisions_as_events() {
        let (calls, md) = settled().await;
        let (m, w) = revisions(&md);
        let events: Vec<&Value> = calls
            .iter()
            .filter(|c| c.path == EVENTS)
            .map(|c| &c.body)
            .collect();
        assert_eq!(events[0]["reason"], "NewRevision");
        assert_eq!(events[0]["note"], format!("deploying revision {m}/{w}"));
        assert_eq!(events[1]["reason"], "Created");
        assert!(
            events[1]["note"]
                .as_str()
                .unwrap()
                .contains(&format!("StatefulSet/docs-vllm-{m}"))
        );
        for event in events {
            assert_eq!(event["regarding"]["name"], "docs");
            assert_eq!(event["regarding"]["kind"], "MineruDeployment");
            assert_eq!(event["reportingController"], "mineru-operator");
            assert_eq!(event["type"], "Normal");
        }
    }

    #[tokio::test]
    async fn steady_state_issues_no_write_calls() {
        let (first, md) = settled().await;
        let (result, calls) = run(holding(&first), &md).await;
        result.unwrap();
        assert_eq!(lines(&calls), lists(), "only the lists");
        assert_eq!(writes(&calls), Vec::<String>::new());
    }

    #[tokio::test]
    async fn status_is_patched_alone_when_readiness_changes() {
        let (first, md) = settled().await;
        let (m, w) = revisions(&md);
        let mut server = holding(&first);
        let mut ready_sts = first
            .iter()
            .find(|c| c.path == format!("{STS}/docs-vllm-{m}"))
            .unwrap()
            .body
            .clone();
        ready_sts["metadata"]["uid"] = "uid-sts".into();
        ready_sts["status"] = serde_json::json!({"replicas": 1, "readyReplicas": 1});
        let mut ready_deploy = first
            .iter()
            .find(|c| c.path == format!("{DEPLOY}/docs-worker-{w}"))
            .unwrap()
            .body
            .clone();
        ready_deploy["metadata"]["uid"] = "uid-deploy".into();
        ready_deploy["status"] = serde_json::json!({"replicas": 2, "readyReplicas": 2});
        server = ApiServer::default()
            .with_list("statefulsets", vec![ready_sts])
            .with_list("deployments", vec![ready_deploy])
            .merge_lists_from(
                server,
                &["services", "networkpolicies", "poddisruptionbudgets"],
            );

        let (result, calls) = run(server, &md).await;
        result.unwrap();
        assert_eq!(writes(&calls), [format!("PATCH {STATUS}")]);
        let status = &calls.last().unwrap().body["status"];
        assert_eq!(status["phase"], "Healthy");
        assert_eq!(
            status["tiers"]["worker"],
            serde_json::json!({"ready": 2, "desired": 2})
        );
        let available = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Available")
            .unwrap();
        assert_eq!(available["status"], "True");
    }

    #[tokio::test]
    async fn a_spec_change_adds_the_new_revision_beside_the_old_one() {
        let (first, md) = settled().await;
        let (m, w) = revisions(&md);
        let changed = md.with_worker_image("registry.example/mineru-worker:0.2.0");
        let (_, w2) = revisions(&changed);
        let (result, calls) = run(holding(&first), &changed).await;
        result.unwrap();
        assert_eq!(
            writes(&calls),
            [
                format!("PATCH {STATUS}"),
                format!("PATCH {SVC}/docs-worker-{w2}"),
                // The entry Service selects both revisions while they share the traffic.
                format!("PATCH {SVC}/docs"),
                format!("PATCH {DEPLOY}/docs-worker-{w}"),
                format!("PATCH {DEPLOY}/docs-worker-{w2}"),
                format!("POST {EVENTS}"),
                format!("POST {EVENTS}"),
                format!("POST {EVENTS}"),
                format!("POST {EVENTS}"),
            ]
        );
        // Replica-ratio mode: the first step moves one of the two workers to the canary.
        let replicas = |revision: &str| {
            calls
                .iter()
                .find(|c| c.path == format!("{DEPLOY}/docs-worker-{revision}"))
                .unwrap()
                .body["spec"]["replicas"]
                .clone()
        };
        assert_eq!((replicas(&w), replicas(&w2)), (1.into(), 1.into()));
        let canary = calls
            .iter()
            .find(|c| c.path == format!("{DEPLOY}/docs-worker-{w2}"))
            .unwrap();
        let args = canary.body["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains(&format!("http://docs-vllm-{m}:8000")),
            "worker-only canary calls the stable vLLM: {args}"
        );
        let entry = &calls
            .iter()
            .find(|c| c.path == format!("{SVC}/docs"))
            .unwrap()
            .body;
        assert_eq!(
            entry["spec"]["selector"].get(labels::REVISION),
            None,
            "both revisions behind the entry Service: {entry}"
        );
        let status = &calls.iter().find(|c| c.path == STATUS).unwrap().body["status"];
        assert_eq!(status["stable"]["workerRevision"], w.as_str());
        assert_eq!(status["canary"]["workerRevision"], w2.as_str());
        assert_eq!(
            (
                status["canaryWeight"].as_i64(),
                status["canaryShare"].as_i64()
            ),
            (Some(10), Some(50)),
            "10% of two workers is one of two"
        );
        let reasons: Vec<_> = calls
            .iter()
            .filter(|c| c.path == EVENTS)
            .map(|c| c.body["reason"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            reasons,
            ["Created", "Updated", "RolloutStarted", "CanaryReady"]
        );
    }

    #[tokio::test]
    async fn steady_state_beside_a_canary_issues_no_write_calls() {
        let (first, md) = settled().await;
        let changed = md.with_worker_image("registry.example/mineru-worker:0.2.0");
        let (result, second) = run(holding(&first), &changed).await;
        result.unwrap();
        let changed = with_written_status(changed, &second);
        let history: Vec<Call> = first.into_iter().chain(second).collect();
        let (result, calls) = run(holding(&history), &changed).await;
        result.unwrap();
        assert_eq!(writes(&calls), Vec::<String>::new());
    }

    #[tokio::test]
    async fn owned_objects_of_a_stale_revision_are_deleted_and_announced() {
        let (first, md) = settled().await;
        let (_, w) = revisions(&md);
        let stale = |plural_path: &str| {
            let mut object = first
                .iter()
                .find(|c| c.path == format!("{plural_path}/docs-worker-{w}"))
                .unwrap()
                .body
                .clone();
            object["metadata"]["name"] = "docs-worker-w-deadbeef".into();
            object["metadata"]["uid"] = "uid-stale".into();
            object
        };
        let mut foreign = stale(DEPLOY);
        foreign["metadata"]["name"] = "someone-elses".into();
        foreign["metadata"]["ownerReferences"][0]["uid"] = "uid-other".into();
        let server = holding(&first)
            .with_list("deployments", vec![stale(DEPLOY), foreign])
            .with_list("services", vec![stale(SVC)]);

        let (result, calls) = run(server, &md).await;
        result.unwrap();
        assert_eq!(
            writes(&calls),
            [
                format!("DELETE {DEPLOY}/docs-worker-w-deadbeef"),
                format!("DELETE {SVC}/docs-worker-w-deadbeef"),
                format!("POST {EVENTS}"),
            ]
        );
        let delete = calls.iter().find(|c| c.method == Method::DELETE).unwrap();
        assert_eq!(delete.body["preconditions"]["uid"], "uid-stale");
        let event = &calls.last().unwrap().body;
        assert_eq!(event["reason"], "OrphanDeleted");
    }

    #[tokio::test]
    async fn a_conflicting_apply_is_retried() {
        let md = MineruDeployment::test();
        let (m, _) = revisions(&md);
        let sts = format!("{STS}/docs-vllm-{m}");
        let server = ApiServer::default().failing_once(Method::PATCH, &sts, 409);
        let (result, calls) = run(server, &md).await;
        result.unwrap();
        let patches: Vec<_> = calls.iter().filter(|c| c.path == sts).collect();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0].body, patches[1].body);
    }

    #[tokio::test]
    async fn a_failed_write_fails_the_reconcile_with_a_countable_kind() {
        let md = MineruDeployment::test();
        let server = ApiServer::default().failing_once(Method::PATCH, STATUS, 422);
        let (result, _) = run(server, &md).await;
        let error = result.unwrap_err();
        assert_eq!(error.metric_label(), "patch_status_422");
    }

    #[tokio::test]
    async fn a_recorded_decision_and_the_objects_written_before_a_failure_are_announced() {
        let md = MineruDeployment::test();
        let (m, _) = revisions(&md);
        let headless = format!("{SVC}/docs-vllm-{m}-pods");
        let server = ApiServer::default().failing_once(Method::PATCH, &headless, 500);
        let (result, calls) = run(server, &md).await;
        assert!(result.is_err());
        let mut expected = lists();
        expected.extend([
            format!("PATCH {STATUS}"),
            format!("PATCH {STS}/docs-vllm-{m}"),
            format!("PATCH {headless}"),
            format!("POST {EVENTS}"),
            format!("POST {EVENTS}"),
        ]);
        assert_eq!(lines(&calls), expected);
        let events: Vec<_> = calls.iter().filter(|c| c.path == EVENTS).collect();
        assert_eq!(events[0].body["reason"], "NewRevision");
        assert_eq!(events[1].body["reason"], "Created");
        assert_eq!(
            events[1].body["note"],
            format!("created StatefulSet/docs-vllm-{m}")
        );
    }

    #[tokio::test]
    async fn a_failed_status_write_writes_no_object() {
        let md = MineruDeployment::test();
        let server = ApiServer::default().failing_once(Method::PATCH, STATUS, 500);
        let (result, calls) = run(server, &md).await;
        assert!(result.is_err());
        assert_eq!(writes(&calls), [format!("PATCH {STATUS}")]);
    }

    #[tokio::test]
    async fn a_replica_whose_leadership_lapsed_writes_nothing() {
        let md = MineruDeployment::test();
        let (client, calls) = ApiServer::default()
            .with_parent(serde_json::to_value(&md).unwrap())
            .start();
        let lapsed = Arc::new(crate::leader::Leadership::elected(Duration::from_secs(10)));
        let ctx = Arc::new(
            Arc::into_inner(context(client))
                .unwrap()
                .with_leadership(lapsed),
        );
        let error = reconcile(Arc::new(md), ctx).await.unwrap_err();
        assert!(matches!(error, Error::NotLeading), "{error}");
        assert_eq!(writes(&calls.await.unwrap()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_status_write_carries_the_version_it_was_decided_from() {
        let (calls, _) = settled().await;
        let patch = calls.iter().find(|c| c.path == STATUS).unwrap();
        assert_eq!(patch.body["metadata"]["resourceVersion"], "1");
    }

    #[tokio::test]
    async fn a_conflicting_status_write_is_decided_again_from_the_fresh_object() {
        let md = MineruDeployment::test();
        // Another writer moved the object on after the cache read it.
        let server = ApiServer::default()
            .with_parent(serde_json::to_value(&md).unwrap())
            .with_parent_changed(|_| {});
        let (client, calls) = server.start();
        let result = reconcile(Arc::new(md.clone()), context(client)).await;
        let calls = calls.await.unwrap();
        assert_eq!(
            result.unwrap(),
            Action::requeue(resync_of(&md.namespace().unwrap(), &md.name_any()))
        );
        let status_writes: Vec<_> = calls.iter().filter(|c| c.path == STATUS).collect();
        let versions: Vec<_> = status_writes
            .iter()
            .map(|c| c.body["metadata"]["resourceVersion"].clone())
            .collect();
        assert_eq!(versions, ["1", "2"], "refused, then decided from version 2");
        let first_status = calls.iter().position(|c| c.path == STATUS).unwrap();
        assert_eq!(calls[first_status + 1].line(), format!("GET {PARENT}"));
        let applied_before_record = calls[..first_status]
            .iter()
            .chain(&calls[first_status + 1..first_status + 2])
            .any(Call::is_write);
        assert!(!applied_before_record, "{:?}", lines(&calls));
        let sts_writes = calls
            .iter()
            .filter(|c| c.method == Method::PATCH && c.path.starts_with(STS))
            .count();
        assert_eq!(sts_writes, 1, "objects written once, after the record");
        let new_revision_events = calls
            .iter()
            .filter(|c| c.path == EVENTS && c.body["reason"] == "NewRevision")
            .count();
        assert_eq!(new_revision_events, 1, "announced once");
    }

    #[tokio::test]
    async fn a_cache_older_than_the_last_status_write_is_never_decided_from() {
        let md = MineruDeployment::test();
        let (client, calls) = ApiServer::default()
            .with_parent(serde_json::to_value(&md).unwrap())
            .start();
        let ctx = context(client);
        let cached = Arc::new(md);
        reconcile(cached.clone(), ctx.clone()).await.unwrap();
        // The watch has not delivered the status just written: the same version comes again.
        reconcile(cached, ctx.clone()).await.unwrap();
        drop(ctx);
        let calls = calls.await.unwrap();
        let second = calls
            .iter()
            .rposition(|c| c.line() == format!("GET {STS}"))
            .unwrap();
        assert_eq!(
            calls[second - 1].line(),
            format!("GET {PARENT}"),
            "the current object is read before deciding: {:?}",
            lines(&calls)
        );
        let status_writes = calls.iter().filter(|c| c.path == STATUS).count();
        assert_eq!(
            status_writes, 1,
            "decided from the recorded status: no stale write, nothing to write again"
        );
        assert!(
            !calls[second..]
                .iter()
                .any(|c| c.path == EVENTS && c.body["reason"] == "NewRevision"),
            "nothing announced again"
        );
    }

    #[tokio::test]
    async fn commands_consumed_before_a_refused_status_write_are_acted_on_from_the_fresh_object() {
        let (first, md) = settled().await;
        let changed = md.with_worker_image("registry.example/mineru-worker:0.2.0");
        let (result, second) = run(holding(&first), &changed).await;
        result.unwrap();
        let mut stepping = with_written_status(changed, &second);
        stepping
            .annotations_mut()
            .insert(commands::PAUSE.to_owned(), String::new());
        let history: Vec<Call> = first.into_iter().chain(second).collect();
        let server = holding(&history).failing_once(Method::PATCH, STATUS, 409);
        let (result, calls) = run(server, &stepping).await;
        result.unwrap();
        let consumed = calls
            .iter()
            .filter(|c| c.line() == format!("PATCH {PARENT}"))
            .count();
        assert_eq!(consumed, 1, "{:?}", lines(&calls));
        let recorded = calls.iter().rfind(|c| c.path == STATUS).unwrap();
        assert_eq!(recorded.body["status"]["paused"], true);
        assert_eq!(recorded.body["metadata"]["resourceVersion"], "2");
    }

    /// The test object with an API key Secret whose labels are `labels`, and the server
    /// holding that Secret.
    fn with_api_key_secret(labels: Value) -> (ApiServer, MineruDeployment) {
        let mut md = MineruDeployment::test();
        md.spec.model.api_key_secret_ref = Some(mineru_crds::SecretKeyRef {
            name: "vllm-key".into(),
            key: "token".into(),
        });
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vllm-key", "namespace": "parsing", "labels": labels},
            "data": {"token": "czNjcmV0"},
        });
        let server =
            ApiServer::default().with_object("/api/v1/namespaces/parsing/secrets/vllm-key", secret);
        (server, md)
    }

    #[tokio::test]
    async fn pods_never_mount_a_secret_without_the_label_the_platform_requires() {
        let (server, md) = with_api_key_secret(json!({"team": "docs"}));
        let (result, calls) = run(server, &md).await;
        let error = result.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is not labelled mineru.dev/operator-readable=true"),
            "{error}"
        );
        let objects: Vec<_> = writes(&calls)
            .into_iter()
            .filter(|w| w.starts_with("PATCH") && !w.ends_with("/status"))
            .collect();
        assert!(objects.is_empty(), "nothing applied: {objects:?}");
        let refused = calls.iter().any(|c| {
            c.method == Method::POST && c.path == EVENTS && c.body["reason"] == "SecretRefused"
        });
        assert!(refused, "a Warning Event says why: {:?}", lines(&calls));

        // Nor one named in an environment variable, nor one that does not exist yet.
        let (server, mut md) = with_api_key_secret(json!({"mineru.dev/operator-readable": "true"}));
        md.spec.worker.env = vec![
            serde_json::from_value(json!({
                "name": "TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}},
            }))
            .unwrap(),
        ];
        let (result, calls) = run(server, &md).await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("Secret parsing/other"), "{error}");
        assert!(
            !writes(&calls).iter().any(|w| w.contains("/deployments/")),
            "{:?}",
            lines(&calls)
        );

        let (server, md) = with_api_key_secret(json!({"mineru.dev/operator-readable": "true"}));
        let (result, calls) = run(server, &md).await;
        result.unwrap();
        assert!(
            writes(&calls)
                .iter()
                .any(|w| w.starts_with(&format!("PATCH {DEPLOY}/docs-worker-"))),
            "labelled, the workers are applied: {:?}",
            lines(&calls)
        );
    }

    #[tokio::test]
    async fn workers_never_start_on_a_job_store_secret_the_platform_does_not_hand_out() {
        let labelled = json!({"mineru.dev/operator-readable": "true"});
        let store = |name: &str| {
            serde_json::from_value(json!({
                "urlSecretRef": {"name": name, "key": "url"},
                "egress": [{"podSelector": {"matchLabels": {"app": "postgres"}}}],
            }))
            .unwrap()
        };
        for (store_secret, labels, applied) in [
            ("mineru-jobs", labelled.clone(), false),
            ("mineru-jobs", json!({"team": "docs"}), false),
            ("vllm-key", labelled.clone(), true),
        ] {
            let (mut server, mut md) = with_api_key_secret(labelled.clone());
            md.spec.worker.job_store = Some(store(store_secret));
            if labels != labelled {
                server = server.with_object(
                    "/api/v1/namespaces/parsing/secrets/mineru-jobs",
                    json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "mineru-jobs", "namespace": "parsing", "labels": labels},
                        "data": {"url": "eA=="},
                    }),
                );
            }
            let (result, calls) = run(server, &md).await;
            let deployments = writes(&calls)
                .iter()
                .any(|w| w.starts_with(&format!("PATCH {DEPLOY}/docs-worker-")));
            assert_eq!(deployments, applied, "{store_secret}: {:?}", lines(&calls));
            if applied {
                result.unwrap();
            } else {
                let error = result.unwrap_err().to_string();
                assert!(error.contains("Secret parsing/mineru-jobs"), "{error}");
            }
        }
    }

    #[tokio::test]
    async fn a_new_api_key_restarts_vllm_in_place_only_after_it_reached_the_workers() {
        let labelled = json!({"mineru.dev/operator-readable": "true"});
        let (server, md) = with_api_key_secret(labelled.clone());
        let (m, _) = revisions(&md);
        let (result, first) = run(server, &md).await;
        result.unwrap();
        let template_version = |calls: &[Call]| {
            calls
                .iter()
                .find(|c| c.method == Method::PATCH && c.path == format!("{STS}/docs-vllm-{m}"))
                .map(|c| {
                    c.body["spec"]["template"]["metadata"]["annotations"][rotation::KEY_VERSION]
                        .clone()
                })
        };
        assert_eq!(
            template_version(&first),
            Some(json!(rotation::version_of("s3cret"))),
            "new pods start with the key they are given"
        );

        // The Secret gets a new key: the pods keep the old version until it had time to reach
        // the workers' files, and the operator looks again then.
        let md = with_written_status(md, &first);
        let rotated = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vllm-key", "namespace": "parsing", "labels": labelled},
            "data": {"token": "bjN3"},
        });
        let server =
            holding(&first).with_object("/api/v1/namespaces/parsing/secrets/vllm-key", rotated);
        let (result, calls) = run(server, &md).await;
        let action = result.unwrap();
        assert_eq!(
            template_version(&calls),
            None,
            "no StatefulSet write yet: {:?}",
            writes(&calls)
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(180)));
        assert_eq!(revisions(&md).0, m, "the same revision: no canary");
    }

    /// A webhook receiver on 127.0.0.1 answering `code`; its URL and the ids it was sent.
    async fn receiver(code: u16) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let taken = ids.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| async move {
                let event: Value = serde_json::from_str(&body).unwrap();
                taken
                    .lock()
                    .unwrap()
                    .push(event["id"].as_str().unwrap().to_owned());
                http::StatusCode::from_u16(code).unwrap()
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, ids)
    }

    /// The settled test object with a webhook and one notification waiting in its outbox.
    async fn with_pending_notification(url: &str) -> (Vec<Call>, MineruDeployment) {
        let (calls, mut md) = settled().await;
        md.spec.rollout.notifications = Some(mineru_crds::Notifications {
            webhook: mineru_crds::Webhook {
                url: url.to_owned(),
                secret_ref: None,
                format: Default::default(),
            },
        });
        let status = md.status.as_mut().unwrap();
        status.pending_notifications = vec![mineru_crds::PendingNotification {
            id: "started-m-1-w-1-1800000000-0".into(),
            kind: mineru_crds::NotificationKind::Started,
            revisions: status.stable.clone().unwrap(),
            step: Some(0),
            weight: 0,
            message: "rollout started".into(),
            rollback: None,
            at: clock(),
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        }];
        (calls, md)
    }

    #[tokio::test]
    async fn a_delivered_notification_leaves_the_outbox_in_a_write_conditioned_on_its_record() {
        let (url, received) = receiver(200).await;
        let (first, md) = with_pending_notification(&url).await;
        let (result, calls) = run(holding(&first), &md).await;
        result.unwrap();
        assert_eq!(*received.lock().unwrap(), ["started-m-1-w-1-1800000000-0"]);
        let recorded = calls.iter().rfind(|c| c.path == STATUS).unwrap();
        assert_eq!(recorded.body["metadata"]["resourceVersion"], "1");
        let outbox = &recorded.body["status"]["pendingNotifications"];
        assert!(outbox.as_array().is_none_or(Vec::is_empty), "{outbox}");
    }

    #[tokio::test]
    async fn a_refused_notification_stays_with_its_attempt_and_a_later_retry() {
        let (url, received) = receiver(503).await;
        let (first, md) = with_pending_notification(&url).await;
        let (result, calls) = run(holding(&first), &md).await;
        result.unwrap();
        assert_eq!(received.lock().unwrap().len(), 1);
        let recorded = calls.iter().rfind(|c| c.path == STATUS).unwrap();
        let pending = &recorded.body["status"]["pendingNotifications"][0];
        assert_eq!(pending["id"], "started-m-1-w-1-1800000000-0");
        assert_eq!(pending["attempts"], 1);
        assert_eq!(pending["nextAttemptAt"], "2027-01-15T08:00:02Z");
        assert!(
            pending["lastError"].as_str().unwrap().contains("503"),
            "{pending}"
        );
        assert!(
            !pending["lastError"].as_str().unwrap().contains(&url),
            "{pending}"
        );
    }

    #[tokio::test]
    async fn a_notification_not_yet_due_is_not_sent() {
        let (url, received) = receiver(200).await;
        let (first, mut md) = with_pending_notification(&url).await;
        let pending = &mut md.status.as_mut().unwrap().pending_notifications[0];
        pending.attempts = 1;
        pending.next_attempt_at = Some(Time(Timestamp::from_second(1_800_000_010).unwrap()));
        let (result, calls) = run(holding(&first), &md).await;
        result.unwrap();
        assert!(received.lock().unwrap().is_empty());
        assert!(
            !calls.iter().any(|c| c.path == STATUS),
            "{:?}",
            lines(&calls)
        );
    }

    #[tokio::test]
    async fn missing_crd_is_reported_with_the_install_command() {
        let server = ApiServer::default().failing_once(
            Method::GET,
            "/apis/mineru.dev/v1alpha1/minerudeployments",
            404,
        );
        let (client, calls) = server.start();
        let error = ensure_crd(&client, &WatchScope::Cluster).await.unwrap_err();
        drop(client);
        calls.await.unwrap();
        assert!(matches!(error, Error::CrdMissing), "{error}");
    }

    #[tokio::test]
    async fn a_namespaced_operator_checks_the_crd_in_a_namespace_it_watches() {
        let server = ApiServer::default().failing_once(
            Method::GET,
            "/apis/mineru.dev/v1alpha1/namespaces/parsing/minerudeployments",
            404,
        );
        let (client, calls) = server.start();
        let scope = WatchScope::from_flag(&["parsing"]);
        let error = ensure_crd(&client, &scope).await.unwrap_err();
        drop(client);
        let calls = calls.await.unwrap();
        assert!(matches!(error, Error::CrdMissing), "{error}");
        assert_eq!(
            lines(&calls),
            ["GET /apis/mineru.dev/v1alpha1/namespaces/parsing/minerudeployments"]
        );
    }

    #[tokio::test]
    async fn errors_back_off_per_object_and_are_counted() {
        let (client, _calls) = ApiServer::default().start();
        let ctx = context(client);
        let docs = Arc::new(MineruDeployment::test());
        let mut other = MineruDeployment::test();
        other.metadata.name = Some("other".into());
        let other = Arc::new(other);
        let error = Error::CrdMissing;
        assert_eq!(
            error_policy(docs.clone(), &error, ctx.clone()),
            Action::requeue(Duration::from_secs(5))
        );
        assert_eq!(
            error_policy(docs.clone(), &error, ctx.clone()),
            Action::requeue(Duration::from_secs(10))
        );
        assert_eq!(
            error_policy(other, &error, ctx.clone()),
            Action::requeue(Duration::from_secs(5))
        );
        ctx.succeeded("parsing", "docs");
        assert_eq!(
            error_policy(docs, &error, ctx.clone()),
            Action::requeue(Duration::from_secs(5))
        );
        let text = ctx.metrics.render();
        assert!(
            text.contains(r#"mineru_operator_reconcile_failures_total{error="crd_missing"} 4"#),
            "{text}"
        );
    }
}
