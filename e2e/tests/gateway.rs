//! The Gateway API router on a real apiserver with the Gateway API CRDs: weights land on the
//! user's HTTPRoute, its own fields survive, and an unchanged split writes nothing.

use mineru_e2e::controlplane::{ControlPlane, Nodes};
use mineru_operator::traffic::httproute::{Backends, RouteError, apply};

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mineru, namespace: parsing}
spec:
  parentRefs: [{name: public}]
  hostnames: [docs.example]
  rules:
  - matches: [{path: {type: PathPrefix, value: /file_parse}}]
    backendRefs: [{name: mineru-api, port: 8000}]
";

fn weights(plane: &ControlPlane) -> String {
    plane
        .kubectl(&[
            "get",
            "httproute",
            "mineru",
            "-n",
            "parsing",
            "-o",
            "jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}",
        ])
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn httproute_weights_follow_the_rollout() {
    let plane = ControlPlane::start(
        "gateway",
        &Nodes {
            gpu_nodes: 0,
            gpus_per_node: 0,
            cpu_nodes: 1,
        },
    )
    .unwrap();
    plane.install_gateway_api().unwrap();
    plane.kubectl(&["create", "namespace", "parsing"]).unwrap();
    let client = plane.admin_client().await.unwrap();

    let missing = apply(
        client.clone(),
        "parsing",
        "mineru",
        &Backends::split(("docs-worker-w-1", 8000), None, 0, vec![]),
    )
    .await;
    assert!(
        matches!(missing, Err(RouteError::Missing { .. })),
        "{missing:?}"
    );

    plane.apply(ROUTE).unwrap();
    let known = vec![
        "mineru-api".to_owned(),
        "docs-worker-w-1".to_owned(),
        "docs-worker-w-2".to_owned(),
    ];
    let stable = ("docs-worker-w-1", 8000);
    let canary = Some(("docs-worker-w-2", 8000));
    let legacy = ("mineru-api", 8000);

    // Migration from the legacy Service: 10% to the new stack.
    assert!(
        apply(
            client.clone(),
            "parsing",
            "mineru",
            &Backends::split(legacy, canary, 10, known.clone())
        )
        .await
        .unwrap()
    );
    assert_eq!(weights(&plane), "mineru-api=90 docs-worker-w-2=10");
    // The same split again writes nothing.
    assert!(
        !apply(
            client.clone(),
            "parsing",
            "mineru",
            &Backends::split(legacy, canary, 10, known.clone())
        )
        .await
        .unwrap()
    );
    // A later rollout between two revisions of the stack.
    assert!(
        apply(
            client.clone(),
            "parsing",
            "mineru",
            &Backends::split(stable, canary, 50, known.clone())
        )
        .await
        .unwrap()
    );
    assert_eq!(weights(&plane), "docs-worker-w-1=50 docs-worker-w-2=50");
    assert!(
        apply(
            client.clone(),
            "parsing",
            "mineru",
            &Backends::split(("docs-worker-w-2", 8000), None, 0, known)
        )
        .await
        .unwrap()
    );
    assert_eq!(weights(&plane), "docs-worker-w-2=100");

    // The user's parts of the route are untouched.
    let hostnames = plane
        .kubectl(&[
            "get",
            "httproute",
            "mineru",
            "-n",
            "parsing",
            "-o",
            "jsonpath={.spec.hostnames[0]} {.spec.rules[0].matches[0].path.value}",
        ])
        .unwrap();
    assert_eq!(hostnames, "docs.example /file_parse");
}
