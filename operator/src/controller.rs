//! The kube-runtime Controller: watches MineruDeployments and what they own, and reconciles
//! each into its objects and status.

use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::{self, Action},
        events::Event,
        watcher,
    },
};
use mineru_crds::{MineruDeployment, Phase};
use serde_json::json;
use tracing::{Instrument, field};

use crate::{
    WORKER_PORT, commands,
    context::Context,
    drive,
    error::{Error, Result},
    labels,
    metrics::CanaryTraffic,
    notify, observe,
    reconcile::{
        DesiredObjects, Owner, SpecRevisions, Topology, apply::ChildSet, apply::retry_on_conflict,
        events, recorded_templates,
    },
    rollout::{EventReason, Notification, Plan},
    traffic::httproute::{self, Backends},
};

/// How often an unchanged object is looked at again; changes of owned objects trigger sooner.
const RESYNC: Duration = Duration::from_secs(600);

/// One API permission the operator uses; the ClusterRole must grant exactly these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiAccess {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
}

/// Owned kinds are listed (reconcile and watches), applied (server-side apply is a patch that
/// may create) and deleted (orphans).
const OWNED_VERBS: &[&str] = &["create", "delete", "list", "patch", "watch"];

/// Every API call the operator makes, by resource.
pub const API_ACCESS: &[ApiAccess] = &[
    // Watched and reconciled; patched to consume manual-control annotations.
    ApiAccess {
        group: "mineru.dev",
        resource: "minerudeployments",
        verbs: &["list", "patch", "watch"],
    },
    ApiAccess {
        group: "mineru.dev",
        resource: "minerudeployments/status",
        verbs: &["patch"],
    },
    ApiAccess {
        group: "apps",
        resource: "statefulsets",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "apps",
        resource: "deployments",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "",
        resource: "services",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: OWNED_VERBS,
    },
    ApiAccess {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: OWNED_VERBS,
    },
    // vLLM pods: restarts and GPU scheduling, for the rollout engine.
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list"],
    },
    // GPU capacity for a canary vLLM: allocatable GPUs per node, and the pods using them.
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list"],
    },
    // Migration preflight: the legacy Service must exist before the rollout relies on it.
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["get"],
    },
    // The API key (warm-up), Prometheus credentials and the webhook token.
    ApiAccess {
        group: "",
        resource: "secrets",
        verbs: &["get"],
    },
    // Golden documents of the quality gate: one ConfigMap by name, or several by label.
    ApiAccess {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list"],
    },
    // Gateway API mode: the user's HTTPRoute, whose backendRef weights follow the rollout.
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        verbs: &["get", "update"],
    },
    // The Recorder creates an Event, then patches it when the same Event repeats.
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
    },
];

/// Fails with [`Error::CrdMissing`] when MineruDeployments cannot be listed for lack of the CRD.
pub async fn ensure_crd(client: &Client) -> Result<()> {
    let api = Api::<MineruDeployment>::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(Error::CrdMissing),
        Err(source) => Err(Error::kube(
            "list",
            "MineruDeployment",
            "all namespaces",
            source,
        )),
    }
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first. Call
/// [`ensure_crd`] before, so a missing CRD is one clear error instead of a retrying watch.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    // Only our objects are watched, which keeps the caches small in busy clusters.
    let owned = || {
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER))
    };
    let metrics = ctx.metrics.clone();
    let quality_rounds = ctx.rollout_io.quality_rounds.clone();
    let probes = ctx.rollout_io.probes.clone();
    Controller::new(
        Api::<MineruDeployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned())
    .owns(Api::<Deployment>::all(client.clone()), owned())
    .owns(Api::<Service>::all(client.clone()), owned())
    .owns(Api::<NetworkPolicy>::all(client.clone()), owned())
    .owns(Api::<PodDisruptionBudget>::all(client), owned())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| {
        let (metrics, quality_rounds, probes) =
            (metrics.clone(), quality_rounds.clone(), probes.clone());
        async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(controller::Error::ObjectNotFound(object)) => {
                    let namespace = object.namespace.as_deref().unwrap_or_default();
                    metrics.forget(namespace, &object.name);
                    let key = format!("{namespace}/{}", object.name);
                    quality_rounds.cancel(&key);
                    probes.stop(&key);
                }
                // error_policy already logged it with its retry delay.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "controller stream error"),
            }
        }
    })
    .await;
}

/// Reconciles one MineruDeployment: its objects, then its status and Events.
pub async fn reconcile(md: Arc<MineruDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let span = tracing::info_span!("reconcile", namespace = %namespace, name = %name, generation = field::Empty);
    if let Some(generation) = md.metadata.generation {
        span.record("generation", generation);
    }
    let started = Instant::now();
    let result = reconcile_objects(&md, &ctx).instrument(span).await;
    ctx.metrics.reconciled(started.elapsed());
    let decided = result?;
    ctx.metrics
        .set_state(&namespace, &name, decided.phase, decided.canary);
    ctx.succeeded(&namespace, &name);
    Ok(Action::requeue(next_look(
        decided.requeue_at,
        (ctx.clock)().0,
    )))
}

/// When to reconcile again: when the engine asked (a pause ending, an analysis round due), and
/// at the latest after [`RESYNC`].
fn next_look(requeue_at: Option<Timestamp>, now: Timestamp) -> Duration {
    let wanted = requeue_at
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .unwrap_or(RESYNC);
    wanted.clamp(Duration::from_secs(1), RESYNC)
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

async fn reconcile_objects(md: &MineruDeployment, ctx: &Context) -> Result<Decided> {
    let owner = Owner::of(md)?;
    let mut children = ChildSet::new(ctx.client.clone(), &owner);

    let statefulsets = children.list::<StatefulSet>().await?;
    let deployments = children.list::<Deployment>().await?;
    let services = children.list::<Service>().await?;
    let network_policies = children.list::<NetworkPolicy>().await?;
    let pdbs = children.list::<PodDisruptionBudget>().await?;
    let model_pods = list_model_pods(ctx, &owner).await?;

    let spec_revisions = SpecRevisions::of(&owner.instance, &md.spec)?;
    let recorded = recorded_templates(&statefulsets, &deployments);
    let requested = commands::read(md.annotations());
    let observed = observe::observe(
        &statefulsets,
        &deployments,
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
    let desired = DesiredObjects::build(&owner, &md.spec, &topology, &ctx.settings)?;

    let old = md.status.clone().unwrap_or_default();
    let written = async {
        // New objects first, then deletions, so a replaced revision is never the only one gone.
        for object in desired.statefulsets {
            children.apply(object, &statefulsets).await?;
        }
        for object in desired.services {
            children.apply(object, &services).await?;
        }
        for object in desired.deployments {
            children.apply(object, &deployments).await?;
        }
        for object in desired.network_policies {
            children.apply(object, &network_policies).await?;
        }
        for object in desired.pdbs {
            children.apply(object, &pdbs).await?;
        }
        route_traffic(ctx, md, &owner, &decision.plan).await?;
        children.delete_orphans(&deployments).await?;
        children.delete_orphans(&statefulsets).await?;
        children.delete_orphans(&services).await?;
        children.delete_orphans(&network_policies).await?;
        children.delete_orphans(&pdbs).await
    }
    .await;
    if let Err(error) = written {
        // What was written before the failure is announced all the same; the next round
        // finds it applied and would not announce it again.
        publish(ctx, md, events::notices(&old, &old, children.report())).await;
        return Err(error);
    }

    // Commands are consumed before the status that acts on them is written: a crash in between
    // loses a command rather than applying it twice.
    if !requested.is_empty() {
        consume_commands(ctx, md, &requested.consumed).await?;
    }
    let new = decision.status;
    if new != old {
        patch_status(ctx, md, &new).await?;
    }
    let mut notices = events::notices(&old, &new, children.report());
    notices.extend(events::from_rollout(&decision.events));
    notices.extend(requested.refused.into_iter().map(events::refused_command));
    publish(ctx, md, notices).await;
    notify(ctx, md, &decision.notifications, &now).await;
    for event in &decision.events {
        if let EventReason::RolledBack(reason) = event.reason {
            ctx.metrics
                .rolled_back(&owner.namespace, &owner.instance, reason);
        }
    }
    Ok(Decided {
        phase: new.phase.unwrap_or(Phase::Progressing),
        canary: CanaryTraffic {
            weight: new.canary_weight.unwrap_or(0),
            share: new.canary_share.unwrap_or(0),
        },
        requeue_at: decision.requeue_at,
    })
}

async fn publish(ctx: &Context, md: &MineruDeployment, notices: Vec<events::Notice>) {
    let reference = md.object_ref(&());
    for notice in notices {
        let event = Event {
            type_: notice.type_,
            reason: notice.reason.into(),
            note: Some(notice.note),
            action: notice.action.into(),
            secondary: None,
        };
        // An Event is information, not state: failing to publish one must not fail the reconcile.
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(reason = notice.reason, %error, "publishing event failed");
        }
    }
}

/// What a reconcile decided, for metrics and the next look.
struct Decided {
    phase: Phase,
    canary: CanaryTraffic,
    requeue_at: Option<Timestamp>,
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

/// Gateway API mode: the HTTPRoute's weights follow the plan. Replica-ratio mode needs nothing
/// here: the plan's replica counts are the split.
async fn route_traffic(
    ctx: &Context,
    md: &MineruDeployment,
    owner: &Owner,
    plan: &Plan,
) -> Result<()> {
    let Some(gateway) = &md.spec.rollout.traffic_routing.gateway_api else {
        return Ok(());
    };
    let worker_service = |revision: &str| labels::names::worker(&owner.instance, revision);
    let legacy = md.spec.rollout.legacy_backend();
    // Without stable revisions (migrating), the legacy Service serves stable's share.
    let baseline = match (&plan.stable, legacy) {
        (Some(stable), _) => (worker_service(&stable.worker_revision), WORKER_PORT),
        (None, Some(legacy)) => (legacy.name.clone(), legacy.port),
        (None, None) => return Err(Error::Traffic("no stable revisions to route to".into())),
    };
    let canary = plan
        .canary
        .as_ref()
        .map(|canary| worker_service(&canary.worker_revision));
    let mut known: Vec<String> = plan
        .worker
        .iter()
        .map(|scale| worker_service(&scale.revision))
        .collect();
    known.push(owner.instance.clone());
    known.extend(legacy.map(|backend| backend.name.clone()));
    let backends = Backends::split(
        (&baseline.0, baseline.1),
        canary.as_deref().map(|name| (name, WORKER_PORT)),
        plan.canary_weight,
        known,
    );
    httproute::apply(
        ctx.client.clone(),
        &owner.namespace,
        &gateway.http_route.name,
        &backends,
    )
    .await
    .map(|_| ())
    .map_err(|error| Error::Traffic(error.to_string()))
}

async fn consume_commands(ctx: &Context, md: &MineruDeployment, consumed: &[String]) -> Result<()> {
    let api: Api<MineruDeployment> =
        Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let name = md.name_any();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(commands::removal_patch(consumed)),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::kube("patch", "MineruDeployment", name, source))
}

/// Best-effort webhook delivery; a receiver that is down never holds up a rollout.
async fn notify(ctx: &Context, md: &MineruDeployment, notifications: &[Notification], now: &Time) {
    let Some(webhook) = md.spec.rollout.notifications.as_ref().map(|n| &n.webhook) else {
        return;
    };
    if notifications.is_empty() {
        return;
    }
    let namespace = md.namespace().unwrap_or_default();
    let token = match &webhook.secret_ref {
        Some(secret) => {
            crate::sources::secret_value(&ctx.client, &namespace, &secret.name, "token")
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "webhook token unreadable; sending without it");
                    None
                })
        }
        None => None,
    };
    let name = md.name_any();
    for notification in notifications {
        let payload = notify::payload(&namespace, &name, notification, now.0.to_string());
        if let Err(error) = notify::deliver(
            &ctx.rollout_io.http,
            &webhook.url,
            token.as_deref(),
            &payload,
        )
        .await
        {
            tracing::warn!(%error, "notification not delivered");
        }
    }
}

async fn patch_status(
    ctx: &Context,
    md: &MineruDeployment,
    status: &mineru_crds::MineruDeploymentStatus,
) -> Result<()> {
    let api: Api<MineruDeployment> =
        Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let name = md.name_any();
    // The whole status under one field manager: a field left out is a field removed.
    let patch = Patch::Apply(json!({
        "apiVersion": MineruDeployment::api_version(&()),
        "kind": MineruDeployment::kind(&()),
        "status": status,
    }));
    let params = PatchParams::apply(labels::MANAGER).force();
    retry_on_conflict(|| async {
        api.patch_status(&name, &params, &patch)
            .await
            .map_err(|source| Error::kube("patch status", "MineruDeployment", name.clone(), source))
    })
    .await?;
    Ok(())
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
    const STATUS: &str =
        "/apis/mineru.dev/v1alpha1/namespaces/parsing/minerudeployments/docs/status";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/parsing/events";

    fn clock() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn context(client: Client) -> Arc<Context> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Context::new(
            client,
            Some("test".into()),
            metrics,
            Settings::default(),
            RolloutIo::default(),
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
    async fn first_reconcile_applies_the_full_object_set_then_status_then_events() {
        let md = MineruDeployment::test();
        let (m, w) = revisions(&md);
        let (result, calls) = run(ApiServer::default(), &md).await;
        assert_eq!(result.unwrap(), Action::requeue(RESYNC));
        let mut expected = lists();
        expected.extend([
            format!("PATCH {STS}/docs-vllm-{m}"),
            format!("PATCH {SVC}/docs-vllm-{m}-pods"),
            format!("PATCH {SVC}/docs-vllm-{m}"),
            format!("PATCH {SVC}/docs-worker-{w}"),
            format!("PATCH {SVC}/docs"),
            format!("PATCH {DEPLOY}/docs-worker-{w}"),
            format!("PATCH {NETPOL}/docs-vllm"),
            format!("PATCH {PDB}/docs-vllm"),
            format!("PATCH {PDB}/docs-worker"),
            format!("PATCH {STATUS}"),
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
                format!("PATCH {SVC}/docs-worker-{w2}"),
                // The entry Service selects both revisions while they share the traffic.
                format!("PATCH {SVC}/docs"),
                format!("PATCH {DEPLOY}/docs-worker-{w}"),
                format!("PATCH {DEPLOY}/docs-worker-{w2}"),
                format!("PATCH {STATUS}"),
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
    async fn objects_written_before_a_failure_are_announced() {
        let md = MineruDeployment::test();
        let (m, _) = revisions(&md);
        let headless = format!("{SVC}/docs-vllm-{m}-pods");
        let server = ApiServer::default().failing_once(Method::PATCH, &headless, 500);
        let (result, calls) = run(server, &md).await;
        assert!(result.is_err());
        let mut expected = lists();
        expected.extend([
            format!("PATCH {STS}/docs-vllm-{m}"),
            format!("PATCH {headless}"),
            format!("POST {EVENTS}"),
        ]);
        assert_eq!(lines(&calls), expected);
        let event = &calls.last().unwrap().body;
        assert_eq!(event["reason"], "Created");
        assert_eq!(event["note"], format!("created StatefulSet/docs-vllm-{m}"));
    }

    #[tokio::test]
    async fn missing_crd_is_reported_with_the_install_command() {
        let server = ApiServer::default().failing_once(
            Method::GET,
            "/apis/mineru.dev/v1alpha1/minerudeployments",
            404,
        );
        let (client, calls) = server.start();
        let error = ensure_crd(&client).await.unwrap_err();
        drop(client);
        calls.await.unwrap();
        assert!(matches!(error, Error::CrdMissing), "{error}");
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
