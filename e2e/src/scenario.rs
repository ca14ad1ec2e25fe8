//! A rollout scenario as the e2e tests and the demo run it: the control plane with the operator
//! installed as users install it, a Gateway API HTTPRoute, a real Prometheus, both revisions'
//! data planes as local processes (vllm-sim and mineru-worker serve), and a load generator that
//! sends documents in the proportions the HTTPRoute says.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use mineru_crds::{MineruDeployment, Revisions};
use mineru_operator::reconcile::SpecRevisions;
use serde_json::Value;

use crate::{
    controlplane::{ControlPlane, Nodes},
    mineru_api::MineruApi,
    operator::{self, get_json},
    process::Supervised,
    prometheus::Prometheus,
    repo_path,
    stack::{Simulator, Worker, write_service_map},
    wait_until,
};

/// Namespace of the scenario's MineruDeployment.
pub const NAMESPACE: &str = "parsing";
const STABLE_IMAGE: &str = "vllm/vllm-openai:v0.11.0";
const CANARY_IMAGE: &str = "vllm/vllm-openai:v0.11.1";

/// The share of a revision's served requests that failed, over the last minute. Documents the
/// caller got wrong (`client_error`) and operator documents a busy worker turned away
/// (`deferred`) say nothing of the revision, as in the built-in checks.
pub const ERROR_RATIO: &str = r#"sum(rate(mineru_worker_requests_total{namespace="{{namespace}}",revision="{{revision}}",outcome!~"success|client_error|deferred"}[60s])) / sum(rate(mineru_worker_requests_total{namespace="{{namespace}}",revision="{{revision}}",outcome!~"client_error|deferred"}[60s]))"#;

/// How clients reach the workers in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Through the HTTPRoute, in the proportions of its backendRef weights.
    Gateway,
    /// Through the entry Service, evenly over its ready endpoints (replica-ratio routing).
    Replicas,
}

/// Builds a scenario's manifest from the model image and the Prometheus URL.
pub type Template = fn(&str, &str) -> String;

/// The scenario's MineruDeployment: fast steps, Gateway API routing, an error-ratio criterion
/// against stable and an error-spike trigger.
pub fn manifest(model_image: &str, prometheus: &str) -> String {
    let checks = format!(
        r#"      promotionCriteria:
      - name: error-ratio
        query: '{ERROR_RATIO}'
        samplesQuery: 'sum(increase(mineru_worker_requests_total{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}",outcome!~"client_error|deferred"}}[60s]))'
        minSamples: 2
        maxRatioToStable: 1.5
        ratioFloor: 0.05
      rollbackTriggers:
      - name: error-spike
        query: '{ERROR_RATIO}'
        max: 0.5
        for: 0s
"#
    );
    manifest_with_checks(model_image, prometheus, &checks)
}

/// The scenario's fast steps and Gateway API routing, without the built-in checks, judged by
/// `checks` (YAML under `analysis`).
pub fn manifest_with_checks(model_image: &str, prometheus: &str, checks: &str) -> String {
    format!(
        r#"{}
    steps: [{{weight: 10, pause: 6s}}, {{weight: 50, pause: 6s}}, {{weight: 100}}]
    trafficRouting: {{gatewayAPI: {{httpRoute: {{name: mineru}}}}}}
    progressDeadline: 2m
    scaleDownDelay: 2s
    postPromotionWindow: 4s
    analysis:
      prometheus: {{address: "{prometheus}"}}
      interval: 2s
      defaultCriteria: false
{checks}"#,
        spec_head(model_image, 1)
    )
}

/// A MineruDeployment judged by the built-in checks, reading the workers' real metrics: steps
/// of 25%, 50% and 100% with a few seconds' pause each, Gateway API routing, and evidence that
/// decides on tens of documents (a 20x regression caught with 80% power, 5% false fails). The
/// two spike triggers are the built-ins' queries with a `for` of seconds instead of 15 minutes,
/// which the post-promotion window would otherwise last; the distributions of blocks are
/// compared from 5 documents a side (30 by default).
pub fn built_in_manifest(model_image: &str, prometheus: &str) -> String {
    built_ins(model_image, prometheus, Routing::Gateway, "")
}

/// The same with replica-ratio routing over two workers.
pub fn built_in_replica_manifest(model_image: &str, prometheus: &str) -> String {
    built_ins(model_image, prometheus, Routing::Replicas, "")
}

/// How many golden documents `built_in_quality_manifest` compares in its first step.
pub const GOLDEN_DOCUMENTS_PER_STEP: usize = 8;

/// The built-in checks with Gateway routing, and a quality gate on the first step: a round of
/// `GOLDEN_DOCUMENTS_PER_STEP` golden documents labelled `golden=docs` (`golden_documents`).
pub fn built_in_quality_manifest(model_image: &str, prometheus: &str) -> String {
    let quality = format!(
        "      quality: {{goldenDocuments: {{configMapLabels: {{golden: docs}}}}, documentsPerStep: [{GOLDEN_DOCUMENTS_PER_STEP}]}}\n"
    );
    built_ins(model_image, prometheus, Routing::Gateway, &quality)
}

/// `quality` is YAML under `analysis` (or nothing).
fn built_ins(model_image: &str, prometheus: &str, routing: Routing, quality: &str) -> String {
    let (replicas, routing) = match routing {
        Routing::Gateway => (1, "{gatewayAPI: {httpRoute: {name: mineru}}}"),
        Routing::Replicas => (2, "{replicas: {}}"),
    };
    format!(
        r#"{}
    steps:
    - {{weight: 25, pause: 5s, maxDuration: 10m}}
    - {{weight: 50, pause: 5s, maxDuration: 10m}}
    - {{weight: 100, maxDuration: 10m}}
    trafficRouting: {routing}
    progressDeadline: 2m
    scaleDownDelay: 60s
    postPromotionWindow: 4s
    analysis:
      prometheus: {{address: "{prometheus}"}}
      interval: 2s
      evidence: {{confidence: 0.95, power: 0.8, regression: 20, minDocuments: 5}}
{quality}      rollbackTriggers:
      - name: error-spike
        proportion:
          bad: 'sum(increase(mineru_worker_requests_total{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}",outcome=~"error|timeout|rejected"}}[{{{{window}}}}]))'
          total: 'sum(increase(mineru_worker_requests_total{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}",outcome!~"client_error|deferred"}}[{{{{window}}}}]))'
        maxRatioToStable: 1.2
        ratioFloor: 0.01
        for: 4s
      - name: latency-spike
        quantile:
          q: 0.95
          buckets: 'sum by (le) (increase(mineru_worker_request_duration_seconds_bucket{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}"}}[{{{{window}}}}]))'
        max: 120
        for: 4s
"#,
        spec_head(model_image, replicas)
    )
}

/// The start of every scenario manifest, down to `rollout:`: the object, both tiers' images
/// and the worker replicas.
pub fn spec_head(model_image: &str, worker_replicas: i32) -> String {
    format!(
        r#"apiVersion: mineru.dev/v1alpha1
kind: MineruDeployment
metadata: {{name: docs, namespace: {NAMESPACE}}}
spec:
  model: {{image: "{model_image}", model: opendatalab/MinerU2.5-2509-1.2B, servedModelName: mineru}}
  worker: {{image: registry.example/mineru-worker:0.1.0, replicas: {worker_replicas}}}
  rollout:"#
    )
}

/// The legacy Service a migration scenario moves traffic from; its worker reports
/// `revision="legacy"`, as relabeling would make a real one's series.
pub const LEGACY_SERVICE: &str = "mineru-legacy";

/// A manifest whose first rollout migrates from [`LEGACY_SERVICE`].
pub fn with_legacy_backend(manifest: &str) -> String {
    manifest.replace(
        "httpRoute: {name: mineru}}",
        &format!(
            "httpRoute: {{name: mineru}}, legacyBackend: {{name: {LEGACY_SERVICE}, port: 8000}}}}"
        ),
    )
}

/// Whether a template's workers use the text backend (no vLLM).
fn text_backend(template: Template) -> bool {
    let md: MineruDeployment =
        serde_yaml::from_str(&template(STABLE_IMAGE, "http://prometheus.invalid")).unwrap();
    md.spec.worker.backend == mineru_crds::Backend::Text
}

/// The revisions a manifest makes (hashes of its pod templates).
pub fn revisions_of(manifest: &str) -> Revisions {
    let md: MineruDeployment = serde_yaml::from_str(manifest).unwrap();
    SpecRevisions::of("docs", &md.spec).unwrap().revisions
}

/// The user's HTTPRoute, sending everything to `backend` until the operator sets weights.
fn route(backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mineru, namespace: {NAMESPACE}}}
spec:
  parentRefs: [{{name: public}}]
  rules:
  - backendRefs: [{{name: {backend}, port: 8000}}]
"
    )
}

/// Everything one scenario runs: the cluster, Prometheus, both revisions' processes, the
/// operator, and a load generator that follows the HTTPRoute's weights (or the entry Service's
/// endpoints).
pub struct Scenario {
    pub plane: ControlPlane,
    pub prometheus: Prometheus,
    pub stable: Revisions,
    pub canary: Revisions,
    pub canary_manifest: String,
    template: Template,
    operator_args: Vec<String>,
    restart_crashed: bool,
    operator: Option<Supervised>,
    /// How often the operator was started again after it stopped on its own.
    crash_restarts: u32,
    service_map: std::path::PathBuf,
    data_plane: Vec<(Simulator, Worker)>,
    _legacy_api: Option<MineruApi>,
    pub load: Load,
}

/// What the legacy Service of a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Legacy {
    /// A worker and its vLLM reporting revision `legacy`, as relabeling would make a real
    /// MinerU 2/3 Service's series.
    Worker,
    /// MinerU 4's own `mineru-api` (flash tier): it speaks only `/v1` and exports no metrics.
    Mineru4,
}

/// What a scenario runs and how it is loaded.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The MineruDeployment.
    pub template: Template,
    /// How the load reaches the workers.
    pub routing: Routing,
    /// A legacy MinerU Service serves the route first, for a migration.
    pub legacy: Option<Legacy>,
    /// Concurrent clients, and the pause each takes between documents.
    pub senders: usize,
    /// Every other document goes through MinerU 4's `POST /v1/file_parse` instead of the
    /// legacy `POST /file_parse`, as a mix of MinerU 4 and MinerU 2 clients would send.
    pub v1_clients: bool,
    pub pause: Duration,
    /// What the canary's vLLM answers instead of the stable one's (a `vllm-sim` scenario).
    pub canary_scenario: Option<&'static str>,
    /// Extra flags of the operator.
    pub operator_args: Vec<String>,
    /// An operator that stops on its own is started again under the same identity, as a
    /// kubelet restarts a crashed container, instead of failing the test.
    pub restart_crashed_operator: bool,
}

impl Default for Setup {
    /// The orchestration scenarios: the fixed-criteria manifest, Gateway routing, enough
    /// clients that a 10% canary sees requests in every analysis window on a busy machine.
    fn default() -> Self {
        Setup {
            template: manifest,
            routing: Routing::Gateway,
            legacy: None,
            senders: 3,
            v1_clients: false,
            pause: Duration::from_millis(100),
            canary_scenario: None,
            operator_args: Vec::new(),
            restart_crashed_operator: false,
        }
    }
}

impl Setup {
    /// Low document traffic (about one document a second), judged by the built-in checks.
    pub fn built_ins(routing: Routing) -> Setup {
        Setup {
            template: match routing {
                Routing::Gateway => built_in_manifest,
                Routing::Replicas => built_in_replica_manifest,
            },
            routing,
            senders: 1,
            pause: Duration::from_millis(800),
            ..Setup::default()
        }
    }
}

impl Scenario {
    /// Brings everything up and the operator with it; `nodes` sizes the GPU pool.
    pub fn start(test: &str, nodes: &Nodes) -> Scenario {
        Scenario::start_with(test, nodes, Setup::default())
    }

    /// The same, with a legacy MinerU Service serving the route first, for a migration.
    pub fn start_migration(test: &str, nodes: &Nodes) -> Scenario {
        let setup = Setup {
            legacy: Some(Legacy::Worker),
            ..Setup::default()
        };
        Scenario::start_with(test, nodes, setup)
    }

    pub fn start_with(test: &str, nodes: &Nodes, setup: Setup) -> Scenario {
        let plane = ControlPlane::start(test, nodes).unwrap();
        operator::install(&plane).unwrap();
        plane.install_gateway_api().unwrap();
        plane.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
        let legacy = setup.legacy;
        let first_backend = if legacy.is_some() {
            LEGACY_SERVICE
        } else {
            "docs"
        };
        plane.apply(&route(first_backend)).unwrap();

        // Revisions are hashes of the pod templates, so the test knows them before applying.
        let logs = plane.dir().join("logs");
        let placeholder = "http://prometheus.invalid";
        let template = setup.template;
        let stable = revisions_of(&template(STABLE_IMAGE, placeholder));
        let canary = revisions_of(&template(CANARY_IMAGE, placeholder));
        let text_backend = text_backend(template);
        let mut data_plane = Vec::new();
        let mut legacy_api = None;
        let mut services = BTreeMap::new();
        let mut targets = Vec::new();
        let canary_scenario = setup.canary_scenario.map(|yaml| {
            let path = plane.dir().join("canary-scenario.yaml");
            std::fs::write(&path, yaml).unwrap();
            path.to_string_lossy().into_owned()
        });
        for revisions in [&stable, &canary] {
            let extra: Vec<&str> = match &canary_scenario {
                Some(path) if revisions == &canary => vec!["--scenario", path],
                _ => Vec::new(),
            };
            let simulator =
                Simulator::start(&revisions.model_revision, "mineru", &extra, &logs).unwrap();
            // A worker as the template's backend says: the text backend needs no vLLM.
            let worker = if text_backend {
                Worker::start_text(&revisions.worker_revision, &logs)
            } else {
                Worker::start(
                    &revisions.worker_revision,
                    &simulator.url(),
                    "mineru",
                    &logs,
                )
            }
            .unwrap();
            services.insert(
                format!("{NAMESPACE}/docs-vllm-{}", revisions.model_revision),
                simulator.url(),
            );
            services.insert(
                format!("{NAMESPACE}/docs-worker-{}", revisions.worker_revision),
                worker.url(),
            );
            targets.push(simulator.target(NAMESPACE));
            targets.push(worker.target(NAMESPACE));
            data_plane.push((simulator, worker));
        }
        if legacy.is_some() {
            plane
                .kubectl(&[
                    "create",
                    "service",
                    "clusterip",
                    LEGACY_SERVICE,
                    "--tcp=8000:8000",
                    "-n",
                    NAMESPACE,
                ])
                .unwrap();
        }
        match legacy {
            Some(Legacy::Worker) => {
                let simulator = Simulator::start("legacy", "mineru", &[], &logs).unwrap();
                let worker = Worker::start("legacy", &simulator.url(), "mineru", &logs).unwrap();
                services.insert(format!("{NAMESPACE}/{LEGACY_SERVICE}"), worker.url());
                targets.push(worker.target(NAMESPACE));
                data_plane.push((simulator, worker));
            }
            Some(Legacy::Mineru4) => {
                let api = MineruApi::start_flash().unwrap();
                services.insert(format!("{NAMESPACE}/{LEGACY_SERVICE}"), api.url());
                legacy_api = Some(api);
            }
            None => {}
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let prometheus = runtime
            .block_on(Prometheus::start(
                &plane.dir().join("prometheus"),
                &targets,
                Duration::from_secs(1),
            ))
            .unwrap();
        let service_map = write_service_map(&plane.dir().join("services.json"), &services).unwrap();
        let workers: BTreeMap<String, String> = services
            .iter()
            .filter_map(|(key, url)| {
                key.strip_prefix(&format!("{NAMESPACE}/"))
                    .map(|s| (s.to_owned(), url.clone()))
            })
            .filter(|(service, _)| service.starts_with("docs-worker-") || service == LEGACY_SERVICE)
            .collect();
        let load = Load::start(&plane, workers, &setup);
        let canary_manifest = template(CANARY_IMAGE, prometheus.url());
        let mut scenario = Scenario {
            template,
            operator_args: setup.operator_args.clone(),
            restart_crashed: setup.restart_crashed_operator,
            operator: None,
            crash_restarts: 0,
            service_map,
            prometheus,
            stable,
            canary,
            canary_manifest,
            data_plane,
            _legacy_api: legacy_api,
            load,
            plane,
        };
        scenario.restart_operator("operator-0");
        scenario
    }

    /// Golden documents for the quality gate: the sample twice, in two ConfigMaps labelled
    /// `golden=docs` (`golden-a/a.pdf`, `golden-b/b.pdf`).
    pub fn create_golden_documents(&self) {
        let sample = repo_path("examples/documents/sample.pdf");
        for (config_map, key) in [("golden-a", "a.pdf"), ("golden-b", "b.pdf")] {
            let file = format!("--from-file={key}={}", sample.display());
            self.plane
                .kubectl(&["create", "configmap", config_map, &file, "-n", NAMESPACE])
                .unwrap();
            self.plane
                .kubectl(&[
                    "label",
                    "configmap",
                    config_map,
                    "golden=docs",
                    "-n",
                    NAMESPACE,
                ])
                .unwrap();
        }
    }

    /// From now on the canary's vLLM answers every inference request with 503.
    pub fn fail_canary_vllm(&self) {
        self.fail_canary_vllm_at(1.0);
    }

    pub fn restart_operator(&mut self, name: &str) {
        if let Some(mut old) = self.operator.take() {
            old.kill();
        }
        self.operator = Some(self.start_operator(name));
    }

    /// Another operator replica, as the scenario runs its own, beside it.
    pub fn start_operator(&self, name: &str) -> Supervised {
        self.start_operator_logged(name, name)
    }

    fn start_operator_logged(&self, identity: &str, log: &str) -> Supervised {
        let args: Vec<&str> = self.operator_args.iter().map(String::as_str).collect();
        operator::start_logged(&self.plane, identity, log, Some(&self.service_map), &args).unwrap()
    }

    /// Starts the scenario's operator again, under the same identity (so it takes its Lease
    /// back at once, as a restarted pod would), if it has stopped on its own.
    fn restart_crashed_operator(&mut self) {
        let operator = self
            .operator
            .as_mut()
            .expect("the scenario runs an operator");
        if operator.ensure_running().is_ok() {
            return;
        }
        let identity = operator
            .name()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.crash_restarts += 1;
        let log = format!("{identity}.{}", self.crash_restarts);
        self.operator = Some(self.start_operator_logged(&identity, &log));
    }

    /// How often a crashed operator was started again.
    pub fn crash_restarts(&self) -> u32 {
        self.crash_restarts
    }

    /// The process id of the scenario's operator.
    pub fn operator_pid(&self) -> u32 {
        self.operator
            .as_ref()
            .expect("the scenario runs an operator")
            .pid()
    }

    /// The scenario's own operator replica, handed over (its liveness no longer checked).
    pub fn take_operator(&mut self) -> Supervised {
        self.operator.take().expect("the scenario runs an operator")
    }

    pub fn apply(&self, manifest: &str) {
        self.plane.apply(manifest).unwrap();
    }

    /// The HTTPRoute's weights now, as `service=weight ...`.
    pub fn route_weights(&self) -> String {
        self.plane
            .kubectl(&ROUTE_WEIGHTS)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Applies the spec that changes the model: the canary's revisions.
    pub fn apply_canary(&self) {
        self.apply(&self.canary_manifest);
    }

    /// Applies the canary spec and waits until the canary takes its first traffic.
    pub fn begin_canary(&mut self) {
        self.apply_canary();
        self.wait_for("the canary's first step", Duration::from_secs(120), |s| {
            s["canaryWeight"].as_i64().is_some_and(|w| w > 0)
        });
    }

    /// Panics with the operator's last log lines if it has died (or starts it again, if the
    /// scenario restarts a crashed operator).
    pub fn ensure_operator_running(&mut self) {
        if self.restart_crashed && self.operator.is_some() {
            self.restart_crashed_operator();
        } else if let Some(operator) = &mut self.operator {
            operator.ensure_running().expect("the operator stopped");
        }
    }

    /// The MineruDeployment's status now.
    pub fn status(&mut self) -> Value {
        self.ensure_operator_running();
        get_json(&self.plane, &["get", "mdep", "docs", "-n", NAMESPACE]).unwrap()["status"].clone()
    }

    pub fn wait_for(
        &mut self,
        what: &str,
        budget: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        wait_until(what, budget, || {
            let status = self.status();
            Ok(done(&status).then_some(status))
        })
        .unwrap_or_else(|error| panic!("{error}\nlast status: {}", self.status()))
    }

    /// Fails the canary vLLM's inference calls at `rate` (503s), from now on: with the
    /// worker's retries, a share of the canary's documents fails.
    pub fn fail_canary_vllm_at(&self, rate: f64) {
        self.canary_vllm_faults(serde_json::json!({"error_rate": rate}));
    }

    /// Delays every answer of the canary vLLM by `latency`, from now on.
    pub fn slow_canary_vllm(&self, latency: Duration) {
        self.canary_vllm_faults(serde_json::json!({"latency_ms": latency.as_millis() as u64}));
    }

    fn canary_vllm_faults(&self, faults: serde_json::Value) {
        self.data_plane[1].0.set_faults(faults).unwrap();
    }

    /// Sets a `mineru.dev/*` command annotation, as `kubectl mineru` does.
    pub fn command(&self, key: &str) {
        self.plane
            .kubectl(&[
                "annotate",
                "mdep",
                "docs",
                "-n",
                NAMESPACE,
                "--overwrite",
                &format!("{key}=true"),
            ])
            .unwrap();
    }

    /// Creates a ConfigMap of golden documents, `count` copies of the sample PDF, labelled
    /// `golden=docs`.
    pub fn golden_documents(&self, count: usize) {
        let pdf = repo_path("examples/documents/sample.pdf");
        let files: Vec<String> = (0..count)
            .map(|i| format!("--from-file=doc-{i}.pdf={}", pdf.display()))
            .collect();
        let mut args = vec!["create", "configmap", "golden", "-n", NAMESPACE];
        args.extend(files.iter().map(String::as_str));
        self.plane.kubectl(&args).unwrap();
        self.plane
            .kubectl(&[
                "label",
                "configmap",
                "golden",
                "-n",
                NAMESPACE,
                "golden=docs",
            ])
            .unwrap();
    }

    /// Follows the rollout until it is rolled back, failing if the canary is ever promoted:
    /// the status then, and the heaviest weight the canary reached.
    pub fn until_rolled_back(&mut self) -> (Value, i64) {
        let canary = (
            self.canary.model_revision.clone(),
            self.canary.worker_revision.clone(),
        );
        let mut heaviest = 0;
        loop {
            let status = self.status();
            heaviest = heaviest.max(status["canaryWeight"].as_i64().unwrap_or(0));
            if status["lastRollback"].is_object() {
                return (status, heaviest);
            }
            assert_ne!(
                pair(&status, "stable"),
                Some(canary.clone()),
                "the canary was promoted: {status}"
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn settle_on_stable(&mut self) {
        let stable = self.stable.clone();
        let manifest = (self.template)(STABLE_IMAGE, self.prometheus.url());
        self.apply(&manifest);
        self.wait_for(
            "the first revision to be Healthy",
            Duration::from_secs(90),
            |s| {
                s["phase"] == "Healthy"
                    && s["stable"]["modelRevision"] == stable.model_revision.as_str()
            },
        );
    }
}

/// Asserts that no step of the 10 → 50 → 100 rollout was announced twice, and the promotion
/// once. Events are at most once across a kill (ADR 0013): these tests kill the operator just
/// as a step begins, between the status that records the step and the Events that announce
/// it, so a step's Event may be missing; that every step happened exactly once is shown by the
/// notifications in `e2e/tests/crashes.rs`.
pub fn assert_no_step_announced_twice(plane: &ControlPlane) {
    let notes = event_notes(plane);
    let count = |step: &str| notes.lines().filter(|line| line.starts_with(step)).count();
    for step in [
        "CanaryReady: canary ",
        "StepCompleted: step 1/3 (10%) completed: gates passed; now 50%",
        "StepCompleted: step 2/3 (50%) completed: gates passed; now 100%",
    ] {
        assert!(count(step) <= 1, "{step}\n{notes}");
    }
    assert_eq!(count("Promoted: promoted "), 1, "{notes}");
}

/// The Events of the scenario's namespace as `reason: note` lines.
pub fn event_notes(plane: &ControlPlane) -> String {
    plane
        .kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}",
        ])
        .unwrap()
}

/// The pods behind the entry Service's EndpointSlices.
pub fn entry_endpoints(plane: &ControlPlane) -> Vec<String> {
    plane
        .kubectl(&ENTRY_ENDPOINTS)
        .unwrap()
        .split_whitespace()
        .filter_map(|pair| pair.split_once('=').map(|(pod, _)| pod.to_owned()))
        .collect()
}

/// The status entry of a check, by name and kind.
pub fn check<'a>(status: &'a Value, name: &str, kind: &str) -> Option<&'a Value> {
    status["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name && c["kind"] == kind)
}

/// A status revision pair (`stable`, `canary`) as (model, worker).
pub fn pair(status: &Value, key: &str) -> Option<(String, String)> {
    let revisions = status.get(key)?;
    Some((
        revisions["modelRevision"].as_str()?.to_owned(),
        revisions["workerRevision"].as_str()?.to_owned(),
    ))
}

/// kubectl arguments printing the HTTPRoute's weights as `service=weight ...`.
const ROUTE_WEIGHTS: [&str; 7] = [
    "get",
    "httproute",
    "mineru",
    "-n",
    NAMESPACE,
    "-o",
    "jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}",
];

/// kubectl arguments printing the entry Service's endpoints as `pod=ready ...`.
const ENTRY_ENDPOINTS: [&str; 9] = [
    "get",
    "endpointslices",
    "-n",
    NAMESPACE,
    "-l",
    "kubernetes.io/service-name=docs",
    "-o",
    "jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready} {end}",
    "--ignore-not-found",
];

/// The backends and their weights as `routing` spreads requests: the HTTPRoute's weights, or
/// one per ready endpoint of the entry Service (a pod `docs-worker-<revision>-<rs>-<id>` is
/// served by its revision's worker).
fn backends(routing: Routing, kubectl_output: &str) -> Vec<(String, u32)> {
    let pairs = kubectl_output
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='));
    match routing {
        Routing::Gateway => pairs
            .map(|(name, weight)| (name.to_owned(), weight.parse().unwrap_or(1)))
            .collect(),
        Routing::Replicas => {
            let mut weights: BTreeMap<String, u32> = BTreeMap::new();
            for (pod, _) in pairs.filter(|(_, ready)| *ready == "true") {
                let mut parts: Vec<&str> = pod.split('-').collect();
                parts.truncate(parts.len().saturating_sub(2));
                *weights.entry(parts.join("-")).or_default() += 1;
            }
            weights.into_iter().collect()
        }
    }
}

/// Sends `/file_parse` requests to the worker Services in the proportions the HTTPRoute says,
/// as a Gateway would, or evenly over the entry Service's endpoints, as a Service would;
/// counts the answers per revision.
pub struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<BTreeMap<String, (u32, u32)>>>,
    v1_successes: Arc<Mutex<BTreeMap<String, u32>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(plane: &ControlPlane, workers: BTreeMap<String, String>, setup: &Setup) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let weights: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let answers: Arc<Mutex<BTreeMap<String, (u32, u32)>>> = Arc::default();
        let v1_successes: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let kubeconfig = plane.admin_kubeconfig();
        let kubectl = plane.bin().join("kubectl");
        let routing = setup.routing;
        let route_reader = {
            let (stop, weights) = (stop.clone(), weights.clone());
            thread::spawn(move || {
                let query: &[&str] = match routing {
                    Routing::Gateway => &ROUTE_WEIGHTS,
                    Routing::Replicas => &ENTRY_ENDPOINTS,
                };
                while !stop.load(Ordering::Relaxed) {
                    let output = std::process::Command::new(&kubectl)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(query)
                        .output();
                    if let Ok(output) = output {
                        let text = String::from_utf8_lossy(&output.stdout).into_owned();
                        *weights.lock().unwrap() = backends(routing, &text);
                    }
                    thread::sleep(Duration::from_millis(300));
                }
            })
        };
        let workers = Arc::new(workers);
        let (pause, v1_clients) = (setup.pause, setup.v1_clients);
        // A MinerU 4 legacy Service is asked as MinerU 4 clients ask it.
        let v1_only = setup.legacy == Some(Legacy::Mineru4);
        let text = text_backend(setup.template);
        let backend = if text { "text" } else { "vlm" };
        let senders: Vec<_> = (0..setup.senders)
            .map(|_| {
                let (stop, weights, answers) = (stop.clone(), weights.clone(), answers.clone());
                let v1_successes = v1_successes.clone();
                let workers = workers.clone();
                let pdf = std::fs::read(repo_path("examples/documents/sample.pdf")).unwrap();
                thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    // Smooth weighted round robin (as nginx balances): every backend gains its weight
                    // each request and the one furthest ahead is picked, so a 10% canary gets every
                    // tenth request rather than a burst after ninety stable ones.
                    let mut credit: BTreeMap<String, i64> = BTreeMap::new();
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let current = weights.lock().unwrap().clone();
                        let total: i64 = current.iter().map(|(_, w)| i64::from(*w)).sum();
                        if total == 0 {
                            thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                        credit.retain(|name, _| current.iter().any(|(service, _)| service == name));
                        for (service, weight) in &current {
                            *credit.entry(service.clone()).or_default() += i64::from(*weight);
                        }
                        let service = credit
                            .iter()
                            .max_by_key(|(_, credit)| **credit)
                            .map(|(service, _)| service.clone())
                            .expect("weights are not empty");
                        *credit.get_mut(&service).expect("picked from credit") -= total;
                        let Some(url) = workers.get(&service) else {
                            thread::sleep(Duration::from_millis(100));
                            continue;
                        };
                        let part = reqwest::blocking::multipart::Part::bytes(pdf.clone())
                            .file_name("sample.pdf");
                        let form = reqwest::blocking::multipart::Form::new().part("files", part);
                        sent += 1;
                        let legacy_v1 = v1_only && service == LEGACY_SERVICE;
                        let v1 = legacy_v1 || (v1_clients && sent.is_multiple_of(2));
                        let request = if v1 {
                            // A MinerU 4 client: the job runs on the worker the route chose.
                            let tier = if legacy_v1 || text {
                                "flash"
                            } else {
                                "standard"
                            };
                            client
                                .post(format!("{url}/v1/file_parse?tier={tier}"))
                                .multipart(form)
                        } else {
                            client
                                .post(format!("{url}/file_parse"))
                                .multipart(form.text("backend", backend))
                        };
                        let ok = request
                            .send()
                            .is_ok_and(|response| response.status().is_success());
                        let revision = service.trim_start_matches("docs-worker-").to_owned();
                        if ok && v1 {
                            *v1_successes
                                .lock()
                                .unwrap()
                                .entry(revision.clone())
                                .or_default() += 1;
                        }
                        let mut answers = answers.lock().unwrap();
                        let entry = answers.entry(revision).or_default();
                        if ok {
                            entry.0 += 1;
                        } else {
                            entry.1 += 1;
                        }
                        drop(answers);
                        thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            v1_successes,
            threads: std::iter::once(route_reader).chain(senders).collect(),
        }
    }

    /// (successes, failures) seen by a worker revision.
    /// Documents a worker revision parsed for MinerU 4 clients (`/v1/file_parse`).
    pub fn v1_successes(&self, revision: &str) -> u32 {
        self.v1_successes
            .lock()
            .unwrap()
            .get(revision)
            .copied()
            .unwrap_or_default()
    }

    pub fn answers(&self, revision: &str) -> (u32, u32) {
        self.answers
            .lock()
            .unwrap()
            .get(revision)
            .copied()
            .unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Scenario {
    /// Follows the rollout until the canary is stable, recording (step, weight) each time a
    /// step begins and killing the operator right then.
    pub fn wait_for_steps(
        &mut self,
        seen: &mut Vec<(i64, i64)>,
        restarts: &mut u32,
        canary: &Revisions,
    ) -> Value {
        let budget = Duration::from_secs(240);
        let deadline = std::time::Instant::now() + budget;
        loop {
            let status = self.status();
            let promoted = pair(&status, "stable")
                == Some((
                    canary.model_revision.clone(),
                    canary.worker_revision.clone(),
                ));
            if let (Some(step), Some(weight)) = (
                status["currentStep"].as_i64(),
                status["canaryWeight"].as_i64(),
            ) && status["canary"].is_object()
                && weight > 0
                && seen.last().map(|(s, _)| *s) != Some(step)
            {
                seen.push((step, weight));
                *restarts += 1;
                self.restart_operator(&format!("operator-{restarts}"));
            }
            if promoted && status["phase"] == "Healthy" {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no promotion within {budget:?}; last status: {status}"
            );
            thread::sleep(Duration::from_millis(300));
        }
    }
}
