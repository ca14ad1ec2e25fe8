//! The NetworkPolicies the operator generates, and the operator's own from the chart (rendered
//! by the real helm), judged flow by flow with the policy evaluator: a worker reaches its own
//! vLLM and DNS and nothing else; vLLM admits its own workers, the operator and the scraper's
//! pods alone; the operator reaches only what it calls.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::{apps::v1::Deployment, networking::v1::NetworkPolicy};
use mineru_crds::MineruDeployment;
use mineru_e2e::{
    netpol::{Endpoint, allowed},
    operator, repo_path,
};
use mineru_operator::reconcile::{Owner, SpecRevisions, deployment, networkpolicy, statefulset};

const TENANTS: &str = "parsing";
const OPERATOR: &str = mineru_e2e::controlplane::OPERATOR_NAMESPACE;
const API_SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const WEBHOOKS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn helm_template(sets: &[&str], only: &str) -> String {
    let mut args = vec!["--show-only", only];
    args.extend(sets.iter().flat_map(|set| ["--set", set]));
    operator::render_chart(&args).unwrap()
}

/// The operator's flag `--name` as the chart's defaults set it.
fn flag(name: &str) -> String {
    let rendered: Deployment =
        serde_yaml::from_str(&helm_template(&[], "templates/deployment.yaml")).unwrap();
    let args = rendered.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("the chart passes --{name}"))
}

/// `k=v,k2=v2` as labels.
fn labels(pairs: &str) -> BTreeMap<String, String> {
    pairs
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The operator's flags for the scraper, as the chart's defaults set them.
fn scraper_flags() -> (String, BTreeMap<String, String>) {
    (
        flag("metrics-scraper-namespace"),
        labels(&flag("metrics-scraper-pod-selector")),
    )
}

/// The cluster DNS as the chart's values name it, passed to the operator's flags.
fn dns_peers() -> Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer> {
    let (namespace, pods) = (flag("dns-namespace"), flag("dns-pod-selector"));
    networkpolicy::dns_peers(&namespace, &labels(&pods))
}

/// One MineruDeployment's policies and the labels of its worker and vLLM pods.
struct Tenant {
    policies: Vec<NetworkPolicy>,
    worker: Endpoint,
    vllm: Endpoint,
}

fn tenant(name: &str) -> Tenant {
    let mut md: MineruDeployment =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("examples/minimal.yaml")).unwrap())
            .unwrap();
    md.metadata.name = Some(name.to_owned());
    md.metadata.namespace = Some(TENANTS.to_owned());
    md.metadata.uid = Some(format!("uid-{name}"));
    let owner = Owner::of(&md).unwrap();
    let spec = SpecRevisions::of(name, &md.spec).unwrap();
    let (scraper_namespace, scraper_pods) = scraper_flags();
    let peers = networkpolicy::vllm_peers(OPERATOR, &scraper_namespace, &scraper_pods);
    let sts = statefulset::desired(&owner, &md.spec.model, &spec.revisions.model_revision, 1);
    let workers = deployment::desired(
        &owner,
        &spec.worker_template,
        &spec.revisions.worker_revision,
        1,
    );
    let labels = |template: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
        template.unwrap().metadata.unwrap().labels.unwrap()
    };
    Tenant {
        policies: vec![
            networkpolicy::desired(&owner, &peers),
            networkpolicy::workers(&owner, &dns_peers(), []),
        ],
        vllm: Endpoint::pod_labelled(TENANTS, &labels(sts.spec.map(|s| s.template))),
        worker: Endpoint::pod_labelled(TENANTS, &labels(workers.spec.map(|s| s.template))),
    }
}

#[test]
fn every_flow_between_the_tiers_the_operator_and_the_rest_is_allowed_or_denied_as_designed() {
    let docs = tenant("docs");
    let other = tenant("other");
    let operator_policy: NetworkPolicy = serde_yaml::from_str(&helm_template(
        &[
            "networkPolicy.enabled=true",
            &format!("networkPolicy.apiServer.cidrs={{{API_SERVER}/32}}"),
            "networkPolicy.egressCIDRs={203.0.113.0/24}",
        ],
        "templates/networkpolicy.yaml",
    ))
    .unwrap();
    let mut policies = docs.policies.clone();
    policies.extend(other.policies.clone());
    policies.push(operator_policy);

    let operator = Endpoint::pod(
        OPERATOR,
        &[
            ("app.kubernetes.io/name", "mineru-operator"),
            ("app.kubernetes.io/instance", "mineru-operator"),
        ],
    );
    let prometheus = Endpoint::pod("monitoring", &[("app.kubernetes.io/name", "prometheus")]);
    let grafana = Endpoint::pod("monitoring", &[("app.kubernetes.io/name", "grafana")]);
    let neighbour = Endpoint::pod(TENANTS, &[("app", "neighbour")]);
    let client = Endpoint::pod("clients", &[("app", "uploader")]);
    let dns = Endpoint::pod("kube-system", &[("k8s-app", "kube-dns")]);
    let api_server = Endpoint::External(API_SERVER);
    let webhooks = Endpoint::External(WEBHOOKS);
    let elsewhere = Endpoint::External(ELSEWHERE);

    let flows: &[(&str, &Endpoint, &Endpoint, &str, i32, bool)] = &[
        (
            "worker → own vLLM",
            &docs.worker,
            &docs.vllm,
            "TCP",
            8000,
            true,
        ),
        (
            "worker → another deployment's vLLM",
            &docs.worker,
            &other.vllm,
            "TCP",
            8000,
            false,
        ),
        (
            "other worker → this vLLM",
            &other.worker,
            &docs.vllm,
            "TCP",
            8000,
            false,
        ),
        (
            "worker → own vLLM, another port",
            &docs.worker,
            &docs.vllm,
            "TCP",
            22,
            false,
        ),
        ("worker → DNS (UDP)", &docs.worker, &dns, "UDP", 53, true),
        ("worker → DNS (TCP)", &docs.worker, &dns, "TCP", 53, true),
        (
            "worker → a neighbour pod on port 53",
            &docs.worker,
            &neighbour,
            "UDP",
            53,
            false,
        ),
        (
            "worker → API server",
            &docs.worker,
            &api_server,
            "TCP",
            443,
            false,
        ),
        (
            "worker → internet",
            &docs.worker,
            &elsewhere,
            "TCP",
            443,
            false,
        ),
        (
            "worker → operator",
            &docs.worker,
            &operator,
            "TCP",
            8080,
            false,
        ),
        (
            "worker → a neighbour pod",
            &docs.worker,
            &neighbour,
            "TCP",
            8080,
            false,
        ),
        (
            "worker → another worker",
            &docs.worker,
            &other.worker,
            "TCP",
            8000,
            false,
        ),
        ("client → worker", &client, &docs.worker, "TCP", 8000, true),
        (
            "neighbour pod → vLLM",
            &neighbour,
            &docs.vllm,
            "TCP",
            8000,
            false,
        ),
        ("client → vLLM", &client, &docs.vllm, "TCP", 8000, false),
        (
            "scraper → vLLM metrics",
            &prometheus,
            &docs.vllm,
            "TCP",
            8000,
            true,
        ),
        (
            "another monitoring pod → vLLM",
            &grafana,
            &docs.vllm,
            "TCP",
            8000,
            false,
        ),
        (
            "scraper → worker metrics",
            &prometheus,
            &docs.worker,
            "TCP",
            8000,
            true,
        ),
        (
            "operator → vLLM (warm-up)",
            &operator,
            &docs.vllm,
            "TCP",
            8000,
            true,
        ),
        (
            "operator → worker (quality)",
            &operator,
            &docs.worker,
            "TCP",
            8000,
            true,
        ),
        (
            "operator → API server",
            &operator,
            &api_server,
            "TCP",
            443,
            true,
        ),
        ("operator → DNS", &operator, &dns, "UDP", 53, true),
        (
            "operator → a neighbour pod on port 53",
            &operator,
            &neighbour,
            "UDP",
            53,
            false,
        ),
        (
            "operator → Prometheus",
            &operator,
            &prometheus,
            "TCP",
            9090,
            true,
        ),
        (
            "operator → listed webhook CIDR",
            &operator,
            &webhooks,
            "TCP",
            443,
            true,
        ),
        (
            "operator → any other address",
            &operator,
            &elsewhere,
            "TCP",
            443,
            false,
        ),
        (
            "operator → a neighbour pod",
            &operator,
            &neighbour,
            "TCP",
            8080,
            false,
        ),
        (
            "scraper → operator metrics",
            &prometheus,
            &operator,
            "TCP",
            8080,
            true,
        ),
        (
            "neighbour pod → operator",
            &neighbour,
            &operator,
            "TCP",
            8080,
            false,
        ),
    ];
    let wrong: Vec<String> = flows
        .iter()
        .filter(|(_, from, to, protocol, port, expected)| {
            allowed(&policies, from, to, protocol, *port) != *expected
        })
        .map(|(flow, .., expected)| {
            format!(
                "{flow}: expected {}",
                if *expected { "allowed" } else { "denied" }
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_operator_policy_needs_the_api_servers_addresses() {
    let error = operator::render_chart(&["--set", "networkPolicy.enabled=true"]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("networkPolicy.apiServer.cidrs is required"),
        "{error}"
    );
}
