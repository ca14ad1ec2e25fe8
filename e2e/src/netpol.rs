//! A NetworkPolicy evaluator: whether a connection between two endpoints is allowed by a set of
//! `networking.k8s.io/v1` NetworkPolicies, following the API's semantics — a pod selected by a
//! policy of a type is isolated in that direction and admits only what some selecting policy's
//! rules allow; a connection needs the source's egress and the destination's ingress. Until the
//! suite runs a data path that enforces policies, the generated policies are judged with it.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

/// One end of a connection.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A pod: its namespace, that namespace's labels, and its own labels.
    Pod {
        namespace: String,
        namespace_labels: BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    },
    /// An address outside the cluster's pods (the API server, the internet).
    External(Ipv4Addr),
}

impl Endpoint {
    /// A pod in `namespace` (labelled `kubernetes.io/metadata.name`, as the API server does).
    pub fn pod(namespace: &str, labels: &[(&str, &str)]) -> Endpoint {
        Endpoint::Pod {
            namespace: namespace.to_owned(),
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                namespace.to_owned(),
            )]),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// The same pod with `labels` (e.g. a pod template's).
    pub fn pod_labelled(namespace: &str, labels: &BTreeMap<String, String>) -> Endpoint {
        let mut pod = Endpoint::pod(namespace, &[]);
        if let Endpoint::Pod { labels: own, .. } = &mut pod {
            own.clone_from(labels);
        }
        pod
    }
}

/// Whether `selector` selects `labels`; an empty selector selects everything.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown selector operator {other:?}"),
        }
    });
    by_label && by_expression
}

/// Direction of a policy rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// The policy types of `policy`, defaulted as the API server does when none are given:
/// Ingress always, Egress when the policy has at least one egress rule.
fn types(policy: &NetworkPolicy) -> Vec<Direction> {
    let spec = policy.spec.as_ref().expect("a policy has a spec");
    let has_egress = spec.egress.as_ref().is_some_and(|rules| !rules.is_empty());
    match spec.policy_types.as_ref().filter(|types| !types.is_empty()) {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                "Ingress" => Direction::Ingress,
                "Egress" => Direction::Egress,
                other => panic!("unknown policy type {other:?}"),
            })
            .collect(),
        None if has_egress => vec![Direction::Ingress, Direction::Egress],
        None => vec![Direction::Ingress],
    }
}

/// Whether `policy` selects `endpoint` (a pod of the policy's namespace).
fn applies_to(policy: &NetworkPolicy, endpoint: &Endpoint) -> bool {
    let Endpoint::Pod {
        namespace, labels, ..
    } = endpoint
    else {
        return false;
    };
    let spec = policy.spec.as_ref().expect("a policy has a spec");
    policy.metadata.namespace.as_deref() == Some(namespace.as_str())
        && selects(&spec.pod_selector.clone().unwrap_or_default(), labels)
}

/// Whether `peer` of a rule in a policy of `policy_namespace` names `endpoint`.
fn peer_matches(peer: &NetworkPolicyPeer, policy_namespace: &str, endpoint: &Endpoint) -> bool {
    let (namespace, namespace_labels, labels) = match endpoint {
        Endpoint::Pod {
            namespace,
            namespace_labels,
            labels,
        } => (namespace, namespace_labels, labels),
        // Only an ipBlock names addresses outside the pods. Pod addresses are not modelled: many
        // CNIs match them against ipBlocks too, which is why the chart warns to keep pod CIDRs
        // out of its egressCIDRs.
        Endpoint::External(address) => {
            return peer.ip_block.as_ref().is_some_and(|block| {
                in_cidr(*address, &block.cidr)
                    && !block.except.iter().flatten().any(|c| in_cidr(*address, c))
            });
        }
    };
    match (&peer.namespace_selector, &peer.pod_selector) {
        (None, None) => false,
        (None, Some(pods)) => namespace == policy_namespace && selects(pods, labels),
        (Some(namespaces), pods) => {
            selects(namespaces, namespace_labels)
                && pods.as_ref().is_none_or(|pods| selects(pods, labels))
        }
    }
}

fn in_cidr(address: Ipv4Addr, cidr: &str) -> bool {
    let (network, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let network: Ipv4Addr = network
        .parse()
        .unwrap_or_else(|_| panic!("{cidr:?} is not IPv4"));
    let bits: u32 = bits.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(address) & mask == u32::from(network) & mask
}

fn port_matches(ports: Option<&Vec<NetworkPolicyPort>>, protocol: &str, port: i32) -> bool {
    let Some(ports) = ports.filter(|ports| !ports.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
        let same_port = match &p.port {
            None => true,
            Some(IntOrString::Int(number)) => match p.end_port {
                Some(end) => (*number..=end).contains(&port),
                None => *number == port,
            },
            Some(IntOrString::String(name)) => panic!("named port {name:?} is not evaluated"),
        };
        same_protocol && same_port
    })
}

/// Whether `policies` let `from` open a connection to `to` on `protocol`/`port`: `from`'s
/// egress and `to`'s ingress must both admit it.
pub fn allowed(
    policies: &[NetworkPolicy],
    from: &Endpoint,
    to: &Endpoint,
    protocol: &str,
    port: i32,
) -> bool {
    admits(policies, Direction::Egress, from, to, protocol, port)
        && admits(policies, Direction::Ingress, to, from, protocol, port)
}

/// A rule's peers (`from` or `to`) and ports.
type Rule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// Whether `subject`'s policies of `direction` admit traffic with `peer`: a subject no such
/// policy selects is not isolated; one that is needs a rule whose peers and ports match.
fn admits(
    policies: &[NetworkPolicy],
    direction: Direction,
    subject: &Endpoint,
    peer: &Endpoint,
    protocol: &str,
    port: i32,
) -> bool {
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| applies_to(p, subject) && types(p).contains(&direction))
        .collect();
    selecting.is_empty()
        || selecting.iter().any(|policy| {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
            let spec = policy.spec.as_ref().unwrap();
            let rules: Vec<Rule> = match direction {
                Direction::Ingress => spec
                    .ingress
                    .iter()
                    .flatten()
                    .map(|rule| (rule.from.as_ref(), rule.ports.as_ref()))
                    .collect(),
                Direction::Egress => spec
                    .egress
                    .iter()
                    .flatten()
                    .map(|rule| (rule.to.as_ref(), rule.ports.as_ref()))
                    .collect(),
            };
            rules.into_iter().any(|(peers, ports)| {
                // No peers, or an empty list: every peer.
                let peer_matches = peers.is_none_or(|peers| {
                    peers.is_empty() || peers.iter().any(|p| peer_matches(p, namespace, peer))
                });
                peer_matches && port_matches(ports, protocol, port)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> NetworkPolicy {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// The API reference's examples: deny-all, allow from a namespace, and egress to a port.
    #[test]
    fn follows_the_semantics_of_the_api() {
        let web = Endpoint::pod("prod", &[("app", "web")]);
        let db = Endpoint::pod("prod", &[("app", "db")]);
        let tool = Endpoint::pod("tools", &[("app", "tool")]);
        assert!(
            allowed(&[], &web, &db, "TCP", 5432),
            "no policy, no isolation"
        );

        let deny_ingress = policy(
            "metadata: {name: deny, namespace: prod}\nspec: {podSelector: {}, policyTypes: [Ingress]}",
        );
        assert!(!allowed(
            std::slice::from_ref(&deny_ingress),
            &web,
            &db,
            "TCP",
            5432
        ));
        assert!(
            allowed(std::slice::from_ref(&deny_ingress), &db, &tool, "TCP", 80),
            "egress open"
        );

        let from_web = policy(
            "metadata: {name: db, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]",
        );
        let both = [deny_ingress.clone(), from_web];
        assert!(allowed(&both, &web, &db, "TCP", 5432), "policies add up");
        assert!(!allowed(&both, &web, &db, "TCP", 5433), "other port");
        assert!(!allowed(&both, &web, &db, "UDP", 5432), "other protocol");
        assert!(
            !allowed(&both, &tool, &db, "TCP", 5432),
            "a podSelector alone is the policy's namespace"
        );

        let from_tools = policy(
            "metadata: {name: t, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: tools}}}]}]",
        );
        assert!(allowed(&[from_tools], &tool, &db, "TCP", 1));

        let egress_dns = policy(
            "metadata: {name: e, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: 53, protocol: UDP}]}]",
        );
        let egress = [egress_dns];
        let outside = Endpoint::External(Ipv4Addr::new(203, 0, 113, 7));
        assert!(
            allowed(&egress, &web, &outside, "UDP", 53),
            "no `to`: anywhere"
        );
        assert!(!allowed(&egress, &web, &outside, "TCP", 443));
        let to_block = policy(
            "metadata: {name: b, namespace: prod}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.7/32]}}]}]",
        );
        let block = [to_block];
        assert!(allowed(
            &block,
            &web,
            &Endpoint::External(Ipv4Addr::new(203, 0, 113, 8)),
            "TCP",
            443
        ));
        assert!(!allowed(&block, &web, &outside, "TCP", 443), "excepted");
        assert!(
            !allowed(&block, &web, &db, "TCP", 443),
            "an ipBlock names no pod here"
        );
        assert!(!allowed(&egress, &web, &db, "TCP", 5432));
        assert!(
            allowed(&egress, &db, &web, "TCP", 80),
            "only web is isolated"
        );
    }
}
