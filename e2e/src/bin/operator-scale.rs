//! `make bench-operator-scale`: the operator's own cost at scale, on the real control plane
//! (kwok nodes). One MineruDeployment runs the e2e stack (workers, vLLM simulators, Prometheus,
//! load); `--objects - 1` more rest beside it. Measured: the time for all of them to converge,
//! the apiserver writes that took, and, at rest, the operator's memory, CPU and writes (goal:
//! none), its reconcile latency, the time a restarted operator takes to look at every object
//! again (writing nothing), and one rollout's time from a breach to the canary's weight 0 while
//! the others rest, taken apart from the operator's own records: its status and route writes
//! in the audit log, its queries in Prometheus's query log. `--quality-round` runs that rollout
//! with a round of golden documents comparing in the background. Prints the results as Markdown
//! (docs/benchmarks.md).
//!
//! The binaries it runs are the ones beside it: `cargo build --release -p mineru-operator
//! -p mineru-worker -p mineru-e2e --bins` measures the release operator.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::jiff::Timestamp;
use mineru_e2e::{
    audit,
    controlplane::{ControlPlane, Nodes},
    operator::minimal_example,
    process::free_port,
    prometheus::LoggedQuery,
    scenario::{
        GOLDEN_DOCUMENTS_PER_STEP, NAMESPACE, Routing, Scenario, Setup, built_in_quality_manifest,
    },
};
use serde_json::Value;

/// The identity the scenario's operator runs under.
const OPERATOR_IDENTITY: &str = "operator-0";

/// Where the resting objects live, beside the scenario's namespace.
const RESTING: &str = "resting";

struct Args {
    objects: usize,
    rest: Duration,
    quality_round: bool,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Args {
            objects: 500,
            rest: Duration::from_secs(120),
            quality_round: false,
        };
        let mut given = std::env::args().skip(1);
        while let Some(flag) = given.next() {
            let mut value = || {
                given
                    .next()
                    .with_context(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--objects" => args.objects = value()?.parse()?,
                "--rest-seconds" => args.rest = Duration::from_secs(value()?.parse()?),
                "--quality-round" => args.quality_round = true,
                other => {
                    bail!("unknown flag {other} (--objects N, --rest-seconds S, --quality-round)")
                }
            }
        }
        if args.objects < 2 {
            bail!("--objects must be at least 2: one rolls out, the others rest");
        }
        Ok(args)
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    // Each object takes a GPU for its vLLM replica and two worker pods; kwok nodes take 110 pods.
    let nodes = Nodes {
        gpu_nodes: args.objects.div_ceil(16) + 1,
        gpus_per_node: 16,
        cpu_nodes: (2 * args.objects).div_ceil(100),
    };
    let metrics_port = free_port()?;
    let mut setup = Setup {
        operator_args: vec![format!("--listen=127.0.0.1:{metrics_port}")],
        ..Setup::built_ins(Routing::Gateway)
    };
    if args.quality_round {
        setup.template = built_in_quality_manifest;
        // One golden document at a time, so that the round is still comparing at the breach.
        setup.operator_args.push("--quality-concurrency=1".into());
    }
    let mut scenario = Scenario::start_with("operator-scale", &nodes, setup);
    // A failure panics while the scenario is alive, so that its logs are kept and their tails
    // printed.
    let report = measure(&mut scenario, &args, metrics_port).unwrap_or_else(|e| panic!("{e:#}"));
    print!("{}", report.markdown(args.objects, &nodes));
    if !report.forbidden.is_empty() {
        bail!(
            "the API server refused {} calls of the operator",
            report.forbidden.len()
        );
    }
    Ok(())
}

fn measure(scenario: &mut Scenario, args: &Args, metrics_port: u16) -> Result<Report> {
    let resting = args.objects - 1;
    scenario.settle_on_stable();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut report = Report::default();

    // Convergence: every resting object applied at once, then Healthy.
    scenario.plane.kubectl(&["create", "namespace", RESTING])?;
    let example = minimal_example(RESTING)?;
    let manifests: String = (0..resting)
        .map(|i| example.replacen("name: docs\n", &format!("name: docs-{i:03}\n"), 1))
        .collect::<Vec<_>>()
        .join("\n---\n");
    if !manifests.contains("name: docs-000\n") {
        bail!("examples/minimal.yaml no longer names its object `docs`");
    }
    let file = scenario.plane.dir().join("resting.yaml");
    std::fs::write(&file, manifests)?;
    let audit_before = audit::events(&scenario.plane).len();
    let applied = Instant::now();
    scenario
        .plane
        .kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()])?;
    wait_healthy(scenario, resting, Duration::from_secs(1800))?;
    report.converged = applied.elapsed();
    report.converge_writes = operator_writes(&scenario.plane, audit_before).len();

    // At rest.
    let pid = scenario.operator_pid();
    let audit_before = audit::events(&scenario.plane).len();
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    std::thread::sleep(args.rest);
    scenario.ensure_operator_running();
    let elapsed = started.elapsed().as_secs_f64();
    report.rest = args.rest;
    report.rest_cpu = (cpu_seconds(pid)? - cpu_before) / elapsed;
    report.rest_writes = operator_writes(&scenario.plane, audit_before);
    report.memory = Memory::of(pid)?;
    report.reconcile = Quantiles::from_histogram(
        &reqwest::blocking::get(&metrics)?.text()?,
        "mineru_operator_reconcile_duration_seconds",
    )?;

    // A restarted operator looks at every object again; it should write nothing. It comes back
    // under the same identity, as a restarted pod does, so it takes its Lease back at once.
    let audit_before = audit::events(&scenario.plane).len();
    let restarted = Instant::now();
    scenario.restart_operator(OPERATOR_IDENTITY);
    wait_until_reconciled(&metrics, args.objects, Duration::from_secs(900))?;
    report.relooked = restarted.elapsed();
    report.restart_writes = operator_writes(&scenario.plane, audit_before);
    report.restart_memory = Memory::of(scenario.operator_pid())?;

    // One rollout while the others rest: from the breach to the canary's weight 0.
    let pid = scenario.operator_pid();
    let cpu_before = cpu_seconds(pid)?;
    let rollout_started = Instant::now();
    if args.quality_round {
        scenario.golden_documents(GOLDEN_DOCUMENTS_PER_STEP);
        // A canary vLLM slow enough that the round is still comparing at the breach.
        scenario.slow_canary_vllm(Duration::from_secs(1));
    }
    scenario.begin_canary();
    if args.quality_round {
        scenario.wait_for(
            "the golden round under way",
            Duration::from_secs(180),
            |s| !golden_compared(s).is_empty(),
        );
    }
    let failed_documents = format!(
        "sum(mineru_worker_requests_total{{revision=\"{}\",outcome=\"error\"}}) or vector(0)",
        scenario.canary.worker_revision
    );
    report.golden_at_breach = golden_compared(&scenario.status()).len();
    scenario.fail_canary_vllm();
    let breached_at = Timestamp::now();
    let breached = Instant::now();
    let mut first_failure_seen = None;
    let weight_zero = loop {
        if first_failure_seen.is_none()
            && query(scenario.prometheus.url(), &failed_documents)? > 0.0
        {
            first_failure_seen = Some(breached.elapsed());
        }
        let status = scenario.status();
        if status["canaryWeight"].as_i64() == Some(0) || status["lastRollback"].is_object() {
            break breached.elapsed();
        }
        if breached.elapsed() > Duration::from_secs(300) {
            bail!("no rollback within 300 s; last status: {status}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    report.failure_seen = first_failure_seen.unwrap_or(weight_zero);
    let status = scenario.status();
    report.rollback = status["lastRollback"].clone();
    report.golden_at_rollback = golden_compared(&status).len();
    // The route is written after the status that decided it.
    let canary = scenario.canary.worker_revision.clone();
    let timeline = || {
        let events = audit::events(&scenario.plane);
        Timeline::of(
            &events,
            &scenario.prometheus.queries(),
            breached_at,
            &canary,
        )
    };
    report.timeline = mineru_e2e::wait_until("the route write", Duration::from_secs(30), || {
        Ok(timeline().ok())
    })
    .or_else(|_| timeline())?;
    report.rollout_cpu = (cpu_seconds(pid)? - cpu_before) / rollout_started.elapsed().as_secs_f64();
    report.rollout_memory = Memory::of(pid)?;
    report.forbidden = audit::forbidden(&audit::events(&scenario.plane));

    Ok(report)
}

fn wait_healthy(scenario: &mut Scenario, count: usize, budget: Duration) -> Result<()> {
    let deadline = Instant::now() + budget;
    loop {
        scenario.ensure_operator_running();
        let list: Value = serde_json::from_str(
            &scenario
                .plane
                .kubectl(&["get", "mdep", "-n", RESTING, "-o", "json"])?,
        )?;
        let healthy = list["items"].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|item| item["status"]["phase"] == "Healthy")
                .count()
        });
        if healthy == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{healthy} of {count} objects Healthy after {budget:?}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The golden documents the round has compared so far, by verdict.
fn golden_compared(status: &Value) -> Vec<&str> {
    status["quality"].as_array().map_or(Vec::new(), |results| {
        results
            .iter()
            .map(|result| result["verdict"].as_str().unwrap_or("-"))
            .collect()
    })
}

/// Waits until the operator has reconciled `count` distinct objects: each has its phase
/// series once a reconcile of it succeeded.
fn wait_until_reconciled(metrics: &str, count: usize, budget: Duration) -> Result<()> {
    mineru_e2e::wait_until("every object reconciled again", budget, || {
        let text = match reqwest::blocking::get(metrics).and_then(|r| r.text()) {
            Ok(text) => text,
            Err(_) => return Ok(None),
        };
        let done = text
            .lines()
            .filter(|line| line.starts_with("mineru_operator_phase{") && line.ends_with(" 1"))
            .count();
        Ok((done >= count).then_some(()))
    })
}

/// Writes by the operator's identity after the first `skip` audit events, leases excluded.
fn operator_writes(plane: &ControlPlane, skip: usize) -> Vec<String> {
    let events = audit::events(plane);
    audit::writes(
        events
            .iter()
            .skip(skip)
            .filter(|event| !audit::about_leases(event)),
    )
}

/// User plus system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second)
}

#[derive(Default)]
struct Memory {
    rss_mib: f64,
    peak_mib: f64,
    anonymous_mib: f64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        Ok(Memory {
            rss_mib: field("VmRSS:"),
            peak_mib: field("VmHWM:"),
            anonymous_mib: field("RssAnon:"),
        })
    }
}

#[derive(Default)]
struct Quantiles {
    count: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

impl Quantiles {
    /// Quantiles of a Prometheus histogram as `histogram_quantile` computes them: linear within
    /// the bucket the rank falls in.
    fn from_histogram(text: &str, name: &str) -> Result<Self> {
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (bound, value) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, value.trim().parse().ok()?))
            })
            .collect();
        let count = buckets
            .last()
            .map(|(_, c)| *c)
            .context("no histogram buckets")?;
        let quantile = |q: f64| {
            let rank = q * count;
            let mut lower = (0.0, 0.0);
            for &(bound, cumulative) in &buckets {
                if cumulative >= rank {
                    if bound.is_infinite() {
                        return lower.0;
                    }
                    let within = (rank - lower.1) / (cumulative - lower.1).max(f64::MIN_POSITIVE);
                    return lower.0 + (bound - lower.0) * within;
                }
                lower = (bound, cumulative);
            }
            lower.0
        };
        Ok(Quantiles {
            count,
            p50: quantile(0.5),
            p95: quantile(0.95),
            p99: quantile(0.99),
        })
    }
}

/// The value of an instant query that yields one sample.
fn query(prometheus: &str, promql: &str) -> Result<f64> {
    let answer: Value = reqwest::blocking::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()?
        .json()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no sample for {promql}: {answer}"))
}

/// One rollback's course in seconds from the breach, from the operator's own records: its
/// status and route writes in the audit log (which keeps their bodies) and its queries in
/// Prometheus's query log.
#[derive(Debug, Default, PartialEq)]
struct Timeline {
    /// The first status write with a check failing (a promotion criterion or a rollback
    /// trigger): the evidence sufficed.
    breach_recorded: f64,
    /// The first query of the analysis round that rolled back.
    deciding_round: f64,
    /// The status write recording the rollback.
    rollback_recorded: f64,
    /// The first route write after it.
    route_written: f64,
    /// Analysis rounds from the one that found a check failing to the one that rolled back,
    /// both counted: more than one when a trigger has to hold its breach (`for`).
    rounds: usize,
}

/// Queries closer together than this many seconds belong to one analysis round (rounds are 2 s
/// apart).
const ROUND_GAP: f64 = 0.5;

impl Timeline {
    /// From the audit `events` and Prometheus's logged `queries`: the course of the first
    /// rollback after `breach` in the scenario's namespace, judged from `canary`'s queries.
    fn of(
        events: &[Value],
        queries: &[LoggedQuery],
        breach: Timestamp,
        canary: &str,
    ) -> Result<Timeline> {
        let since = |at: Timestamp| at.duration_since(breach).as_secs_f64();
        let after: Vec<(Timestamp, &Value)> = events
            .iter()
            .filter(|event| event["stage"] == "ResponseComplete")
            .filter(|event| {
                event["responseStatus"]["code"]
                    .as_i64()
                    .is_some_and(|c| c < 300)
            })
            .filter(|event| event["objectRef"]["namespace"] == NAMESPACE)
            .filter_map(|event| Some((audit::received_at(event)?, event)))
            .filter(|(at, _)| *at >= breach)
            .collect();
        let status_writes = || {
            after.iter().filter(|(_, event)| {
                event["objectRef"]["resource"] == "minerudeployments"
                    && event["objectRef"]["subresource"] == "status"
            })
        };
        let &(breach_recorded, _) = status_writes()
            .find(|(_, event)| {
                event["requestObject"]["status"]["checks"]
                    .as_array()
                    .is_some_and(|checks| checks.iter().any(|check| check["verdict"] == "Fail"))
            })
            .context("no status write recorded a failing check")?;
        let &(rollback_recorded, _) = status_writes()
            .find(|(_, event)| event["requestObject"]["status"]["lastRollback"].is_object())
            .context("no status write recorded the rollback")?;
        let &(route_written, _) = after
            .iter()
            .find(|(at, event)| {
                *at >= rollback_recorded && event["objectRef"]["resource"] == "httproutes"
            })
            .context("no route write after the rollback")?;

        // The canary's analysis rounds, each a burst of queries.
        // (The operator's name the namespace; the harness's own do not.)
        let (namespace, revision) = (
            format!("namespace=\"{NAMESPACE}\""),
            format!("revision=\"{canary}\""),
        );
        let mut rounds: Vec<Timestamp> = Vec::new();
        let mut last: Option<Timestamp> = None;
        for query in queries
            .iter()
            .filter(|q| q.query.contains(&namespace) && q.query.contains(&revision))
        {
            if last.is_none_or(|last| query.at.duration_since(last).as_secs_f64() > ROUND_GAP) {
                rounds.push(query.at);
            }
            last = Some(query.at);
        }
        // Each round's status write follows its queries.
        let round_before = |write: Timestamp, what: &str| {
            rounds
                .iter()
                .rposition(|round| *round <= write)
                .with_context(|| format!("no analysis round before {what} was recorded"))
        };
        let first = round_before(breach_recorded, "the breach")?;
        let decided = round_before(rollback_recorded, "the rollback")?;
        Ok(Timeline {
            breach_recorded: since(breach_recorded),
            deciding_round: since(rounds[decided]),
            rollback_recorded: since(rollback_recorded),
            route_written: since(route_written),
            rounds: decided + 1 - first,
        })
    }
}

#[derive(Default)]
struct Report {
    converged: Duration,
    converge_writes: usize,
    rest: Duration,
    rest_cpu: f64,
    rest_writes: Vec<String>,
    memory: Memory,
    reconcile: Quantiles,
    relooked: Duration,
    restart_writes: Vec<String>,
    restart_memory: Memory,
    failure_seen: Duration,
    timeline: Timeline,
    golden_at_breach: usize,
    golden_at_rollback: usize,
    rollout_cpu: f64,
    rollout_memory: Memory,
    rollback: Value,
    forbidden: Vec<String>,
}

impl Report {
    fn markdown(&self, objects: usize, nodes: &Nodes) -> String {
        let t = &self.timeline;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{objects} MineruDeployments, {} kwok nodes ({} with {} GPUs each)\n",
            nodes.gpu_nodes + nodes.cpu_nodes,
            nodes.gpu_nodes,
            nodes.gpus_per_node
        );
        let _ = writeln!(out, "| measure | value |\n|---|---:|");
        let rows = [
            (
                format!(
                    "all {} resting objects Healthy after they are applied",
                    objects - 1
                ),
                format!("{:.0} s", self.converged.as_secs_f64()),
            ),
            (
                "operator writes to get there".into(),
                self.converge_writes.to_string(),
            ),
            (
                format!("operator writes at rest, {} s", self.rest.as_secs()),
                self.rest_writes.len().to_string(),
            ),
            (
                "operator CPU at rest".into(),
                format!("{:.2}% of a core", 100.0 * self.rest_cpu),
            ),
            (
                "operator RSS at rest (anonymous)".into(),
                format!(
                    "{:.1} MiB ({:.1} MiB)",
                    self.memory.rss_mib, self.memory.anonymous_mib
                ),
            ),
            (
                "operator peak RSS".into(),
                format!("{:.1} MiB", self.memory.peak_mib),
            ),
            (
                format!(
                    "reconcile p50 / p95 / p99 ({:.0} reconciles)",
                    self.reconcile.count
                ),
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    1e3 * self.reconcile.p50,
                    1e3 * self.reconcile.p95,
                    1e3 * self.reconcile.p99
                ),
            ),
            (
                format!("restarted operator: {objects} reconciles"),
                format!("{:.0} s", self.relooked.as_secs_f64()),
            ),
            (
                "restarted operator: writes meanwhile".into(),
                self.restart_writes.len().to_string(),
            ),
            (
                "restarted operator: RSS (peak)".into(),
                format!(
                    "{:.1} MiB ({:.1} MiB)",
                    self.restart_memory.rss_mib, self.restart_memory.peak_mib
                ),
            ),
            (
                "calls RBAC refused (403), all phases".into(),
                self.forbidden.len().to_string(),
            ),
            (
                "one rollout: breach to the route write that sets the canary's weight to 0".into(),
                format!("{:.1} s", t.route_written),
            ),
            (
                "— to the first failed document in Prometheus".into(),
                format!("{:.1} s", self.failure_seen.as_secs_f64()),
            ),
            (
                "— to the status write of the first round with a check failing".into(),
                format!("{:.1} s", t.breach_recorded),
            ),
            (
                format!(
                    "— to the first query of the round that rolled back ({} rounds failing)",
                    t.rounds
                ),
                format!("{:.1} s", t.deciding_round),
            ),
            (
                "the operator's act: that round's first query to its status write".into(),
                format!("{:.0} ms", 1e3 * (t.rollback_recorded - t.deciding_round)),
            ),
            (
                "the operator's act: that round's first query to the route write".into(),
                format!("{:.0} ms", 1e3 * (t.route_written - t.deciding_round)),
            ),
            (
                "operator CPU from the canary's start to the route write".into(),
                format!("{:.2}% of a core", 100.0 * self.rollout_cpu),
            ),
            (
                "operator RSS then (peak since the restart)".into(),
                format!(
                    "{:.1} MiB ({:.1} MiB)",
                    self.rollout_memory.rss_mib, self.rollout_memory.peak_mib
                ),
            ),
            (
                "golden documents compared at the breach, and at the rollback".into(),
                format!("{} and {}", self.golden_at_breach, self.golden_at_rollback),
            ),
        ];
        for (measure, value) in rows {
            let _ = writeln!(out, "| {measure} | {value} |");
        }
        for (what, writes) in [
            ("at rest", &self.rest_writes),
            ("after the restart", &self.restart_writes),
            ("refused", &self.forbidden),
        ] {
            for write in writes.iter().take(10) {
                let _ = writeln!(out, "\nwrite {what}: {write}");
            }
        }
        let _ = writeln!(
            out,
            "\nrollback: {} on {} (value {})",
            self.rollback["reason"].as_str().unwrap_or("-"),
            self.rollback["check"].as_str().unwrap_or("-"),
            self.rollback["value"]
        );
        let _ = writeln!(
            out,
            "scenario namespace {NAMESPACE}, resting namespace {RESTING}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + (seconds * 1e3) as i64).unwrap()
    }

    fn write(seconds: f64, resource: &str, subresource: &str, status: Value) -> Value {
        serde_json::json!({
            "stage": "ResponseComplete",
            "responseStatus": {"code": 200},
            "requestReceivedTimestamp": at(seconds).to_string(),
            "objectRef": {"namespace": NAMESPACE, "resource": resource, "subresource": subresource},
            "requestObject": {"status": status},
        })
    }

    fn checks(verdict: &str) -> Value {
        serde_json::json!({"checks": [
            {"kind": "Promotion", "verdict": "Pass"},
            {"kind": "Trigger", "verdict": verdict},
        ]})
    }

    fn queried(seconds: f64, query: &str) -> LoggedQuery {
        LoggedQuery {
            at: at(seconds),
            query: query.to_owned(),
        }
    }

    #[test]
    fn a_rollback_is_taken_apart_from_the_writes_and_the_rounds_queries() {
        let canary = format!(r#"x{{namespace="{NAMESPACE}",revision="c1"}}"#);
        let stable = format!(r#"x{{namespace="{NAMESPACE}",revision="s1"}}"#);
        let events = vec![
            // Before the breach: not this rollback's.
            write(-1.0, "minerudeployments", "status", checks("Fail")),
            write(1.0, "minerudeployments", "status", checks("Inconclusive")),
            write(3.1, "minerudeployments", "status", checks("Fail")),
            write(5.1, "minerudeployments", "status", checks("Fail")),
            write(
                7.05,
                "minerudeployments",
                "status",
                serde_json::json!({"lastRollback": {"reason": "TriggerFired"}}),
            ),
            write(7.2, "httproutes", "", Value::Null),
        ];
        let mut queries = Vec::new();
        for round in [1.0, 3.0, 5.0, 7.0] {
            queries.push(queried(round, &canary));
            queries.push(queried(round + 0.02, &stable));
            queries.push(queried(round + 0.03, &canary));
        }
        // The harness's own query names the revision, not the namespace.
        queries.push(queried(6.0, r#"sum(x{revision="c1"})"#));
        let timeline = Timeline::of(&events, &queries, at(0.0), "c1").unwrap();
        let rounded = |s: f64| (s * 1e3).round() / 1e3;
        assert_eq!(
            (
                rounded(timeline.breach_recorded),
                rounded(timeline.deciding_round),
                rounded(timeline.rollback_recorded),
                rounded(timeline.route_written),
                timeline.rounds
            ),
            (3.1, 7.0, 7.05, 7.2, 3)
        );
    }

    #[test]
    fn a_rollback_not_yet_routed_is_not_a_timeline() {
        let events = vec![
            write(3.1, "minerudeployments", "status", checks("Fail")),
            write(
                7.05,
                "minerudeployments",
                "status",
                serde_json::json!({"lastRollback": {}}),
            ),
        ];
        let queries = [queried(
            3.0,
            &format!(r#"namespace="{NAMESPACE}",revision="c1""#),
        )];
        assert!(Timeline::of(&events, &queries, at(0.0), "c1").is_err());
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_as_histogram_quantile_does() {
        let text = "\
# TYPE d histogram
d_sum 9.0
d_count 10
d_bucket{le=\"0.1\"} 4
d_bucket{le=\"0.2\"} 8
d_bucket{le=\"0.4\"} 10
d_bucket{le=\"+Inf\"} 10
";
        let q = Quantiles::from_histogram(text, "d").unwrap();
        assert_eq!(q.count, 10.0);
        // Rank 5 is the first of the 4 in (0.1, 0.2]: a quarter of the way.
        assert!((q.p50 - 0.125).abs() < 1e-9, "{}", q.p50);
        // Rank 9.5 is three quarters into (0.2, 0.4].
        assert!((q.p95 - 0.35).abs() < 1e-9, "{}", q.p95);
        assert!(Quantiles::from_histogram(text, "other").is_err());
    }

    #[test]
    fn a_rank_in_the_open_bucket_is_the_highest_finite_bound() {
        let text = "d_bucket{le=\"1\"} 1\nd_bucket{le=\"+Inf\"} 4\n";
        assert_eq!(Quantiles::from_histogram(text, "d").unwrap().p95, 1.0);
    }
}
