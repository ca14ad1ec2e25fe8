//! Turning a MineruDeployment into the objects that run it.
//!
//! One module per owned object, each a pure `desired(...)` builder; [`Topology`] says which
//! revisions run at how many replicas; [`DesiredObjects`] joins them; [`apply::ChildSet`] writes
//! the difference and deletes what is no longer desired; [`status`] and [`events`] say what
//! happened.

pub mod apply;
pub mod deployment;
pub mod drift;
pub mod events;
pub mod networkpolicy;
pub mod pdb;
pub mod security;
pub mod service;
pub mod statefulset;

#[cfg(test)]
pub(crate) mod apiserver;
#[cfg(test)]
pub(crate) mod fixtures;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{PodTemplateSpec, Service},
        networking::v1::{NetworkPolicy, NetworkPolicyPeer},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};
use mineru_crds::{
    MineruDeployment, MineruDeploymentSpec, ModelSpec, Revisions, SecretKeyRef, Tier, WorkerSpec,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{labels, revision, rollout::Plan};

/// The MineruDeployment as the owner of the objects built for it.
#[derive(Clone, Debug)]
pub struct Owner {
    /// The MineruDeployment's name; every derived name starts with it.
    pub instance: String,
    /// Its namespace, where everything it owns lives.
    pub namespace: String,
    /// The controller ownerReference every owned object carries.
    pub reference: OwnerReference,
}

impl Owner {
    /// The owner of `md`'s objects; fails on an object the API server could not have returned
    /// (no namespace or uid) and on a name too long for the derived names.
    pub fn of(md: &MineruDeployment) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidSpec {
            name: format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any()),
            reason,
        };
        let instance = md.name_any();
        if instance.len() > labels::MAX_NAME_LEN {
            return Err(invalid(format!(
                "the name is {} characters; at most {} fit in the names of the StatefulSets and Services derived from it",
                instance.len(),
                labels::MAX_NAME_LEN
            )));
        }
        let namespace = md
            .namespace()
            .ok_or_else(|| invalid("it has no namespace".into()))?;
        let reference = md
            .controller_owner_ref(&())
            .ok_or_else(|| invalid("it has no uid yet".into()))?;
        Ok(Owner {
            instance,
            namespace,
            reference,
        })
    }

    /// Metadata of an owned object: name, namespace, labels and the controller reference.
    pub fn meta(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Everything a worker pod template is built from: the worker spec and the vLLM revision it
/// calls, with what it needs to know of that model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// The CPU tier's spec.
    pub worker: WorkerSpec,
    /// The model revision whose vLLM Service the workers call.
    pub model_revision: String,
    /// The model name workers request.
    pub served_model_name: String,
    /// The vLLM API key the workers send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

impl WorkerTemplate {
    /// Workers of `worker` calling the vLLM of `model` at `model_revision`.
    pub fn new(worker: &WorkerSpec, model: &ModelSpec, model_revision: &str) -> Self {
        WorkerTemplate {
            worker: worker.clone(),
            model_revision: model_revision.to_owned(),
            served_model_name: model.served_model_name().to_owned(),
            api_key_secret_ref: model.api_key_secret_ref.clone(),
        }
    }
}

/// The revisions the current spec asks for, with what builds them.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecRevisions {
    /// Model and worker revision of the spec.
    pub revisions: Revisions,
    /// The worker template of the spec (pointed at the spec's model revision).
    pub worker_template: WorkerTemplate,
}

impl SpecRevisions {
    /// Hashes the spec's two pod templates.
    pub fn of(instance: &str, spec: &MineruDeploymentSpec) -> Result<Self> {
        let model_revision = revision::model(instance, &spec.model)?;
        let worker_template = WorkerTemplate::new(&spec.worker, &spec.model, &model_revision);
        let worker_revision = revision::worker(instance, &worker_template)?;
        Ok(SpecRevisions {
            revisions: Revisions {
                model_revision,
                worker_revision,
            },
            worker_template,
        })
    }
}

/// Templates of revisions that may no longer match the spec, read back from the
/// [`labels::TEMPLATE`] annotation of their workloads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedTemplates {
    /// Model spec per model revision.
    pub models: BTreeMap<String, ModelSpec>,
    /// Worker template per worker revision.
    pub workers: BTreeMap<String, WorkerTemplate>,
}

/// One model revision to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWorkload {
    /// `m-<hash>`.
    pub revision: String,
    /// What its pods are built from.
    pub spec: ModelSpec,
    /// vLLM replicas.
    pub replicas: i32,
}

/// One worker revision to run.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerWorkload {
    /// `w-<hash>`.
    pub revision: String,
    /// What its pods are built from.
    pub template: WorkerTemplate,
    /// Worker replicas.
    pub replicas: i32,
}

/// Which revisions run, and how many replicas each, as the rollout engine decided. Builders only
/// render it; every decision about revisions and replicas lives in the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The pair serving traffic outside a rollout; none while a legacy Service serves it.
    pub stable: Option<Revisions>,
    /// The pair being rolled out, if any.
    pub canary: Option<Revisions>,
    /// One StatefulSet (with its Services) per entry; revisions are distinct.
    pub models: Vec<ModelWorkload>,
    /// One Deployment (with its Service) per entry; revisions are distinct.
    pub workers: Vec<WorkerWorkload>,
    /// The worker revision the entry Service selects; `None`: every worker revision.
    pub entry: Option<String>,
}

impl Topology {
    /// Renders the rollout engine's plan: every revision it lists, at its replicas, built from
    /// the current spec or, for older revisions, from the template their workload recorded. A
    /// revision whose template was not recorded cannot be rebuilt and is left out; the engine
    /// then sees its tier not ready.
    pub fn from_plan(
        md: &MineruDeployment,
        spec: &SpecRevisions,
        recorded: &RecordedTemplates,
        plan: &Plan,
    ) -> Topology {
        let current = &spec.revisions;
        let models = plan
            .model
            .iter()
            .filter_map(|scale| {
                let model_spec = if scale.revision == current.model_revision {
                    Some(md.spec.model.clone())
                } else {
                    recorded.models.get(&scale.revision).cloned()
                };
                model_spec.map(|spec| ModelWorkload {
                    revision: scale.revision.clone(),
                    spec,
                    replicas: scale.replicas,
                })
            })
            .collect();
        let workers = plan
            .worker
            .iter()
            .filter_map(|scale| {
                let template = if scale.revision == current.worker_revision {
                    Some(spec.worker_template.clone())
                } else {
                    recorded.workers.get(&scale.revision).cloned()
                };
                template.map(|template| WorkerWorkload {
                    revision: scale.revision.clone(),
                    template,
                    replicas: scale.replicas,
                })
            })
            .collect();
        Topology {
            stable: plan.stable.clone(),
            canary: plan.canary.clone(),
            models,
            workers,
            entry: plan.entry.clone(),
        }
    }
}

/// Operator-wide settings the builders need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Peers besides the workers allowed to reach vLLM (the metrics scraper).
    pub vllm_peers: Vec<NetworkPolicyPeer>,
    /// The cluster DNS, the one destination of workers besides their vLLM.
    pub dns_peers: Vec<NetworkPolicyPeer>,
}

impl Default for Settings {
    /// No peers besides the workers; DNS the kube-dns pods of kube-system, as the flags default.
    fn default() -> Self {
        Settings {
            vllm_peers: Vec::new(),
            dns_peers: networkpolicy::dns_peers(
                networkpolicy::DEFAULT_DNS_NAMESPACE,
                &networkpolicy::default_dns_pods(),
            ),
        }
    }
}

/// Every object a MineruDeployment should own right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredObjects {
    /// One per model revision.
    pub statefulsets: Vec<StatefulSet>,
    /// Two per model revision, one per worker revision, and the entry Service.
    pub services: Vec<Service>,
    /// One per worker revision.
    pub deployments: Vec<Deployment>,
    /// The GPU tier's fence.
    pub network_policies: Vec<NetworkPolicy>,
    /// One per tier.
    pub pdbs: Vec<PodDisruptionBudget>,
}

impl DesiredObjects {
    /// Renders `topology`; workloads record their template so they can be rebuilt later.
    pub fn build(
        owner: &Owner,
        spec: &MineruDeploymentSpec,
        topology: &Topology,
        settings: &Settings,
        api_key_version: Option<&str>,
    ) -> Result<Self> {
        let mut objects = DesiredObjects::default();
        for model in &topology.models {
            let mut sts = statefulset::desired(owner, &model.spec, &model.revision, model.replicas);
            if let Some(version) = api_key_version {
                statefulset::start_with_key_version(&mut sts, version);
            }
            record_template(&mut sts.metadata, &model.spec)?;
            objects.statefulsets.push(sts);
            objects
                .services
                .push(service::vllm_headless(owner, &model.revision));
            objects.services.push(service::vllm(owner, &model.revision));
        }
        for worker in &topology.workers {
            let mut deployment =
                deployment::desired(owner, &worker.template, &worker.revision, worker.replicas);
            record_template(&mut deployment.metadata, &worker.template)?;
            objects.deployments.push(deployment);
            objects
                .services
                .push(service::worker(owner, &worker.revision));
        }
        objects.services.push(service::entry(
            owner,
            &spec.service,
            topology.entry.as_deref(),
        ));
        objects
            .network_policies
            .push(networkpolicy::desired(owner, &settings.vllm_peers));
        objects.network_policies.push(networkpolicy::workers(
            owner,
            &settings.dns_peers,
            topology
                .workers
                .iter()
                .filter_map(|worker| worker.template.worker.job_store.as_ref()),
        ));
        objects.pdbs.push(pdb::desired(owner, Tier::Model));
        objects.pdbs.push(pdb::desired(owner, Tier::Worker));
        Ok(objects)
    }
}

/// Reads the templates recorded on observed workloads; a record that does not parse (written
/// by an incompatible operator version) is skipped, which leaves that revision unbuildable
/// rather than rebuilt wrongly.
pub fn recorded_templates(
    statefulsets: &[StatefulSet],
    deployments: &[Deployment],
) -> RecordedTemplates {
    fn read<T: for<'de> Deserialize<'de>>(meta: &ObjectMeta) -> Option<(String, T)> {
        let revision = meta.labels.as_ref()?.get(labels::REVISION)?.clone();
        let text = meta.annotations.as_ref()?.get(labels::TEMPLATE)?;
        match serde_json::from_str(text) {
            Ok(template) => Some((revision, template)),
            Err(error) => {
                tracing::warn!(object = meta.name.as_deref().unwrap_or_default(), %error, "unreadable template record");
                None
            }
        }
    }
    RecordedTemplates {
        models: statefulsets
            .iter()
            .filter_map(|s| read(&s.metadata))
            .collect(),
        workers: deployments
            .iter()
            .filter_map(|d| read(&d.metadata))
            .collect(),
    }
}

fn record_template(meta: &mut ObjectMeta, template: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(template).map_err(|source| Error::Serialize {
        what: "template record",
        source,
    })?;
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::TEMPLATE.to_owned(), text);
    Ok(())
}

/// `template` with the revision label on its pods.
pub(crate) fn with_revision(mut template: PodTemplateSpec, revision: &str) -> PodTemplateSpec {
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::REVISION.to_owned(), revision.to_owned());
    template
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{Fixture, owner, plan, recorded};

    fn revisions(md: &MineruDeployment) -> SpecRevisions {
        SpecRevisions::of("docs", &md.spec).unwrap()
    }

    fn promoted(md: MineruDeployment) -> MineruDeployment {
        let stable = revisions(&md).revisions;
        md.with_stable(stable)
    }

    #[test]
    fn first_sight_runs_the_spec_as_stable_without_canary() {
        let md = MineruDeployment::test();
        let topology = Topology::from_plan(
            &md,
            &revisions(&md),
            &RecordedTemplates::default(),
            &plan(&md),
        );
        assert_eq!(topology.stable, Some(revisions(&md).revisions));
        assert_eq!(topology.canary, None);
        assert_eq!(topology.models.len(), 1);
        assert_eq!(topology.models[0].replicas, md.spec.model.replicas);
        assert_eq!(topology.workers.len(), 1);
        assert_eq!(topology.workers[0].replicas, md.spec.worker.replicas);
    }

    #[test]
    fn unchanged_spec_with_a_stable_status_runs_no_canary() {
        let md = promoted(MineruDeployment::test());
        let topology = Topology::from_plan(&md, &revisions(&md), &recorded(&md), &plan(&md));
        assert_eq!(topology.canary, None);
        assert_eq!(topology.models.len() + topology.workers.len(), 2);
    }

    #[test]
    fn model_change_adds_a_canary_of_both_tiers_beside_the_kept_stable() {
        let old = promoted(MineruDeployment::test());
        let recorded = recorded(&old);
        let mut md = old.clone();
        md.spec.model.image = "vllm/vllm-openai:v0.11.1".into();
        md.spec.rollout.canary_model_replicas = 2;
        let topology = Topology::from_plan(&md, &revisions(&md), &recorded, &plan(&md));

        let stable = old.status.unwrap().stable.unwrap();
        assert_eq!(topology.stable, Some(stable.clone()));
        assert_eq!(topology.canary, Some(revisions(&md).revisions));
        let models: Vec<_> = topology
            .models
            .iter()
            .map(|m| (m.revision.clone(), m.replicas))
            .collect();
        assert_eq!(
            models,
            [
                (stable.model_revision.clone(), 1),
                (revisions(&md).revisions.model_revision, 2)
            ]
        );
        assert_eq!(
            topology.models[0].spec, old.spec.model,
            "stable is rebuilt from its record"
        );
        assert_eq!(topology.workers.len(), 2);
        assert_eq!(
            topology.workers[1].replicas, 0,
            "no canary worker takes traffic before its vLLM is warm"
        );
        assert_eq!(
            topology.workers[1].template.model_revision, topology.models[1].revision,
            "canary workers call the canary vLLM"
        );
        assert_eq!(
            topology.workers[0].template.model_revision,
            stable.model_revision
        );
    }

    #[test]
    fn worker_only_change_makes_a_worker_canary_calling_the_stable_vllm() {
        let old = promoted(MineruDeployment::test());
        let recorded = recorded(&old);
        let md = old
            .clone()
            .with_worker_image("registry.example/mineru-worker:0.2.0");
        let topology = Topology::from_plan(&md, &revisions(&md), &recorded, &plan(&md));

        let stable = old.status.unwrap().stable.unwrap();
        let canary = topology.canary.clone().unwrap();
        assert_eq!(canary.model_revision, stable.model_revision);
        assert_ne!(canary.worker_revision, stable.worker_revision);
        assert_eq!(
            topology.models.len(),
            1,
            "no second vLLM for a worker-only change"
        );
        assert_eq!(topology.workers.len(), 2);
        assert_eq!(
            topology.workers[1].template.model_revision,
            stable.model_revision
        );
    }

    #[test]
    fn spec_replicas_scale_the_stable_tiers_without_a_new_revision() {
        let mut md = promoted(MineruDeployment::test());
        md.spec.worker.replicas = 5;
        let topology = Topology::from_plan(&md, &revisions(&md), &recorded(&md), &plan(&md));
        assert_eq!(topology.canary, None);
        assert_eq!(topology.workers[0].replicas, 5);
    }

    #[test]
    fn stable_revision_without_a_record_is_left_out() {
        let old = promoted(MineruDeployment::test());
        let md = old.with_worker_image("registry.example/mineru-worker:0.2.0");
        let topology = Topology::from_plan(
            &md,
            &revisions(&md),
            &RecordedTemplates::default(),
            &plan(&md),
        );
        let workers: Vec<_> = topology
            .workers
            .iter()
            .map(|w| w.revision.clone())
            .collect();
        assert_eq!(workers, [revisions(&md).revisions.worker_revision]);
    }

    #[test]
    fn first_sight_objects_are_the_full_set_for_one_revision() {
        let md = MineruDeployment::test();
        let topology = Topology::from_plan(
            &md,
            &revisions(&md),
            &RecordedTemplates::default(),
            &plan(&md),
        );
        let objects =
            DesiredObjects::build(&owner(), &md.spec, &topology, &Settings::default(), None)
                .unwrap();
        let SpecRevisions { revisions: r, .. } = revisions(&md);
        let names = |metas: Vec<&ObjectMeta>| -> Vec<String> {
            metas.into_iter().map(|m| m.name.clone().unwrap()).collect()
        };
        assert_eq!(
            names(objects.statefulsets.iter().map(|o| &o.metadata).collect()),
            [format!("docs-vllm-{}", r.model_revision)]
        );
        assert_eq!(
            names(objects.services.iter().map(|o| &o.metadata).collect()),
            [
                format!("docs-vllm-{}-pods", r.model_revision),
                format!("docs-vllm-{}", r.model_revision),
                format!("docs-worker-{}", r.worker_revision),
                "docs".to_owned(),
            ]
        );
        assert_eq!(
            names(objects.deployments.iter().map(|o| &o.metadata).collect()),
            [format!("docs-worker-{}", r.worker_revision)]
        );
        assert_eq!(
            names(
                objects
                    .network_policies
                    .iter()
                    .map(|o| &o.metadata)
                    .collect()
            ),
            ["docs-vllm", "docs-worker"]
        );
        assert_eq!(
            names(objects.pdbs.iter().map(|o| &o.metadata).collect()),
            ["docs-vllm", "docs-worker"]
        );
    }

    #[test]
    fn the_worker_policy_admits_the_job_store_of_every_worker_revision_running() {
        let store: mineru_crds::JobStore = serde_json::from_value(serde_json::json!({
            "urlSecretRef": {"name": "mineru-jobs", "key": "url"},
            "egress": [{"podSelector": {"matchLabels": {"app": "postgres"}}}],
        }))
        .unwrap();
        let with_store = |mut md: MineruDeployment, store: Option<&mineru_crds::JobStore>| {
            md.spec.worker.job_store = store.cloned();
            md.metadata.generation = md.metadata.generation.map(|g| g + 1);
            md
        };
        let plain = promoted(MineruDeployment::test());
        let stored = promoted(with_store(MineruDeployment::test(), Some(&store)));
        // (stable, spec): a canary adding the store, one removing it, and none.
        for (old, new, worker_revisions, database_rules) in [
            (&plain, with_store(plain.clone(), Some(&store)), 2, 1),
            (&stored, with_store(stored.clone(), None), 2, 1),
            (&stored, stored.clone(), 1, 1),
            (&plain, plain.clone(), 1, 0),
        ] {
            let topology = Topology::from_plan(&new, &revisions(&new), &recorded(old), &plan(&new));
            let objects =
                DesiredObjects::build(&owner(), &new.spec, &topology, &Settings::default(), None)
                    .unwrap();
            assert_eq!(topology.workers.len(), worker_revisions);
            let policy = &objects.network_policies[1];
            assert_eq!(policy.metadata.name.as_deref(), Some("docs-worker"));
            let egress = policy.spec.as_ref().unwrap().egress.as_ref().unwrap();
            assert_eq!(
                egress.len(),
                2 + database_rules,
                "{worker_revisions} revisions"
            );
        }
    }

    #[test]
    fn recorded_templates_read_back_what_was_built() {
        let md = MineruDeployment::test();
        let recorded = recorded(&md);
        let r = revisions(&md);
        assert_eq!(recorded.models[&r.revisions.model_revision], md.spec.model);
        assert_eq!(
            recorded.workers[&r.revisions.worker_revision],
            r.worker_template
        );
    }

    #[test]
    fn owner_refuses_a_name_too_long_for_derived_names() {
        let mut md = MineruDeployment::test();
        md.metadata.name = Some("n".repeat(labels::MAX_NAME_LEN + 1));
        let error = Owner::of(&md).unwrap_err();
        assert!(matches!(error, Error::InvalidSpec { .. }), "{error}");
    }
}
