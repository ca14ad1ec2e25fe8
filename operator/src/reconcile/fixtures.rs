//! Test builders: a minimal MineruDeployment as a user would write it, and its parts.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use mineru_crds::{MineruDeployment, MineruDeploymentStatus, ModelSpec, Revisions, WorkerSpec};
use serde_json::json;

use super::{DesiredObjects, Owner, RecordedTemplates, Settings, SpecRevisions, Topology};
use crate::rollout::{self, Input, Observed, Plan, Sizes};

/// `spec.model` of the minimal example, defaults filled in.
pub fn model_spec() -> ModelSpec {
    serde_json::from_value(json!({
        "image": "vllm/vllm-openai:v0.11.0",
        "model": "opendatalab/MinerU2.5-2509-1.2B",
    }))
    .unwrap()
}

/// `spec.worker` of the minimal example, defaults filled in.
pub fn worker_spec() -> WorkerSpec {
    serde_json::from_value(json!({"image": "registry.example/mineru-worker:0.1.0"})).unwrap()
}

/// The owner of [`Fixture::test`]'s objects.
pub fn owner() -> Owner {
    Owner::of(&MineruDeployment::test()).unwrap()
}

/// Builders for test MineruDeployments.
pub trait Fixture: Sized {
    /// `parsing/docs`, generation 1, as the API server returns the minimal example.
    fn test() -> Self;
    /// With `status.stable` set, as after its first reconcile.
    fn with_stable(self, stable: Revisions) -> Self;
    /// With another worker image (a worker-only change) and the next generation.
    fn with_worker_image(self, image: &str) -> Self;
}

impl Fixture for MineruDeployment {
    fn test() -> Self {
        let spec = serde_json::from_value(json!({
            "model": {"image": "vllm/vllm-openai:v0.11.0", "model": "opendatalab/MinerU2.5-2509-1.2B"},
            "worker": {"image": "registry.example/mineru-worker:0.1.0"},
            // No gates: call-sequence tests stay off the network (gates have their own tests).
            "rollout": {"analysis": {"defaultCriteria": false}},
        }))
        .unwrap();
        let mut md = MineruDeployment::new("docs", spec);
        md.metadata = ObjectMeta {
            name: Some("docs".into()),
            namespace: Some("parsing".into()),
            uid: Some("uid-docs".into()),
            generation: Some(1),
            resource_version: Some("1".into()),
            ..ObjectMeta::default()
        };
        md
    }

    fn with_stable(mut self, stable: Revisions) -> Self {
        self.status
            .get_or_insert_with(MineruDeploymentStatus::default)
            .stable = Some(stable);
        self
    }

    fn with_worker_image(mut self, image: &str) -> Self {
        self.spec.worker.image = image.into();
        self.metadata.generation = self.metadata.generation.map(|g| g + 1);
        self
    }
}

/// What the workloads built for `md`'s current spec record, as a later reconcile reads it back.
pub fn recorded(md: &MineruDeployment) -> RecordedTemplates {
    let spec = SpecRevisions::of("docs", &md.spec).unwrap();
    let topology = Topology::from_plan(md, &spec, &RecordedTemplates::default(), &plan(md));
    let objects =
        DesiredObjects::build(&owner(), &md.spec, &topology, &Settings::default(), None).unwrap();
    super::recorded_templates(&objects.statefulsets, &objects.deployments)
}

/// What the rollout engine plans for `md` when nothing is ready yet, at a fixed time.
pub fn plan(md: &MineruDeployment) -> Plan {
    let spec = SpecRevisions::of("docs", &md.spec).unwrap();
    let input = Input {
        generation: md.metadata.generation,
        rollout: md.spec.rollout.clone(),
        sizes: Sizes::of(&md.spec),
        desired: spec.revisions,
        status: md.status.clone().unwrap_or_default(),
        observed: Observed::default(),
        analysis: None,
        commands: Vec::new(),
        now: Timestamp::from_second(1_800_000_000).unwrap(),
    };
    rollout::step(&input).plan
}
