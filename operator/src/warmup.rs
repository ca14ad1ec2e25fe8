//! The model warm-up gate. vLLM's `/health` answers 200 as soon as the engine process lives,
//! minutes before the model can answer; a canary vLLM gets traffic only after it lists the
//! expected model at `/v1/models` AND completes a real MinerU2.5 layout request.

use std::{collections::BTreeMap, io::Cursor, path::Path, time::Duration};

use image::{ImageFormat, Rgb, RgbImage};
use mineru_protocol::{
    chat::{LAYOUT_IMAGE_SIZE, Step},
    client::{ClientConfig, VlmClient},
};
use thiserror::Error;

/// Why a vLLM revision is not warm yet; each is a reason to wait, not to fail.
#[derive(Debug, Error)]
pub enum WarmupError {
    #[error("vLLM at {url} is not serving {model:?} yet: {reason}")]
    NotServing {
        url: String,
        model: String,
        reason: String,
    },
    #[error("vLLM at {url} lists {model:?} but the warm-up request failed: {reason}")]
    RequestFailed {
        url: String,
        model: String,
        reason: String,
    },
}

/// Where the operator reaches in-cluster Services: their cluster DNS name, or an address from an
/// override map when the operator runs outside the cluster (development, the e2e suite).
#[derive(Clone, Debug, Default)]
pub struct ServiceResolver {
    overrides: BTreeMap<String, String>,
}

impl ServiceResolver {
    /// Reads overrides from a JSON object `{"<namespace>/<service>": "http://host:port", ...}`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let overrides = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not a JSON object of URLs: {error}", path.display()))?;
        Ok(ServiceResolver { overrides })
    }

    /// The base URL of `service` in `namespace` on `port`.
    pub fn url(&self, namespace: &str, service: &str, port: i32) -> String {
        self.overrides
            .get(&format!("{namespace}/{service}"))
            .cloned()
            .unwrap_or_else(|| format!("http://{service}.{namespace}.svc:{port}"))
    }
}

/// Checks that the vLLM at `url` serves `model` and answers a layout request.
pub async fn probe(
    url: &str,
    model: &str,
    api_key: Option<String>,
    timeout: Duration,
) -> Result<(), WarmupError> {
    let config = ClientConfig {
        model: Some(model.to_owned()),
        api_key,
        max_retries: 0,
        connect_timeout: timeout,
        request_timeout: timeout,
        ..ClientConfig::new(url)
    };
    let client = VlmClient::connect(config)
        .await
        .map_err(|error| WarmupError::NotServing {
            url: url.to_owned(),
            model: model.to_owned(),
            reason: error.to_string(),
        })?;
    client
        .complete(Step::Layout, blank_page())
        .await
        .map(|_| ())
        .map_err(|error| WarmupError::RequestFailed {
            url: url.to_owned(),
            model: model.to_owned(),
            reason: error.to_string(),
        })
}

/// A white page at the layout size, encoded once.
fn blank_page() -> &'static [u8] {
    static PNG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PNG.get_or_init(|| {
        let page = RgbImage::from_pixel(LAYOUT_IMAGE_SIZE, LAYOUT_IMAGE_SIZE, Rgb([255, 255, 255]));
        let mut png = Cursor::new(Vec::new());
        page.write_to(&mut png, ImageFormat::Png)
            .expect("encoding an in-memory PNG cannot fail");
        png.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_resolve_to_cluster_dns_unless_overridden() {
        let mut resolver = ServiceResolver::default();
        assert_eq!(
            resolver.url("parsing", "docs-vllm-m-1", 8000),
            "http://docs-vllm-m-1.parsing.svc:8000"
        );
        resolver.overrides.insert(
            "parsing/docs-vllm-m-1".into(),
            "http://127.0.0.1:41000".into(),
        );
        assert_eq!(
            resolver.url("parsing", "docs-vllm-m-1", 8000),
            "http://127.0.0.1:41000"
        );
    }
}
