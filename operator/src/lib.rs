//! The mineru-operator controller.

pub mod background;
pub mod capacity;
pub mod commands;
pub mod context;
pub mod controller;
pub mod crashpoints;
pub mod drive;
pub mod error;
pub mod evidence;
pub mod gates;
pub mod http;
pub mod labels;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod outbound;
pub mod planner;
pub mod preflight;
pub mod probes;
pub mod quality;
pub mod quality_rounds;
pub mod rbac;
pub mod reconcile;
pub mod recorder;
pub mod revision;
pub mod rollout;
pub mod rotation;
pub mod scope;
pub mod sources;
pub mod traffic;
pub mod warmup;

/// Port of the vLLM OpenAI server in every model pod.
pub const VLLM_PORT: i32 = 8000;
/// Port of mineru-worker's HTTP API in every worker pod.
pub const WORKER_PORT: i32 = 8000;
