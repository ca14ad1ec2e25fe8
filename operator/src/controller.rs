//! The kube-runtime Controller: watches MineruDeployments and what they own, and reconciles
//! each into its objects and status.

use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Service,
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
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
    context::Context,
    error::{Error, Result},
    labels,
    reconcile::{
        DesiredObjects, Owner, SpecRevisions, Topology, apply::ChildSet, apply::retry_on_conflict,
        events, recorded_templates, status,
    },
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
    ApiAccess {
        group: "mineru.dev",
        resource: "minerudeployments",
        verbs: &["list", "watch"],
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

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let client = ctx.client.clone();
    ensure_crd(&client).await?;
    // Only our objects are watched, which keeps the caches small in busy clusters.
    let owned = || {
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER))
    };
    let metrics = ctx.metrics.clone();
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
        let metrics = metrics.clone();
        async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(controller::Error::ObjectNotFound(object)) => {
                    metrics.forget(
                        object.namespace.as_deref().unwrap_or_default(),
                        &object.name,
                    );
                }
                Err(controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::warn!(object = %object, %error, "reconcile failed");
                }
                Err(error) => tracing::warn!(%error, "controller stream error"),
            }
        }
    })
    .await;
    Ok(())
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
    let phase = result?;
    ctx.metrics.set_phase(&namespace, &name, phase);
    ctx.succeeded(&namespace, &name);
    Ok(Action::requeue(RESYNC))
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

async fn reconcile_objects(md: &MineruDeployment, ctx: &Context) -> Result<Phase> {
    let owner = Owner::of(md)?;
    let mut children = ChildSet::new(ctx.client.clone(), &owner);

    let statefulsets = children.list::<StatefulSet>().await?;
    let deployments = children.list::<Deployment>().await?;
    let services = children.list::<Service>().await?;
    let network_policies = children.list::<NetworkPolicy>().await?;
    let pdbs = children.list::<PodDisruptionBudget>().await?;

    let spec_revisions = SpecRevisions::of(&owner.instance, &md.spec)?;
    let recorded = recorded_templates(&statefulsets, &deployments);
    let topology = Topology::derive(md, &spec_revisions, &recorded);
    let desired = DesiredObjects::build(&owner, &md.spec, &topology, &ctx.settings)?;

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
    children.delete_orphans(&deployments).await?;
    children.delete_orphans(&statefulsets).await?;
    children.delete_orphans(&services).await?;
    children.delete_orphans(&network_policies).await?;
    children.delete_orphans(&pdbs).await?;

    let old = md.status.clone().unwrap_or_default();
    let readiness = status::Readiness::observe(&statefulsets, &deployments);
    let new = status::desired(md, &topology, &readiness, &(ctx.clock)());
    if new != old {
        patch_status(ctx, md, &new).await?;
    }
    let reference = md.object_ref(&());
    for notice in events::notices(&old, &new, children.report()) {
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
    Ok(new.phase.unwrap_or(Phase::Progressing))
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
