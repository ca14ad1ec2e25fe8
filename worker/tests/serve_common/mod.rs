//! A worker served in-process on an ephemeral port, the strict vLLM simulator behind it, PDFs
//! written by pdfium, MinerU-style multipart requests and a reader for the metrics text.
#![allow(dead_code)] // Each test binary uses its own subset.

pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use mineru_worker::pdf;
use mineru_worker::server::{self, ServeArgs, ServeError};
use mineru_worker::simulator::{self, SimConfig, SimHandle};
use pdfium_render::prelude::*;
use reqwest::multipart::{Form, Part};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const MODEL: &str = "mineru2.5";
pub const REVISION: &str = "w-test";

/// A worker running in this process.
pub struct Worker {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Worker {
    /// Starts `serve` with `args` (as on the command line) plus a revision label and quick
    /// retries, so tests do not wait for production backoffs.
    pub async fn start(args: &[&str]) -> Worker {
        let mut argv = vec![
            "serve",
            "--revision",
            REVISION,
            "--vllm-backoff",
            "20ms",
            "--ready-cache",
            "0s",
            // No endpoints to wait for in-process.
            "--shutdown-delay",
            "0s",
            // This test binary is no worker: render subprocesses run the real one.
            "--render-program",
            env!("CARGO_BIN_EXE_mineru-worker"),
        ];
        argv.extend_from_slice(args);
        let config = ServeArgs::try_parse_from(&argv).expect("serve flags");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, listener, async {
            let _ = stopped.await;
        }));
        Worker {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    /// A worker using the vlm backend against `sim`.
    pub async fn vlm(sim: &SimHandle, args: &[&str]) -> Worker {
        let url = sim.url();
        let mut argv = vec!["--backend", "vlm", "--server-url", url.as_str()];
        argv.extend_from_slice(args);
        Worker::start(&argv).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET answered")
    }

    /// `POST /file_parse` with `form`.
    pub async fn parse(&self, form: Form) -> reqwest::Response {
        self.http
            .post(self.url("/file_parse"))
            .multipart(form)
            .send()
            .await
            .expect("POST answered")
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics(
            self.get("/metrics")
                .await
                .text()
                .await
                .expect("metrics text"),
        )
    }

    /// Waits until a metric reaches `value` (the server's own view, so no sleeps are guessed).
    pub async fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        for _ in 0..500 {
            if self.metrics().await.value(name, labels) == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name}{labels:?} never reached {value}");
    }

    /// Waits until the circuit breaker is no longer open (half-open lets the next document
    /// probe the tier).
    pub async fn wait_breaker_not_open(&self) {
        for _ in 0..500 {
            if self
                .metrics()
                .await
                .value("mineru_worker_breaker_state", &[])
                != Some(2.0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the breaker never left the open state");
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task")
    }
}

/// The simulator with its defaults, plus `faults` latency.
pub async fn sim(config: SimConfig) -> SimHandle {
    simulator::start_local(config)
        .await
        .expect("start simulator")
}

pub fn sim_config() -> SimConfig {
    SimConfig::new(MODEL)
}

/// Small pages keep the vlm backend's rendering and image work cheap.
const PAGE_SIDE: f32 = 200.0;

/// A PDF written by pdfium: one line of Helvetica per page.
pub fn pdf(pages: &[&str]) -> Vec<u8> {
    let pdfium = pdf::library().expect("pdfium: run worker/scripts/install-pdfium.sh");
    let mut doc = pdfium.create_new_pdf().expect("new document");
    let font = doc.fonts_mut().helvetica();
    for line in pages {
        let mut page = doc
            .pages_mut()
            .create_page_at_end(PdfPagePaperSize::Custom(
                PdfPoints::new(PAGE_SIDE),
                PdfPoints::new(PAGE_SIDE),
            ))
            .expect("new page");
        page.objects_mut()
            .create_text_object(
                PdfPoints::new(20.0),
                PdfPoints::new(PAGE_SIDE / 2.0),
                line,
                font,
                PdfPoints::new(12.0),
            )
            .expect("text");
    }
    doc.save_to_bytes().expect("save")
}

/// A PDF whose one page is 30 000 pt wide: rendering it at 200 DPI would take gigabytes.
pub fn huge_page() -> Vec<u8> {
    let pdfium = pdf::library().expect("pdfium: run worker/scripts/install-pdfium.sh");
    let mut doc = pdfium.create_new_pdf().expect("new document");
    doc.pages_mut()
        .create_page_at_end(PdfPagePaperSize::Custom(
            PdfPoints::new(30_000.0),
            PdfPoints::new(30_000.0),
        ))
        .expect("new page");
    doc.save_to_bytes().expect("save")
}

/// The form MinerU's clients send: every option as a text field, the file as `files`.
pub fn mineru_form(file_name: &str, pdf: Vec<u8>, backend: &str) -> Form {
    Form::new()
        .part(
            "files",
            Part::bytes(pdf)
                .file_name(file_name.to_owned())
                .mime_str("application/pdf")
                .expect("mime"),
        )
        .text("backend", backend.to_owned())
        .text("return_md", "true")
        .text("return_content_list", "true")
        .text("return_middle_json", "false")
        .text("return_model_output", "false")
        .text("return_images", "false")
        .text("formula_enable", "true")
        .text("table_enable", "true")
        .text("start_page_id", "0")
        .text("end_page_id", "99999")
}

/// A bare form: one file and a backend.
pub fn form(file_name: &str, pdf: Vec<u8>, backend: &str) -> Form {
    Form::new()
        .part("files", Part::bytes(pdf).file_name(file_name.to_owned()))
        .text("backend", backend.to_owned())
}

/// The `Retry-After` header in seconds.
pub fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The OpenMetrics text of `/metrics`.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of the samples `name` whose labels include all of `labels` (`None` when there
    /// is no such series).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                (metric == name && all).then(|| value.parse::<f64>().ok())?
            })
            .reduce(|a, b| a + b)
    }
}

/// How a content stream is stored.
pub enum Content<'a> {
    Plain(&'a [u8]),
    /// zlib data.
    Deflated(Vec<u8>),
}

/// A one-page PDF (612×792 pt) with `content` as its content stream and `image` (width, height,
/// zlib data of DeviceRGB rows) as its only XObject, written by hand: these pages are what no
/// PDF writer would produce.
pub fn raw_pdf(content: Content, image: Option<(u32, u32, Vec<u8>)>) -> Vec<u8> {
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 5 0 R >> >> /Contents 4 0 R >>".to_vec(),
    ];
    let (content, filter) = match &content {
        Content::Plain(data) => (*data, ""),
        Content::Deflated(data) => (data.as_slice(), " /Filter /FlateDecode"),
    };
    let mut stream = format!("<< /Length {}{filter} >>\nstream\n", content.len()).into_bytes();
    stream.extend_from_slice(content);
    stream.extend_from_slice(b"\nendstream");
    objects.push(stream);
    if let Some((width, height, data)) = image {
        let mut stream = format!(
            "<< /Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace \
             /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /Length {} >>\nstream\n",
            data.len()
        )
        .into_bytes();
        stream.extend_from_slice(&data);
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
    }
    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (number, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", number + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// zlib data of `pattern` repeated to `bytes` bytes, compressed as it is produced.
pub fn repeated_deflated(pattern: &[u8], bytes: usize) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = pattern.repeat((1 << 20) / pattern.len());
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        std::io::Write::write_all(&mut encoder, &chunk[..n]).expect("compress");
        left -= n;
    }
    encoder.finish().expect("compress")
}
