//! The Helm chart with the real helm binary: it lints, its optional PodMonitor scrapes the pods
//! the operator builds (selector, port) with the labels the built-in gates query, its roles
//! grant exactly the access the code declares, cluster-wide or per namespace, its schema refuses
//! bad values by name, the operator accepts every flag it passes, and with every optional part
//! on, in either mode, a real API server accepts it under strict field validation.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use mineru_crds::MineruDeployment;
use mineru_e2e::{
    controlplane::{ControlPlane, KUBERNETES_VERSION, Nodes, OPERATOR_NAMESPACE, toolchain},
    operator::{install_monitoring_crds, render_chart, render_notes, wait_established},
    repo_path, workspace_binary,
};
use mineru_operator::{
    rbac::{API_ACCESS, Scope},
    reconcile::{Owner, SpecRevisions, deployment, statefulset},
};
use serde_json::Value;

fn helm(args: &[&str]) -> String {
    let output = Command::new(toolchain().unwrap().bin.join("helm"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The pod templates of both tiers for the minimal example.
fn pod_templates() -> Vec<PodTemplateSpec> {
    let mut md: MineruDeployment =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("examples/minimal.yaml")).unwrap())
            .unwrap();
    md.metadata.uid = Some("0000".into());
    let owner = Owner::of(&md).unwrap();
    let spec = SpecRevisions::of("docs", &md.spec).unwrap();
    let sts = statefulset::desired(&owner, &md.spec.model, &spec.revisions.model_revision, 1);
    let workers = deployment::desired(
        &owner,
        &spec.worker_template,
        &spec.revisions.worker_revision,
        1,
    );
    vec![sts.spec.unwrap().template, workers.spec.unwrap().template]
}

#[test]
fn the_chart_lints_and_its_pod_monitor_scrapes_both_tiers_for_the_gates() {
    let chart = repo_path("charts/mineru-operator");
    let chart = chart.to_str().unwrap();
    helm(&["lint", chart, "--kube-version", KUBERNETES_VERSION]);

    helm(&everything_enabled(&[
        "lint",
        chart,
        "--kube-version",
        KUBERNETES_VERSION,
    ]));

    let default = helm(&["template", "m", chart, "--kube-version", KUBERNETES_VERSION]);
    for kind in ["PodMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"] {
        assert!(
            !default.contains(&format!("kind: {kind}")),
            "{kind}: off by default"
        );
    }

    let rendered = helm(&[
        "template",
        "m",
        chart,
        "--kube-version",
        KUBERNETES_VERSION,
        "--set",
        "podMonitor.enabled=true",
        "--show-only",
        "templates/podmonitor.yaml",
    ]);
    let monitor: Value = serde_yaml::from_str(&rendered).unwrap();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    for template in pod_templates() {
        let labels = template.metadata.unwrap().labels.unwrap();
        for (key, value) in selector {
            assert_eq!(labels.get(key).map(String::as_str), value.as_str(), "{key}");
        }
        assert!(labels.contains_key("mineru.dev/revision"));
        let ports: Vec<_> = template.spec.unwrap().containers[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone())
            .collect();
        assert!(
            ports
                .iter()
                .any(|p| Some(p.as_str()) == endpoint["port"].as_str()),
            "{ports:?}"
        );
    }
    let relabeled: Vec<_> = endpoint["relabelings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sourceLabels"][0].as_str().unwrap_or_default().to_owned(),
                r["targetLabel"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(relabeled.contains(&(
        "__meta_kubernetes_pod_label_mineru_dev_revision".to_owned(),
        "revision".to_owned()
    )));
    assert!(relabeled.contains(&(
        "__meta_kubernetes_namespace".to_owned(),
        "namespace".to_owned()
    )));
}

/// (group, resource) → verbs.
type Grants = BTreeMap<(String, String), BTreeSet<String>>;

/// The grants of a rendered Role or ClusterRole.
fn grants_of(role: &Value) -> Grants {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let mut grants = Grants::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let verbs = strings(&rule["verbs"]);
                assert!(
                    group != "*" && resource != "*" && !verbs.iter().any(|v| v == "*"),
                    "a wildcard in {group}/{resource}: {verbs:?}"
                );
                grants
                    .entry((group.clone(), resource))
                    .or_default()
                    .extend(verbs);
            }
        }
    }
    grants
}

/// What the code declares it uses in `scopes`.
fn code_grants(scopes: &[Scope]) -> Grants {
    let mut grants = Grants::new();
    for access in API_ACCESS.iter().filter(|a| scopes.contains(&a.scope)) {
        grants
            .entry((access.group.to_owned(), access.resource.to_owned()))
            .or_default()
            .extend(access.verbs.iter().map(|v| (*v).to_owned()));
    }
    grants
}

/// Every document of the chart rendered with `sets`, by (kind, namespace, name).
fn rendered(sets: &[&str]) -> BTreeMap<(String, String, String), Value> {
    let args: Vec<&str> = sets.iter().flat_map(|set| ["--set", set]).collect();
    documents_of(&args)
}

/// The documents of a rendered manifest, by (kind, namespace, name).
fn documents(manifest: &str) -> BTreeMap<(String, String, String), Value> {
    // Split at `---` lines, keeping every line break: a block scalar (a dashboard) at the end of
    // a document keeps its last one.
    let mut split = vec![String::new()];
    for line in manifest.lines() {
        if line == "---" {
            split.push(String::new());
        } else {
            let document = split.last_mut().unwrap();
            document.push_str(line);
            document.push('\n');
        }
    }
    split
        .iter()
        .filter_map(|document| serde_yaml::from_str::<Value>(document).ok())
        .filter(|object| object.is_object())
        .map(|object| {
            let field = |pointer: &str| {
                object
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            (
                (
                    field("/kind"),
                    field("/metadata/namespace"),
                    field("/metadata/name"),
                ),
                object,
            )
        })
        .collect()
}

fn role<'a>(
    documents: &'a BTreeMap<(String, String, String), Value>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> &'a Value {
    documents
        .get(&(kind.to_owned(), namespace.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} in {:?}", documents.keys()))
}

#[test]
fn the_roles_grant_exactly_what_the_code_uses_in_either_mode() {
    // Cluster-wide: one ClusterRole with everything, bound to the ServiceAccount.
    let cluster = rendered(&[]);
    assert_eq!(
        grants_of(role(&cluster, "ClusterRole", "", "mineru-operator")),
        code_grants(&[Scope::Watched, Scope::Own, Scope::Cluster])
    );
    assert!(!cluster.keys().any(|(kind, ..)| kind == "Role"));

    // Namespaced: a Role per watched namespace, one for the Lease, the ClusterRole for Nodes.
    let namespaced = rendered(&[
        "watchNamespaces={parsing,ocr}",
        "secretNames={vllm-key,prom}",
    ]);
    assert_eq!(
        grants_of(role(&namespaced, "ClusterRole", "", "mineru-operator")),
        code_grants(&[Scope::Cluster])
    );
    for namespace in ["parsing", "ocr"] {
        let watched = role(&namespaced, "Role", namespace, "mineru-operator");
        assert_eq!(
            grants_of(watched),
            code_grants(&[Scope::Watched]),
            "{namespace}"
        );
        let secrets = watched["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["resources"][0] == "secrets")
            .unwrap();
        assert_eq!(
            secrets["resourceNames"],
            serde_json::json!(["vllm-key", "prom"])
        );
        let binding = role(&namespaced, "RoleBinding", namespace, "mineru-operator");
        assert_eq!(binding["roleRef"]["name"], "mineru-operator");
        assert_eq!(binding["subjects"][0]["namespace"], OPERATOR_NAMESPACE);
    }
    let leases = role(
        &namespaced,
        "Role",
        OPERATOR_NAMESPACE,
        "mineru-operator-leader-election",
    );
    assert_eq!(grants_of(leases), code_grants(&[Scope::Own]));
    let deployment = role(
        &namespaced,
        "Deployment",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    );
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(
        args.as_array()
            .unwrap()
            .contains(&serde_json::json!("--watch-namespaces=parsing,ocr")),
        "{args}"
    );
}

/// `args` followed by the values that turn every optional part of the chart on.
fn everything_enabled<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for set in [
        "podMonitor.enabled=true",
        "podMonitor.labels.release=prometheus",
        "operatorPodMonitor.enabled=true",
        "operatorPodMonitor.labels.release=prometheus",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=prometheus",
        "dashboards.enabled=true",
        "dashboards.namespace=grafana",
        "networkPolicy.enabled=true",
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "networkPolicy.egressCIDRs={203.0.113.0/24}",
        "imagePullSecrets[0].name=registry",
        "podLabels.team=docs",
        "podAnnotations.team\\.example/owner=docs",
        "priorityClassName=platform-critical",
        "serviceAccount.annotations.team\\.example/owner=docs",
        "secretNames={vllm-key,prometheus}",
    ] {
        all.extend(["--set", set]);
    }
    all
}

/// The operator's Deployment among `documents`.
fn operator_deployment(documents: &BTreeMap<(String, String, String), Value>) -> &Value {
    role(
        documents,
        "Deployment",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    )
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn bad_values_are_refused_by_the_schema_naming_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "logFormat=xml"],
            "'/logFormat': value must be one of",
        ),
        (
            &["--set", "quality.timeout=5min"],
            "'/quality/timeout': '5min' does not match pattern",
        ),
        // 0 would tell kube-runtime to reconcile every object at once.
        (
            &["--set", "concurrentReconciles=0"],
            "'/concurrentReconciles': minimum",
        ),
        (
            &["--set", "reconcileDeadline=soon"],
            "'/reconcileDeadline': 'soon' does not match pattern",
        ),
        (
            &["--set", "leaderElection.leaseDurationSeconds=1"],
            "'/leaderElection/leaseDurationSeconds': minimum",
        ),
        (
            &["--set", "watchNamespaces={Parsing}"],
            "'/watchNamespaces/0': 'Parsing' does not match pattern",
        ),
        (
            &["--set", "replicas=two"],
            "'/replicas': got string, want integer",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "'/image/pullPolicy': value must be one of",
        ),
        (
            &["--set", "podMonitor.intervall=15s"],
            "'/podMonitor': additional properties 'intervall' not allowed",
        ),
        (
            &["--set", "watchNamespace=parsing"],
            "additional properties 'watchNamespace' not allowed",
        ),
        (
            &["--set", "secretLabel=operator-readable"],
            "'/secretLabel': 'operator-readable' does not match pattern",
        ),
        (
            &[
                "--set-json",
                r#"topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"zone","whenUnsatisfiable":"Sometimes"}]"#,
            ],
            "'/topologySpreadConstraints/0/whenUnsatisfiable': value must be one of",
        ),
        (
            &["--set", "podDisruptionBudget.maxUnavailable=0"],
            "'/podDisruptionBudget/maxUnavailable'",
        ),
        // Past the schema, the templates refuse what only makes sense together.
        (
            &["--set", "podDisruptionBudget.minAvailable=2"],
            "podDisruptionBudget.minAvailable must be below replicas",
        ),
        (
            &["--set", "leaderElection.enabled=false"],
            "leaderElection.enabled: false needs replicas: 1",
        ),
        (
            &["--set", "networkPolicy.enabled=true"],
            "networkPolicy.apiServer.cidrs is required",
        ),
    ];
    for (args, expected) in cases {
        let Err(error) = render_chart(args) else {
            panic!("{args:?} was accepted");
        };
        let error = error.to_string();
        assert!(error.contains(expected), "{args:?}: {error}");
    }

    // The durations the operator parses follow the language of its own Duration type.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("charts/mineru-operator/values.schema.json")).unwrap(),
    )
    .unwrap();
    for pointer in [
        "/properties/quality/properties/timeout/pattern",
        "/properties/apiKeyPropagation/pattern",
        "/properties/reconcileDeadline/pattern",
    ] {
        assert_eq!(
            schema.pointer(pointer).and_then(Value::as_str),
            Some(mineru_crds::DURATION_PATTERN),
            "{pointer}"
        );
    }
}

#[test]
fn the_operator_accepts_every_argument_the_chart_passes() {
    let binary = workspace_binary("mineru-operator").unwrap();
    for sets in [
        everything_enabled(&[]),
        vec![
            "--set",
            "watchNamespaces={parsing,ocr}",
            "--set",
            "replicas=1",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "logFormat=text",
            "--set",
            "secretLabel=",
            "--set-json",
            "allowedHosts=[]",
            "--set",
            "metricsScraperNamespace=",
        ],
    ] {
        let documents = documents(&render_chart(&sets).unwrap());
        let args = args_of(operator_deployment(&documents));
        // clap parses (and validates) every argument before `--version`, which then exits.
        let output = Command::new(&binary)
            .args(&args)
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let documents = rendered(&[
        "leaderElection.leaseName=parsing-operator",
        "leaderElection.leaseDurationSeconds=30",
        "apiKeyPropagation=10m",
        "reconcileDeadline=2m",
    ]);
    let args = args_of(operator_deployment(&documents));
    for expected in [
        "--lease-name=parsing-operator",
        "--lease-duration-seconds=30",
        "--api-key-propagation=10m",
        "--reconcile-deadline=2m",
    ] {
        assert!(
            args.iter().any(|arg| arg == expected),
            "{expected}: {args:?}"
        );
    }
    let single = rendered(&["replicas=1", "leaderElection.enabled=false"]);
    let args = args_of(operator_deployment(&single));
    assert!(
        args.iter().any(|arg| arg == "--no-leader-election"),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|arg| arg.starts_with("--lease-")),
        "{args:?}"
    );
}

#[test]
fn two_replicas_get_a_disruption_budget_and_spread_over_nodes() {
    let documents = rendered(&[]);
    let deployment = operator_deployment(&documents);
    let pod = &deployment["spec"]["template"];
    let pod_labels = pod["metadata"]["labels"].clone();

    let budget = role(
        &documents,
        "PodDisruptionBudget",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    );
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(budget["spec"].get("minAvailable").is_none());
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");

    // Soft by default: a one-node cluster still runs both replicas.
    let spread = pod["spec"]["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread[0]["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(spread[0]["maxSkew"], 1);
    for (key, value) in spread[0]["labelSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[key], value, "{key}");
    }

    // Overridden: the constraint as given, still selecting the operator's pods.
    let mut args = vec![
        "--set-json",
        r#"topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"DoNotSchedule"}]"#,
        "--set",
        "podDisruptionBudget.minAvailable=1",
    ];
    let hard = documents_of(&args);
    let spread =
        &operator_deployment(&hard)["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let budget = role(
        &hard,
        "PodDisruptionBudget",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    );
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert!(budget["spec"].get("maxUnavailable").is_none());

    // One replica: no budget, which would block every drain of its node.
    args = vec![
        "--set",
        "replicas=1",
        "--set-json",
        "topologySpreadConstraints=[]",
    ];
    let single = documents_of(&args);
    assert!(
        !single
            .keys()
            .any(|(kind, ..)| kind == "PodDisruptionBudget")
    );
    assert!(
        operator_deployment(&single)["spec"]["template"]["spec"]
            .get("topologySpreadConstraints")
            .is_none()
    );

    // The pod-level values reach the pod, without touching the selector labels.
    let all = documents_of(&everything_enabled(&[
        "--set",
        "podLabels.app\\.kubernetes\\.io/name=other",
    ]));
    let deployment = operator_deployment(&all);
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "docs");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "mineru-operator"
    );
    assert_eq!(pod["metadata"]["annotations"]["team.example/owner"], "docs");
    assert_eq!(pod["spec"]["priorityClassName"], "platform-critical");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "registry"}])
    );
}

/// Every document of the chart rendered with helm `args`, by (kind, namespace, name).
fn documents_of(args: &[&str]) -> BTreeMap<(String, String, String), Value> {
    documents(&render_chart(args).unwrap())
}

#[test]
fn the_image_defaults_to_the_charts_app_version() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_path("charts/mineru-operator/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let app_version = chart["appVersion"].as_str().unwrap();
    let image = |sets: &[&str]| {
        operator_deployment(&rendered(sets))["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        image(&[]),
        format!("ghcr.io/mineru-dev/mineru-operator:{app_version}")
    );
    assert_eq!(
        image(&["image.tag=0.2.0"]),
        "ghcr.io/mineru-dev/mineru-operator:0.2.0"
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        image(&[&format!("image.digest={digest}")]),
        format!("ghcr.io/mineru-dev/mineru-operator@{digest}")
    );
}

#[test]
fn the_monitoring_parts_carry_the_operators_metrics_rules_and_dashboards() {
    let documents = documents_of(&everything_enabled(&[]));
    let deployment = operator_deployment(&documents);
    let pod = &deployment["spec"]["template"];

    // The operator's own /metrics: its pods, its port, and the series' namespace kept.
    let monitor = role(
        &documents,
        "PodMonitor",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([OPERATOR_NAMESPACE])
    );
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod["metadata"]["labels"][key], value, "{key}");
    }
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["honorLabels"], true);
    let ports = pod["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert!(
        ports.iter().any(|port| port["name"] == endpoint["port"]),
        "{ports:?}"
    );

    // The rules file, group for group, with Prometheus' own templates left as written.
    let rules = role(
        &documents,
        "PrometheusRule",
        OPERATOR_NAMESPACE,
        "mineru-operator",
    );
    assert_eq!(rules["metadata"]["labels"]["release"], "prometheus");
    let file = repo_path("charts/mineru-operator/files/prometheus-rules.yaml");
    let file: Value = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(!file["groups"].as_array().unwrap().is_empty());
    assert_eq!(rules["spec"]["groups"], file["groups"]);

    // One ConfigMap per dashboard, labelled and filed for the Grafana sidecar.
    let dashboards: BTreeMap<String, String> =
        std::fs::read_dir(repo_path("charts/mineru-operator/files/dashboards"))
            .into_iter()
            .flatten()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .map(|path| {
                (
                    path.file_name().unwrap().to_str().unwrap().to_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect();
    let config_maps: Vec<&Value> = documents
        .iter()
        .filter(|((kind, namespace, _), _)| kind == "ConfigMap" && namespace == "grafana")
        .map(|(_, object)| object)
        .collect();
    assert!(!dashboards.is_empty());
    assert_eq!(config_maps.len(), dashboards.len());
    for config_map in config_maps {
        assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(
            config_map["metadata"]["annotations"]["grafana_folder"],
            "MinerU"
        );
        let data = config_map["data"].as_object().unwrap();
        assert_eq!(data.len(), 1);
        let (file, text) = data.iter().next().unwrap();
        assert_eq!(
            Some(text.as_str().unwrap()),
            dashboards.get(file).map(String::as_str),
            "{file}"
        );
    }
}

/// The two watch modes: cluster-wide, and two watched namespaces.
const MODES: [&[&str]; 2] = [&[], &["--set", "watchNamespaces={parsing,ocr}"]];

/// The first MineruDeployment the NOTES show, as YAML.
fn notes_example(notes: &str) -> String {
    notes
        .split("<<'YAML'\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  YAML").next())
        .unwrap_or_else(|| panic!("no MineruDeployment in {notes}"))
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("  ").unwrap_or(line)))
        .collect()
}

#[test]
fn the_notes_fit_the_mode_and_show_the_minimal_example() {
    let minimal: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("examples/minimal.yaml")).unwrap())
            .unwrap();
    for mode in MODES {
        let notes = render_notes(&everything_enabled(mode)).unwrap();
        for expected in [
            format!("installed in the namespace {OPERATOR_NAMESPACE}"),
            format!("kubectl -n {OPERATOR_NAMESPACE} rollout status deployment/mineru-operator"),
            format!("kubectl -n {OPERATOR_NAMESPACE} get lease mineru-operator"),
            format!("PodMonitor {OPERATOR_NAMESPACE}/mineru-operator"),
            format!("PrometheusRule {OPERATOR_NAMESPACE}/mineru-operator"),
            "ConfigMaps labelled grafana_dashboard=1 in grafana".to_owned(),
            "/docs/gates.md".to_owned(),
            "mineru.dev/operator-readable=true".to_owned(),
        ] {
            assert!(
                notes.contains(&expected),
                "{mode:?}: no {expected:?} in\n{notes}"
            );
        }
        if mode.is_empty() {
            assert!(notes.contains("Scope: every namespace"), "{notes}");
            assert!(
                notes.contains("kubectl create namespace parsing"),
                "{notes}"
            );
        } else {
            assert!(
                notes.contains("Scope: the namespaces parsing, ocr"),
                "{notes}"
            );
            assert!(!notes.contains("kubectl create namespace"), "{notes}");
        }
        // The example in the NOTES is examples/minimal.yaml, in the first watched namespace.
        let example: Value = serde_yaml::from_str(&notes_example(&notes)).unwrap();
        assert_eq!(example, minimal, "{mode:?}");
    }

    let defaults = render_notes(&[]).unwrap();
    for off in [
        "off (podMonitor.enabled)",
        "off (operatorPodMonitor.enabled)",
        "off (prometheusRule.enabled)",
        "off (dashboards.enabled)",
    ] {
        assert!(defaults.contains(off), "{off}: {defaults}");
    }
    let single = render_notes(&[
        "--set",
        "replicas=1",
        "--set",
        "leaderElection.enabled=false",
    ])
    .unwrap();
    assert!(!single.contains("get lease"), "{single}");
    let ocr = render_notes(&[
        "--set",
        "watchNamespaces={ocr}",
        "--set-json",
        "allowedHosts=[]",
    ])
    .unwrap();
    assert!(ocr.contains("namespace: ocr"), "{ocr}");
    assert!(ocr.contains("allowedHosts is empty"), "{ocr}");
}

#[test]
fn with_everything_on_the_api_server_accepts_the_chart_under_strict_validation() {
    let plane = ControlPlane::start(
        "chart_dry_run",
        &Nodes {
            gpu_nodes: 0,
            gpus_per_node: 0,
            cpu_nodes: 1,
        },
    )
    .unwrap();
    install_monitoring_crds(&plane).unwrap();
    // The MineruDeployment CRD for real: the NOTES' first MineruDeployment is checked against it.
    let crd = repo_path("charts/mineru-operator/crds/minerudeployments.yaml");
    plane
        .kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()])
        .unwrap();
    wait_established(&plane, "minerudeployments.mineru.dev").unwrap();
    for namespace in [OPERATOR_NAMESPACE, "parsing", "ocr", "grafana"] {
        plane.kubectl(&["create", "namespace", namespace]).unwrap();
    }

    for (index, mode) in MODES.iter().enumerate() {
        let args = everything_enabled(mode);
        let mut with_crds = args.clone();
        with_crds.push("--include-crds");
        let manifest = render_chart(&with_crds).unwrap();
        let objects = documents(&manifest);
        let kinds: BTreeSet<&str> = objects.keys().map(|(kind, ..)| kind.as_str()).collect();
        for kind in [
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "PodMonitor",
            "PrometheusRule",
            "NetworkPolicy",
            "ClusterRole",
        ] {
            assert!(kinds.contains(kind), "{mode:?}: no {kind} in {kinds:?}");
        }
        let path = plane.dir().join(format!("chart-{index}.yaml"));
        std::fs::write(&path, &manifest).unwrap();
        let applied = dry_run(&plane, path.to_str().unwrap());
        assert_eq!(
            applied.matches("(server dry run)").count(),
            objects.len(),
            "{applied}"
        );

        let notes = render_notes(&args).unwrap();
        let path = plane.dir().join(format!("notes-example-{index}.yaml"));
        std::fs::write(&path, notes_example(&notes)).unwrap();
        dry_run(&plane, path.to_str().unwrap());
    }
}

/// `kubectl apply` with a server-side dry run and strict field validation: an unknown or
/// duplicate field fails, as does anything the API server's own validation refuses.
fn dry_run(plane: &ControlPlane, path: &str) -> String {
    let args = [
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        path,
    ];
    // A CRD just Established may take a moment to reach kubectl's discovery.
    mineru_e2e::wait_until(
        "the dry run to find every kind",
        std::time::Duration::from_secs(30),
        || {
            let output = plane.kubectl_output(&args)?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                return Ok(Some(String::from_utf8(output.stdout)?));
            }
            assert!(
                stderr.contains("no matches for kind"),
                "kubectl {args:?}: {stderr}"
            );
            anyhow::bail!("{stderr}")
        },
    )
    .unwrap()
}
