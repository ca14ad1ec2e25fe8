//! The worker command line the operator writes into every worker pod is one that
//! `mineru-worker serve` accepts, with the values the spec asked for — checked against the
//! worker's own argument parser, so the two binaries cannot drift apart.

use clap::{Parser, Subcommand};
use mineru_crds::{Backend, MineruDeployment};
use mineru_operator::reconcile::{WorkerTemplate, deployment};
use mineru_worker::server::ServeArgs;

#[derive(Parser)]
struct WorkerCli {
    #[command(subcommand)]
    command: WorkerCommand,
}

#[derive(Subcommand)]
enum WorkerCommand {
    Serve(ServeArgs),
}

fn example(name: &str) -> MineruDeployment {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn parsed_serve_args(md: &MineruDeployment) -> ServeArgs {
    let template = WorkerTemplate::new(&md.spec.worker, &md.spec.model, "m-0123abcd");
    let args = deployment::args("docs", &template);
    let cli =
        WorkerCli::try_parse_from(std::iter::once("mineru-worker".to_owned()).chain(args.clone()))
            .unwrap_or_else(|error| panic!("mineru-worker refuses {args:?}:\n{error}"));
    let WorkerCommand::Serve(serve) = cli.command;
    serve
}

#[test]
fn the_minimal_example_yields_a_valid_worker_command() {
    let md = example("minimal.yaml");
    let serve = parsed_serve_args(&md);
    assert_eq!(serve.port, 8000);
    assert_eq!(
        serve.server_url.as_deref(),
        Some("http://docs-vllm-m-0123abcd:8000")
    );
    assert_eq!(
        serve.model_name.as_deref(),
        Some("opendatalab/MinerU2.5-2509-1.2B")
    );
    assert_eq!(serve.max_concurrent_documents, 4);
    assert_eq!(serve.max_pages, 1000);
    assert!(serve.api_key_file.is_none());
}

#[test]
fn the_production_example_passes_its_limits_and_key_file() {
    let mut md = example("production.yaml");
    md.spec.worker.backend = Backend::Text;
    let serve = parsed_serve_args(&md);
    assert_eq!(serve.max_concurrent_documents, 8);
    assert_eq!(serve.max_pages, 2000);
    assert_eq!(serve.model_name.as_deref(), Some("mineru"));
    assert!(
        serve.api_key_file.is_some(),
        "the API key Secret must reach the worker as a file"
    );
}
