//! Facts for the rollout engine, read from the objects and pods of a MineruDeployment and keyed
//! by revision, so that no fact is ever attributed to the wrong revision.

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ContainerStatus, Pod},
};
use kube::ResourceExt;

use crate::{labels, rollout::Observed};

/// Readiness per revision, pods that cannot be scheduled for lack of `gpu_resource`, vLLM
/// container restarts and why they keep exiting. Warm-up is probed over HTTP and added by the
/// caller.
pub fn observe(
    statefulsets: &[StatefulSet],
    deployments: &[Deployment],
    model_pods: &[Pod],
    gpu_resource: &str,
) -> Observed {
    let mut observed = Observed::default();
    for statefulset in statefulsets {
        if let Some(revision) = statefulset.labels().get(labels::REVISION) {
            let ready = statefulset
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            observed.model_ready.insert(revision.clone(), ready);
        }
    }
    for deployment in deployments {
        if let Some(revision) = deployment.labels().get(labels::REVISION) {
            let ready = deployment
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            observed.worker_ready.insert(revision.clone(), ready);
        }
    }
    let insufficient = format!("Insufficient {gpu_resource}");
    for pod in model_pods {
        let Some(revision) = pod.labels().get(labels::REVISION) else {
            continue;
        };
        let Some(status) = &pod.status else {
            continue;
        };
        let restarts: i32 = status
            .container_statuses
            .iter()
            .flatten()
            .map(|container| container.restart_count)
            .sum();
        *observed.vllm_restarts.entry(revision.clone()).or_default() += restarts;
        if let Some(why) = status.container_statuses.iter().flatten().find_map(failing) {
            observed.vllm_failures.insert(revision.clone(), why);
        }
        let lacks_gpus = status.conditions.iter().flatten().any(|condition| {
            condition.type_ == "PodScheduled"
                && condition.status == "False"
                && condition.reason.as_deref() == Some("Unschedulable")
                && condition
                    .message
                    .as_deref()
                    .is_some_and(|message| message.contains(&insufficient))
        });
        if lacks_gpus {
            observed.unschedulable.insert(revision.clone());
        }
    }
    observed
}

/// Why a container that is down now exited last, when it failed: the kubelet keeps its last
/// log lines as the termination message (`FallbackToLogsOnError` on the vLLM container).
fn failing(container: &ContainerStatus) -> Option<String> {
    let down = container
        .state
        .as_ref()
        .is_some_and(|s| s.running.is_none());
    let exited = [
        container.state.as_ref().and_then(|s| s.terminated.as_ref()),
        container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref()),
    ]
    .into_iter()
    .flatten()
    .find(|t| t.exit_code != 0)?;
    down.then(|| {
        diagnose(
            exited.exit_code,
            exited.message.as_deref().unwrap_or_default(),
        )
    })
}

/// What a vLLM container's exit code and last log lines say, in words a person can act on.
/// The known failures get their remedy; anything else its last line.
pub fn diagnose(exit_code: i32, last_words: &str) -> String {
    let missing_processor = last_words.contains("No module named 'mineru_vl_utils'")
        || last_words.contains("LogitsProcessor plugin mineru_vl_utils");
    if missing_processor {
        return "vLLM exits at start: its image lacks mineru_vl_utils, the MinerU logits \
                processor that --logits-processors names; use an image that has it \
                (ghcr.io/mineru-dev/mineru-vllm) or set model.logitsProcessor: false"
            .to_owned();
    }
    if exit_code == 137 {
        return "vLLM was killed (exit code 137): out of memory or past its liveness probe"
            .to_owned();
    }
    let last = last_words
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty());
    match last {
        Some(line) => {
            let line: String = line.chars().take(300).collect();
            format!("vLLM exits with code {exit_code}: {line}")
        }
        None => format!("vLLM exits with code {exit_code}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn statefulset(revision: &str, ready: i32) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("docs-vllm-{revision}"), "labels": {labels::REVISION: revision}},
            "status": {"replicas": 1, "readyReplicas": ready}
        }))
        .unwrap()
    }

    fn deployment(revision: &str, ready: Option<i32>) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": format!("docs-worker-{revision}"), "labels": {labels::REVISION: revision}},
            "status": {"readyReplicas": ready}
        }))
        .unwrap()
    }

    fn pod(revision: &str, restarts: &[i32], scheduled: Option<(&str, &str)>) -> Pod {
        let conditions: Vec<_> = scheduled
            .map(|(reason, message)| json!({"type": "PodScheduled", "status": "False", "reason": reason, "message": message}))
            .into_iter()
            .collect();
        let containers: Vec<_> = restarts
            .iter()
            .enumerate()
            .map(|(i, count)| json!({"name": format!("c{i}"), "ready": true, "restartCount": count, "image": "x", "imageID": ""}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {labels::REVISION: revision}},
            "status": {"conditions": conditions, "containerStatuses": containers}
        }))
        .unwrap()
    }

    #[test]
    fn readiness_is_keyed_by_revision() {
        let observed = observe(
            &[statefulset("m-a", 2), statefulset("m-b", 0)],
            &[deployment("w-a", Some(3)), deployment("w-b", None)],
            &[],
            "nvidia.com/gpu",
        );
        assert_eq!(observed.model_ready["m-a"], 2);
        assert_eq!(observed.model_ready["m-b"], 0);
        assert_eq!(observed.worker_ready["w-a"], 3);
        assert_eq!(observed.worker_ready["w-b"], 0);
    }

    #[test]
    fn restarts_add_up_per_revision() {
        let observed = observe(
            &[],
            &[],
            &[
                pod("m-a", &[1, 2], None),
                pod("m-a", &[3], None),
                pod("m-b", &[0], None),
            ],
            "nvidia.com/gpu",
        );
        assert_eq!(observed.vllm_restarts["m-a"], 6);
        assert_eq!(observed.vllm_restarts["m-b"], 0);
    }

    fn crashing(revision: &str, exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {labels::REVISION: revision}},
            "status": {"containerStatuses": [{
                "name": "vllm", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": exit_code, "message": message}},
            }]}
        }))
        .unwrap()
    }

    /// The tail of vLLM's log when the logits processor module is not in the image.
    const MISSING_PROCESSOR: &str = "    module = importlib.import_module(module_path)
ModuleNotFoundError: No module named 'mineru_vl_utils'

The above exception was the direct cause of the following exception:

RuntimeError: Failed to load 0th LogitsProcessor plugin mineru_vl_utils:MinerULogitsProcessor
";

    #[test]
    fn a_crash_loop_is_explained_by_the_containers_last_words() {
        let observed = observe(
            &[],
            &[],
            &[
                crashing("m-a", 1, MISSING_PROCESSOR),
                crashing("m-b", 1, "INFO starting\nValueError: unsupported model\n\n"),
                crashing("m-c", 137, ""),
            ],
            "nvidia.com/gpu",
        );
        assert!(
            observed.vllm_failures["m-a"].contains("lacks mineru_vl_utils")
                && observed.vllm_failures["m-a"].contains("logitsProcessor: false"),
            "{observed:?}"
        );
        assert_eq!(
            observed.vllm_failures["m-b"],
            "vLLM exits with code 1: ValueError: unsupported model"
        );
        assert!(observed.vllm_failures["m-c"].contains("137"));
    }

    #[test]
    fn a_container_running_again_is_not_failing_for_an_old_exit() {
        let mut pod = crashing("m-a", 1, MISSING_PROCESSOR);
        let container = &mut pod
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0];
        container.state = serde_json::from_value(json!({"running": {}})).unwrap();
        let observed = observe(&[], &[], &[pod], "nvidia.com/gpu");
        assert!(observed.vllm_failures.is_empty());
    }

    #[test]
    fn only_a_lack_of_gpus_counts_as_unschedulable() {
        let observed = observe(
            &[],
            &[],
            &[
                pod(
                    "m-gpu",
                    &[],
                    Some((
                        "Unschedulable",
                        "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity.",
                    )),
                ),
                pod(
                    "m-taint",
                    &[],
                    Some((
                        "Unschedulable",
                        "0/4 nodes are available: 4 node(s) had untolerated taint.",
                    )),
                ),
            ],
            "nvidia.com/gpu",
        );
        assert!(observed.unschedulable.contains("m-gpu"));
        assert!(!observed.unschedulable.contains("m-taint"));
    }
}
