//! The chart's ClusterRole grants exactly the access the code declares it uses.

use std::collections::{BTreeMap, BTreeSet};

use mineru_operator::rbac::API_ACCESS;
use serde_yaml::Value;

type Grants = BTreeMap<(String, String), BTreeSet<String>>;

fn chart_grants() -> Grants {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/mineru-operator/templates/clusterrole.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    // Template lines (the chart's label helper) are not YAML; the rules carry none.
    let yaml: String = text
        .lines()
        .filter(|line| !line.contains("{{"))
        .map(|line| format!("{line}\n"))
        .collect();
    let role: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(role["kind"], "ClusterRole");
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let mut grants = Grants::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                grants
                    .entry((group.clone(), resource))
                    .or_default()
                    .extend(strings(&rule["verbs"]));
            }
        }
    }
    grants
}

fn code_grants() -> Grants {
    let mut grants = Grants::new();
    for access in API_ACCESS {
        grants
            .entry((access.group.to_owned(), access.resource.to_owned()))
            .or_default()
            .extend(access.verbs.iter().map(|v| (*v).to_owned()));
    }
    grants
}

#[test]
fn cluster_role_grants_exactly_what_the_code_uses() {
    assert_eq!(chart_grants(), code_grants());
}

#[test]
fn cluster_role_has_no_wildcards() {
    for ((group, resource), verbs) in chart_grants() {
        assert!(
            group != "*" && resource != "*" && !verbs.contains("*"),
            "{group}/{resource}: {verbs:?}"
        );
    }
}
