//! Gateway API routing: the operator sets the backendRef weights of a user-owned HTTPRoute.
//!
//! The route stays the user's (hostnames, matches, filters, other rules): only the backendRefs of
//! rules that already route to this MineruDeployment — its worker Services or the legacy
//! Service being migrated — are rewritten. Writing happens only when the weights change, and
//! with the route's resourceVersion, so a concurrent edit is retried rather than overwritten.

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};
use serde_json::{Value, json};
use thiserror::Error;

/// The backends a route should send traffic to, and their weights (summing to 100).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backends {
    /// `(Service name, port, weight)`, in the order they are written.
    pub weighted: Vec<(String, i32, i32)>,
    /// Service names this MineruDeployment has routed to before (old revisions, the legacy
    /// Service): rules pointing at any of them are ours to rewrite.
    pub known: Vec<String>,
}

impl Backends {
    /// The baseline (the stable worker Service, or the legacy Service being migrated from)
    /// and the canary worker Service, split by `canary_weight`.
    pub fn split(
        baseline: (&str, i32),
        canary: Option<(&str, i32)>,
        canary_weight: i32,
        known: Vec<String>,
    ) -> Self {
        let canary_weight = if canary.is_some() {
            canary_weight.clamp(0, 100)
        } else {
            0
        };
        let (primary, primary_port) = baseline;
        let mut weighted = vec![(primary.to_owned(), primary_port, 100 - canary_weight)];
        if let Some((name, port)) = canary {
            weighted.push((name.to_owned(), port, canary_weight));
        }
        Backends { weighted, known }
    }
}

/// Why the route could not be routed.
#[derive(Debug, Error)]
pub enum RouteError {
    #[error("HTTPRoute {namespace}/{name} not found; create it (gateway mode routes through it)")]
    Missing { namespace: String, name: String },
    #[error(
        "HTTPRoute {namespace}/{name} has no rule whose backendRefs point at this MineruDeployment's Services ({known}); add one"
    )]
    NoManagedRule {
        namespace: String,
        name: String,
        known: String,
    },
    #[error("HTTPRoute {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What rewriting a route's rules came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Rewrite {
    /// The rules with our backendRefs set to the new weights.
    Changed(Value),
    /// Our rules already carry these weights: nothing to write.
    Unchanged,
    /// No rule routes to this MineruDeployment.
    NotOurs,
}

/// Rewrites the backendRefs of the rules that route to us.
pub fn rewrite_rules(rules: &Value, backends: &Backends) -> Rewrite {
    let Some(rules) = rules.as_array() else {
        return Rewrite::NotOurs;
    };
    let ours = |reference: &Value| {
        let kind_is_service = reference
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(|kind| kind == "Service");
        let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
        kind_is_service
            && (backends.known.iter().any(|known| known == name)
                || backends
                    .weighted
                    .iter()
                    .any(|(weighted, _, _)| weighted == name))
    };
    let desired_refs: Vec<Value> = backends
        .weighted
        .iter()
        .map(|(name, port, weight)| json!({"kind": "Service", "name": name, "port": port, "weight": weight}))
        .collect();

    let mut managed = 0;
    let rewritten: Vec<Value> = rules
        .iter()
        .map(|rule| {
            let refs = rule.get("backendRefs").and_then(Value::as_array);
            if !refs.is_some_and(|refs| refs.iter().any(ours)) {
                return rule.clone();
            }
            managed += 1;
            let mut rule = rule.clone();
            rule["backendRefs"] = Value::Array(desired_refs.clone());
            rule
        })
        .collect();
    if managed == 0 {
        return Rewrite::NotOurs;
    }
    let unchanged = rules.iter().zip(&rewritten).all(|(old, new)| {
        normalized_refs(old.get("backendRefs")) == normalized_refs(new.get("backendRefs"))
    });
    if unchanged {
        Rewrite::Unchanged
    } else {
        Rewrite::Changed(Value::Array(rewritten))
    }
}

/// backendRefs compared by what matters (the apiserver fills `group`, `kind` defaults).
fn normalized_refs(refs: Option<&Value>) -> Vec<(String, i64, i64)> {
    refs.and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    (
                        r.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        r.get("port").and_then(Value::as_i64).unwrap_or(0),
                        r.get("weight").and_then(Value::as_i64).unwrap_or(1),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn http_route_api(client: Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(client, namespace, &ApiResource::from_gvk(&gvk))
}

/// Sets the weights on the route; returns whether it wrote.
pub async fn apply(
    client: Client,
    namespace: &str,
    name: &str,
    backends: &Backends,
) -> Result<bool, RouteError> {
    let api = http_route_api(client, namespace);
    let api_error = |source| RouteError::Api {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    let Some(mut route) = api.get_opt(name).await.map_err(api_error)? else {
        return Err(RouteError::Missing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    };
    let rules = route.data["spec"]["rules"].clone();
    let rules = match rewrite_rules(&rules, backends) {
        Rewrite::Changed(rules) => rules,
        Rewrite::Unchanged => return Ok(false),
        Rewrite::NotOurs => {
            return Err(RouteError::NoManagedRule {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                known: backends.known.join(", "),
            });
        }
    };
    route.data["spec"]["rules"] = rules;
    // Replace carries the resourceVersion read above: a concurrent edit fails with 409 and the
    // reconcile retries on fresh data instead of overwriting it.
    api.replace(&route.name_any(), &PostParams::default(), &route)
        .await
        .map_err(api_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_rules() -> Value {
        json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
             "backendRefs": [{"group": "", "kind": "Service", "name": "docs", "port": 8000, "weight": 1}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
             "backendRefs": [{"name": "someone-else", "port": 80}]}
        ])
    }

    fn known() -> Vec<String> {
        vec![
            "docs".into(),
            "docs-worker-w-old".into(),
            "docs-worker-w-new".into(),
        ]
    }

    #[test]
    fn rewrites_only_rules_routing_to_us_and_keeps_their_matches() {
        let backends = Backends::split(
            ("docs-worker-w-old", 8000),
            Some(("docs-worker-w-new", 8000)),
            10,
            known(),
        );
        let Rewrite::Changed(rules) = rewrite_rules(&route_rules(), &backends) else {
            panic!("expected a change");
        };
        assert_eq!(
            rules[0]["backendRefs"],
            json!([
                {"kind": "Service", "name": "docs-worker-w-old", "port": 8000, "weight": 90},
                {"kind": "Service", "name": "docs-worker-w-new", "port": 8000, "weight": 10}
            ])
        );
        assert_eq!(rules[0]["matches"], route_rules()[0]["matches"]);
        assert_eq!(rules[1], route_rules()[1]);
    }

    #[test]
    fn no_write_when_weights_already_match() {
        let backends = Backends::split(
            ("docs-worker-w-old", 8000),
            Some(("docs-worker-w-new", 8000)),
            50,
            known(),
        );
        let Rewrite::Changed(once) = rewrite_rules(&route_rules(), &backends) else {
            panic!("expected a change");
        };
        // The apiserver adds defaults (group) to what we wrote; that is not a change.
        let mut stored = once.clone();
        for reference in stored[0]["backendRefs"].as_array_mut().unwrap() {
            reference["group"] = json!("");
        }
        assert_eq!(rewrite_rules(&stored, &backends), Rewrite::Unchanged);
    }

    #[test]
    fn a_route_without_our_services_is_an_error() {
        let backends = Backends::split(("docs-worker-w-old", 8000), None, 0, vec!["docs".into()]);
        let rules = json!([{"backendRefs": [{"name": "someone-else", "port": 80}]}]);
        assert_eq!(rewrite_rules(&rules, &backends), Rewrite::NotOurs);
        assert_eq!(rewrite_rules(&json!(null), &backends), Rewrite::NotOurs);
    }

    #[test]
    fn a_legacy_service_as_baseline_shares_with_the_canary_and_old_rules_are_ours() {
        let mut known = known();
        known.push("mineru-api".into());
        let backends = Backends::split(
            ("mineru-api", 8000),
            Some(("docs-worker-w-new", 8000)),
            10,
            known.clone(),
        );
        let rules = json!([{"backendRefs": [{"name": "mineru-api", "port": 8000}]}]);
        let Rewrite::Changed(rewritten) = rewrite_rules(&rules, &backends) else {
            panic!("expected a change");
        };
        assert_eq!(
            rewritten[0]["backendRefs"],
            json!([
                {"kind": "Service", "name": "mineru-api", "port": 8000, "weight": 90},
                {"kind": "Service", "name": "docs-worker-w-new", "port": 8000, "weight": 10}
            ])
        );
        // Once the stack is promoted the legacy Service leaves the rule it was in.
        let promoted = Backends::split(("docs-worker-w-new", 8000), None, 0, known);
        let Rewrite::Changed(after) = rewrite_rules(&rewritten, &promoted) else {
            panic!("expected a change");
        };
        assert_eq!(
            after[0]["backendRefs"],
            json!([{"kind": "Service", "name": "docs-worker-w-new", "port": 8000, "weight": 100}])
        );
    }

    #[test]
    fn without_a_canary_stable_takes_everything() {
        let backends = Backends::split(("docs-worker-w-old", 8000), None, 40, known());
        assert_eq!(
            backends.weighted,
            [("docs-worker-w-old".to_owned(), 8000, 100)]
        );
    }
}
