//! What a MineruDeployment may make the operator reach and read, set by the platform (operator
//! flags, chart values), never by the CR author: the hosts its Prometheus address and webhook
//! URL may name, and the label a Secret must carry before the operator reads it or mounts it
//! into a pod. Without these, anyone allowed to create a MineruDeployment could have the
//! operator send any Secret of the namespace to any host, or probe from the operator's network
//! position (docs/security.md).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

/// Largest response body the operator reads from a Prometheus server or a webhook, in bytes.
/// An instant query the gates run returns a few series; a body past this is refused, not read.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// One entry of the host allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// `*`: any host (the permissive mode, documented as such).
    Any,
    /// `*.example.com`: any host below `example.com` (not `example.com` itself).
    Below(String),
    /// `prometheus.monitoring.svc`, with `port` when written `host:port`.
    Exact { host: String, port: Option<u16> },
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(suffix) = text.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains(['*', ':', '/']) {
                return Err(format!("{text:?}: a wildcard is `*` or `*.domain`"));
            }
            return Ok(HostPattern::Below(suffix.to_owned()));
        }
        if text.is_empty() || text.contains(['*', '/', '@']) {
            return Err(format!("{text:?} is not a host, host:port, *.domain or *"));
        }
        // `[::1]:9090`, `host:9090`, `host`, `::1`.
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) =>
            {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
                (host.to_owned(), Some(port))
            }
            _ => (text.clone(), None),
        };
        Ok(HostPattern::Exact {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }

    fn admits(&self, host: &str, port: u16) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Below(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            HostPattern::Exact {
                host: allowed,
                port: allowed_port,
            } => allowed == host && allowed_port.is_none_or(|p| p == port),
        }
    }
}

/// The platform's rules for the operator's outbound calls and Secret reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundPolicy {
    hosts: Vec<HostPattern>,
    /// The label (`key`, `value`) every Secret a MineruDeployment names must carry; `None`
    /// reads any Secret the RBAC allows (the broader mode).
    secret_label: Option<(String, String)>,
}

/// The label a Secret carries by default to let the operator read it.
pub const DEFAULT_SECRET_LABEL: (&str, &str) = ("mineru.dev/operator-readable", "true");

impl Default for OutboundPolicy {
    /// No outbound host allowed and the default Secret label required: what the binary starts
    /// with when no flag says otherwise.
    fn default() -> Self {
        OutboundPolicy {
            hosts: Vec::new(),
            secret_label: Some((
                DEFAULT_SECRET_LABEL.0.to_owned(),
                DEFAULT_SECRET_LABEL.1.to_owned(),
            )),
        }
    }
}

impl OutboundPolicy {
    /// A policy admitting `hosts` (each `host`, `host:port`, `*.domain` or `*`) and requiring
    /// `secret_label` on Secrets (none: any Secret).
    pub fn new<S: AsRef<str>>(
        hosts: &[S],
        secret_label: Option<(String, String)>,
    ) -> Result<Self, String> {
        let hosts = hosts
            .iter()
            // `--allowed-hosts=` (an empty list from the chart) is no host.
            .filter(|h| !h.as_ref().trim().is_empty())
            .map(|h| HostPattern::parse(h.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(OutboundPolicy {
            hosts,
            secret_label,
        })
    }

    /// Any host, any Secret: for tests and local development.
    pub fn permissive() -> Self {
        OutboundPolicy {
            hosts: vec![HostPattern::Any],
            secret_label: None,
        }
    }

    /// `Ok` when `url` (named by the spec's field `field`) is an http(s) URL to an allowed
    /// host; otherwise the sentence saying why not, which never repeats the URL's path or query
    /// (they often carry a secret).
    pub fn check_url(&self, field: &str, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| format!("{field} is not a usable URL: {error}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{field} must be an http:// or https:// URL"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{field} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(80);
        if !self.hosts.iter().any(|pattern| pattern.admits(&host, port)) {
            return Err(format!(
                "{field} names {host}:{port}, which the operator is not allowed to call (its --allowed-hosts / chart value allowedHosts)"
            ));
        }
        Ok(parsed)
    }

    /// `Ok` when the operator may read (or mount) `secret`: it carries the required label.
    pub fn check_secret(&self, secret: &Secret) -> Result<(), String> {
        let Some((key, value)) = &self.secret_label else {
            return Ok(());
        };
        let labels = secret.labels();
        if labels.get(key) == Some(value) {
            return Ok(());
        }
        Err(format!(
            "Secret {}/{} is not labelled {key}={value}, which the operator requires before it reads a Secret a MineruDeployment names (kubectl label secret {} {key}={value})",
            secret.namespace().unwrap_or_default(),
            secret.name_any(),
            secret.name_any()
        ))
    }
}

/// `key=value` into the Secret label; an empty string requires none.
pub fn parse_label(text: &str) -> Result<Option<(String, String)>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
            Ok(Some((key.trim().to_owned(), value.trim().to_owned())))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}

/// Reads at most `limit` bytes of `response`'s body; a longer body is refused, not truncated.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(format!("response body larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| error.without_url().to_string())?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("response body larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An HTTP client for calls to hosts a CR names: redirects are not followed (a redirect could
/// lead anywhere the allowlist does not), and no proxy from the environment is used.
pub fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    builder
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn policy(hosts: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(
            hosts,
            Some(("mineru.dev/operator-readable".into(), "true".into())),
        )
        .unwrap()
    }

    #[test]
    fn hosts_are_admitted_only_as_listed() {
        let policy = policy(&[
            "prometheus.monitoring.svc:9090",
            "*.hooks.example.com",
            "127.0.0.1",
            "[::1]:9090",
        ]);
        let allowed = [
            "http://prometheus.monitoring.svc:9090/api",
            "https://a.hooks.example.com/x?key=s",
            "https://a.b.HOOKS.example.com/",
            "http://127.0.0.1:1234",
            "http://[::1]:9090/",
        ];
        for url in allowed {
            assert!(policy.check_url("f", url).is_ok(), "{url}");
        }
        let refused = [
            "http://prometheus.monitoring.svc:9091/",
            "http://prometheus.monitoring.svc/",
            "https://hooks.example.com/",
            "https://evilhooks.example.com/",
            "https://hooks.example.com.evil.net/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:80/",
            "file:///etc/passwd",
            "gopher://127.0.0.1/",
            "not a url",
        ];
        for url in refused {
            assert!(policy.check_url("f", url).is_err(), "{url}");
        }
    }

    #[test]
    fn nothing_is_allowed_by_default_and_everything_when_permissive() {
        let url = "http://prometheus:9090";
        assert!(OutboundPolicy::default().check_url("f", url).is_err());
        let empty = OutboundPolicy::new(&[""], None).unwrap();
        assert!(
            empty.check_url("f", url).is_err(),
            "an empty flag is no host"
        );
        assert!(OutboundPolicy::permissive().check_url("f", url).is_ok());
    }

    #[test]
    fn a_refusal_names_the_host_but_never_the_path_or_query() {
        let error = policy(&[])
            .check_url(
                "rollout.notifications.webhook.url",
                "https://hooks.slack.com/services/T000/B000/s3cret?token=t0ken",
            )
            .unwrap_err();
        assert!(error.contains("hooks.slack.com:443"), "{error}");
        assert!(error.contains("--allowed-hosts"), "{error}");
        assert!(
            !error.contains("s3cret") && !error.contains("t0ken"),
            "{error}"
        );
    }

    #[test]
    fn malformed_patterns_are_refused_at_start() {
        for bad in [
            "*.",
            "a*b",
            "http://host",
            "host:port",
            "*.a:80",
            "user@host",
        ] {
            assert!(OutboundPolicy::new(&[bad], None).is_err(), "{bad:?}");
        }
    }

    fn secret(labels: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("team".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_is_read_only_with_the_required_label() {
        let policy = policy(&[]);
        assert!(
            policy
                .check_secret(&secret(&[("mineru.dev/operator-readable", "true")]))
                .is_ok()
        );
        let error = policy
            .check_secret(&secret(&[("mineru.dev/operator-readable", "yes")]))
            .unwrap_err();
        assert!(error.contains("team/creds"), "{error}");
        assert!(error.contains("kubectl label secret creds"), "{error}");
        assert!(policy.check_secret(&secret(&[])).is_err());
        assert!(
            OutboundPolicy::permissive()
                .check_secret(&secret(&[]))
                .is_ok()
        );
    }

    #[test]
    fn the_secret_label_flag_parses() {
        assert_eq!(
            parse_label("a/b=c").unwrap(),
            Some(("a/b".into(), "c".into()))
        );
        assert_eq!(parse_label("").unwrap(), None);
        assert!(parse_label("a=").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
