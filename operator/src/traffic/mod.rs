//! Traffic routers. In replica-ratio mode the split is the replica counts of the plan (the entry
//! Service selects every worker revision), so there is nothing to write here; in Gateway API
//! mode the operator sets HTTPRoute backendRef weights.

pub mod httproute;

use kube::Client;
use mineru_crds::MineruDeployment;

use crate::{
    WORKER_PORT,
    error::{Error, Result},
    labels,
    reconcile::Owner,
    rollout::Plan,
};
use httproute::Backends;

/// Gateway API mode: the HTTPRoute's weights follow the plan. Replica-ratio mode needs nothing
/// here: the plan's replica counts are the split. True when the route was written.
pub async fn route(
    client: &Client,
    md: &MineruDeployment,
    owner: &Owner,
    plan: &Plan,
) -> Result<bool> {
    let Some(gateway) = &md.spec.rollout.traffic_routing.gateway_api else {
        return Ok(false);
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
        client.clone(),
        &owner.namespace,
        &gateway.http_route.name,
        &backends,
    )
    .await
    .map_err(|error| Error::Traffic(error.to_string()))
}
