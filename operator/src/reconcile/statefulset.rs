//! The GPU tier of one model revision: a StatefulSet running the vLLM OpenAI server.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
            HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta,
        util::intstr::IntOrString,
    },
};
use mineru_crds::{ModelSpec, Tier};

use super::{Owner, security, with_revision};
use crate::{VLLM_PORT, labels};

/// Where the model cache (HF_HOME) is mounted.
const CACHE_PATH: &str = "/cache";
/// Name of the cache volume, or of the volumeClaimTemplate when the cache is persistent.
const CACHE_VOLUME: &str = "cache";
/// Probe period; the startup budget is expressed in these.
const PROBE_PERIOD_SECONDS: i32 = 10;

/// The StatefulSet `<name>-vllm-<revision>` running `replicas` vLLM servers for `spec`.
pub fn desired(owner: &Owner, spec: &ModelSpec, revision: &str, replicas: i32) -> StatefulSet {
    let instance = &owner.instance;
    let claims = volume_claim_templates(instance, spec);
    StatefulSet {
        metadata: owner.meta(
            labels::names::vllm(instance, revision),
            labels::common(instance, Tier::Model, Some(revision)),
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(labels::names::vllm_pods(instance, revision)),
            // Model loading takes minutes per pod; ordered start-up would serialize it.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels::revision_selector(instance, Tier::Model, revision)),
                ..LabelSelector::default()
            },
            template: with_revision(pod_template(instance, spec), revision),
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The vLLM pod template without its revision label (the revision is a hash of it).
pub fn pod_template(instance: &str, spec: &ModelSpec) -> PodTemplateSpec {
    let mut volumes = vec![Volume {
        name: "dshm".into(),
        // vLLM and NCCL use /dev/shm for inter-process tensors; the container default is 64Mi.
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if spec.cache.is_none() {
        volumes.push(Volume {
            name: CACHE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::common(instance, Tier::Model, None)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(spec)],
            volumes: Some(volumes),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            affinity: spec.affinity.clone(),
            priority_class_name: spec.priority_class_name.clone(),
            security_context: Some(security::pod()),
            automount_service_account_token: Some(false),
            ..PodSpec::default()
        }),
    }
}

/// Marks the pod template with the version of the API key its pods start with: a new version
/// replaces the pods in place (the revision, a hash of the spec's template, stays).
pub fn start_with_key_version(sts: &mut StatefulSet, version: &str) {
    if let Some(spec) = sts.spec.as_mut() {
        spec.template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(crate::rotation::KEY_VERSION.to_owned(), version.to_owned());
    }
}

/// The cache claim per replica, when the cache is persistent.
pub fn volume_claim_templates(instance: &str, spec: &ModelSpec) -> Vec<PersistentVolumeClaim> {
    let Some(cache) = &spec.cache else {
        return Vec::new();
    };
    vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CACHE_VOLUME.into()),
            labels: Some(labels::common(instance, Tier::Model, None)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: cache.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), cache.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }]
}

/// `vllm serve` with MinerU's flags, then the user's extra arguments.
pub fn args(spec: &ModelSpec) -> Vec<String> {
    let mut args = vec![
        spec.model.clone(),
        "--served-model-name".into(),
        spec.served_model_name().to_owned(),
        "--port".into(),
        VLLM_PORT.to_string(),
        "--gpu-memory-utilization".into(),
        spec.gpu_memory_utilization.to_string(),
    ];
    if let Some(max_model_len) = spec.max_model_len {
        args.extend(["--max-model-len".into(), max_model_len.to_string()]);
    }
    if spec.logits_processor {
        args.extend([
            "--logits-processors".into(),
            "mineru_vl_utils:MinerULogitsProcessor".into(),
        ]);
    }
    if spec.gpus_per_replica > 1 {
        args.extend([
            "--tensor-parallel-size".into(),
            spec.gpus_per_replica.to_string(),
        ]);
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}

fn container(spec: &ModelSpec) -> Container {
    // Not root, the image's home is not writable: vLLM's, Triton's and FlashInfer's caches
    // (under $HOME/.cache) go to the cache volume with the weights.
    let mut env = vec![
        EnvVar {
            name: "HF_HOME".into(),
            value: Some(format!("{CACHE_PATH}/huggingface")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "HOME".into(),
            value: Some(CACHE_PATH.into()),
            ..EnvVar::default()
        },
        // The image has no passwd entry for the user: getpass.getuser() (torch inductor) reads
        // USER first instead of failing.
        EnvVar {
            name: "USER".into(),
            value: Some("vllm".into()),
            ..EnvVar::default()
        },
    ];
    if let Some(key) = &spec.api_key_secret_ref {
        env.push(EnvVar {
            name: "VLLM_API_KEY".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: key.name.clone(),
                    key: key.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env.extend(spec.env.iter().cloned());

    Container {
        name: "vllm".into(),
        image: Some(spec.image.clone()),
        command: Some(vec!["vllm".into(), "serve".into()]),
        args: Some(args(spec)),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: VLLM_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(spec)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "dshm".into(),
                mount_path: "/dev/shm".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: CACHE_VOLUME.into(),
                mount_path: CACHE_PATH.into(),
                ..VolumeMount::default()
            },
        ]),
        startup_probe: Some(Probe {
            failure_threshold: Some(startup_failure_threshold(spec)),
            ..http_probe("/health")
        }),
        // Listing the model proves the server is up and the model registered. Whether it
        // answers correctly is the rollout engine's warm-up gate, which sends a real request.
        readiness_probe: Some(readiness_probe(spec)),
        liveness_probe: Some(http_probe("/health")),
        security_context: Some(security::container(false)),
        // A vLLM that exits at start says why only in its log; the kubelet keeps the tail as
        // the termination message, which the operator reads into status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// GPUs from `gpusPerReplica` on top of the user's CPU and memory.
fn resources(spec: &ModelSpec) -> ResourceRequirements {
    let mut resources = spec.resources.clone().unwrap_or_default();
    if spec.gpus_per_replica > 0 {
        let gpus = Quantity(spec.gpus_per_replica.to_string());
        for list in [&mut resources.requests, &mut resources.limits] {
            list.get_or_insert_with(BTreeMap::new)
                .insert(spec.gpu_resource_name.clone(), gpus.clone());
        }
    }
    resources
}

/// Enough periods to cover `startupTimeout` (download, load, graph capture), at least one.
fn startup_failure_threshold(spec: &ModelSpec) -> i32 {
    let period = u128::from(PROBE_PERIOD_SECONDS.unsigned_abs()) * 1000;
    let periods = spec.startup_timeout.get().as_millis().div_ceil(period);
    i32::try_from(periods).unwrap_or(i32::MAX).max(1)
}

fn readiness_probe(spec: &ModelSpec) -> Probe {
    if spec.api_key_secret_ref.is_none() {
        return http_probe("/v1/models");
    }
    // With --api-key, /v1/models needs the key; an httpGet probe could only carry it in the
    // pod spec in clear, so the probe reads it from the environment inside the container.
    let script = format!(
        "import os, urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{VLLM_PORT}/v1/models', headers={{'Authorization': 'Bearer ' + os.environ['VLLM_API_KEY']}}), timeout=5)"
    );
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["python3".into(), "-c".into(), script]),
        }),
        period_seconds: Some(PROBE_PERIOD_SECONDS),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(PROBE_PERIOD_SECONDS),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{model_spec, owner};

    fn build(spec: &ModelSpec) -> StatefulSet {
        desired(&owner(), spec, "m-0123abcd", 2)
    }

    fn pod(sts: &StatefulSet) -> &PodSpec {
        sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn vllm(sts: &StatefulSet) -> &Container {
        &pod(sts).containers[0]
    }

    fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container.env.as_ref()?.iter().find(|env| env.name == name)
    }

    #[test]
    fn vllm_runs_restricted_without_a_token_and_with_its_caches_on_the_volume() {
        let sts = build(&model_spec());
        let pod = pod(&sts);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let security = vllm(&sts).security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(
            env(vllm(&sts), "HOME").and_then(|e| e.value.as_deref()),
            Some(CACHE_PATH)
        );
    }

    #[test]
    fn is_named_after_the_revision_and_governed_by_the_headless_service() {
        let sts = build(&model_spec());
        assert_eq!(sts.metadata.name.as_deref(), Some("docs-vllm-m-0123abcd"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("parsing"));
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(
            spec.service_name.as_deref(),
            Some("docs-vllm-m-0123abcd-pods")
        );
        assert_eq!(spec.replicas, Some(2));
    }

    #[test]
    fn is_controlled_by_the_mineru_deployment() {
        let sts = build(&model_spec());
        let owners = sts.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "MineruDeployment");
        assert_eq!(owners[0].uid, "uid-docs");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn pods_carry_the_revision_label_the_selector_matches() {
        let sts = build(&model_spec());
        let spec = sts.spec.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels[labels::REVISION], "m-0123abcd");
        for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(pod_labels.get(key), Some(value), "selector label {key}");
        }
    }

    #[test]
    fn serves_the_model_with_mineru_flags() {
        let sts = build(&model_spec());
        let container = vllm(&sts);
        assert_eq!(
            container.command.as_deref(),
            Some(&["vllm".to_owned(), "serve".to_owned()][..])
        );
        assert_eq!(
            container.args.as_deref().unwrap(),
            [
                "opendatalab/MinerU2.5-2509-1.2B",
                "--served-model-name",
                "opendatalab/MinerU2.5-2509-1.2B",
                "--port",
                "8000",
                "--gpu-memory-utilization",
                "0.5",
                "--logits-processors",
                "mineru_vl_utils:MinerULogitsProcessor",
            ]
        );
    }

    #[test]
    fn optional_flags_follow_the_spec_and_extra_args_come_last() {
        let mut spec = model_spec();
        spec.served_model_name = Some("mineru2.5".into());
        spec.max_model_len = Some(16384);
        spec.logits_processor = false;
        spec.gpus_per_replica = 2;
        spec.extra_args = vec!["--enforce-eager".into()];
        let args = args(&spec);
        assert_eq!(args[2], "mineru2.5");
        assert!(args.windows(2).any(|w| w == ["--max-model-len", "16384"]));
        assert!(
            args.windows(2)
                .any(|w| w == ["--tensor-parallel-size", "2"])
        );
        assert!(!args.iter().any(|a| a == "--logits-processors"));
        assert_eq!(args.last().map(String::as_str), Some("--enforce-eager"));
    }

    #[test]
    fn a_single_gpu_needs_no_tensor_parallelism() {
        assert!(
            !args(&model_spec())
                .iter()
                .any(|a| a == "--tensor-parallel-size")
        );
    }

    #[test]
    fn requests_and_limits_gpus_by_the_configured_resource_name() {
        let mut spec = model_spec();
        spec.gpus_per_replica = 2;
        spec.gpu_resource_name = "amd.com/gpu".into();
        let sts = build(&spec);
        let resources = vllm(&sts).resources.as_ref().unwrap();
        assert_eq!(resources.limits.as_ref().unwrap()["amd.com/gpu"].0, "2");
        assert_eq!(resources.requests.as_ref().unwrap()["amd.com/gpu"].0, "2");
    }

    #[test]
    fn cache_is_an_empty_dir_without_a_cache_spec() {
        let sts = build(&model_spec());
        let volumes = pod(&sts).volumes.as_ref().unwrap();
        let cache = volumes.iter().find(|v| v.name == "cache").unwrap();
        assert!(cache.empty_dir.is_some());
        assert!(sts.spec.as_ref().unwrap().volume_claim_templates.is_none());
        assert_eq!(
            env(vllm(&sts), "HF_HOME").unwrap().value.as_deref(),
            Some("/cache/huggingface")
        );
    }

    #[test]
    fn cache_spec_becomes_a_volume_claim_template() {
        let mut spec = model_spec();
        spec.cache = Some(mineru_crds::ModelCache {
            size: Quantity("50Gi".into()),
            storage_class_name: Some("fast".into()),
        });
        let sts = build(&spec);
        assert!(
            !pod(&sts)
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "cache")
        );
        let claims = sts
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap();
        let claim = claims[0].spec.as_ref().unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("cache"));
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "50Gi"
        );
    }

    #[test]
    fn shared_memory_is_a_memory_backed_empty_dir() {
        let sts = build(&model_spec());
        let dshm = pod(&sts)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "dshm")
            .unwrap();
        assert_eq!(
            dshm.empty_dir.as_ref().unwrap().medium.as_deref(),
            Some("Memory")
        );
        let mount = vllm(&sts)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "dshm")
            .unwrap();
        assert_eq!(mount.mount_path, "/dev/shm");
    }

    #[test]
    fn startup_probe_budget_is_the_startup_timeout() {
        let mut spec = model_spec();
        spec.startup_timeout = "15m5s".parse().unwrap();
        let sts = build(&spec);
        let probe = vllm(&sts).startup_probe.clone().unwrap();
        assert_eq!(probe.http_get.unwrap().path.as_deref(), Some("/health"));
        assert_eq!(probe.period_seconds, Some(10));
        assert_eq!(probe.failure_threshold, Some(91));
    }

    #[test]
    fn readiness_lists_models_and_liveness_checks_health() {
        let sts = build(&model_spec());
        let container = vllm(&sts);
        let readiness = container.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/v1/models"));
        let liveness = container.liveness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/health"));
    }

    #[test]
    fn api_key_comes_from_the_secret_and_readiness_sends_it() {
        let mut spec = model_spec();
        spec.api_key_secret_ref = Some(mineru_crds::SecretKeyRef {
            name: "vllm-key".into(),
            key: "token".into(),
        });
        let sts = build(&spec);
        let container = vllm(&sts);
        let secret = env(container, "VLLM_API_KEY")
            .unwrap()
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("vllm-key", "token")
        );
        let command = container
            .readiness_probe
            .clone()
            .unwrap()
            .exec
            .unwrap()
            .command
            .unwrap();
        assert!(command[2].contains("/v1/models") && command[2].contains("VLLM_API_KEY"));
    }

    #[test]
    fn placement_comes_from_the_spec() {
        let mut spec = model_spec();
        spec.node_selector = BTreeMap::from([("gpu".into(), "a100".into())]);
        spec.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        spec.priority_class_name = Some("gpu-serving".into());
        let sts = build(&spec);
        let pod = pod(&sts);
        assert_eq!(pod.node_selector.as_ref().unwrap()["gpu"], "a100");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("nvidia.com/gpu")
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("gpu-serving"));
    }
}
