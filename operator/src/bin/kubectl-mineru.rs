//! `kubectl mineru`: steer and read MineruDeployment rollouts.
//!
//! Commands set a `mineru.dev/*` annotation that the operator consumes (spec is never edited, so
//! GitOps stays in charge); `status` prints the rollout as a person wants to read it; `plan`
//! forecasts how long each step takes to decide at a given traffic.

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use mineru_crds::{
    CheckStatus, LegacyRole, MineruDeployment, MineruDeploymentStatus, RolloutSpec, Verdict,
};
use mineru_operator::{
    commands,
    planner::{self, Canary, Spread, StepForecast, Traffic},
};

/// Steer MineruDeployment rollouts.
#[derive(Parser, Debug)]
#[command(name = "kubectl mineru", version)]
struct Cli {
    /// Namespace of the MineruDeployment; the kubeconfig context's namespace by default.
    #[arg(short, long, global = true)]
    namespace: Option<String>,

    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Show phase, step, weight, revisions and every check's latest value.
    Status { name: String },
    /// Show the golden-document round: how far it is, each document's similarity (worst
    /// first), and for regressed documents the blocks that differ.
    Quality { name: String },
    /// Leave the current step now (gates, pause and approval notwithstanding); `--full` promotes.
    /// During the post-promotion window: accept the promoted revisions and let the way back go.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    /// Roll back now: all traffic to stable, the canary scaled down.
    Abort { name: String },
    /// Roll out the failed revisions again.
    Retry { name: String },
    /// Stop advancing; rollback triggers keep watching.
    Pause { name: String },
    /// Advance again.
    Resume { name: String },
    /// Forecast each step: how long it takes to decide at this traffic, and how often it
    /// rolls back an equal canary or lets a regressed one through. Without a name, for the
    /// default rollout (no cluster needed).
    Plan(PlanArgs),
}

#[derive(Args, Debug)]
struct PlanArgs {
    /// A MineruDeployment whose steps and checks to forecast.
    name: Option<String>,
    /// Documents the service receives per hour.
    #[arg(long, default_value_t = 60.0)]
    docs_per_hour: f64,
    /// The baseline's error ratio.
    #[arg(long, default_value_t = 0.02)]
    error_ratio: f64,
    /// Median document latency.
    #[arg(long, default_value = "30s")]
    latency_median: mineru_crds::Duration,
    /// 95th percentile of document latency.
    #[arg(long, default_value = "90s")]
    latency_p95: mineru_crds::Duration,
    /// The regressed canary's error ratio, as a multiple of the baseline's (default: the
    /// rollout's `evidence.regression`).
    #[arg(long)]
    regressed_errors: Option<f64>,
    /// The regressed canary's latency, as a multiple of the baseline's.
    #[arg(long, default_value_t = 1.0)]
    regressed_slowdown: f64,
    /// Worker replicas (replica routing rounds the canary to whole workers); default: the
    /// object's, or 2.
    #[arg(long)]
    workers: Option<i32>,
    /// Simulated runs per step and canary.
    #[arg(long, default_value_t = 400)]
    runs: usize,
    /// Seed of the simulation, for a repeatable forecast.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Action::Plan(args) = &cli.command
        && args.name.is_none()
    {
        let defaults: MineruDeployment = serde_yaml::from_str(DEFAULT_OBJECT)
            .map_err(|error| format!("the default object: {error}"))?;
        print!("{}", plan(&defaults, "the default rollout", args)?);
        return Ok(());
    }
    let client = Client::try_default()
        .await
        .map_err(|error| format!("cannot reach the cluster: {error}"))?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<MineruDeployment> = Api::namespaced(client, &namespace);
    let (name, key, value) = match &cli.command {
        Action::Status { name } | Action::Quality { name } => {
            let object = api
                .get(name)
                .await
                .map_err(|error| format!("minerudeployment {namespace}/{name}: {error}"))?;
            let text = match cli.command {
                Action::Quality { .. } => render_quality(&object),
                _ => render_status(&object),
            };
            print!("{text}");
            return Ok(());
        }
        Action::Plan(args) => {
            let name = args.name.as_deref().unwrap_or_default();
            let object = api
                .get(name)
                .await
                .map_err(|error| format!("minerudeployment {namespace}/{name}: {error}"))?;
            print!("{}", plan(&object, &format!("{namespace}/{name}"), args)?);
            return Ok(());
        }
        Action::Promote { name, full } => {
            (name, commands::PROMOTE, if *full { "full" } else { "step" })
        }
        Action::Abort { name } => (name, commands::ABORT, "true"),
        Action::Retry { name } => (name, commands::RETRY, "true"),
        Action::Pause { name } => (name, commands::PAUSE, "true"),
        Action::Resume { name } => (name, commands::RESUME, "true"),
    };
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(commands::request_patch(key, value)),
    )
    .await
    .map_err(|error| format!("minerudeployment {namespace}/{name}: {error}"))?;
    println!(
        "minerudeployment {namespace}/{name}: {key}={value} requested; the operator acts on it at its next reconcile"
    );
    Ok(())
}

/// The minimal object: every rollout setting at its default.
const DEFAULT_OBJECT: &str = include_str!("../../../examples/minimal.yaml");

fn plan(object: &MineruDeployment, what: &str, args: &PlanArgs) -> Result<String, String> {
    if args.docs_per_hour.is_nan()
        || args.docs_per_hour <= 0.0
        || !(0.0..1.0).contains(&args.error_ratio)
    {
        return Err("--docs-per-hour must be positive and --error-ratio in [0, 1)".into());
    }
    let rollout = &object.spec.rollout;
    let traffic = Traffic {
        documents_per_hour: args.docs_per_hour,
        error_ratio: args.error_ratio,
        latency: Spread {
            median: args.latency_median.get().as_secs_f64(),
            p95: args.latency_p95.get().as_secs_f64(),
        },
        ..Traffic::default()
    };
    let regressed = Canary {
        errors: args
            .regressed_errors
            .unwrap_or(rollout.analysis.evidence.regression),
        slowdown: args.regressed_slowdown,
    };
    let workers = args.workers.unwrap_or(object.spec.worker.replicas);
    let steps = planner::forecast(rollout, workers, &traffic, regressed, args.runs, args.seed);
    Ok(render_plan(
        what, rollout, &traffic, &regressed, args.runs, &steps,
    ))
}

fn hours(duration: Option<Duration>) -> String {
    match duration {
        None => "-".to_owned(),
        Some(d) if d < Duration::from_secs(3600) => format!("{:.0}m", d.as_secs_f64() / 60.0),
        Some(d) => format!("{:.1}h", d.as_secs_f64() / 3600.0),
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn render_plan(
    what: &str,
    rollout: &RolloutSpec,
    traffic: &Traffic,
    regressed: &Canary,
    runs: usize,
    steps: &[StepForecast],
) -> String {
    let evidence = &rollout.analysis.evidence;
    let mut out = format!(
        "{what} at {} documents/hour ({} errors, latency median {}s, p95 {}s); confidence {}, power {}, regression {}x; {runs} simulated runs per step and canary\n\n",
        traffic.documents_per_hour,
        percent(traffic.error_ratio),
        traffic.latency.median,
        traffic.latency.p95,
        evidence.confidence,
        evidence.power,
        evidence.regression,
    );
    let regressed_words = match (regressed.errors, regressed.slowdown) {
        (errors, 1.0) => format!("{errors}x the errors"),
        (1.0, slowdown) => format!("{slowdown}x the latency"),
        (errors, slowdown) => format!("{errors}x the errors and {slowdown}x the latency"),
    };
    let (mut promoted, mut rolled_back, mut missed, mut median) = (1.0, 0.0, 1.0, 0.0);
    for step in steps {
        out.push_str(&format!(
            "step {}/{}: {}% (the canary gets {}), decides within {}\n",
            step.index + 1,
            steps.len(),
            step.weight,
            percent(step.share),
            hours(Some(step.max_duration)),
        ));
        match step.passed_median {
            Some(_) => out.push_str(&format!(
                "  an equal canary passes after {} (90% within {}), on about {:.0} canary documents\n",
                hours(step.passed_median),
                hours(step.passed_p90),
                step.documents_median.unwrap_or(0.0),
            )),
            None => out.push_str("  an equal canary never passed in the simulation\n"),
        }
        let by: Vec<String> = step
            .wrongly_stopped_by
            .iter()
            .map(|(name, share)| format!("{name} {}", percent(*share)))
            .collect();
        out.push_str(&format!(
            "  undecided at its maxDuration {}, rolled back {}, held {}{}\n",
            percent(step.undecided),
            percent(step.false_rollback),
            percent(step.false_hold),
            if by.is_empty() {
                String::new()
            } else {
                format!(" (by {})", by.join(", "))
            }
        ));
        out.push_str(&format!(
            "  a canary with {regressed_words}: let through {}, stopped after {} (median)\n",
            percent(step.missed_regression),
            hours(step.caught_median)
        ));
        out.push_str(&format!("  simulated: {}\n", step.simulated.join(", ")));
        if !step.not_simulated.is_empty() {
            out.push_str(&format!(
                "  assumed to pass (what they read is not simulated): {}\n",
                step.not_simulated.join(", ")
            ));
        }
        rolled_back += promoted * step.false_rollback;
        promoted *= 1.0 - step.false_rollback - step.false_hold - step.undecided;
        missed *= step.missed_regression;
        median += step.passed_median.map_or(0.0, |d| d.as_secs_f64());
    }
    out.push_str(&format!(
        "\nthe whole rollout: an equal canary is promoted {} of the time (rolled back {}) after about {}; a canary with {regressed_words} is promoted {} of the time\n\n",
        percent(promoted),
        percent(rolled_back),
        hours(Some(Duration::from_secs_f64(median))),
        percent(missed),
    ));
    for step in steps {
        let seconds = |d: Option<Duration>| {
            d.map_or("none".to_owned(), |d| format!("{:.0}", d.as_secs_f64()))
        };
        out.push_str(&format!(
            "step={} weight={} share={:.4} docs_per_hour={} passed_median_s={} passed_p90_s={} canary_documents_median={} undecided={:.4} false_rollback={:.4} false_hold={:.4} missed_regression={:.4} caught_median_s={}\n",
            step.index + 1,
            step.weight,
            step.share,
            traffic.documents_per_hour,
            seconds(step.passed_median),
            seconds(step.passed_p90),
            step.documents_median.map_or("none".to_owned(), |n| format!("{n:.0}")),
            step.undecided,
            step.false_rollback,
            step.false_hold,
            step.missed_regression,
            seconds(step.caught_median),
        ));
    }
    out
}

fn render_status(object: &MineruDeployment) -> String {
    let name = object.metadata.name.as_deref().unwrap_or("?");
    let default = MineruDeploymentStatus::default();
    let status = object.status.as_ref().unwrap_or(&default);
    let pair = |revisions: &Option<mineru_crds::Revisions>| {
        revisions
            .as_ref()
            .map(|r| format!("{}/{}", r.model_revision, r.worker_revision))
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let phase = status
        .phase
        .map(|phase| format!("{phase:?}"))
        .unwrap_or_else(|| "Pending".into());
    out.push_str(&format!("{name}: {phase}\n"));
    if let Some(message) = &status.message {
        out.push_str(&format!("  {message}\n"));
    }
    out.push_str(&format!("  stable:  {}\n", pair(&status.stable)));
    if let (Some(role), Some(legacy)) = (status.legacy, object.spec.rollout.legacy_backend()) {
        let role = match role {
            LegacyRole::Serving => "serving what the canary does not",
            LegacyRole::Standby => "without traffic, the way back until verified",
        };
        out.push_str(&format!("  legacy:  Service {} ({role})\n", legacy.name));
    }
    out.push_str(&format!("  canary:  {}\n", pair(&status.canary)));
    if status.canary.is_some() {
        let steps = object.spec.rollout.steps.len();
        let step = status.current_step.map(|s| s + 1).unwrap_or(0);
        let weight = status.canary_weight.unwrap_or(0);
        let real = match status.canary_share {
            Some(share) if share != weight => format!(" (really {share}%, by replicas)"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  step:    {step}/{steps}, canary weight {weight}%{real}\n"
        ));
    }
    if !status.checks.is_empty() {
        out.push_str("  checks:\n");
        for check in &status.checks {
            out.push_str(&format!("    {}\n", render_check(check)));
        }
    }
    for result in &status.quality {
        out.push_str(&format!(
            "  quality: {} similarity {:.4} {:?}\n",
            result.document, result.similarity, result.verdict
        ));
    }
    if let Some(rollback) = &status.last_rollback {
        out.push_str(&format!(
            "  last rollback: {:?} of {}/{}: {}\n",
            rollback.reason,
            rollback.canary.model_revision,
            rollback.canary.worker_revision,
            rollback.message
        ));
    }
    out
}

fn render_quality(object: &MineruDeployment) -> String {
    let name = object.metadata.name.as_deref().unwrap_or("?");
    let default = MineruDeploymentStatus::default();
    let status = object.status.as_ref().unwrap_or(&default);
    let Some(quality) = &object.spec.rollout.analysis.quality else {
        return format!("{name}: no quality gate (spec.rollout.analysis.quality is not set)\n");
    };
    let step = status.current_step.unwrap_or(0).max(0) as usize;
    let counts = &quality.documents_per_step;
    let wanted = counts.get(step).or(counts.last()).copied().unwrap_or(1);
    let count = |verdict| {
        status
            .quality
            .iter()
            .filter(|r| r.verdict == verdict)
            .count()
    };
    let canary = status
        .canary
        .as_ref()
        .map(|c| format!(" of canary {}", c.worker_revision))
        .unwrap_or_default();
    let mut out = format!(
        "{name}: golden documents{canary}: {} of {wanted} done, {} regressed, {} not comparable (bar: similarity {}, at most {} regressed)\n",
        status.quality.len(),
        count(Verdict::Fail),
        count(Verdict::Error),
        quality.min_similarity,
        quality.max_regression,
    );
    for check in status
        .checks
        .iter()
        .filter(|c| c.name.starts_with("quality"))
    {
        out.push_str(&format!("  {}\n", render_check(check)));
    }
    let rank = |verdict: Verdict| match verdict {
        Verdict::Fail => 0,
        Verdict::Error => 1,
        _ => 2,
    };
    let mut documents: Vec<_> = status.quality.iter().collect();
    documents.sort_by(|a, b| {
        rank(a.verdict)
            .cmp(&rank(b.verdict))
            .then(a.similarity.total_cmp(&b.similarity))
    });
    for document in documents {
        out.push_str(&format!(
            "  {:<5} {:.4}  {}{}\n",
            format!("{:?}", document.verdict),
            document.similarity,
            document.document,
            document
                .message
                .as_deref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default()
        ));
        for difference in &document.differences {
            let page = difference
                .page
                .map(|p| format!("page {p} "))
                .unwrap_or_default();
            out.push_str(&format!(
                "        {page}{} {}\n",
                difference.block, difference.change
            ));
            if let Some(text) = &difference.baseline {
                out.push_str(&format!("          - {text}\n"));
            }
            if let Some(text) = &difference.canary {
                out.push_str(&format!("          + {text}\n"));
            }
        }
    }
    out
}

fn render_check(check: &CheckStatus) -> String {
    let number = |value: Option<f64>| {
        value
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into())
    };
    let mut line = format!(
        "{:<16} {:<9} {:<12} value {} (stable {}) {}",
        check.name,
        format!("{:?}", check.kind),
        format!("{:?}", check.verdict),
        number(check.value),
        number(check.stable_value),
        check.threshold
    );
    match (check.samples, check.stable_samples) {
        (Some(samples), Some(stable)) => {
            line.push_str(&format!(", {samples:.0} samples (stable {stable:.0})"))
        }
        (Some(samples), None) => line.push_str(&format!(", {samples:.0} samples")),
        _ => {}
    }
    if let Some(needed) = check.needed {
        line.push_str(&format!(", about {needed:.0} more needed"));
    }
    if let Some(message) = &check.message {
        line.push_str(&format!(" — {message}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_args(extra: &[&str]) -> PlanArgs {
        let mut args = vec!["kubectl-mineru", "plan", "--runs", "40"];
        args.extend(extra);
        match Cli::parse_from(args).command {
            Action::Plan(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_needs_no_cluster_and_prints_one_machine_readable_line_per_step() {
        let defaults: MineruDeployment = serde_yaml::from_str(DEFAULT_OBJECT).unwrap();
        let text = plan(
            &defaults,
            "the default rollout",
            &plan_args(&["--docs-per-hour", "60"]),
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("step=")).collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, weight) in lines.iter().zip([10, 50, 100]) {
            let fields: std::collections::BTreeMap<&str, &str> = line
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .collect();
            assert_eq!(fields["weight"], weight.to_string(), "{line}");
            assert_eq!(fields["docs_per_hour"], "60", "{line}");
            for key in [
                "share",
                "passed_median_s",
                "passed_p90_s",
                "canary_documents_median",
                "undecided",
                "false_rollback",
                "false_hold",
                "missed_regression",
                "caught_median_s",
            ] {
                assert!(fields.contains_key(key), "{key} missing: {line}");
            }
        }
        assert!(text.contains("the whole rollout"), "{text}");
        assert!(
            text.contains("step 1/3: 10% (the canary gets 50.0%)"),
            "{text}"
        );
    }

    /// The median time step 1 takes to pass for `object` at `docs` documents an hour.
    fn first_step_median(object: &MineruDeployment, docs: &str) -> f64 {
        let text = plan(object, "d", &plan_args(&["--docs-per-hour", docs])).unwrap();
        text.lines()
            .find(|l| l.starts_with("step=1 "))
            .and_then(|line| {
                line.split_whitespace()
                    .find_map(|pair| pair.strip_prefix("passed_median_s="))
            })
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no passed_median_s in {text}"))
    }

    #[test]
    fn more_traffic_decides_sooner() {
        let defaults: MineruDeployment = serde_yaml::from_str(DEFAULT_OBJECT).unwrap();
        assert!(first_step_median(&defaults, "6000") < first_step_median(&defaults, "60") / 10.0);
    }

    #[test]
    fn probes_that_count_as_evidence_shorten_a_thin_step() {
        let defaults: MineruDeployment = serde_yaml::from_str(DEFAULT_OBJECT).unwrap();
        let mut probed = defaults.clone();
        probed.spec.rollout.analysis.quality = Some(
            serde_json::from_value(serde_json::json!({
                "goldenDocuments": {"configMapRef": {"name": "golden"}},
                "probes": {"documentsPerHour": 120}
            }))
            .unwrap(),
        );
        let (without, with) = (
            first_step_median(&defaults, "60"),
            first_step_median(&probed, "60"),
        );
        // The default object's canary gets half of 60 documents an hour; the probe stratum
        // decides on 120 a side.
        assert!(
            with < without * 0.5,
            "{with} s with probes, {without} s without"
        );
    }

    #[test]
    fn plan_refuses_traffic_that_cannot_be() {
        let defaults: MineruDeployment = serde_yaml::from_str(DEFAULT_OBJECT).unwrap();
        assert!(plan(&defaults, "d", &plan_args(&["--docs-per-hour", "0"])).is_err());
        assert!(plan(&defaults, "d", &plan_args(&["--error-ratio", "1.5"])).is_err());
    }

    #[test]
    fn status_shows_the_real_share_and_the_evidence_behind_each_check() {
        let minimal = include_str!("../../../examples/minimal.yaml");
        let mut object: MineruDeployment = serde_yaml::from_str(minimal).unwrap();
        let revisions = mineru_crds::Revisions {
            model_revision: "m-1".into(),
            worker_revision: "w-2".into(),
        };
        let check: CheckStatus = serde_json::from_value(serde_json::json!({
            "name": "error-ratio", "kind": "Promotion", "revision": "w-2",
            "value": 0.0, "stableValue": 0.02, "threshold": "<= 1.05 x max(stable, 0.01)",
            "samples": 12.0, "stableSamples": 108.0, "needed": 140.0,
            "verdict": "Inconclusive", "failures": 0,
            "message": "not enough evidence yet", "evaluatedAt": "2026-12-01T10:00:00Z"
        }))
        .unwrap();
        object.status = Some(MineruDeploymentStatus {
            canary: Some(revisions),
            current_step: Some(0),
            canary_weight: Some(10),
            canary_share: Some(50),
            checks: vec![check],
            ..MineruDeploymentStatus::default()
        });
        let shown = render_status(&object);
        assert!(
            shown.contains("canary weight 10% (really 50%, by replicas)"),
            "{shown}"
        );
        assert!(
            shown.contains("12 samples (stable 108), about 140 more needed"),
            "{shown}"
        );
    }

    #[test]
    fn the_quality_report_puts_the_worst_documents_first_with_their_differences() {
        let production = include_str!("../../../examples/production.yaml");
        let mut object: MineruDeployment = serde_yaml::from_str(production).unwrap();
        let documents: Vec<mineru_crds::QualityResult> = serde_json::from_value(serde_json::json!([
            {"document": "a.pdf", "similarity": 0.99, "verdict": "Pass"},
            {"document": "b.pdf", "similarity": 0.41, "verdict": "Fail",
             "message": "similarity below 0.95",
             "differences": [{"page": 2, "block": "table", "change": "missing",
                              "baseline": "<table>…</table>"}]},
            {"document": "c.pdf", "similarity": 0.0, "verdict": "Error", "message": "both failed"}
        ]))
        .unwrap();
        object.status = Some(MineruDeploymentStatus {
            current_step: Some(0),
            quality: documents,
            ..MineruDeploymentStatus::default()
        });
        let shown = render_quality(&object);
        assert!(
            shown.contains("3 of 50 done, 1 regressed, 1 not comparable"),
            "{shown}"
        );
        let lines: Vec<&str> = shown.lines().collect();
        assert!(
            lines[1].contains("Fail") && lines[1].contains("b.pdf"),
            "{shown}"
        );
        assert!(lines[2].contains("page 2 table missing"), "{shown}");
        assert!(lines[3].contains("- <table>…</table>"), "{shown}");
        assert!(
            lines[4].contains("Error") && lines[4].contains("c.pdf"),
            "{shown}"
        );
        assert!(
            lines[5].contains("Pass") && lines[5].contains("a.pdf"),
            "{shown}"
        );
        let minimal: MineruDeployment =
            serde_yaml::from_str(include_str!("../../../examples/minimal.yaml")).unwrap();
        assert!(render_quality(&minimal).contains("no quality gate"));
    }

    #[test]
    fn a_migration_names_the_legacy_service_and_its_part() {
        let production = include_str!("../../../examples/production.yaml");
        let mut object: MineruDeployment = serde_yaml::from_str(production).unwrap();
        object.status = Some(MineruDeploymentStatus {
            legacy: Some(LegacyRole::Serving),
            ..MineruDeploymentStatus::default()
        });
        let shown = render_status(&object);
        assert!(shown.contains("  stable:  -\n"), "{shown}");
        assert!(
            shown.contains("  legacy:  Service mineru-api (serving what the canary does not)"),
            "{shown}"
        );
    }
}
