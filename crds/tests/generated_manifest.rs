//! The committed CRD manifest is what the types generate, and its schema is structural.

use serde_json::Value;

const COMMITTED: &str = include_str!("../minerudeployments.yaml");

#[test]
fn committed_manifest_matches_the_types() {
    assert!(
        COMMITTED == mineru_crds::crd_yaml(),
        "crds/minerudeployments.yaml is out of date: run `make crds`"
    );
}

#[test]
fn helm_chart_ships_the_same_crd() {
    let in_chart = include_str!("../../charts/mineru-operator/crds/minerudeployments.yaml");
    assert!(
        in_chart == mineru_crds::crd_yaml(),
        "charts/mineru-operator/crds/minerudeployments.yaml is out of date: run `make crds`"
    );
}

/// The apiserver rejects non-structural schemas (and prunes unknown fields by them): every node
/// must declare its type, and anyOf/oneOf/allOf/not may only restate validations, never types.
#[test]
fn schema_is_structural() {
    let crd: Value = serde_yaml::from_str(COMMITTED).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut problems = Vec::new();
    check_node(schema, "openAPIV3Schema", &mut problems);
    assert!(
        problems.is_empty(),
        "non-structural schema:\n{}",
        problems.join("\n")
    );
}

fn check_node(node: &Value, path: &str, problems: &mut Vec<String>) {
    let object = node.as_object().expect("schema nodes are objects");
    let escape_hatch = object.contains_key("x-kubernetes-int-or-string")
        || object.contains_key("x-kubernetes-preserve-unknown-fields");
    if !object.contains_key("type") && !escape_hatch {
        problems.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "definitions", "$defs"] {
        if object.contains_key(forbidden) {
            problems.push(format!("{path}: {forbidden}"));
        }
    }
    for junction in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(branches) = object.get(junction) {
            let branches = branches
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![branches.clone()]);
            for branch in branches {
                for key in [
                    "type",
                    "properties",
                    "items",
                    "default",
                    "description",
                    "nullable",
                ] {
                    if branch.get(key).is_some() {
                        problems.push(format!("{path}: {junction} branch sets {key}"));
                    }
                }
            }
        }
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            check_node(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = object.get("items") {
        check_node(items, &format!("{path}[]"), problems);
    }
    if let Some(Value::Object(_)) = object.get("additionalProperties") {
        check_node(
            &object["additionalProperties"],
            &format!("{path}{{}}"),
            problems,
        );
    }
}

#[test]
fn every_spec_field_is_documented() {
    let crd: Value = serde_yaml::from_str(COMMITTED).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut undocumented = Vec::new();
    collect_undocumented(spec, "spec", &mut undocumented);
    assert!(
        undocumented.is_empty(),
        "fields without a description: {undocumented:?}"
    );
}

fn collect_undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            if child.get("description").is_none() {
                out.push(child_path.clone());
            }
            collect_undocumented(child, &child_path, out);
        }
    }
    if let Some(items) = node.get("items") {
        collect_undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn committed_reference_matches_the_types() {
    let committed = include_str!("../../docs/crd-reference.md");
    assert!(
        committed == mineru_crds::crd_reference(),
        "docs/crd-reference.md is out of date: run `make crds`"
    );
}
