//! The CPU tier of one worker revision: a Deployment of mineru-worker.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
            KeyToPath, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use mineru_crds::{Backend, Tier, WorkerSpec};

use super::{Owner, WorkerTemplate, security, with_revision};
use crate::{WORKER_PORT, labels};

/// Directory the API key Secret is mounted in.
const SECRET_DIR: &str = "/var/run/secrets/mineru";
/// File (inside [`SECRET_DIR`]) holding the vLLM API key.
const API_KEY_FILE: &str = "api-key";
/// Longer than the worker's own shutdown (5 s still taking documents while endpoints update,
/// then 30 s of grace), so in-flight documents finish before the kubelet kills the container.
const TERMINATION_GRACE_SECONDS: i64 = 45;

/// The Deployment `<name>-worker-<revision>` running `replicas` workers.
pub fn desired(
    owner: &Owner,
    template: &WorkerTemplate,
    revision: &str,
    replicas: i32,
) -> Deployment {
    let instance = &owner.instance;
    Deployment {
        metadata: owner.meta(
            labels::names::worker(instance, revision),
            labels::common(instance, Tier::Worker, Some(revision)),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels::revision_selector(instance, Tier::Worker, revision)),
                ..LabelSelector::default()
            },
            template: with_revision(pod_template(instance, template), revision),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The worker pod template without its revision label (the revision is a hash of it).
pub fn pod_template(instance: &str, template: &WorkerTemplate) -> PodTemplateSpec {
    let spec = &template.worker;
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(tmp_size_limit(spec)),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(key) = &template.api_key_secret_ref {
        volumes.push(Volume {
            name: "api-key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(key.name.clone()),
                items: Some(vec![KeyToPath {
                    key: key.key.clone(),
                    path: API_KEY_FILE.into(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::common(instance, Tier::Worker, None)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(instance, template)],
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(security::pod()),
            automount_service_account_token: Some(false),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            affinity: spec.affinity.clone(),
            ..PodSpec::default()
        }),
    }
}

/// `mineru-worker serve` pointed at the revision's vLLM Service.
pub fn args(instance: &str, template: &WorkerTemplate) -> Vec<String> {
    let spec = &template.worker;
    let backend = match spec.backend {
        Backend::Vlm => "vlm",
        Backend::Text => "text",
    };
    let mut args = vec![
        "serve".into(),
        "--port".into(),
        WORKER_PORT.to_string(),
        "--backend".into(),
        backend.into(),
        "--server-url".into(),
        labels::names::vllm_url(instance, &template.model_revision),
        "--model-name".into(),
        template.served_model_name.clone(),
        "--max-concurrent-documents".into(),
        spec.max_concurrent_documents.to_string(),
        "--max-file-bytes".into(),
        spec.max_file_bytes.0.clone(),
        "--max-pages".into(),
        spec.max_pages.to_string(),
        "--render-processes".into(),
        render_processes(spec).to_string(),
        "--render-memory".into(),
        format!("{}Mi", RENDER_MEMORY_BYTES >> 20),
    ];
    if spec.job_store.is_none() {
        // The worker's own job store lives in /tmp: bounded, and counted in its size limit.
        args.extend([
            "--job-store-max-bytes".into(),
            format!("{}Mi", EMBEDDED_JOB_STORE_BYTES >> 20),
        ]);
    }
    if template.api_key_secret_ref.is_some() {
        args.extend([
            "--api-key-file".into(),
            format!("{SECRET_DIR}/{API_KEY_FILE}"),
        ]);
    }
    args
}

fn container(instance: &str, template: &WorkerTemplate) -> Container {
    let spec = &template.worker;
    let mut env = vec![
        EnvVar {
            // Metrics carry the revision so gates can compare canary and stable.
            name: "MINERU_REVISION".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{}']", labels::REVISION),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            // The worker's name among those sharing a job store: unique, and the pod's own.
            name: "MINERU_WORKER_ID".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "TMPDIR".into(),
            value: Some("/tmp".into()),
            ..EnvVar::default()
        },
    ];
    if let Some(store) = &spec.job_store {
        // The URL carries a password: from the Secret, never written in the pod spec.
        env.push(EnvVar {
            name: "MINERU_JOB_STORE".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: store.url_secret_ref.name.clone(),
                    key: store.url_secret_ref.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env.extend(spec.env.iter().cloned());

    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    if template.api_key_secret_ref.is_some() {
        mounts.push(VolumeMount {
            name: "api-key".into(),
            mount_path: SECRET_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    Container {
        name: "worker".into(),
        image: Some(spec.image.clone()),
        command: Some(vec!["mineru-worker".into()]),
        args: Some(args(instance, template)),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: WORKER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| default_resources(spec)),
        ),
        volume_mounts: Some(mounts),
        security_context: Some(security::container(true)),
        // The worker's /ready checks its vLLM tier answers with the expected model.
        readiness_probe: Some(http_probe("/ready")),
        liveness_probe: Some(http_probe("/health")),
        ..Container::default()
    }
}

/// What a worker holds besides its documents: the runtime, libpdfium, connection pools.
const BASE_MEMORY_BYTES: u64 = 128 << 20;
/// Per document in progress in the server, besides twice its upload (the upload and its copy on
/// its way to the render subprocesses): the page being cropped (a render is at most 3500 px a
/// side, 36 MiB) and the images encoded from it.
const PAGE_WORKING_SET_BYTES: u64 = 64 << 20;
/// Address space of one render subprocess (`--render-memory`): pdfium, a document's parsed
/// objects and one page's decoded images and bitmap.
const RENDER_MEMORY_BYTES: u64 = 768 << 20;

/// `/v1` uploads and outputs a worker without a shared job store keeps in `/tmp`.
const EMBEDDED_JOB_STORE_BYTES: u64 = 1 << 30;

/// `/tmp` holds each document in progress once (the file the render subprocesses read), the
/// embedded job store of a worker without a shared one, plus room for what else writes there.
fn tmp_size_limit(spec: &WorkerSpec) -> Quantity {
    let upload = spec
        .max_file_bytes
        .0
        .parse::<mineru_protocol::worker::ByteSize>()
        .map_or(0, |size| size.0);
    let documents = u64::try_from(spec.max_concurrent_documents.max(1)).unwrap_or(1);
    let store = if spec.job_store.is_none() {
        EMBEDDED_JOB_STORE_BYTES
    } else {
        0
    };
    let bytes = upload
        .saturating_mul(documents)
        .saturating_add(store)
        .saturating_add(64 << 20);
    Quantity(format!("{}Mi", bytes.div_ceil(1 << 20)))
}

/// Render subprocesses: the CPUs the worker requests (or is limited to), rounded up, at least
/// one and at most one per document it takes.
fn render_processes(spec: &WorkerSpec) -> u64 {
    let resources = spec.resources.as_ref();
    let cpu = |set: Option<&BTreeMap<String, Quantity>>| {
        set.and_then(|set| set.get("cpu")).and_then(|q| cores(&q.0))
    };
    let wanted = cpu(resources.and_then(|r| r.requests.as_ref()))
        .or_else(|| cpu(resources.and_then(|r| r.limits.as_ref())))
        .unwrap_or(1);
    let documents = u64::try_from(spec.max_concurrent_documents.max(1)).unwrap_or(1);
    wanted.clamp(1, documents)
}

/// Whole cores in a CPU quantity (`500m`, `2`, `1.5`), rounded up.
fn cores(quantity: &str) -> Option<u64> {
    match quantity.strip_suffix('m') {
        Some(millis) => millis.parse::<u64>().ok().map(|m| m.div_ceil(1000)),
        None => quantity
            .parse::<f64>()
            .ok()
            .map(|c| c.ceil().max(0.0) as u64),
    }
}

/// Requests and limits when the spec sets none, from the limits the worker is given:
/// `memory = 128Mi + documents × (2 × maxFileBytes + 64Mi) + renderProcesses × 768Mi`,
/// requested for one document and limited at `maxConcurrentDocuments` (with the defaults and
/// one render process, 1160Mi requested, 1952Mi limit), so a worker at capacity is not
/// OOM-killed and the scheduler does not reserve the worst case for every pod. One CPU is
/// requested (one render process) and none is limited: a CPU limit only throttles a render
/// half-way.
fn default_resources(spec: &WorkerSpec) -> ResourceRequirements {
    let upload = spec
        .max_file_bytes
        .0
        .parse::<mineru_protocol::worker::ByteSize>()
        .map_or(0, |size| size.0);
    let per_document = upload
        .saturating_mul(2)
        .saturating_add(PAGE_WORKING_SET_BYTES);
    let renderers = RENDER_MEMORY_BYTES.saturating_mul(render_processes(spec));
    let memory = |documents: u64| {
        let bytes = BASE_MEMORY_BYTES
            .saturating_add(per_document.saturating_mul(documents))
            .saturating_add(renderers);
        // Whole MiB, as people write it.
        Quantity(format!("{}Mi", bytes.div_ceil(1 << 20)))
    };
    let documents = u64::try_from(spec.max_concurrent_documents.max(1)).unwrap_or(1);
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("1".into())),
            ("memory".to_owned(), memory(1)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), memory(documents))])),
        ..ResourceRequirements::default()
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{model_spec, owner, worker_spec};

    fn template() -> WorkerTemplate {
        WorkerTemplate::new(&worker_spec(), &model_spec(), "m-0123abcd")
    }

    fn build(template: &WorkerTemplate) -> Deployment {
        desired(&owner(), template, "w-89abcdef", 3)
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn worker(deployment: &Deployment) -> &Container {
        &pod(deployment).containers[0]
    }

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.windows(2)
            .find(|w| w[0] == name)
            .map(|w| w[1].as_str())
    }

    #[test]
    fn is_named_after_the_revision_with_its_replicas() {
        let deployment = build(&template());
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("docs-worker-w-89abcdef")
        );
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(
            deployment.metadata.owner_references.unwrap()[0].controller,
            Some(true)
        );
    }

    #[test]
    fn pods_carry_the_revision_label_the_selector_matches() {
        let deployment = build(&template());
        let spec = deployment.spec.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels[labels::REVISION], "w-89abcdef");
        assert_eq!(pod_labels[labels::TIER], "worker");
        for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(pod_labels.get(key), Some(value), "selector label {key}");
        }
    }

    #[test]
    fn workers_call_the_vllm_service_of_their_model_revision() {
        let args = args("docs", &template());
        assert_eq!(
            flag(&args, "--server-url"),
            Some("http://docs-vllm-m-0123abcd:8000")
        );
        assert_eq!(
            flag(&args, "--model-name"),
            Some("opendatalab/MinerU2.5-2509-1.2B")
        );
    }

    #[test]
    fn serve_command_carries_the_worker_limits() {
        let mut spec = worker_spec();
        spec.backend = Backend::Text;
        spec.max_concurrent_documents = 8;
        spec.max_pages = 50;
        let args = args(
            "docs",
            &WorkerTemplate::new(&spec, &model_spec(), "m-0123abcd"),
        );
        assert_eq!(&args[..3], ["serve", "--port", "8000"]);
        assert_eq!(flag(&args, "--backend"), Some("text"));
        assert_eq!(flag(&args, "--max-concurrent-documents"), Some("8"));
        assert_eq!(flag(&args, "--max-file-bytes"), Some("100Mi"));
        assert_eq!(flag(&args, "--max-pages"), Some("50"));
        assert_eq!(flag(&args, "--api-key-file"), None);
    }

    #[test]
    fn revision_reaches_the_process_through_the_downward_api() {
        let deployment = build(&template());
        let env = worker(&deployment).env.as_ref().unwrap();
        let revision = env.iter().find(|e| e.name == "MINERU_REVISION").unwrap();
        let field = revision
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field.field_path, "metadata.labels['mineru.dev/revision']");
    }

    fn job_store(name: &str, key: &str) -> mineru_crds::JobStore {
        serde_json::from_value(serde_json::json!({
            "urlSecretRef": {"name": name, "key": key},
            "egress": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}}}],
        }))
        .unwrap()
    }

    #[test]
    fn workers_are_named_after_their_pod_and_read_the_job_store_url_from_its_secret() {
        for (store, expected) in [
            (None, None),
            (
                Some(job_store("mineru-jobs", "url")),
                Some(("mineru-jobs", "url")),
            ),
            (Some(job_store("pg-app", "uri")), Some(("pg-app", "uri"))),
        ] {
            let mut spec = worker_spec();
            spec.job_store = store;
            let deployment = build(&WorkerTemplate::new(&spec, &model_spec(), "m-0123abcd"));
            let container = worker(&deployment);
            let env = container.env.as_ref().unwrap();
            let id = env.iter().find(|e| e.name == "MINERU_WORKER_ID").unwrap();
            assert_eq!(
                id.value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path,
                "metadata.name",
                "each pod its own identity, with or without a shared store"
            );
            let url = env.iter().find(|e| e.name == "MINERU_JOB_STORE");
            let from_secret = url.map(|e| {
                assert_eq!(
                    e.value, None,
                    "the URL carries a password: never in the pod spec"
                );
                let secret = e
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                (secret.name.as_str(), secret.key.as_str())
            });
            assert_eq!(from_secret, expected);
            assert_eq!(
                flag(container.args.as_ref().unwrap(), "--job-store"),
                None,
                "the environment only"
            );
            // Only a worker keeping its own store in /tmp bounds it there.
            let bounded = flag(container.args.as_ref().unwrap(), "--job-store-max-bytes");
            assert_eq!(bounded.is_some(), expected.is_none());
        }
    }

    #[test]
    fn api_key_is_a_read_only_secret_file() {
        let mut model = model_spec();
        model.api_key_secret_ref = Some(mineru_crds::SecretKeyRef {
            name: "vllm-key".into(),
            key: "token".into(),
        });
        let template = WorkerTemplate::new(&worker_spec(), &model, "m-0123abcd");
        let deployment = build(&template);
        let volume = pod(&deployment)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "api-key")
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("vllm-key"));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, "token");
        let mount = worker(&deployment)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "api-key")
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        let args = worker(&deployment).args.clone().unwrap();
        assert_eq!(
            flag(&args, "--api-key-file"),
            Some("/var/run/secrets/mineru/api-key")
        );
    }

    #[test]
    fn runs_unprivileged_on_a_read_only_root_with_a_writable_tmp() {
        let deployment = build(&template());
        let pod_security = pod(&deployment).security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod(&deployment).automount_service_account_token,
            Some(false),
            "a worker parsing hostile PDFs holds no API credentials"
        );
        let security = worker(&deployment).security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let tmp = worker(&deployment)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == "/tmp")
            .unwrap();
        let volume = pod(&deployment)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == tmp.name)
            .unwrap();
        // Each of the 4 documents in progress once (100Mi), the worker's own job store (1Gi,
        // as its flag says), and 64Mi besides.
        let size = volume.empty_dir.as_ref().unwrap().size_limit.as_ref();
        assert_eq!(size.map(|q| q.0.as_str()), Some("1488Mi"));
        let args = worker(&deployment).args.clone().unwrap();
        assert_eq!(flag(&args, "--job-store-max-bytes"), Some("1024Mi"));
    }

    #[test]
    fn without_resources_a_worker_gets_memory_for_its_documents_and_a_cpu() {
        let resources = worker(&build(&template())).resources.clone().unwrap();
        let requests = resources.requests.unwrap();
        let limits = resources.limits.unwrap();
        let spec = &template().worker;
        assert_eq!(spec.max_file_bytes.0, "100Mi");
        // 128Mi + n × (2 × 100Mi + 64Mi) + 1 render process × 768Mi
        assert_eq!(requests["memory"].0, "1160Mi");
        assert_eq!(
            limits["memory"].0,
            format!("{}Mi", 128 + spec.max_concurrent_documents * 264 + 768)
        );
        assert_eq!(requests["cpu"].0, "1");
        assert!(!limits.contains_key("cpu"), "a CPU limit only throttles");
    }

    #[test]
    fn render_processes_follow_the_cpus_asked_for_within_the_documents_taken() {
        let mut spec = template().worker;
        assert_eq!(
            render_processes(&spec),
            1,
            "one CPU is requested by default"
        );
        let with_cpu = |key: &str, cpu: &str| ResourceRequirements {
            limits: (key == "limits")
                .then(|| BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
            requests: (key == "requests")
                .then(|| BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
            ..ResourceRequirements::default()
        };
        for (key, cpu, documents, processes) in [
            ("requests", "2500m", 4, 3),
            ("requests", "1.5", 4, 2),
            ("limits", "3", 4, 3),
            ("requests", "16", 4, 4),
            ("requests", "100m", 4, 1),
        ] {
            spec.resources = Some(with_cpu(key, cpu));
            spec.max_concurrent_documents = documents;
            assert_eq!(render_processes(&spec), processes, "{key} {cpu}");
        }
        spec.resources = Some(with_cpu("requests", "3"));
        let mut template = template();
        template.worker = spec;
        let args = args("docs", &template);
        assert_eq!(flag(&args, "--render-processes"), Some("3"));
        assert_eq!(flag(&args, "--render-memory"), Some("768Mi"));
    }

    #[test]
    fn resources_in_the_spec_are_kept_as_written() {
        let mut template = template();
        let written = ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("3Gi".into()),
            )])),
            ..ResourceRequirements::default()
        };
        template.worker.resources = Some(written.clone());
        assert_eq!(worker(&build(&template)).resources, Some(written));
    }

    #[test]
    fn termination_grace_outlasts_the_workers_own_shutdown_grace() {
        let deployment = build(&template());
        assert!(pod(&deployment).termination_grace_period_seconds.unwrap() > 30);
    }

    #[test]
    fn readiness_is_ready_and_liveness_is_health() {
        let deployment = build(&template());
        let container = worker(&deployment);
        let path = |probe: &Option<Probe>| probe.clone().unwrap().http_get.unwrap().path.unwrap();
        assert_eq!(path(&container.readiness_probe), "/ready");
        assert_eq!(path(&container.liveness_probe), "/health");
    }
}
