//! `kubectl mineru`: steer and read MineruDeployment rollouts.
//!
//! Commands set a `mineru.dev/*` annotation that the operator consumes (spec is never edited, so
//! GitOps stays in charge); `status` prints the rollout as a person wants to read it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use mineru_crds::{CheckStatus, LegacyRole, MineruDeployment, MineruDeploymentStatus};
use mineru_operator::commands;

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
    /// Leave the current step now (gates, pause and approval notwithstanding); `--full` promotes.
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
    let client = Client::try_default()
        .await
        .map_err(|error| format!("cannot reach the cluster: {error}"))?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<MineruDeployment> = Api::namespaced(client, &namespace);
    let (name, key, value) = match &cli.command {
        Action::Status { name } => {
            let object = api
                .get(name)
                .await
                .map_err(|error| format!("minerudeployment {namespace}/{name}: {error}"))?;
            print!("{}", render_status(&object));
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
        out.push_str(&format!(
            "  step:    {step}/{steps}, canary weight {}%\n",
            status.canary_weight.unwrap_or(0)
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
    if let Some(samples) = check.samples {
        line.push_str(&format!(", {samples:.0} samples"));
    }
    if let Some(message) = &check.message {
        line.push_str(&format!(" — {message}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

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
