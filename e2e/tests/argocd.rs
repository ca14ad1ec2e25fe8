//! The Argo CD health script and rollout actions, run with Lua 5.1 (the dialect of Argo CD's
//! gopher-lua) against MineruDeployment fixtures; and the argocd-cm example embeds exactly the
//! tested files.

use std::{fmt::Write as _, process::Command};

use mineru_e2e::repo_path;
use serde_json::{Value, json};

fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => {
            let mut out = String::from("{");
            for (key, field) in fields {
                let _ = write!(
                    out,
                    "[{}] = {}, ",
                    lua_literal(&Value::String(key.clone())),
                    lua_literal(field)
                );
            }
            out.push('}');
            out
        }
    }
}

/// Runs `script` (relative to examples/argocd) with `obj` bound, then `epilogue` on its result `r`.
fn run_lua(script: &str, object: &Value, epilogue: &str) -> String {
    let path = repo_path("examples/argocd").join(script);
    let program = format!(
        "obj = {}\nlocal r = dofile({:?})\n{epilogue}",
        lua_literal(object),
        path.to_str().unwrap()
    );
    let output = Command::new("lua5.1")
        .arg("-e")
        .arg(program)
        .output()
        .expect("lua5.1 is not installed: run `make deps`");
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

fn health(object: &Value) -> String {
    run_lua(
        "health.lua",
        object,
        "print(r.status .. \"|\" .. r.message)",
    )
}

fn mdep(generation: i64, status: Value) -> Value {
    json!({"apiVersion": "mineru.dev/v1alpha1", "kind": "MineruDeployment",
           "metadata": {"name": "docs", "namespace": "parsing", "generation": generation},
           "spec": {}, "status": status})
}

#[test]
fn health_follows_generation_then_phase() {
    let no_status = json!({"metadata": {"name": "docs", "generation": 1}, "spec": {}});
    assert!(health(&no_status).starts_with("Progressing|Waiting for the operator"));
    let stale = mdep(
        3,
        json!({"observedGeneration": 2, "phase": "Healthy", "message": "old"}),
    );
    assert!(health(&stale).starts_with("Progressing|Waiting for the operator"));

    let cases = [
        ("Healthy", "Healthy"),
        ("Progressing", "Progressing"),
        ("Paused", "Suspended"),
        ("Degraded", "Degraded"),
        ("Exploded", "Unknown"),
    ];
    for (phase, expected) in cases {
        let object = mdep(
            4,
            json!({"observedGeneration": 4, "phase": phase, "message": format!("{phase} because")}),
        );
        assert_eq!(health(&object), format!("{expected}|{phase} because"));
    }
    let no_message = mdep(1, json!({"observedGeneration": 1, "phase": "Healthy"}));
    assert_eq!(health(&no_message), "Healthy|Healthy");
}

fn enabled_actions(object: &Value) -> String {
    run_lua(
        "actions/discovery.lua",
        object,
        "local names = {} for name, a in pairs(r) do if not a.disabled then table.insert(names, name) end end table.sort(names) print(table.concat(names, \",\"))",
    )
}

#[test]
fn actions_offered_fit_the_rollout_state() {
    let steady = mdep(1, json!({"observedGeneration": 1, "phase": "Healthy"}));
    assert_eq!(enabled_actions(&steady), "");
    let canary = json!({"modelRevision": "m-2", "workerRevision": "w-2"});
    let rolling = mdep(
        2,
        json!({"observedGeneration": 2, "phase": "Progressing", "canary": canary}),
    );
    assert_eq!(
        enabled_actions(&rolling),
        "abort,pause,promote,promote-full"
    );
    let paused = mdep(
        2,
        json!({"observedGeneration": 2, "phase": "Paused", "canary": canary, "paused": true}),
    );
    assert_eq!(
        enabled_actions(&paused),
        "abort,promote,promote-full,resume"
    );
    let failed = mdep(
        2,
        json!({"observedGeneration": 2, "phase": "Degraded", "failedRevisions": [canary]}),
    );
    assert_eq!(enabled_actions(&failed), "retry");
}

#[test]
fn each_action_sets_its_annotation_and_keeps_others() {
    let cases = [
        ("promote", "mineru.dev/promote", "step"),
        ("promote-full", "mineru.dev/promote", "full"),
        ("abort", "mineru.dev/abort", "true"),
        ("retry", "mineru.dev/retry", "true"),
        ("pause", "mineru.dev/pause", "true"),
        ("resume", "mineru.dev/resume", "true"),
    ];
    for (action, key, value) in cases {
        let mut object = mdep(1, json!({}));
        let script = format!("actions/{action}/action.lua");
        let shown = run_lua(
            &script,
            &object,
            &format!("print(r.metadata.annotations[{key:?}])"),
        );
        assert_eq!(shown, value, "{action} on an object without annotations");
        object["metadata"]["annotations"] = json!({"team": "docs"});
        let kept = run_lua(&script, &object, "print(r.metadata.annotations[\"team\"])");
        assert_eq!(kept, "docs", "{action} dropped an annotation");
    }
}

#[test]
fn the_argocd_cm_example_embeds_the_tested_scripts() {
    let read = |relative: &str| {
        std::fs::read_to_string(repo_path("examples/argocd").join(relative)).unwrap()
    };
    let config_map: Value = serde_yaml::from_str(&read("argocd-cm.yaml")).unwrap();
    let data = &config_map["data"];
    assert_eq!(
        data["resource.customizations.health.mineru.dev_MineruDeployment"],
        read("health.lua")
    );
    let actions: Value = serde_yaml::from_str(
        data["resource.customizations.actions.mineru.dev_MineruDeployment"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(actions["discovery.lua"], read("actions/discovery.lua"));
    let definitions = actions["definitions"].as_array().unwrap();
    assert_eq!(definitions.len(), 6);
    for definition in definitions {
        let name = definition["name"].as_str().unwrap();
        assert_eq!(
            definition["action.lua"],
            read(&format!("actions/{name}/action.lua")),
            "{name}"
        );
    }
}
