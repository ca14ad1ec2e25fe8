//! The Grafana dashboards the chart ships (`charts/mineru-operator/files/dashboards`) and its
//! Prometheus rules (`files/prometheus-rules.yaml`). Each dashboard is well formed for Grafana's
//! provisioning; and on a rollout that ends in a rollback — the real operator on the real control
//! plane, both revisions' workers and vLLM simulators, one real Prometheus scraping all of them —
//! every panel's query and every rule finds the series it reads. A renamed metric or label fails
//! here instead of as an empty panel, or an alert that can never fire.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mineru_crds::Phase;
use mineru_e2e::{
    controlplane::Nodes,
    repo_path, rules,
    scenario::{NAMESPACE, Scenario},
    wait_until,
};
use mineru_operator::metrics::{Hold, Metrics, ObjectState};
use serde_json::{Value, json};

/// Grafana's own variables, with the durations the test stands in for them: long enough that
/// `rate()` sees several samples at the scenario's 1 s scrape interval.
const GRAFANA_VARIABLES: [(&str, &str); 3] = [
    ("__rate_interval", "30s"),
    ("__interval", "15s"),
    ("__range", "10m"),
];

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_path("charts/mineru-operator/files/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let dashboard = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            (file, dashboard)
        })
        .collect()
}

/// Every panel, those nested in collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn variables(dashboard: &Value) -> &[Value] {
    dashboard["templating"]["list"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// Panels and variables query the Prometheus picked in the `datasource` variable, so the
/// dashboards work with whatever the Grafana they are provisioned to calls it.
fn is_the_datasource_variable(datasource: &Value) -> bool {
    datasource["type"] == "prometheus" && datasource["uid"] == "${datasource}"
}

/// The query of a variable of type `query` (`label_values(...)`).
fn variable_query(variable: &Value) -> &str {
    variable["query"]["query"]
        .as_str()
        .or_else(|| variable["query"].as_str())
        .or_else(|| variable["definition"].as_str())
        .unwrap_or_default()
}

/// `expr` with Grafana's `$name`, `${name}` and `${name:format}` replaced by `values`; `Err`
/// names a variable without a value. `$1` (a regex group) is no variable.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, length) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("an unclosed ${{ in {expr}"))?;
                (braced[..end].split(':').next().unwrap_or_default(), end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
            out.push('$');
            rest = after;
            continue;
        }
        let value = values
            .get(name)
            .ok_or_else(|| format!("${name} is no variable of the dashboard"))?;
        out.push_str(value);
        rest = &after[length..];
    }
    out.push_str(rest);
    Ok(out)
}

fn grafana_variables() -> BTreeMap<String, String> {
    GRAFANA_VARIABLES
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn every_dashboard_is_well_formed_for_grafana_provisioning() {
    let dashboards = dashboards();
    assert!(dashboards.len() >= 3, "rollouts, workers and vLLM");
    let mut uids = BTreeSet::new();
    for (file, dashboard) in &dashboards {
        // Provisioning keys a dashboard by uid: a clash would replace another one silently.
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{file}: uid {uid:?} (1 to 40 characters)"
        );
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} taken twice");
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        assert!(
            dashboard["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
            "{file}: schemaVersion {} (datasources as objects need 36 or later)",
            dashboard["schemaVersion"]
        );

        let variables = variables(dashboard);
        let mut values = grafana_variables();
        for variable in variables {
            let name = variable["name"].as_str().unwrap_or_default();
            assert!(!name.is_empty(), "{file}: a variable without a name");
            values.insert(name.to_owned(), "x".to_owned());
        }
        let datasource = variables.iter().find(|v| v["name"] == "datasource");
        assert!(
            datasource.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{file}: no Prometheus `datasource` variable"
        );
        for required in ["namespace", "name"] {
            let variable = variables.iter().find(|v| v["name"] == required);
            assert!(
                variable.is_some_and(
                    |v| v["type"] == "query" && variable_query(v).starts_with("label_values(")
                ),
                "{file}: no `{required}` variable from label_values"
            );
        }
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            assert!(
                is_the_datasource_variable(&variable["datasource"]),
                "{file}: variable {} does not query ${{datasource}}",
                variable["name"]
            );
            substitute(variable_query(variable), &values)
                .unwrap_or_else(|error| panic!("{file}: variable {}: {error}", variable["name"]));
        }

        let mut ids = BTreeSet::new();
        for panel in panels(dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(
                !title.is_empty(),
                "{file}: a panel without a title: {panel}"
            );
            let id = panel["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{file}: {title}: no id"));
            assert!(
                ids.insert(id),
                "{file}: panel id {id} taken twice ({title})"
            );
            let grid = &panel["gridPos"];
            let [h, w, x, y] = ["h", "w", "x", "y"].map(|key| grid[key].as_u64());
            assert!(
                h.is_some_and(|h| h > 0)
                    && y.is_some()
                    && w.zip(x).is_some_and(|(w, x)| w > 0 && x + w <= 24),
                "{file}: {title}: gridPos {grid}"
            );
            // Rows only group the panels below them: they query nothing.
            if panel["type"] == "row" {
                continue;
            }
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file}: {title}: no description"
            );
            assert!(
                is_the_datasource_variable(&panel["datasource"]),
                "{file}: {title}: datasource {} is not ${{datasource}}",
                panel["datasource"]
            );
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            for target in &targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "{file}: {title}: a target without expr");
                assert!(
                    target
                        .get("datasource")
                        .is_none_or(is_the_datasource_variable),
                    "{file}: {title}: a target's datasource is not ${{datasource}}"
                );
                substitute(expr, &values)
                    .unwrap_or_else(|error| panic!("{file}: {title}: {error}"));
            }
        }
    }
}

/// The address in the operator's "serving /metrics" log line (fields may carry colour codes).
fn metrics_address(log: &str) -> Option<String> {
    const HOST: &str = "127.0.0.1:";
    let line = log.lines().find(|line| line.contains("serving /metrics"))?;
    let at = line.find(HOST)? + HOST.len();
    let port: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!port.is_empty()).then(|| format!("{HOST}{port}"))
}

/// Scrapes the scenario as the chart's PodMonitors do: the operator's /metrics too, its labels
/// kept (`honorLabels`: `namespace` is the MineruDeployment's), and the tiers' targets with the
/// `pod` label the Prometheus Operator attaches, named as the operator names its pods (the
/// revision variables and the rules tell MineruDeployments apart by it). Loads `rules` too.
fn scrape_as_the_chart_does(scenario: &Scenario, rules: &Path) {
    let log = scenario.plane.dir().join("logs").join("operator-0.log");
    let address = wait_until(
        "the operator to serve /metrics",
        Duration::from_secs(60),
        || {
            Ok(metrics_address(
                &std::fs::read_to_string(&log).unwrap_or_default(),
            ))
        },
    )
    .unwrap();
    let path = scenario
        .plane
        .dir()
        .join("prometheus")
        .join("prometheus.yml");
    let mut config: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let jobs = config["scrape_configs"].as_array_mut().unwrap();
    for job in jobs.iter_mut() {
        let tier = job["job_name"].as_str().unwrap_or_default().to_owned();
        for target in job["static_configs"].as_array_mut().into_iter().flatten() {
            let revision = target["labels"]["revision"].as_str().unwrap_or_default();
            let pod = match tier.as_str() {
                "vllm" => format!("docs-vllm-{revision}-0"),
                _ => format!("docs-worker-{revision}-6b7c9d8f5-x7k2p"),
            };
            target["labels"]["pod"] = json!(pod);
        }
    }
    jobs.push(json!({
        "job_name": "mineru-operator",
        "honor_labels": true,
        "static_configs": [{"targets": [address]}],
    }));
    config["rule_files"] = json!([rules]);
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/-/reload", scenario.prometheus.url()))
        .send()
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "Prometheus refused the configuration (or the rules file): {status} {}",
        response.text().unwrap_or_default()
    );
}

/// An instant query's series; `Err` carries Prometheus' error (a query that does not parse).
fn query(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let body: Value = reqwest::blocking::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .and_then(|response| response.json())
        .map_err(|error| error.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The values `label_values(selector, label)` offers, as Grafana asks Prometheus for them.
fn label_values(prometheus: &str, definition: &str) -> Result<Vec<String>, String> {
    let inner = definition
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("not label_values(...): {definition}"))?;
    let (selector, label) = match inner.rsplit_once(',') {
        Some((selector, label)) => (Some(selector.trim()), label.trim()),
        None => (None, inner.trim()),
    };
    let mut request =
        reqwest::blocking::Client::new().get(format!("{prometheus}/api/v1/label/{label}/values"));
    if let Some(selector) = selector {
        request = request.query(&[("match[]", selector)]);
    }
    let body: Value = request
        .send()
        .and_then(|response| response.json())
        .map_err(|error| error.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect())
}

/// The metric names an expression selects: identifiers outside strings, label matchers and
/// ranges that are neither functions, operators, nor the label lists of `by`, `on` and the like.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Operators, and aggregations written `sum by (le) (...)`, their label list first.
    const KEYWORDS: [&str; 19] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    // The index after the string that opens at `from`.
    let skip_string = |from: usize| {
        let quote = chars[from];
        let mut i = from + 1;
        while i < chars.len() {
            match chars[i] {
                '\\' if quote != '`' => i += 2,
                c if c == quote => return i + 1,
                _ => i += 1,
            }
        }
        chars.len()
    };
    // The index after the `close` that ends the bracket at `from`, strings inside skipped.
    let skip_to = |from: usize, close: char| {
        let mut i = from + 1;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => i = skip_string(i),
                c if c == close => return i + 1,
                _ => i += 1,
            }
        }
        chars.len()
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(i);
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) && call {
                i = skip_to(next, ')');
            } else if !call
                && !LABEL_LISTS.contains(&word.as_str())
                && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_off_promql_without_functions_labels_or_keywords() {
    let names = metric_names(
        r#"sum by (revision, le) (rate(a_bucket{x="}{",y=~"b|c"}[5m] offset 1h)) / on (revision) group_left () sum(b:c_total) by (revision) > bool 0.5 or on () vector(0) unless absent(up{job='d'}) and 1e3 * d"#,
    );
    let expected = ["a_bucket", "b:c_total", "d", "up"];
    assert_eq!(names, BTreeSet::from(expected.map(str::to_owned)));
}

/// A rollout that ends in a rollback is the cheapest scenario that makes every series the
/// dashboards read: the operator's per-object series and a rollback, both revisions' workers
/// with documents answered and failed, both vLLM revisions with requests served. The rollback
/// must fire its alert too.
#[test]
fn every_panel_query_and_every_rule_reads_series_of_the_real_stack() {
    let mut scenario = Scenario::start("dashboards", &Nodes::default());
    scrape_as_the_chart_does(&scenario, &repo_path(rules::RULES_FILE));
    let prometheus = scenario.prometheus.url().to_owned();

    scenario.settle_on_stable();
    let stable = scenario.stable.clone();
    // As in rollback.rs: the canary's vLLM fails once the canary takes traffic (steps of a
    // few seconds would promote it otherwise); its workers time and count the failures.
    scenario.begin_canary();
    scenario.fail_canary_vllm();
    scenario.wait_for(
        "the canary to be rolled back",
        Duration::from_secs(180),
        |s| s["phase"] == "Degraded" && s["lastRollback"].is_object(),
    );
    let rollbacks = format!(r#"mineru_operator_rollbacks_total{{namespace="{NAMESPACE}"}}"#);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(
            scenario
                .prometheus
                .wait_for_series(&rollbacks, Duration::from_secs(30)),
        )
        .unwrap();

    // What a person would pick: the scenario's object, and stable as the baseline. Variables
    // the test does not name are multi-valued and take every value Grafana offers ("All").
    let picked: BTreeMap<&str, &str> = [
        ("namespace", NAMESPACE),
        ("name", "docs"),
        ("baseline", stable.worker_revision.as_str()),
        ("vllm_baseline", stable.model_revision.as_str()),
    ]
    .into();
    let mut known = present_names(&prometheus);
    known.extend(read_without_series());
    let mut failures = Vec::new();
    let mut queries = 0;
    for (file, dashboard) in dashboards() {
        let mut values = grafana_variables();
        for variable in variables(&dashboard) {
            let name = variable["name"].as_str().unwrap_or_default();
            let value = match variable["type"].as_str() {
                Some("datasource") => continue,
                Some("query") => {
                    let definition = substitute(variable_query(variable), &values).unwrap();
                    let offered = label_values(&prometheus, &definition)
                        .unwrap_or_else(|error| panic!("{file}: ${name}: {error}"));
                    match picked.get(name) {
                        Some(value) => {
                            assert!(
                                offered.iter().any(|v| v == value),
                                "{file}: ${name} offers {offered:?}, not {value}"
                            );
                            (*value).to_owned()
                        }
                        None => {
                            assert!(
                                variable["multi"] == true && !offered.is_empty(),
                                "{file}: ${name} offers {offered:?} and the test picks none"
                            );
                            format!("({})", offered.join("|"))
                        }
                    }
                }
                _ => variable["current"]["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: ${name} has no current value"))
                    .to_owned(),
            };
            values.insert(name.to_owned(), value);
        }
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr =
                    substitute(target["expr"].as_str().unwrap_or_default(), &values).unwrap();
                queries += 1;
                // `... or on () vector(0)` always has a series: the names tell a typo apart.
                let unknown: Vec<String> = metric_names(&expr)
                    .into_iter()
                    .filter(|name| !known.contains(name))
                    .collect();
                let problem = match query(&prometheus, &expr) {
                    Err(error) => error,
                    Ok(_) if !unknown.is_empty() => {
                        format!("reads metrics nobody exports: {unknown:?}")
                    }
                    Ok(series) if series.is_empty() => "no series".to_owned(),
                    Ok(_) => continue,
                };
                failures.push(format!(
                    "{file}: {} ({}): {problem}\n    {expr}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default(),
                ));
            }
        }
    }
    assert!(queries > 0);
    assert!(
        failures.is_empty(),
        "{} of {queries} panel queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    check_rules(&prometheus);

    // And the alert a person gets: the operator's real rollback fires MineruRollbackHappened
    // in this Prometheus, for this object, with the reason the status records.
    let reason = scenario.status()["lastRollback"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let firing = format!(
        r#"ALERTS{{alertname="MineruRollbackHappened",alertstate="firing",namespace="{NAMESPACE}",name="docs",reason="{reason}"}}"#
    );
    runtime
        .block_on(
            scenario
                .prometheus
                .wait_for_series(&firing, Duration::from_secs(120)),
        )
        .unwrap();
}

/// Metrics the panels or the alerts read that this scenario gives no series, and why. A panel
/// on one still shows a value (`or on () vector(0)`); the name must still be exported as
/// written, or the panel would show 0 for ever.
const READ_WITHOUT_SERIES: [(&str, &str); 4] = [
    (
        "mineru_operator_rollout_holding",
        "has series only while a rollout holds, which this one never does",
    ),
    (
        "mineru_operator_probe_documents_total",
        "counts probes, which only a rollout with a quality gate sends",
    ),
    (
        "mineru_operator_reconcile_failures_total",
        "counts failed reconciles, by error kind",
    ),
    (
        "mineru_worker_render_subprocess_stops_total",
        "counts render subprocesses that died, which a sound PDF never makes",
    ),
];

/// The names of [`READ_WITHOUT_SERIES`], each shown to be exported under that name: the
/// operator's by its own exposition in the state that has them, a worker's by its metrics
/// contract (docs/worker-metrics.md).
fn read_without_series() -> BTreeSet<String> {
    let metrics = Metrics::default();
    let holding = ObjectState {
        phase: Phase::Progressing,
        weight: 10,
        share: 10,
        gate_errors: 0,
        holding: Some(Hold::EvidenceOverdue),
    };
    metrics.set_state(NAMESPACE, "docs", holding);
    metrics.probe(&format!("{NAMESPACE}/docs"), "canary", "answered");
    metrics.failed("apply_409".to_owned());
    let operator = metrics.render();
    let contract = std::fs::read_to_string(repo_path("docs/worker-metrics.md")).unwrap();
    READ_WITHOUT_SERIES
        .iter()
        .map(|(name, why)| {
            let exported = match name.strip_prefix("mineru_operator_") {
                Some(_) => operator
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}{{"))),
                None => contract.contains(&format!("`{name}`")),
            };
            assert!(exported, "{name} ({why}) is exported under no such name");
            (*name).to_owned()
        })
        .collect()
}

/// The metric names Prometheus has series of.
fn present_names(prometheus: &str) -> BTreeSet<String> {
    let body: Value = reqwest::blocking::get(format!("{prometheus}/api/v1/label/__name__/values"))
        .unwrap()
        .json()
        .unwrap();
    body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect()
}

/// Every rule of the file Prometheus loaded evaluates without error; every recording rule's
/// expression returns a series, and every alert's parses and reads only metrics Prometheus has
/// (or [`READ_WITHOUT_SERIES`]): an alert on a misspelt name would never fire.
fn check_rules(prometheus: &str) {
    let groups = rules::groups();
    let rules = rules::rules();
    assert!(!rules.is_empty(), "{}: no rules", rules::RULES_FILE);

    // Recorded series exist once their rule has run: wait for the first evaluation of every
    // group on the global interval (the scenario's second). A group with an interval of its
    // own may wait that long for its first; its rules are checked by their expressions.
    let prompt: BTreeSet<&str> = groups
        .iter()
        .filter(|group| group.get("interval").is_none())
        .filter_map(|group| group["name"].as_str())
        .collect();
    let loaded = wait_until("the rules to be evaluated", Duration::from_secs(60), || {
        let body: Value = reqwest::blocking::get(format!("{prometheus}/api/v1/rules"))?.json()?;
        let groups = body["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let loaded: Vec<Value> = groups
            .iter()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = loaded.len() == rules.len()
            && groups
                .iter()
                .filter(|group| group["name"].as_str().is_some_and(|n| prompt.contains(n)))
                .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                .all(|rule| rule["health"] != "unknown");
        Ok(evaluated.then_some(loaded))
    })
    .unwrap();
    let broken: Vec<String> = loaded
        .iter()
        .filter(|rule| rule["health"] == "err")
        .map(|rule| format!("{}: {}", rule["name"], rule["lastError"]))
        .collect();
    assert!(
        broken.is_empty(),
        "rules failing to evaluate:\n{}",
        broken.join("\n")
    );

    // Some records have samples only once clients sent enough documents (the throughput SLO's
    // needs 60 in the hour): the load goes on while the test waits for them, as long as a slow
    // machine needs (a record that never comes fails below, with its name).
    let mut failures = Vec::new();
    let records: Vec<(&str, &str)> = rules
        .iter()
        .filter_map(|rule| Some((rule["record"].as_str()?, rule["expr"].as_str()?)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut waiting = records.clone();
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|(_, expr)| query(prometheus, expr).is_ok_and(|s| s.is_empty()));
        std::thread::sleep(Duration::from_secs(1));
    }
    for (record, expr) in &records {
        match query(prometheus, expr) {
            Ok(series) if series.is_empty() => failures.push(format!("{record}: no series")),
            Ok(_) => {}
            Err(error) => failures.push(format!("{record}: {error}")),
        }
    }

    let mut known = present_names(prometheus);
    known.extend(read_without_series());
    for rule in &rules {
        let (Some(alert), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) else {
            continue;
        };
        if let Err(error) = query(prometheus, expr) {
            failures.push(format!("alert {alert}: {error}"));
        }
        let missing: Vec<String> = metric_names(expr)
            .into_iter()
            .filter(|name| !known.contains(name))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "alert {alert} reads metrics nobody exports: {missing:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rules:\n{}",
        failures.len(),
        rules.len(),
        failures.join("\n")
    );
}
