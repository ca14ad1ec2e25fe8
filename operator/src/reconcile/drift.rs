//! Drift: a field the operator applies that someone else has since taken over (`kubectl edit`,
//! `kubectl scale`, another controller's write). Server-side apply records who owns each field
//! in `managedFields`, so drift is read there rather than by comparing values, which the API
//! server normalizes (quantities, defaults) and would make every round look changed.
//!
//! A field counts when another manager owns it, the desired object sets it, and our manager no
//! longer owns it: a writer who set the same value as ours shares ownership and is no drift.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::Value;

/// The manager that took over a field of `desired` from `ours`, if any.
pub fn taken_over(managed: &[ManagedFieldsEntry], ours: &str, desired: &Value) -> Option<String> {
    let our_fields: Vec<&Value> = managed
        .iter()
        .filter(|entry| entry.manager.as_deref() == Some(ours) && main_resource(entry))
        .filter_map(|entry| entry.fields_v1.as_ref().map(|f| &f.0))
        .collect();
    managed
        .iter()
        .filter(|entry| entry.manager.as_deref() != Some(ours) && writes_spec(entry))
        .find_map(|entry| {
            let fields = &entry.fields_v1.as_ref()?.0;
            let mut path = Vec::new();
            let mut taken = false;
            leaves_in_desired(fields, desired, &mut path, &mut |leaf| {
                taken |= !our_fields.iter().any(|ours| owns(ours, leaf));
            });
            taken.then(|| entry.manager.clone().unwrap_or_default())
        })
}

fn main_resource(entry: &ManagedFieldsEntry) -> bool {
    entry.subresource.as_deref().unwrap_or_default().is_empty()
}

/// Writes to the object itself or its `scale`; `status` is the controllers' to write.
fn writes_spec(entry: &ManagedFieldsEntry) -> bool {
    main_resource(entry) || entry.subresource.as_deref() == Some("scale")
}

/// Calls `found` with the path (fieldsV1 keys) of every owned leaf that `desired` sets.
fn leaves_in_desired<'a>(
    fields: &'a Value,
    desired: &Value,
    path: &mut Vec<&'a str>,
    found: &mut dyn FnMut(&[&'a str]),
) {
    let Some(entries) = fields.as_object() else {
        return;
    };
    for (key, child) in entries {
        let Some(value) = element(desired, key) else {
            continue;
        };
        path.push(key);
        let children = child.as_object().map_or(0, |c| c.len());
        if children == 0 {
            found(path);
        } else {
            leaves_in_desired(child, value, path, found);
        }
        path.pop();
    }
}

/// The part of `desired` a fieldsV1 key names: `f:<field>`, `k:<list item by keys>`,
/// `v:<set value>`, `i:<index>`; `.` (the node itself, no value of its own) names nothing.
fn element<'v>(desired: &'v Value, key: &str) -> Option<&'v Value> {
    if let Some(field) = key.strip_prefix("f:") {
        return desired.get(field);
    }
    let items = desired.as_array()?;
    if let Some(keys) = key.strip_prefix("k:") {
        let keys: Value = serde_json::from_str(keys).ok()?;
        let keys = keys.as_object()?;
        return items
            .iter()
            .find(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    if let Some(value) = key.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        return items.iter().find(|item| **item == value);
    }
    let index: usize = key.strip_prefix("i:")?.parse().ok()?;
    items.get(index)
}

/// Whether a fieldsV1 tree holds the leaf at `path`.
fn owns(fields: &Value, path: &[&str]) -> bool {
    path.iter()
        .try_fold(fields, |node, key| node.get(*key))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    fn entry(manager: &str, subresource: Option<&str>, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn desired() -> Value {
        json!({
            "metadata": {"name": "docs-worker-w-1", "labels": {"app": "mineru"}},
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [
                    {"name": "worker", "image": "worker:1", "ports": [{"containerPort": 8000}]}
                ]}}
            }
        })
    }

    fn ours(fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            operation: Some("Apply".into()),
            ..entry("mineru-operator", None, fields)
        }
    }

    const ALL_OURS: &str = r#"{"f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"worker\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}"#;

    #[test]
    fn a_scale_by_someone_else_is_drift() {
        let mut our_fields: Value = serde_json::from_str(ALL_OURS).unwrap();
        our_fields["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        let managed = [
            ours(our_fields),
            entry(
                "kubectl",
                Some("scale"),
                json!({"f:spec": {"f:replicas": {}}}),
            ),
        ];
        assert_eq!(
            taken_over(&managed, "mineru-operator", &desired()),
            Some("kubectl".into())
        );
    }

    #[test]
    fn an_edited_image_inside_a_keyed_list_is_drift() {
        let mut our_fields: Value = serde_json::from_str(ALL_OURS).unwrap();
        let container = &mut our_fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"worker\"}"];
        container.as_object_mut().unwrap().remove("f:image");
        let edit = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"worker\"}": {"f:image": {}}}}}}});
        let managed = [ours(our_fields), entry("kubectl-edit", None, edit)];
        assert_eq!(
            taken_over(&managed, "mineru-operator", &desired()),
            Some("kubectl-edit".into())
        );
    }

    #[test]
    fn status_writes_foreign_fields_and_shared_values_are_not_drift() {
        let all_ours: Value = serde_json::from_str(ALL_OURS).unwrap();
        let managed = [
            ours(all_ours),
            // The controller's status and its own annotation.
            entry(
                "kube-controller-manager",
                Some("status"),
                json!({"f:status": {"f:replicas": {}}}),
            ),
            entry(
                "kube-controller-manager",
                None,
                json!({"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}}),
            ),
            // Someone labelled it: not a field we set.
            entry(
                "kubectl-label",
                None,
                json!({"f:metadata": {"f:labels": {"f:team": {}}}}),
            ),
            // Another applier set the same replicas: ownership is shared, we still own it.
            entry("argocd", None, json!({"f:spec": {"f:replicas": {}}})),
        ];
        assert_eq!(taken_over(&managed, "mineru-operator", &desired()), None);
    }
}
