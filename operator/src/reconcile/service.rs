//! Services: per model revision a headless and a ClusterIP Service, per worker revision a
//! ClusterIP Service, and the entry Service clients call.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use mineru_crds::{ServiceType, Tier};

use super::Owner;
use crate::{VLLM_PORT, WORKER_PORT, labels};

/// The headless Service `<name>-vllm-<revision>-pods` governing the StatefulSet.
pub fn vllm_headless(owner: &Owner, revision: &str) -> Service {
    let instance = &owner.instance;
    Service {
        metadata: owner.meta(
            labels::names::vllm_pods(instance, revision),
            labels::common(instance, Tier::Model, Some(revision)),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // The warm-up gate talks to each pod before it is Ready and receives traffic.
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::revision_selector(instance, Tier::Model, revision)),
            ports: Some(vec![http_port(VLLM_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service `<name>-vllm-<revision>` that the revision's workers call.
pub fn vllm(owner: &Owner, revision: &str) -> Service {
    let instance = &owner.instance;
    Service {
        metadata: owner.meta(
            labels::names::vllm(instance, revision),
            labels::common(instance, Tier::Model, Some(revision)),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels::revision_selector(instance, Tier::Model, revision)),
            ports: Some(vec![http_port(VLLM_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service `<name>-worker-<revision>`: a precise backend for weighted routing and
/// for sending the quality gate's documents to one revision.
pub fn worker(owner: &Owner, revision: &str) -> Service {
    let instance = &owner.instance;
    Service {
        metadata: owner.meta(
            labels::names::worker(instance, revision),
            labels::common(instance, Tier::Worker, Some(revision)),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels::revision_selector(instance, Tier::Worker, revision)),
            ports: Some(vec![http_port(WORKER_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The entry Service `<name>`: selects the workers of `revision`, or of every revision of this
/// MineruDeployment while a canary shares the traffic by replica ratio (its share is then its
/// share of ready workers). Narrowing the selector is what takes a rolled-back canary's workers
/// out of it at once, before they are scaled down.
pub fn entry(owner: &Owner, spec: &mineru_crds::ServiceSpec, revision: Option<&str>) -> Service {
    let instance = &owner.instance;
    let service_type = match spec.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: owner.meta(
            instance.clone(),
            labels::common(instance, Tier::Worker, None),
        ),
        spec: Some(ServiceSpec {
            type_: Some(service_type.into()),
            selector: Some(match revision {
                Some(revision) => labels::revision_selector(instance, Tier::Worker, revision),
                None => labels::tier_selector(instance, Tier::Worker),
            }),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: spec.port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn http_port(port: i32) -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port,
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::owner;

    fn spec(service: &Service) -> &ServiceSpec {
        service.spec.as_ref().unwrap()
    }

    #[test]
    fn headless_service_is_named_for_the_statefulset_and_publishes_unready_pods() {
        let service = vllm_headless(&owner(), "m-0123abcd");
        assert_eq!(
            service.metadata.name.as_deref(),
            Some("docs-vllm-m-0123abcd-pods")
        );
        assert_eq!(spec(&service).cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec(&service).publish_not_ready_addresses, Some(true));
    }

    #[test]
    fn vllm_service_selects_only_its_model_revision() {
        let service = vllm(&owner(), "m-0123abcd");
        assert_eq!(
            service.metadata.name.as_deref(),
            Some("docs-vllm-m-0123abcd")
        );
        let selector = spec(&service).selector.as_ref().unwrap();
        assert_eq!(selector[labels::REVISION], "m-0123abcd");
        assert_eq!(selector[labels::TIER], "model");
        assert_eq!(selector[labels::INSTANCE], "docs");
        assert_eq!(spec(&service).ports.as_ref().unwrap()[0].port, 8000);
    }

    #[test]
    fn worker_service_selects_only_its_worker_revision() {
        let service = worker(&owner(), "w-89abcdef");
        assert_eq!(
            service.metadata.name.as_deref(),
            Some("docs-worker-w-89abcdef")
        );
        let selector = spec(&service).selector.as_ref().unwrap();
        assert_eq!(selector[labels::REVISION], "w-89abcdef");
        assert_eq!(selector[labels::TIER], "worker");
    }

    #[test]
    fn entry_service_selects_workers_of_every_revision_on_the_configured_port() {
        let service = entry(
            &owner(),
            &mineru_crds::ServiceSpec {
                port: 80,
                service_type: ServiceType::LoadBalancer,
            },
            None,
        );
        assert_eq!(service.metadata.name.as_deref(), Some("docs"));
        assert_eq!(spec(&service).type_.as_deref(), Some("LoadBalancer"));
        let selector = spec(&service).selector.as_ref().unwrap();
        assert!(!selector.contains_key(labels::REVISION));
        assert_eq!(selector[labels::TIER], "worker");
        let port = &spec(&service).ports.as_ref().unwrap()[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    }

    #[test]
    fn entry_service_can_select_one_worker_revision_alone() {
        let service = entry(
            &owner(),
            &mineru_crds::ServiceSpec {
                port: 8000,
                service_type: ServiceType::ClusterIP,
            },
            Some("w-89abcdef"),
        );
        let selector = spec(&service).selector.as_ref().unwrap();
        assert_eq!(selector[labels::REVISION], "w-89abcdef");
        assert_eq!(selector[labels::TIER], "worker");
        assert_eq!(selector[labels::INSTANCE], "docs");
    }
}
