//! Every CEL rule in the CRD rejects what it is meant to reject and accepts its valid twin.
//! Rules are evaluated client-side with kube-cel against the committed schema, on objects with
//! defaults applied as the apiserver would; the e2e suite repeats this on a real apiserver.

use kube_cel::Validator;
use mineru_crds::MineruDeployment;
use serde_json::{Value, json};

const MINIMAL: &str = include_str!("../../examples/minimal.yaml");

fn schema() -> Value {
    let crd: Value = serde_yaml::from_str(&mineru_crds::crd_yaml()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The minimal example with every default filled in, as stored by the apiserver.
fn defaulted_minimal() -> Value {
    let typed: MineruDeployment = serde_yaml::from_str(MINIMAL).unwrap();
    serde_json::to_value(typed).unwrap()
}

fn violations(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|error| format!("{}: {} ({:?})", error.field_path, error.message, error.kind))
            .collect(),
    }
}

fn set(object: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    object
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"))
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), value);
}

fn remove(object: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    object
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
}

struct Case {
    rule: &'static str,
    rejected: Vec<(&'static str, Value)>,
    accepted: Vec<(&'static str, Value)>,
    message: &'static str,
}

fn criterion(extra: Value) -> Value {
    let mut base = json!({"name": "error-ratio", "query": "sum(rate(x[1m]))"});
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    base
}

/// A job store reading its URL from `secret`, the database in the namespace `databases`.
fn job_store(secret: Value) -> Value {
    json!({
        "urlSecretRef": secret,
        "egress": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}}}],
        "port": 5432,
    })
}

fn cases() -> Vec<Case> {
    let legacy = |extra: Value| {
        let mut routing =
            json!({"httpRoute": {"name": "r"}, "legacyBackend": {"name": "old", "port": 8000}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            routing["legacyBackend"][k] = v.clone();
        }
        json!({"gatewayAPI": routing})
    };
    vec![
        Case {
            rule: "a legacy tier only with the v1 API",
            rejected: vec![(
                "/spec/rollout/trafficRouting",
                legacy(json!({"tier": "flash"})),
            )],
            accepted: vec![(
                "/spec/rollout/trafficRouting",
                legacy(json!({"api": "v1", "tier": "flash"})),
            )],
            message: "legacyBackend.tier names a MinerU 4 tier: it needs api: v1",
        },
        Case {
            rule: "last step is 100",
            rejected: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10}, {"weight": 50}]),
            )],
            accepted: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10}, {"weight": 100}]),
            )],
            message: "the last rollout step must have weight 100",
        },
        Case {
            rule: "weights strictly increasing (decreasing)",
            rejected: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 50}, {"weight": 10}, {"weight": 100}]),
            )],
            accepted: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10}, {"weight": 50}, {"weight": 100}]),
            )],
            message: "rollout step weights must be strictly increasing",
        },
        Case {
            rule: "weights strictly increasing (repeated)",
            rejected: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 50}, {"weight": 50}, {"weight": 100}]),
            )],
            accepted: vec![("/spec/rollout/steps", json!([{"weight": 100}]))],
            message: "rollout step weights must be strictly increasing",
        },
        Case {
            rule: "pause or approval",
            rejected: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10, "pause": "5m", "requireApproval": true}, {"weight": 100}]),
            )],
            accepted: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10, "requireApproval": true}, {"weight": 100}]),
            )],
            message: "a step either pauses for a duration or waits for approval, not both",
        },
        Case {
            rule: "one traffic mode",
            rejected: vec![(
                "/spec/rollout/trafficRouting",
                json!({"replicas": {}, "gatewayAPI": {"httpRoute": {"name": "r"}}}),
            )],
            accepted: vec![(
                "/spec/rollout/trafficRouting",
                json!({"gatewayAPI": {"httpRoute": {"name": "r"}}}),
            )],
            message: "trafficRouting takes one mode: replicas or gatewayAPI",
        },
        Case {
            rule: "criterion needs a threshold",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({}))]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({"max": 0.01}))]),
            )],
            message: "a check needs at least one threshold: max, min or maxRatioToStable",
        },
        Case {
            rule: "trigger needs a threshold",
            rejected: vec![(
                "/spec/rollout/analysis/rollbackTriggers",
                json!([criterion(json!({"for": "5m"}))]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/rollbackTriggers",
                json!([criterion(json!({"for": "5m", "min": 1.0}))]),
            )],
            message: "a check needs at least one threshold: max, min or maxRatioToStable",
        },
        Case {
            rule: "min not above max",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({"min": 2.0, "max": 1.0}))]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({"min": 1.0, "max": 2.0}))]),
            )],
            message: "min must not exceed max",
        },
        Case {
            rule: "ratioFloor needs a ratio",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({"max": 1.0, "ratioFloor": 0.01}))]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(
                    json!({"maxRatioToStable": 1.05, "ratioFloor": 0.01})
                )]),
            )],
            message: "ratioFloor only applies with maxRatioToStable",
        },
        Case {
            rule: "minSamples needs samplesQuery",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({"max": 1.0, "minSamples": 50.0}))]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(
                    json!({"max": 1.0, "minSamples": 50.0, "samplesQuery": "sum(x)"})
                )]),
            )],
            message: "minSamples needs a samplesQuery",
        },
        Case {
            rule: "unique criterion names",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([
                    criterion(json!({"max": 1.0})),
                    criterion(json!({"min": 0.0}))
                ]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([
                    criterion(json!({"max": 1.0})),
                    criterion(json!({"name": "other", "min": 0.0}))
                ]),
            )],
            message: "promotionCriteria names must be unique",
        },
        Case {
            rule: "prometheus address is a URL",
            rejected: vec![(
                "/spec/rollout/analysis/prometheus/address",
                json!("prometheus:9090"),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/prometheus/address",
                json!("https://prometheus:9090"),
            )],
            message: "prometheus.address must be an http:// or https:// URL",
        },
        Case {
            rule: "gpuMemoryUtilization in (0, 1]",
            rejected: vec![("/spec/model/gpuMemoryUtilization", json!(1.5))],
            accepted: vec![("/spec/model/gpuMemoryUtilization", json!(1.0))],
            message: "gpuMemoryUtilization must be in (0, 1]",
        },
        Case {
            rule: "minSimilarity in [0, 1]",
            rejected: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "minSimilarity": 1.2, "maxRegression": 0.01}),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "minSimilarity": 0.9, "maxRegression": 0.01}),
            )],
            message: "minSimilarity must be in [0, 1]",
        },
        Case {
            rule: "documentsPerStep counts",
            rejected: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "documentsPerStep": [50, 0]}),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "documentsPerStep": [20, 40]}),
            )],
            message: "documentsPerStep counts must be in [1, 10000]",
        },
        Case {
            rule: "name fits the derived names",
            rejected: vec![("/metadata/name", json!("d".repeat(37)))],
            accepted: vec![("/metadata/name", json!("d".repeat(36)))],
            message: "metadata.name must be at most 36 characters",
        },
        Case {
            rule: "golden documents from one source",
            rejected: vec![
                (
                    "/spec/rollout/analysis/quality",
                    json!({"goldenDocuments": {"configMapRef": {"name": "g"}, "configMapLabels": {"set": "golden"}}}),
                ),
                (
                    "/spec/rollout/analysis/quality",
                    json!({"goldenDocuments": {}}),
                ),
            ],
            accepted: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapLabels": {"set": "golden"}}}),
            )],
            message: "goldenDocuments takes either configMapRef or configMapLabels",
        },
        Case {
            rule: "golden document labels",
            rejected: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapLabels": {}}}),
            )],
            accepted: vec![],
            message: "configMapLabels needs at least one label",
        },
        Case {
            rule: "one source per check",
            rejected: vec![
                (
                    "/spec/rollout/analysis/promotionCriteria",
                    json!([{"name": "none", "max": 0.1}]),
                ),
                (
                    "/spec/rollout/analysis/rollbackTriggers",
                    json!([criterion(
                        json!({"max": 0.1, "proportion": {"bad": "b", "total": "t"}})
                    )]),
                ),
            ],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([{"name": "errors", "proportion": {"bad": "b", "total": "t"}, "max": 0.02}]),
            )],
            message: "a check reads exactly one of query, proportion or quantile",
        },
        Case {
            rule: "samples only for a query",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([{"name": "slow", "quantile": {"q": 0.95, "buckets": "h"}, "max": 90, "samplesQuery": "s"}]),
            )],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([{"name": "slow", "quantile": {"q": 0.95, "buckets": "h"}, "max": 90}]),
            )],
            message: "samplesQuery and minSamples apply to query checks",
        },
        Case {
            rule: "a proportion is a share",
            rejected: vec![
                (
                    "/spec/rollout/analysis/promotionCriteria",
                    json!([{"name": "errors", "proportion": {"bad": "b", "total": "t"}, "max": 2}]),
                ),
                (
                    "/spec/rollout/analysis/rollbackTriggers",
                    json!([{"name": "errors", "proportion": {"bad": "b", "total": "t"}, "min": 0}]),
                ),
            ],
            accepted: vec![(
                "/spec/rollout/analysis/rollbackTriggers",
                json!([{"name": "errors", "proportion": {"bad": "b", "total": "t"}, "min": 0.9}]),
            )],
            message: "a proportion's max and min are shares in (0, 1)",
        },
        Case {
            rule: "a quantile in (0, 1)",
            rejected: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([{"name": "slow", "quantile": {"q": 95, "buckets": "h"}, "max": 90}]),
            )],
            accepted: vec![],
            message: "quantile.q must be in (0, 1)",
        },
        Case {
            rule: "afterSteps inside the step list",
            rejected: vec![
                (
                    "/spec/rollout/analysis/promotionCriteria",
                    json!([criterion(json!({"max": 1.0, "afterSteps": [3]}))]),
                ),
                (
                    "/spec/rollout/analysis/promotionCriteria",
                    json!([criterion(json!({"max": 1.0, "afterSteps": [-1]}))]),
                ),
            ],
            accepted: vec![(
                "/spec/rollout/analysis/promotionCriteria",
                json!([criterion(json!({"max": 1.0, "afterSteps": [0, 2]}))]),
            )],
            message: "promotionCriteria afterSteps must be indexes (0-based) of the rollout steps",
        },
        Case {
            rule: "maxDuration covers the pause",
            rejected: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10, "pause": "2h", "maxDuration": "1h"}, {"weight": 100, "maxDuration": "1h"}]),
            )],
            accepted: vec![(
                "/spec/rollout/steps",
                json!([{"weight": 10, "pause": "1h", "maxDuration": "90m"}, {"weight": 100, "maxDuration": "1h"}]),
            )],
            message: "a step's maxDuration must not be shorter than its pause",
        },
        Case {
            rule: "evidence rates",
            rejected: vec![
                (
                    "/spec/rollout/analysis/evidence",
                    json!({"confidence": 1.0, "power": 0.95, "regression": 3}),
                ),
                (
                    "/spec/rollout/analysis/evidence",
                    json!({"confidence": 0.99, "power": 0.95, "regression": 1}),
                ),
                (
                    "/spec/rollout/analysis/evidence",
                    json!({"confidence": 0.99, "power": 0.95, "regression": 3, "minDocuments": 0}),
                ),
            ],
            accepted: vec![(
                "/spec/rollout/analysis/evidence",
                json!({"confidence": 0.95, "power": 0.8, "regression": 10, "minDocuments": 20}),
            )],
            message: "evidence.",
        },
        Case {
            rule: "probe traffic",
            rejected: vec![
                (
                    "/spec/rollout/analysis/quality",
                    json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "probes": {"documentsPerHour": -1}}),
                ),
                (
                    "/spec/rollout/analysis/quality",
                    json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "probes": {"maxShare": 0}}),
                ),
            ],
            accepted: vec![(
                "/spec/rollout/analysis/quality",
                json!({"goldenDocuments": {"configMapRef": {"name": "g"}}, "probes": {"documentsPerHour": 0, "maxShare": 1}}),
            )],
            message: "probes.",
        },
        Case {
            rule: "job store Secret key",
            rejected: vec![
                (
                    "/spec/worker/jobStore",
                    job_store(json!({"name": "mineru-jobs", "key": "url/postgres"})),
                ),
                (
                    "/spec/worker/jobStore",
                    job_store(json!({"name": "mineru-jobs", "key": "database url"})),
                ),
            ],
            accepted: vec![(
                "/spec/worker/jobStore",
                job_store(json!({"name": "mineru-jobs", "key": "DATABASE_URL.v-2"})),
            )],
            message: "a Secret key is letters, digits, '-', '_' and '.'",
        },
        Case {
            rule: "job store Secret name",
            rejected: vec![
                (
                    "/spec/worker/jobStore",
                    job_store(json!({"name": "Mineru_Jobs", "key": "url"})),
                ),
                (
                    "/spec/worker/jobStore",
                    job_store(json!({"name": "mineru-jobs-", "key": "url"})),
                ),
            ],
            accepted: vec![(
                "/spec/worker/jobStore",
                job_store(json!({"name": "pg.mineru-jobs", "key": "url"})),
            )],
            message: "a Secret name is lowercase letters, digits, '-' and '.'",
        },
        Case {
            rule: "job store egress peers",
            rejected: vec![
                (
                    "/spec/worker/jobStore",
                    json!({"urlSecretRef": {"name": "mineru-jobs", "key": "url"}, "egress": [{}], "port": 5432}),
                ),
                (
                    "/spec/worker/jobStore",
                    json!({"urlSecretRef": {"name": "mineru-jobs", "key": "url"}, "egress": [{"ipBlock": {"cidr": "203.0.113.7/32"}, "podSelector": {}}], "port": 5432}),
                ),
            ],
            accepted: vec![
                (
                    "/spec/worker/jobStore",
                    json!({"urlSecretRef": {"name": "mineru-jobs", "key": "url"}, "egress": [{"ipBlock": {"cidr": "203.0.113.7/32"}}, {"podSelector": {"matchLabels": {"app": "postgres"}}}], "port": 5432}),
                ),
                (
                    "/spec/worker/jobStore",
                    json!({"urlSecretRef": {"name": "mineru-jobs", "key": "url"}, "egress": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}}, "podSelector": {}}], "port": 6432}),
                ),
            ],
            message: "each jobStore.egress peer is either an ipBlock, or a podSelector and/or a namespaceSelector",
        },
        Case {
            rule: "job store and worker id not in env",
            rejected: vec![
                (
                    "/spec/worker/env",
                    json!([{"name": "MINERU_JOB_STORE", "value": "postgres://u:p@db/jobs"}]),
                ),
                (
                    "/spec/worker/env",
                    json!([{"name": "MINERU_WORKER_ID", "value": "worker"}]),
                ),
            ],
            accepted: vec![(
                "/spec/worker/env",
                json!([{"name": "MINERU_JOB_LEASE", "value": "30s"}]),
            )],
            message: "MINERU_JOB_STORE is set from jobStore.urlSecretRef and MINERU_WORKER_ID from the pod name, never in env",
        },
        Case {
            rule: "API key Secret key",
            rejected: vec![(
                "/spec/model/apiKeySecretRef",
                json!({"name": "vllm-key", "key": "api key"}),
            )],
            accepted: vec![(
                "/spec/model/apiKeySecretRef",
                json!({"name": "vllm-key", "key": "token"}),
            )],
            message: "a Secret key is letters, digits, '-', '_' and '.'",
        },
        Case {
            rule: "webhook url",
            rejected: vec![(
                "/spec/rollout/notifications",
                json!({"webhook": {"url": "hooks.example"}}),
            )],
            accepted: vec![(
                "/spec/rollout/notifications",
                json!({"webhook": {"url": "https://hooks.example"}}),
            )],
            message: "webhook.url must be an http:// or https:// URL",
        },
    ]
}

#[test]
fn the_minimal_example_passes_every_rule() {
    assert_eq!(violations(&defaulted_minimal()), Vec::<String>::new());
}

#[test]
fn each_rule_rejects_its_violation_and_accepts_its_fix() {
    for case in cases() {
        for (pointer, value) in &case.rejected {
            let mut object = defaulted_minimal();
            set(&mut object, pointer, value.clone());
            let found = violations(&object);
            assert!(
                found.iter().any(|v| v.contains(case.message)),
                "{}: expected {:?}, got {found:?}",
                case.rule,
                case.message
            );
        }
        for (pointer, value) in &case.accepted {
            let mut object = defaulted_minimal();
            set(&mut object, pointer, value.clone());
            assert_eq!(
                violations(&object),
                Vec::<String>::new(),
                "{}: valid object refused",
                case.rule
            );
        }
    }
}

#[test]
fn gates_without_prometheus_are_rejected_unless_analysis_is_off() {
    let message = "analysis.prometheus is required";
    let mut object = defaulted_minimal();
    remove(&mut object, "/spec/rollout/analysis/prometheus");
    assert!(violations(&object).iter().any(|v| v.contains(message)));

    set(
        &mut object,
        "/spec/rollout/analysis/defaultCriteria",
        json!(false),
    );
    assert_eq!(violations(&object), Vec::<String>::new());

    set(
        &mut object,
        "/spec/rollout/analysis/rollbackTriggers",
        json!([criterion(json!({"max": 1.0}))]),
    );
    assert!(violations(&object).iter().any(|v| v.contains(message)));
}

#[test]
fn remote_code_needs_its_field_and_an_api_key_never_rides_in_extra_args() {
    let remote_code = "extraArgs may pass --trust-remote-code only with allowRemoteCode: true";
    let api_key = "the API key goes in apiKeySecretRef, never in extraArgs";
    let with = |args: Value, allow: Option<bool>| {
        let mut object = defaulted_minimal();
        set(&mut object, "/spec/model/extraArgs", args);
        if let Some(allow) = allow {
            set(&mut object, "/spec/model/allowRemoteCode", json!(allow));
        }
        violations(&object)
    };
    for args in [
        json!(["--trust-remote-code"]),
        json!(["--max-num-seqs", "8", "--trust-remote-code=true"]),
        json!(["--trust_remote_code"]),
        json!(["--trust-remote"]),
        json!(["--trust-r=1"]),
    ] {
        for allow in [None, Some(false)] {
            let found = with(args.clone(), allow);
            assert!(
                found.iter().any(|v| v.contains(remote_code)),
                "{args} {allow:?}: {found:?}"
            );
        }
        assert_eq!(
            with(args.clone(), Some(true)),
            Vec::<String>::new(),
            "{args}"
        );
    }
    for args in [
        json!(["--api-key", "s3cret"]),
        json!(["--api-key=s3cret"]),
        json!(["--api_key=s3cret"]),
        json!(["--api-ke", "s3cret"]),
    ] {
        let found = with(args.clone(), Some(true));
        assert!(
            found.iter().any(|v| v.contains(api_key)),
            "{args}: {found:?}"
        );
    }
    assert_eq!(
        with(json!(["--max-num-seqs", "8"]), None),
        Vec::<String>::new()
    );
    let mut object = defaulted_minimal();
    set(
        &mut object,
        "/spec/model/env",
        json!([{"name": "VLLM_API_KEY", "value": "s3cret"}]),
    );
    let found = violations(&object);
    assert!(
        found
            .iter()
            .any(|v| v.contains("VLLM_API_KEY is set from apiKeySecretRef")),
        "{found:?}"
    );
}
