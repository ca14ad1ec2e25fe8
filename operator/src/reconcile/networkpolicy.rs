//! The NetworkPolicies of a MineruDeployment. `<name>-vllm` fences the GPU tier: only this
//! deployment's workers, and the peers the operator is configured with (the operator itself for
//! the warm-up gate, the metrics scraper), may reach vLLM. `<name>-worker` fences what the CPU
//! tier may reach: its own vLLM pods, DNS and, when `worker.jobStore` names one, its job
//! database, nothing else — a worker compromised by a hostile document can reach neither the
//! API server, nor other tenants, nor the internet.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
        NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use mineru_crds::{JobStore, Tier};

use super::Owner;
use crate::{VLLM_PORT, labels};

/// The NetworkPolicy `<name>-vllm`. `extra_peers` are the operator's own pods and the scraper
/// of the `--metrics-scraper-namespace` / `--metrics-scraper-pod-selector` flags.
pub fn desired(owner: &Owner, extra_peers: &[NetworkPolicyPeer]) -> NetworkPolicy {
    let instance = &owner.instance;
    let mut from = vec![NetworkPolicyPeer {
        pod_selector: Some(tier(instance, Tier::Worker)),
        ..NetworkPolicyPeer::default()
    }];
    from.extend(extra_peers.iter().cloned());
    NetworkPolicy {
        metadata: owner.meta(
            labels::names::vllm_tier(instance),
            labels::common(instance, Tier::Model, None),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(tier(instance, Tier::Model)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(VLLM_PORT)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Port of the cluster DNS.
const DNS_PORT: i32 = 53;

/// Namespace of the cluster DNS pods unless `--dns-namespace` says otherwise.
pub const DEFAULT_DNS_NAMESPACE: &str = "kube-system";

/// Labels of the cluster DNS pods unless `--dns-pod-selector` says otherwise: CoreDNS keeps
/// kube-dns' label in kubeadm, EKS, GKE and AKS clusters.
pub fn default_dns_pods() -> BTreeMap<String, String> {
    BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])
}

/// The cluster DNS as a NetworkPolicy peer: pods matching `pods` in `namespace` (any namespace
/// when empty; any pod there when `pods` is empty).
pub fn dns_peers(namespace: &str, pods: &BTreeMap<String, String>) -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        namespace_selector: Some(if namespace.is_empty() {
            LabelSelector::default()
        } else {
            namespace_selector(namespace)
        }),
        pod_selector: (!pods.is_empty()).then(|| LabelSelector {
            match_labels: Some(pods.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }]
}

/// The NetworkPolicy `<name>-worker`: the workers may open connections to this deployment's
/// vLLM pods on the vLLM port, to the cluster DNS (`dns`, UDP and TCP port 53) and to the job
/// databases of `job_stores` (each its peers on its TCP port); every other destination is
/// denied. One policy selects every worker revision, so `job_stores` are those of every
/// revision running: a canary that moves the database does not cut the stable workers off
/// theirs. Ingress stays open: clients, the operator's quality rounds and the scraper reach
/// workers on their port.
pub fn workers<'a>(
    owner: &Owner,
    dns: &[NetworkPolicyPeer],
    job_stores: impl IntoIterator<Item = &'a JobStore>,
) -> NetworkPolicy {
    let instance = &owner.instance;
    let port = |protocol: &str, port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    };
    let own_vllm = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(tier(instance, Tier::Model)),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port("TCP", VLLM_PORT)]),
    };
    let dns = NetworkPolicyEgressRule {
        to: Some(dns.to_vec()),
        ports: Some(vec![port("UDP", DNS_PORT), port("TCP", DNS_PORT)]),
    };
    let mut egress = vec![own_vllm, dns];
    for store in job_stores {
        // An empty peer list would allow every destination; the CRD requires one peer at least.
        if store.egress.is_empty() {
            continue;
        }
        let rule = NetworkPolicyEgressRule {
            to: Some(store.egress.clone()),
            ports: Some(vec![port("TCP", store.port)]),
        };
        if !egress.contains(&rule) {
            egress.push(rule);
        }
    }
    NetworkPolicy {
        metadata: owner.meta(
            labels::names::worker_tier(instance),
            labels::common(instance, Tier::Worker, None),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(tier(instance, Tier::Worker)),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Who besides the workers may reach vLLM: the operator itself (the warm-up gate asks the
/// model before any traffic) and the metrics scraper.
pub fn vllm_peers(
    operator_namespace: &str,
    scraper_namespace: &str,
    scraper_pods: &BTreeMap<String, String>,
) -> Vec<NetworkPolicyPeer> {
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(operator_namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "mineru-operator".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let scraper = scraper_peer(scraper_namespace, scraper_pods);
    std::iter::once(operator).chain(scraper).collect()
}

/// Every pod of one tier of `instance`.
fn tier(instance: &str, tier: Tier) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels::tier_selector(instance, tier)),
        ..LabelSelector::default()
    }
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned(),
        )])),
        ..LabelSelector::default()
    }
}

/// The scraper as a NetworkPolicy peer: pods (matching `pods`) of the namespace `namespace`.
fn scraper_peer(namespace: &str, pods: &BTreeMap<String, String>) -> Option<NetworkPolicyPeer> {
    (!namespace.is_empty()).then(|| NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(namespace)),
        pod_selector: (!pods.is_empty()).then(|| LabelSelector {
            match_labels: Some(pods.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::reconcile::fixtures::owner;

    fn scraper() -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".into(),
                    "monitoring".into(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }
    }

    #[test]
    fn fences_every_vllm_pod_of_the_deployment() {
        let policy = desired(&owner(), &[]);
        let spec = policy.spec.unwrap();
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selected[labels::TIER], "model");
        assert_eq!(selected[labels::INSTANCE], "docs");
        assert!(!selected.contains_key(labels::REVISION));
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    }

    #[test]
    fn admits_only_this_deployments_workers_on_the_vllm_port() {
        let policy = desired(&owner(), &[]);
        let rule = &policy.spec.unwrap().ingress.unwrap()[0];
        let from = rule.from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        let workers = from[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(workers[labels::TIER], "worker");
        assert_eq!(workers[labels::INSTANCE], "docs");
        assert!(
            from[0].namespace_selector.is_none(),
            "workers of the same namespace only"
        );
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8000))
        );
    }

    #[test]
    fn workers_may_reach_their_own_vllm_and_dns_only() {
        let policy = workers(&owner(), &dns_peers("kube-system", &default_dns_pods()), []);
        assert_eq!(policy.metadata.name.as_deref(), Some("docs-worker"));
        let spec = policy.spec.unwrap();
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selected[labels::TIER], "worker");
        assert_eq!(spec.policy_types.unwrap(), ["Egress"], "ingress stays open");
        let egress = spec.egress.unwrap();
        assert_eq!(egress.len(), 2);
        let vllm = egress[0].to.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(vllm[labels::TIER], "model");
        assert_eq!(vllm[labels::INSTANCE], "docs");
        let dns = &egress[1].to.as_ref().unwrap()[0];
        assert_eq!(
            dns.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["k8s-app"],
            "kube-dns"
        );
        let dns_ports: Vec<_> = egress[1]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
            .collect();
        assert_eq!(
            dns_ports,
            [
                ("UDP".to_owned(), IntOrString::Int(53)),
                ("TCP".to_owned(), IntOrString::Int(53))
            ]
        );
    }

    fn job_store(peer: NetworkPolicyPeer, port: i32) -> JobStore {
        JobStore {
            url_secret_ref: mineru_crds::SecretKeyRef {
                name: "mineru-jobs".into(),
                key: "url".into(),
            },
            egress: vec![peer],
            port,
        }
    }

    #[test]
    fn workers_may_reach_the_job_databases_of_every_running_revision_on_their_port() {
        let database = |namespace: &str| NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(namespace)),
            ..NetworkPolicyPeer::default()
        };
        let outside = NetworkPolicyPeer {
            ip_block: Some(k8s_openapi::api::networking::v1::IPBlock {
                cidr: "203.0.113.7/32".into(),
                except: None,
            }),
            ..NetworkPolicyPeer::default()
        };
        let dns = dns_peers("kube-system", &default_dns_pods());
        let egress = |stores: &[JobStore]| {
            workers(&owner(), &dns, stores)
                .spec
                .unwrap()
                .egress
                .unwrap()
        };
        let without = egress(&[]);
        // The rules after vLLM and DNS, as (peers, ports).
        let extra = |stores: &[JobStore]| {
            let egress = egress(stores);
            assert_eq!(
                egress[..2],
                without[..],
                "vLLM and DNS first, as without a store"
            );
            egress[2..]
                .iter()
                .map(|rule| {
                    let ports: Vec<_> = rule
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
                        .collect();
                    (rule.to.clone().unwrap(), ports)
                })
                .collect::<Vec<_>>()
        };
        let tcp = |port| vec![("TCP".to_owned(), IntOrString::Int(port))];
        for (stores, expected) in [
            (vec![], vec![]),
            (
                vec![job_store(database("databases"), 5432)],
                vec![(vec![database("databases")], tcp(5432))],
            ),
            (
                // Stable and canary on the same database: one rule.
                vec![
                    job_store(database("databases"), 5432),
                    job_store(database("databases"), 5432),
                ],
                vec![(vec![database("databases")], tcp(5432))],
            ),
            (
                // A canary moving the database: the stable workers keep theirs.
                vec![
                    job_store(database("databases"), 5432),
                    job_store(outside.clone(), 6432),
                ],
                vec![
                    (vec![database("databases")], tcp(5432)),
                    (vec![outside.clone()], tcp(6432)),
                ],
            ),
            (
                // No peers would mean every destination: no rule rather than an open one.
                vec![JobStore {
                    egress: vec![],
                    ..job_store(outside.clone(), 5432)
                }],
                vec![],
            ),
        ] {
            assert_eq!(extra(&stores), expected, "{stores:?}");
        }
    }

    #[test]
    fn configured_scraper_is_admitted_too() {
        let policy = desired(&owner(), &[scraper()]);
        let from = policy.spec.unwrap().ingress.unwrap()[0]
            .from
            .clone()
            .unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(from[1], scraper());
    }
}
