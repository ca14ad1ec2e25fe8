//! The mineru-operator process: leader election, the controller, and its HTTP endpoints.

use std::{collections::BTreeMap, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, ValueEnum};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::Client;
use mineru_operator::{
    context::{self, Context},
    controller,
    crashpoints::CrashPoints,
    drive::RolloutIo,
    http::{self, Readiness},
    leader::{self, Elector, Leadership},
    liveness::Liveness,
    metrics::Metrics,
    outbound::{self, OutboundPolicy},
    probes::ProbeTraffic,
    reconcile::{Settings, networkpolicy},
    scope::WatchScope,
    warmup::ServiceResolver,
};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Runs MineruDeployments: vLLM (GPU tier) and mineru-worker (CPU tier) per revision.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MINERU_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "MINERU_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// This replica's identity in the Lease and in Events; the pod name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// The operator's own namespace: home of the leader-election Lease, and where the pods
    /// admitted to vLLM for the warm-up gate run.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "mineru-operator")]
    lease_name: String,

    /// Seconds a leader holds the Lease without renewing it; a standby takes over after that.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Reconcile without leader election (a single replica, or local development).
    #[arg(long)]
    no_leader_election: bool,

    /// Namespace of the Prometheus that scrapes vLLM metrics on port 8000; the NetworkPolicy
    /// admits its pods beside the workers. Empty: no scraper is admitted.
    #[arg(
        long,
        env = "MINERU_OPERATOR_METRICS_SCRAPER_NAMESPACE",
        default_value = "monitoring"
    )]
    metrics_scraper_namespace: String,

    /// Narrows the admitted scraper to pods with these labels (`k=v,...`); empty: every pod of
    /// the scraper namespace.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    metrics_scraper_pod_selector: BTreeMap<String, String>,

    /// Namespace of the cluster DNS pods, the one destination workers may reach besides their
    /// vLLM; empty: DNS pods of any namespace.
    #[arg(long, default_value = networkpolicy::DEFAULT_DNS_NAMESPACE)]
    dns_namespace: String,

    /// Labels of the cluster DNS pods (`k=v,...`); empty: every pod of `--dns-namespace`.
    #[arg(long, value_parser = parse_labels, default_value = "k8s-app=kube-dns")]
    dns_pod_selector: BTreeMap<String, String>,

    /// How long a new API key must have been in its Secret before the operator restarts vLLM
    /// with it: the kubelet's time to hand it to the workers' mounted files.
    #[arg(long, default_value = "180s")]
    api_key_propagation: mineru_crds::Duration,

    /// Golden documents compared at once in a quality round (per MineruDeployment).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    quality_concurrency: u16,

    /// MineruDeployments reconciled at once (per watched namespace); the others wait their
    /// turn, so that many objects at once cannot swamp the apiserver.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrent_reconciles: u16,

    /// Budget of one golden document on one worker.
    #[arg(long, default_value = "300s")]
    quality_timeout: mineru_crds::Duration,

    /// JSON file mapping `<namespace>/<service>` to a base URL, for an operator running outside
    /// the cluster (development, the e2e suite); in-cluster DNS names are used otherwise.
    #[arg(long, env = "MINERU_OPERATOR_SERVICE_MAP")]
    service_map: Option<std::path::PathBuf>,

    /// How long one reconcile may run before `/healthz` fails and the kubelet restarts the
    /// replica.
    #[arg(long, default_value = "300s")]
    reconcile_deadline: mineru_crds::Duration,

    /// Namespaces to watch and write in (`a,b`), each with a Role granting the operator's
    /// access there; empty: every namespace (a ClusterRole, the broader mode).
    #[arg(
        long,
        env = "MINERU_OPERATOR_WATCH_NAMESPACES",
        value_delimiter = ',',
        num_args = 0..
    )]
    watch_namespaces: Vec<String>,

    /// Hosts a MineruDeployment may make the operator call, for `analysis.prometheus.address`
    /// and the webhook URL: each `host`, `host:port`, `*.domain` or `*` (any: the broad mode).
    /// Empty: none, and every check on Prometheus or webhook is refused in preflight.
    #[arg(
        long,
        env = "MINERU_OPERATOR_ALLOWED_HOSTS",
        value_delimiter = ',',
        num_args = 0..
    )]
    allowed_hosts: Vec<String>,

    /// The label (`key=value`) a Secret must carry before the operator reads it or mounts it
    /// into a pod for a MineruDeployment. Empty: any Secret the RBAC allows (the broad mode).
    #[arg(
        long,
        env = "MINERU_OPERATOR_SECRET_LABEL",
        default_value = "mineru.dev/operator-readable=true"
    )]
    secret_label: String,

    /// Crash-safety tests only: abort right after each write not yet listed in this file, and
    /// list it there first.
    #[arg(long, hide = true)]
    crash_after_writes: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "mineru-operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("mineru-operator-{}", std::process::id()));
    let mut config = kube::Config::infer().await?;
    // Names the replica in the API server's audit log: which of several wrote what.
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_str(&format!(
            "mineru-operator/{} ({identity})",
            env!("CARGO_PKG_VERSION")
        ))?,
    ));
    let client = Client::try_from(config)?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let liveness = Arc::new(Liveness::new(args.reconcile_deadline.get()));
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let server = tokio::spawn(http::serve(
        args.listen,
        http::router(metrics.clone(), readiness.clone(), liveness.clone()),
        stopped(stopping.clone()),
    ));

    let scope = WatchScope::from_flag(&args.watch_namespaces);
    controller::ensure_crd(&client, &scope).await?;
    tracing::info!(scope = %scope.describe(), "watching");
    readiness.set(true);

    let settings = Settings {
        vllm_peers: vllm_peers(&args),
        dns_peers: networkpolicy::dns_peers(&args.dns_namespace, &args.dns_pod_selector),
    };
    let resolver = match &args.service_map {
        Some(path) => ServiceResolver::from_file(path)?,
        None => ServiceResolver::default(),
    };
    let secret_label =
        outbound::parse_label(&args.secret_label).map_err(|e| format!("--secret-label: {e}"))?;
    let outbound = OutboundPolicy::new(&args.allowed_hosts, secret_label)
        .map_err(|error| format!("--allowed-hosts: {error}"))?;
    let rollout_io = RolloutIo {
        resolver,
        outbound,
        scope,
        key_propagation: args.api_key_propagation.get(),
        quality_concurrency: usize::from(args.quality_concurrency),
        quality_timeout: args.quality_timeout.get(),
        probes: Arc::new(ProbeTraffic::counted_in(metrics.clone())),
        ..RolloutIo::default()
    };
    let leadership = Arc::new(if args.no_leader_election {
        Leadership::unconditional()
    } else {
        Leadership::elected(leader::renew_deadline(lease_duration(&args)))
    });
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Some(identity.clone()),
            metrics,
            settings,
            rollout_io,
            context::now,
        )
        .with_leadership(leadership.clone())
        .with_liveness(liveness)
        .with_crash_points(match &args.crash_after_writes {
            Some(file) => CrashPoints::from_file(file)?,
            None => CrashPoints::disabled(),
        }),
    );

    if args.no_leader_election {
        controller::run(ctx, args.concurrent_reconciles, stopped(stopping.clone())).await;
    } else {
        let duration = lease_duration(&args);
        let elector = Elector::new(
            client,
            &args.namespace,
            &args.lease_name,
            &identity,
            duration,
        );
        // Retries well inside the renew deadline, as client-go's defaults do (15 s, 10 s, 2 s).
        let period = duration / 7;
        if !elector
            .acquire(&leadership, period, stopped(stopping.clone()))
            .await
        {
            return Ok(());
        }
        tracing::info!(identity, "leading; reconciling");
        let mut controller = tokio::spawn(controller::run(
            ctx,
            args.concurrent_reconciles,
            stopped(stopping.clone()),
        ));
        tokio::select! {
            kept = elector.keep(&leadership, period, stopped(stopping.clone())) => {
                if let Err(lost) = kept {
                    // Another replica may be acting already: stop writing at once.
                    controller.abort();
                    return Err(lost.into());
                }
                controller.await?;
            }
            ended = &mut controller => {
                ended?;
                // The controller only ends when asked to; if it ended on its own, leading on
                // without it would keep the Lease from a standby that would reconcile.
                if !*stopping.borrow() {
                    elector.release().await?;
                    return Err("the controller ended while leading".into());
                }
            }
        }
        elector.release().await?;
    }
    server.await??;
    Ok(())
}

fn lease_duration(args: &Args) -> Duration {
    Duration::from_secs(args.lease_duration_seconds.max(3))
}

/// Resolves once shutdown was asked for.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent `true`.
    let _ = stopping.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        // The reconcile span (namespace, name, generation) rides along on every line.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// `k=v,k2=v2` into labels; an empty string is no labels.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("{pair:?} is not key=value")),
        })
        .collect()
}

/// Who besides the workers may reach vLLM, from the flags.
fn vllm_peers(args: &Args) -> Vec<NetworkPolicyPeer> {
    networkpolicy::vllm_peers(
        &args.namespace,
        &args.metrics_scraper_namespace,
        &args.metrics_scraper_pod_selector,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_from_key_value_pairs() {
        let labels = parse_labels("a=1, b = two").unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "two".into())])
        );
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("novalue").is_err());
    }

    #[test]
    fn default_scraper_is_every_pod_of_the_monitoring_namespace() {
        let args = Args::parse_from(["mineru-operator"]);
        let peer = vllm_peers(&args).pop().unwrap();
        let namespaces = peer.namespace_selector.unwrap().match_labels.unwrap();
        assert_eq!(namespaces["kubernetes.io/metadata.name"], "monitoring");
        assert_eq!(peer.pod_selector, None);
    }

    #[test]
    fn scraper_pods_can_be_narrowed() {
        let args = Args::parse_from([
            "mineru-operator",
            "--metrics-scraper-namespace=observability",
            "--metrics-scraper-pod-selector=app.kubernetes.io/name=prometheus",
        ]);
        let peer = vllm_peers(&args).pop().unwrap();
        assert_eq!(
            peer.namespace_selector.unwrap().match_labels.unwrap()["kubernetes.io/metadata.name"],
            "observability"
        );
        assert_eq!(
            peer.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
            "prometheus"
        );
    }

    #[test]
    fn an_empty_scraper_namespace_admits_no_scraper() {
        let args = Args::parse_from(["mineru-operator", "--metrics-scraper-namespace="]);
        assert_eq!(vllm_peers(&args).len(), 1, "the operator alone");
    }

    #[test]
    fn the_operator_itself_is_admitted_to_vllm_for_the_warm_up_gate() {
        let args = Args::parse_from([
            "mineru-operator",
            "--namespace=ops",
            "--metrics-scraper-namespace=",
        ]);
        let peers = vllm_peers(&args);
        assert_eq!(peers.len(), 1);
        let namespaces = peers[0]
            .namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(namespaces["kubernetes.io/metadata.name"], "ops");
        let pods = peers[0].pod_selector.clone().unwrap().match_labels.unwrap();
        assert_eq!(pods["app.kubernetes.io/name"], "mineru-operator");
    }

    #[test]
    fn by_default_no_host_is_allowed_and_secrets_need_the_label() {
        let args = Args::parse_from(["mineru-operator"]);
        assert!(args.allowed_hosts.is_empty());
        assert_eq!(args.dns_pod_selector, networkpolicy::default_dns_pods());
        let empty = Args::parse_from(["mineru-operator", "--allowed-hosts="]);
        let policy = OutboundPolicy::new(&empty.allowed_hosts, None).unwrap();
        assert!(policy.check_url("f", "http://prometheus:9090").is_err());
        let label = outbound::parse_label(&args.secret_label).unwrap();
        let policy = OutboundPolicy::new(&args.allowed_hosts, label).unwrap();
        assert_eq!(policy, OutboundPolicy::default());
    }

    #[test]
    fn the_charts_arguments_are_accepted() {
        let args = Args::try_parse_from([
            "mineru-operator",
            "--log-format=json",
            "--metrics-scraper-namespace=monitoring",
            "--quality-concurrency=4",
            "--quality-timeout=300s",
            "--metrics-scraper-pod-selector=app.kubernetes.io/name=prometheus",
            "--allowed-hosts=*.monitoring,*.monitoring.svc",
            "--secret-label=mineru.dev/operator-readable=true",
            "--watch-namespaces=parsing,ocr",
        ])
        .unwrap();
        assert_eq!(args.quality_concurrency, 4);
        assert_eq!(args.allowed_hosts, ["*.monitoring", "*.monitoring.svc"]);
        assert_eq!(
            WatchScope::from_flag(&args.watch_namespaces),
            WatchScope::Namespaces(vec!["ocr".into(), "parsing".into()])
        );
        assert!(Args::try_parse_from(["mineru-operator", "--quality-concurrency=0"]).is_err());
    }
}
