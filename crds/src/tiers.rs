//! `spec.model` (the GPU tier), `spec.worker` (the CPU tier) and `spec.service`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration},
        networking::v1::NetworkPolicyPeer,
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{self, Duration};

/// The GPU tier: a vLLM OpenAI-compatible server hosting the MinerU2.5 model, run as one
/// StatefulSet per model revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.allowRemoteCode) && self.allowRemoteCode) || !has(self.extraArgs) || !self.extraArgs.exists(a, a.matches('^--tru[a-z_-]*(=.*)?$'))").message("extraArgs may pass --trust-remote-code only with allowRemoteCode: true (it runs Python code from the model repository in the vLLM pod)"),
    validation = Rule::new("!has(self.extraArgs) || !self.extraArgs.exists(a, a.matches('^--api[-_]k[a-z_-]*(=.*)?$'))").message("the API key goes in apiKeySecretRef, never in extraArgs (the pod spec is readable in clear)"),
    validation = Rule::new("!has(self.env) || !self.env.exists(e, e.name == 'VLLM_API_KEY')").message("VLLM_API_KEY is set from apiKeySecretRef, never in env")
)]
pub struct ModelSpec {
    /// Container image of the vLLM OpenAI server, e.g. `vllm/vllm-openai:v0.11.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Hugging Face id or local path of the MinerU2.5 weights, e.g. `opendatalab/MinerU2.5-2509-1.2B`.
    #[schemars(length(min = 1, max = 512))]
    pub model: String,

    /// Name the server lists at `/v1/models` and that workers request. Defaults to `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub served_model_name: Option<String>,

    /// Number of vLLM replicas of the stable revision.
    #[serde(default = "default_model_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// GPUs requested (and limited) per vLLM replica; also passed as `--tensor-parallel-size`.
    #[serde(default = "default_gpus_per_replica")]
    #[schemars(range(min = 0, max = 64))]
    pub gpus_per_replica: i32,

    /// Extended resource name of the GPU, e.g. `nvidia.com/gpu` or `amd.com/gpu`.
    #[serde(default = "default_gpu_resource_name")]
    #[schemars(length(min = 1, max = 253))]
    pub gpu_resource_name: String,

    /// Fraction of GPU memory vLLM may use (`--gpu-memory-utilization`), in (0, 1].
    #[serde(default = "default_gpu_memory_utilization")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("gpuMemoryUtilization must be in (0, 1]"))]
    pub gpu_memory_utilization: f64,

    /// Maximum context length (`--max-model-len`); vLLM's own default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_model_len: Option<i32>,

    /// Adds `--logits-processors mineru_vl_utils:MinerULogitsProcessor`, which MinerU's
    /// `no_repeat_ngram_size` sampling argument needs.
    #[serde(default = "default_true")]
    pub logits_processor: bool,

    /// Arguments appended to the vLLM server command line. `--trust-remote-code` needs
    /// `allowRemoteCode`; `--api-key` is refused (use `apiKeySecretRef`), abbreviations of
    /// either too (vLLM's parser accepts them). These catch mistakes, not a hostile author: the
    /// image, which the author chooses, can run anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub extra_args: Vec<String>,

    /// Lets `extraArgs` pass `--trust-remote-code`: vLLM then runs Python code shipped with the
    /// model repository inside the pod. MinerU2.5 needs none; leave off unless the model does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_code: bool,

    /// Environment variables added to the vLLM container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Secret key holding the API key: vLLM gets it as `VLLM_API_KEY`, workers send it as a
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,

    /// Persistent model cache (HF_HOME) through a volumeClaimTemplate; an emptyDir when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ModelCache>,

    /// Budget of the startup probe: model download, weight load and CUDA graph capture.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout: Duration,

    /// CPU and memory for the vLLM container; GPUs come from `gpusPerReplica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the vLLM pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the vLLM pods (GPU nodes are often tainted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the vLLM pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// PriorityClass of the vLLM pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

impl ModelSpec {
    /// The model name the server lists and the workers request.
    pub fn served_model_name(&self) -> &str {
        self.served_model_name.as_deref().unwrap_or(&self.model)
    }
}

/// A key in a Secret of the MineruDeployment's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("a Secret name is lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"),
    validation = Rule::new("self.key.matches('^[-._a-zA-Z0-9]+$')").message("a Secret key is letters, digits, '-', '_' and '.'")
)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Persistent storage for downloaded weights and compiled kernels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelCache {
    /// Size of each replica's cache volume, e.g. `20Gi`.
    pub size: Quantity,
    /// StorageClass of the cache volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The CPU tier: mineru-worker pods that render PDFs and call the GPU tier, one Deployment per
/// worker revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.env) || !self.env.exists(e, e.name == 'MINERU_JOB_STORE' || e.name == 'MINERU_WORKER_ID')").message("MINERU_JOB_STORE is set from jobStore.urlSecretRef and MINERU_WORKER_ID from the pod name, never in env")
)]
pub struct WorkerSpec {
    /// Container image of mineru-worker.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Number of worker replicas of the stable revision.
    #[serde(default = "default_worker_replicas")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// Extraction backend: `vlm` (MinerU2.5 through the GPU tier) or `text` (pdfium's text
    /// layer only, no model).
    #[serde(default)]
    pub backend: Backend,

    /// Documents one worker parses at once; beyond it the worker answers 429 with Retry-After.
    #[serde(default = "default_max_concurrent_documents")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_concurrent_documents: i32,

    /// Largest upload a worker accepts.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: Quantity,

    /// Most pages a worker parses from one document.
    #[serde(default = "default_max_pages")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_pages: i32,

    /// CPU and memory for the worker container. When absent, derived from the limits above:
    /// memory `128Mi + documents × (2 × maxFileBytes + 64Mi) + 768Mi` (one render subprocess),
    /// requested for one document and limited at `maxConcurrentDocuments`; one CPU requested,
    /// none limited. The worker runs one render subprocess per CPU requested (or limited),
    /// rounded up and at most `maxConcurrentDocuments`, each with 768Mi of address space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Environment variables added to the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Node labels the worker pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// A PostgreSQL database shared by every worker of this MineruDeployment, stable and canary
    /// revisions alike, holding the `/v1` API's uploads and asynchronous parse jobs: a job
    /// submitted through one pod can be polled through any other, survives the worker that took
    /// it, and a worker that dies mid-job has its job run again by another. The worker gets the
    /// URL as `MINERU_JOB_STORE`. Without it each worker keeps its jobs in an embedded SQLite
    /// store of its own: fine with one replica, but with several a job is known only to the pod
    /// that took it, and a poll the entry Service sends to another pod does not find it.
    /// `/file_parse` is synchronous and needs no store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_store: Option<JobStore>,
}

/// Where the workers keep `/v1` jobs, and how they reach it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.egress.all(p, has(p.ipBlock) ? !has(p.podSelector) && !has(p.namespaceSelector) : has(p.podSelector) || has(p.namespaceSelector))").message("each jobStore.egress peer is either an ipBlock, or a podSelector and/or a namespaceSelector")
)]
pub struct JobStore {
    /// Secret key holding the database URL, `postgres://user:password@host:5432/database`
    /// (it carries a password, so never in the MineruDeployment itself). The Secret needs the
    /// label the platform requires, like every Secret the pods use.
    pub url_secret_ref: SecretKeyRef,

    /// Where the database is, as NetworkPolicy peers: the worker NetworkPolicy lets workers
    /// open connections to them on `port` (it denies every destination but their vLLM and
    /// DNS). A `podSelector` alone selects pods of this namespace; add a `namespaceSelector`
    /// for another namespace, or give an `ipBlock` for a database outside the cluster.
    #[schemars(length(min = 1, max = 16))]
    pub egress: Vec<NetworkPolicyPeer>,

    /// TCP port of the database the `egress` rule allows.
    #[serde(default = "default_job_store_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// How a worker extracts documents.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// MinerU2.5 two-step extraction through the GPU tier.
    #[default]
    Vlm,
    /// pdfium's text layer: paragraphs and headings, no tables or formulas, no GPU needed.
    Text,
}

/// The entry point clients call; in replica-ratio mode it selects stable and canary workers alike.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Port of the entry Service.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Kubernetes Service type of the entry Service.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            port: default_service_port(),
            service_type: ServiceType::default(),
        }
    }
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also exposed on each node's port.
    NodePort,
    /// Also exposed through the cloud load balancer.
    LoadBalancer,
}

fn default_model_replicas() -> i32 {
    1
}
fn default_gpus_per_replica() -> i32 {
    1
}
fn default_gpu_resource_name() -> String {
    "nvidia.com/gpu".into()
}
fn default_gpu_memory_utilization() -> f64 {
    0.5
}
pub(crate) fn default_true() -> bool {
    true
}
fn default_startup_timeout() -> Duration {
    duration::literal("20m")
}
fn default_worker_replicas() -> i32 {
    2
}
fn default_max_concurrent_documents() -> i32 {
    4
}
fn default_max_file_bytes() -> Quantity {
    Quantity("100Mi".into())
}
fn default_max_pages() -> i32 {
    1000
}
fn default_job_store_port() -> i32 {
    5432
}
fn default_service_port() -> i32 {
    8000
}
