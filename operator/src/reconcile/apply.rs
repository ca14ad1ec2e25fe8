//! The one place objects are written: server-side apply of what differs, then orphan cleanup.
//!
//! [`ChildSet::list_all`] reads every owned object into [`Children`]; [`ChildSet::apply_all`]
//! applies each desired object, skipping the write when the observed object carries the hash of
//! the same desired object and no other writer has taken over a field we set ([`drift`]), and
//! remembers what it applied; [`ChildSet::delete_all_orphans`] then deletes owned objects not
//! applied this round. The hash and field ownership (rather than
//! a field-by-field comparison) keep steady state write-free even where the API server
//! normalizes what it stores (quantities, defaults).

use std::{collections::BTreeSet, fmt::Debug, future::Future};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Service,
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{DesiredObjects, Owner, drift};
use crate::error::{Error, Result};
use crate::{crashpoints::CrashPoints, labels, revision};

/// Attempts of a write that meets an optimistic-concurrency conflict (HTTP 409).
const CONFLICT_ATTEMPTS: usize = 3;

/// What one reconcile wrote, as `Kind/name`, for events and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects that did not exist.
    pub created: Vec<String>,
    /// Objects whose desired state changed.
    pub updated: Vec<String>,
    /// Owned objects no longer desired.
    pub deleted: Vec<String>,
}

/// The owned objects of one MineruDeployment as listed at the start of a reconcile.
#[derive(Clone, Debug, Default)]
pub struct Children {
    /// vLLM StatefulSets, one per model revision.
    pub statefulsets: Vec<StatefulSet>,
    /// Worker Deployments, one per worker revision.
    pub deployments: Vec<Deployment>,
    /// Services of both tiers and the entry Service.
    pub services: Vec<Service>,
    /// The GPU tier's fence.
    pub network_policies: Vec<NetworkPolicy>,
    /// One per tier.
    pub pdbs: Vec<PodDisruptionBudget>,
}

/// The objects one MineruDeployment owns, and what this reconcile did to them.
pub struct ChildSet {
    client: Client,
    namespace: String,
    owner_uid: String,
    selector: String,
    applied: BTreeSet<(String, String)>,
    report: ApplyReport,
    crash_points: CrashPoints,
}

impl ChildSet {
    /// An empty round for `owner`'s objects.
    pub fn new(client: Client, owner: &Owner) -> Self {
        ChildSet {
            client,
            namespace: owner.namespace.clone(),
            owner_uid: owner.reference.uid.clone(),
            selector: labels::owned_selector(&owner.instance),
            applied: BTreeSet::new(),
            report: ApplyReport::default(),
            crash_points: CrashPoints::disabled(),
        }
    }

    /// This set, crashing after its writes as `crash_points` says (the crash-safety tests).
    pub fn crashing_after_writes(mut self, crash_points: CrashPoints) -> Self {
        self.crash_points = crash_points;
        self
    }

    /// What was written so far.
    pub fn report(&self) -> &ApplyReport {
        &self.report
    }

    /// Every owned object, of each kind.
    pub async fn list_all(&self) -> Result<Children> {
        Ok(Children {
            statefulsets: self.list().await?,
            deployments: self.list().await?,
            services: self.list().await?,
            network_policies: self.list().await?,
            pdbs: self.list().await?,
        })
    }

    /// Applies every desired object that `observed` does not already hold. New objects come
    /// before [`ChildSet::delete_all_orphans`], so a replaced revision is never the only one gone.
    pub async fn apply_all(&mut self, desired: DesiredObjects, observed: &Children) -> Result<()> {
        for object in desired.statefulsets {
            self.apply(object, &observed.statefulsets).await?;
        }
        for object in desired.services {
            self.apply(object, &observed.services).await?;
        }
        for object in desired.deployments {
            self.apply(object, &observed.deployments).await?;
        }
        for object in desired.network_policies {
            self.apply(object, &observed.network_policies).await?;
        }
        for object in desired.pdbs {
            self.apply(object, &observed.pdbs).await?;
        }
        Ok(())
    }

    /// Deletes every observed object not applied this round: workers before the vLLM they call.
    pub async fn delete_all_orphans(&mut self, observed: &Children) -> Result<()> {
        self.delete_orphans(&observed.deployments).await?;
        self.delete_orphans(&observed.statefulsets).await?;
        self.delete_orphans(&observed.services).await?;
        self.delete_orphans(&observed.network_policies).await?;
        self.delete_orphans(&observed.pdbs).await
    }

    /// The owned objects of kind `K`: labelled as ours and controlled by this owner's uid (the
    /// label alone could be copied onto someone else's object).
    async fn list<K>(&self) -> Result<Vec<K>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|source| Error::kube("list", K::kind(&()), &self.namespace, source))?;
        Ok(list
            .items
            .into_iter()
            .filter(|object| {
                object
                    .owner_references()
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == self.owner_uid)
            })
            .collect())
    }

    /// Applies `desired` unless `observed` (this kind's owned objects) already holds it.
    async fn apply<K>(&mut self, mut desired: K, observed: &[K]) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let kind = K::kind(&()).into_owned();
        let name = desired.name_any();
        let hash = revision::hash(&desired)?;
        desired
            .annotations_mut()
            .insert(labels::APPLIED_HASH.to_owned(), hash.clone());
        self.applied.insert((kind.clone(), name.clone()));

        let current = observed.iter().find(|object| object.name_any() == name);
        if let Some(object) = current
            && object.annotations().get(labels::APPLIED_HASH) == Some(&hash)
        {
            let fields = serde_json::to_value(&desired).map_err(|source| Error::Serialize {
                what: "object to compare",
                source,
            })?;
            match drift::taken_over(object.managed_fields(), labels::MANAGER, &fields) {
                None => return Ok(()),
                Some(manager) => {
                    tracing::info!(object = %format!("{kind}/{name}"), %manager, "restoring fields another writer took over");
                }
            }
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PatchParams::apply(labels::MANAGER).force();
        retry_on_conflict(|| async {
            api.patch(&name, &params, &Patch::Apply(&desired))
                .await
                .map_err(|source| Error::kube("apply", kind.clone(), name.clone(), source))
        })
        .await?;
        let entry = format!("{kind}/{name}");
        self.crash_points.after(|| format!("apply {entry} {hash}"));
        tracing::info!(object = %entry, created = current.is_none(), "applied");
        match current {
            None => self.report.created.push(entry),
            Some(_) => self.report.updated.push(entry),
        }
        Ok(())
    }

    /// Deletes the observed objects of this kind that were not applied this round.
    async fn delete_orphans<K>(&mut self, observed: &[K]) -> Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let kind = K::kind(&()).into_owned();
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        for object in observed {
            let name = object.name_any();
            if self.applied.contains(&(kind.clone(), name.clone())) {
                continue;
            }
            // The uid precondition makes sure a same-named successor is never deleted.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: object.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => continue,
                Err(source) => return Err(Error::kube("delete", kind, name, source)),
            }
            let entry = format!("{kind}/{name}");
            self.crash_points.after(|| format!("delete {entry}"));
            tracing::info!(object = %entry, "deleted orphan");
            self.report.deleted.push(entry);
        }
        Ok(())
    }
}

/// Runs `call` again, at once, when it fails with a conflict; another writer won a race, and
/// the next attempt is built from our desired state, not from what we read.
pub async fn retry_on_conflict<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if error.is_conflict() && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(%error, attempt, "conflict, retrying");
                attempt += 1;
            }
            result => return result,
        }
    }
}
