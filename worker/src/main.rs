//! `mineru-worker`: MinerU-compatible document extraction from the command line.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use mineru_protocol::client::{ClientConfig, VlmClient};
use mineru_worker::output::{self, Backend};
use mineru_worker::parse::{
    Extractor, PageRange, PixelLimits, Progress, ProgressFn, Wanted, parse_document,
};
use mineru_worker::vlm::VlmFlags;

#[derive(Debug, Parser)]
#[command(name = "mineru-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract PDFs to Markdown, content_list.json and a per-page summary.
    Parse(ParseArgs),
    /// Serve the MinerU-compatible HTTP API (`POST /file_parse`) with health, readiness and metrics.
    #[command(args_override_self = true)]
    Serve(Box<mineru_worker::server::ServeArgs>),
    /// A render subprocess of `serve`, spoken to over stdin and stdout.
    #[command(name = "render-child", hide = true)]
    RenderChild(mineru_worker::render_pool::ChildArgs),
}

#[derive(Debug, clap::Args)]
struct ParseArgs {
    /// PDF files to parse.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Output directory; each document goes to <dir>/<stem>/.
    #[arg(short, long)]
    output: PathBuf,
    /// `text` reads the PDF's text layer (no model); `vlm` calls a vLLM server with MinerU2.5.
    #[arg(long, value_enum, default_value_t = Backend::Text)]
    backend: Backend,
    /// vLLM server base URL (vlm backend).
    #[arg(long, env = "MINERU_SERVER_URL")]
    server_url: Option<String>,
    /// File holding the server's API key, sent as a Bearer token (vlm backend).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Pages to parse, counted from 1: `3`, `2-5` or `4-`.
    #[arg(long, default_value = "1-")]
    pages: PageRange,
    /// vLLM calls in flight at once (vlm backend), across the document's pages.
    #[arg(long, default_value_t = 100)]
    vllm_max_in_flight: usize,
    #[command(flatten)]
    vlm: VlmFlags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A render child is one thread talking over pipes: no runtime, no logging to stdout.
    if let Command::RenderChild(args) = &cli.command {
        return mineru_worker::render_pool::child_main(args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Parse(args) => runtime.block_on(parse(args)),
        Command::Serve(args) => runtime.block_on(mineru_worker::server::main(*args)),
        Command::RenderChild(_) => unreachable!("served before the runtime starts"),
    }
}

/// Prints the reason on one line and yields a failing exit code.
fn fail(reason: &str) -> ExitCode {
    report(reason);
    ExitCode::FAILURE
}

fn report(reason: &str) {
    let line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {line}");
}

async fn parse(args: ParseArgs) -> ExitCode {
    let extractor = match extractor(&args).await {
        Ok(e) => e,
        Err(reason) => return fail(&reason),
    };
    let bars = Bars::new(args.files.len());
    let mut failed = false;
    for file in &args.files {
        if let Err(reason) = parse_file(file, &args, &extractor, &bars).await {
            bars.suspend(|| report(&format!("{}: {reason}", file.display())));
            failed = true;
        }
        bars.document_done();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn extractor(args: &ParseArgs) -> Result<Extractor, String> {
    match args.backend {
        Backend::Text => Ok(Extractor::Text),
        Backend::Vlm => {
            let url = args
                .server_url
                .clone()
                .ok_or("--server-url (or MINERU_SERVER_URL) is required with --backend vlm")?;
            let mut config = ClientConfig::new(url);
            config.max_in_flight = args.vllm_max_in_flight.max(1);
            if let Some(path) = &args.api_key_file {
                let key = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: cannot read API key: {e}", path.display()))?;
                config.api_key = Some(key.trim().to_string());
            }
            let client = VlmClient::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Extractor::Vlm {
                client,
                options: args.vlm.options(),
                pixels: PixelLimits::default(),
            })
        }
    }
}

async fn parse_file(
    file: &Path,
    args: &ParseArgs,
    extractor: &Extractor,
    bars: &Bars,
) -> Result<(), String> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or("the file name has no usable stem")?
        .to_string();
    let bytes = tokio::fs::read(file)
        .await
        .map_err(|e| format!("cannot read: {e}"))?;
    let pages = bars.pages(&stem);
    let progress: ProgressFn = {
        let pages = pages.clone();
        Arc::new(move |event: Progress| match event {
            Progress::Started { pages: n } => pages.set_length(n as u64),
            Progress::PageDone => pages.inc(1),
        })
    };
    // The vlm backend links crops of its image, chart and table blocks, as MinerU does.
    let wanted = Wanted {
        images: matches!(extractor, Extractor::Vlm { .. }),
        model_output: false,
    };
    let result = parse_document(bytes, args.pages, extractor, wanted, progress).await;
    pages.finish_and_clear();
    let parsed = result.map_err(|e| e.to_string())?;
    output::save_images(&args.output.join(&stem), &parsed.images).map_err(|e| e.to_string())?;
    let out = output::build(&parsed.pages);
    output::write(&args.output, &stem, &out).map_err(|e| e.to_string())?;
    Ok(())
}

/// Progress bars on a terminal, nothing otherwise.
struct Bars {
    multi: MultiProgress,
    documents: Option<ProgressBar>,
}

impl Bars {
    fn new(documents: usize) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let documents = (documents > 1).then(|| {
            let bar = multi.add(ProgressBar::new(documents as u64));
            bar.set_style(style("documents"));
            bar
        });
        Self { multi, documents }
    }

    fn pages(&self, stem: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(style("pages"));
        bar.set_message(stem.to_string());
        bar
    }

    fn document_done(&self) {
        if let Some(bar) = &self.documents {
            bar.inc(1);
        }
    }

    fn suspend(&self, f: impl FnOnce()) {
        self.multi.suspend(f);
    }
}

fn style(unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{msg:20!}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}
