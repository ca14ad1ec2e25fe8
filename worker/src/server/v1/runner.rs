//! Who runs a job, and what happens when that worker goes away.
//!
//! Every worker polls the store for queued jobs (and is woken at once by a submission of its
//! own). It takes one when it has a free document slot — the same slots `/file_parse` uses, so
//! a busy worker queues jobs instead of refusing them — by moving it to `running` under its own
//! name with a lease it renews while it works. A worker takes its own revision's jobs, so a
//! canary runs what the traffic split sent to it, and those of a revision no live worker serves
//! any more (a rolled-back canary's leftovers). A lease that runs out means the worker died: the
//! job is queued again for another, once; a second loss fails it with the reason. On SIGTERM a
//! worker stops taking jobs, lets its own finish within the shutdown grace and hands the rest
//! back to the queue before it exits.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::output::{self, Backend};
use crate::parse::{DocumentBytes, Job, PageRange, Wanted, Work, open_document, parse_pages};
use crate::signals::DocumentSignals;

use super::super::App;
use super::super::admission::Ticket;
use super::super::error::ApiError;
use super::super::file_parse::extractor;
use super::super::metrics::{Outcome, Source};
use super::error::V1Error;
use super::model::{
    ErrorDetail, FileParseInfo, FileStatus, JobStatus, OutputFileRef, OutputFiles, Tier,
};
use super::page_range::{PageRangeError, PageSelection, count_pages, format_intervals};
use super::store::{FileRecord, JobInput, JobRow, Store, StoreError, new_id, now_ms};
use crate::middle::{DocumentInfo, middle_json, structured_content};

/// Runs of a job a lost worker may cost before the job fails: one re-run.
const MAX_ATTEMPTS: i64 = 2;
/// How often unreferenced rows and bytes are looked for.
const COLLECT_EVERY: Duration = Duration::from_secs(300);

/// The job side of a worker: the store, who this worker is, and its running jobs.
pub struct Jobs {
    pub store: Store,
    pub worker: String,
    pub revision: String,
    /// When this worker started, as `/v1/usage` reports its billing period.
    pub started_at: String,
    pub lease: Duration,
    pub poll: Duration,
    pub retention: Duration,
    wake: Notify,
    running: AtomicUsize,
    idle: Notify,
}

impl Jobs {
    pub fn new(store: Store, worker: String, revision: String, timing: JobTiming) -> Self {
        Self {
            store,
            worker,
            revision,
            started_at: iso(now_ms()),
            lease: timing.lease,
            poll: timing.poll,
            retention: timing.retention,
            wake: Notify::new(),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// A job was just queued here: look for work now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Workers whose heartbeat is younger than this count as alive.
    fn live_since(&self) -> i64 {
        now_ms() - 3 * self.lease.as_millis() as i64
    }

    fn lease_until(&self) -> i64 {
        now_ms() + self.lease.as_millis() as i64
    }
}

#[derive(Debug, Clone, Copy)]
pub struct JobTiming {
    pub lease: Duration,
    pub poll: Duration,
    pub retention: Duration,
}

/// `2026-12-07T06:45:51Z`, as MinerU writes times.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Takes and runs jobs until the worker stops taking documents.
pub async fn dispatch(app: Arc<App>) {
    let jobs = &app.jobs;
    let mut collected = Instant::now();
    // After the store was unreachable, leases are not taken back until their holders have had a
    // lease's time to renew: an outage is no worker's death.
    let mut store_back = Instant::now();
    while !app.admission.is_closed() {
        let reclaim = store_back.elapsed() >= jobs.lease;
        if let Err(e) = tick(&app, reclaim).await {
            tracing::warn!(error = %e, "job store unavailable; jobs wait");
            store_back = Instant::now();
        }
        if collected.elapsed() >= COLLECT_EVERY {
            collected = Instant::now();
            if let Err(e) = jobs.store.collect(jobs.retention.as_millis() as i64).await {
                tracing::warn!(error = %e, "cannot collect expired jobs and files");
            }
            if let Err(e) = make_room(jobs, app.config.job_store_max_bytes.0, KEPT_AT_LEAST).await {
                tracing::warn!(error = %e, "cannot bound the job store");
            }
        }
        tokio::select! {
            () = jobs.wake.notified() => {}
            () = tokio::time::sleep(jobs.poll) => {}
        }
    }
}

async fn tick(app: &Arc<App>, reclaim_leases: bool) -> Result<(), StoreError> {
    let jobs = &app.jobs;
    jobs.store.ensure_schema().await?;
    jobs.store.heartbeat(&jobs.worker, &jobs.revision).await?;
    if reclaim_leases {
        for row in jobs.store.expired(now_ms()).await? {
            reclaim(jobs, row).await?;
        }
    }
    // A stopping worker takes no new jobs; the others will.
    if app.leaving.load(Ordering::SeqCst) {
        return Ok(());
    }
    // While the GPU tier's breaker is open, its jobs wait in the queue rather than fail.
    let tier_down = app.breaker.retry_after(Instant::now()) > Duration::ZERO;
    for row in jobs
        .store
        .claimable(&jobs.revision, jobs.live_since(), 8)
        .await?
    {
        if tier_down && backend_of(row.doc.tier) == Backend::Vlm {
            continue;
        }
        let Ok(ticket) = app.admission.enter(source_of(&row.doc.source)) else {
            break;
        };
        if let Some(row) = claim(jobs, row).await? {
            spawn_run(app.clone(), row, ticket);
        }
    }
    Ok(())
}

/// Finished jobs stay at least this long, so that their client can fetch what they made.
pub const KEPT_AT_LEAST: Duration = Duration::from_secs(600);

/// Keeps the embedded store within `max_bytes` by forgetting the jobs that finished first (but
/// none in the last `kept_at_least`); true when it is within it.
pub async fn make_room(
    jobs: &Jobs,
    max_bytes: u64,
    kept_at_least: Duration,
) -> Result<bool, StoreError> {
    if !jobs.store.embedded() {
        return Ok(true);
    }
    let before = now_ms() - kept_at_least.as_millis() as i64;
    loop {
        if jobs.store.bytes_held().await? as u64 <= max_bytes {
            return Ok(true);
        }
        if !jobs.store.forget_oldest_finished(before).await? {
            return Ok(false);
        }
        tracing::info!(
            max_bytes,
            "job store full: forgot the job that finished first"
        );
    }
}

pub fn source_of(name: &str) -> Source {
    Source::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .unwrap_or(Source::Traffic)
}

/// Moves a queued job to running under this worker; `None` when another worker was faster.
async fn claim(jobs: &Jobs, mut row: JobRow) -> Result<Option<JobRow>, StoreError> {
    row.status = JobStatus::Running;
    row.owner = Some(jobs.worker.clone());
    if row.doc.started_at.is_none() {
        row.doc.started_at = Some(iso(now_ms()));
    }
    Ok(jobs
        .store
        .update_job(&row, Some(jobs.lease_until()))
        .await?
        .map(|version| JobRow { version, ..row }))
}

/// A running job whose worker stopped renewing its lease: queued again, or failed once it has
/// cost [`MAX_ATTEMPTS`] runs.
async fn reclaim(jobs: &Jobs, mut row: JobRow) -> Result<(), StoreError> {
    let lost = row.owner.take().unwrap_or_default();
    row.attempts += 1;
    if row.attempts < MAX_ATTEMPTS {
        tracing::warn!(job = %row.id, worker = %lost, "worker lost mid-job; queued again");
        row.status = JobStatus::Queued;
        row.doc.note = Some(format!(
            "worker {lost} stopped mid-job; the job was run again"
        ));
    } else {
        let message = format!(
            "worker {lost} stopped answering while running this job, {} times; giving up",
            row.attempts
        );
        tracing::warn!(job = %row.id, worker = %lost, "worker lost mid-job again; job failed");
        fail_remaining(&mut row, "worker_lost", &message);
        row.doc.note = Some(message);
    }
    // A renewal that lands meanwhile wins: the lease is taken back only if it has still run out.
    jobs.store.reclaim_job(&row, now_ms()).await?;
    Ok(())
}

/// Ends every file not yet done with `code` and the job as failed or partial.
fn fail_remaining(row: &mut JobRow, code: &str, message: &str) {
    for file in &mut row.doc.files {
        if file.status != FileStatus::Completed {
            file.status = FileStatus::Failed;
            file.error = Some(ErrorDetail {
                kind: "engine_error".into(),
                code: Some(code.into()),
                message: message.into(),
                param: None,
            });
        }
    }
    row.doc.progress.failed = row.doc.progress.total - row.doc.progress.completed;
    row.status = final_status(row);
    row.doc.finished_at = Some(iso(now_ms()));
}

fn final_status(row: &JobRow) -> JobStatus {
    let progress = &row.doc.progress;
    if progress.failed == progress.total {
        JobStatus::Failed
    } else if progress.failed > 0 {
        JobStatus::Partial
    } else {
        JobStatus::Completed
    }
}

/// One job this worker runs, counted until the task ends however it ends (a panic included),
/// so that shutdown never waits for a job that is gone.
struct Running(Arc<App>);

impl Running {
    fn new(app: Arc<App>) -> Self {
        app.jobs.running.fetch_add(1, Ordering::SeqCst);
        Self(app)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.jobs.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.jobs.idle.notify_waiters();
        }
    }
}

fn spawn_run(app: Arc<App>, row: JobRow, ticket: Ticket) {
    let running = Running::new(app.clone());
    tokio::spawn(async move {
        let _running = running;
        let (id, attempts) = (row.id.clone(), row.attempts);
        // The work stops (at the next page) when the lease is no longer ours: canceled, or
        // handed back on shutdown.
        tokio::select! {
            result = run(&app, row, Job::holding(ticket)) => {
                if let Err(e) = result {
                    tracing::warn!(job = %id, error = %e, "job left unfinished; its lease will run out");
                }
            }
            () = lost(&app.jobs, &id, attempts) => {
                tracing::info!(job = %id, "job no longer ours (canceled or handed back); stopped");
            }
        }
    });
}

/// Renews the job's lease until it is no longer this worker's to run: canceled, handed back,
/// or taken back after a lapse (then claimed again, it is another run: `attempts` differs).
async fn lost(jobs: &Jobs, id: &str, attempts: i64) {
    loop {
        tokio::time::sleep(jobs.lease / 3).await;
        match jobs
            .store
            .renew(id, &jobs.worker, attempts, jobs.lease_until())
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(job = %id, error = %e, "cannot renew job lease"),
        }
    }
}

async fn run(app: &App, mut row: JobRow, job: Job) -> Result<(), StoreError> {
    let jobs = &app.jobs;
    let source = source_of(&row.doc.source);
    for index in 0..row.doc.files.len() {
        if row.doc.files[index].status != FileStatus::Queued {
            continue; // done by an earlier run of this job
        }
        let input = row.doc.inputs[index].clone();
        let name = row.doc.files[index].name.clone();
        let started = Instant::now();
        let result = parse_file(app, &row, &input, &name, job.work()).await;
        // A failure that trying later may mend (the tier or the store away), or one while the
        // worker stops (its render subprocesses signalled with it), says nothing of the
        // document: the job goes back to the queue, no run counted.
        if let Err(failure) = &result
            && (failure.transient || app.leaving.load(std::sync::atomic::Ordering::SeqCst))
        {
            let reason = format!("{name}: {}", failure.detail.message);
            hand_back(jobs, row, &reason).await?;
            return Ok(());
        }
        let (backend, outcome) = (
            backend_of(row.doc.tier),
            result
                .as_ref()
                .map_or_else(|f| f.outcome, |_| Outcome::Success),
        );
        app.metrics
            .request(Some(backend), source, outcome, started.elapsed());
        let file = &mut row.doc.files[index];
        match result {
            Ok(parsed) => {
                let outputs =
                    store_outputs(jobs, &row.id, &name, &row.doc.output_formats, &parsed).await?;
                let file = &mut row.doc.files[index];
                file.status = FileStatus::Completed;
                file.page_range = parsed.page_range;
                file.output_files = Some(outputs);
                file.parse = Some(FileParseInfo {
                    model_used: None,
                    duration_ms: Some(started.elapsed().as_millis() as u64),
                    parser_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                });
                row.doc.progress.completed += 1;
            }
            Err(failure) => {
                let detail = failure.detail;
                tracing::info!(job = %row.id, file = %name, error = %detail.message, "job file failed");
                file.status = FileStatus::Failed;
                file.error = Some(detail);
                row.doc.progress.failed += 1;
            }
        }
        let last = row.doc.progress.completed + row.doc.progress.failed == row.doc.progress.total;
        if last {
            row.status = final_status(&row);
            row.doc.finished_at = Some(iso(now_ms()));
        }
        let lease = (!last).then(|| jobs.lease_until());
        match jobs.store.update_job(&row, lease).await? {
            Some(version) => row.version = version,
            // Canceled, or handed back, while this file ran: its result is not ours to write.
            None => return Ok(()),
        }
    }
    Ok(())
}

fn backend_of(tier: Tier) -> Backend {
    match tier {
        Tier::Standard | Tier::Advanced | Tier::Basic => Backend::Vlm,
        Tier::Flash => Backend::Text,
    }
}

/// One document's outputs, before they are stored.
struct Parsed {
    markdown: String,
    middle_json: serde_json::Value,
    structured_content: serde_json::Value,
    content_list: serde_json::Value,
    page_range: String,
}

/// Why a file was not parsed, and whether trying again later may work (the tier or the store
/// unavailable, the worker full or stopping): such a job goes back to the queue.
struct FileFailure {
    detail: ErrorDetail,
    outcome: Outcome,
    transient: bool,
}

impl FileFailure {
    fn lasting(detail: ErrorDetail, outcome: Outcome) -> Self {
        Self {
            detail,
            outcome,
            transient: false,
        }
    }
}

async fn parse_file(
    app: &App,
    row: &JobRow,
    input: &JobInput,
    name: &str,
    work: &Work,
) -> Result<Parsed, FileFailure> {
    let backend = backend_of(row.doc.tier);
    let api = |e: ApiError| FileFailure {
        detail: detail_of(&e),
        outcome: e.outcome(),
        transient: matches!(
            e,
            ApiError::BreakerOpen { .. }
                | ApiError::Upstream {
                    retryable: true,
                    ..
                }
                | ApiError::Busy { .. }
                | ApiError::ShuttingDown
        ),
    };
    let bytes = app
        .jobs
        .store
        .blob(&input.sha256)
        .await
        .map_err(|e| FileFailure {
            detail: V1Error::from(e).detail,
            outcome: Outcome::Error,
            transient: true,
        })?
        .ok_or_else(|| {
            FileFailure::lasting(
                engine(
                    "file_missing",
                    "the uploaded bytes of this file are gone (expired?)",
                ),
                Outcome::Error,
            )
        })?;
    let (extractor, _pass) = extractor(app, backend, None, true).await.map_err(api)?;
    let fail = |e| ApiError::from_parse(name, e, app.retry_after());
    let started = Instant::now();
    let doc = open_document(&app.pdfium, DocumentBytes::Memory(bytes), work)
        .await
        .map_err(|e| api(fail(e)))?;
    let count = doc.page_count();
    let refused = |e: PageRangeError| {
        FileFailure::lasting(page_range_error(e.message()), Outcome::ClientError)
    };
    let selection = PageSelection::parse(&input.page_range).map_err(refused)?;
    let intervals = selection
        .resolve(count, &input.page_range)
        .map_err(refused)?;
    let selected = count_pages(&intervals);
    if selected > app.config.max_pages {
        return Err(api(ApiError::TooManyPages {
            file: name.to_owned(),
            selected,
            limit: app.config.max_pages,
        }));
    }
    let mut pages = Vec::with_capacity(selected);
    for &(first, last) in &intervals {
        let range = PageRange::between(first, last);
        pages.extend(
            parse_pages(
                &doc,
                range,
                &extractor,
                Wanted::default(),
                Arc::new(|_| ()),
                work,
            )
            .await
            .map_err(|e| api(fail(e)))?
            .pages,
        );
    }
    app.metrics.document(
        backend,
        source_of(&row.doc.source),
        &DocumentSignals::of(&pages),
        started.elapsed(),
    );
    let out = output::build(&pages);
    let info = DocumentInfo::with_page_count(&pages, count);
    Ok(Parsed {
        middle_json: middle_json(&pages, &info),
        structured_content: structured_content(&pages, &info),
        content_list: serde_json::to_value(&out.content_list).unwrap_or_default(),
        markdown: out.markdown,
        page_range: format_intervals(&intervals),
    })
}

fn engine(code: &str, message: &str) -> ErrorDetail {
    ErrorDetail {
        kind: "engine_error".into(),
        code: Some(code.into()),
        message: message.into(),
        param: None,
    }
}

fn page_range_error(message: String) -> ErrorDetail {
    ErrorDetail {
        kind: "invalid_request_error".into(),
        code: Some(super::page_range::PageRangeError::CODE.into()),
        message,
        param: Some("page_range".into()),
    }
}

/// A failed document in MinerU's terms: an input the engine cannot parse is `parse_failed`, a
/// GPU tier that cannot answer `engine_unavailable`.
fn detail_of(e: &ApiError) -> ErrorDetail {
    let (kind, code) = match e {
        ApiError::Document { .. } => ("engine_error", "parse_failed"),
        ApiError::TooManyPages { .. } => ("invalid_request_error", "too_many_pages"),
        ApiError::Upstream { .. } | ApiError::BreakerOpen { .. } | ApiError::Timeout(_) => {
            ("engine_error", "engine_unavailable")
        }
        ApiError::BadRequest(_) | ApiError::TooLarge(_) => {
            ("invalid_request_error", "invalid_request")
        }
        ApiError::Busy { .. } | ApiError::ProbeDeferred { .. } | ApiError::ShuttingDown => {
            ("engine_error", "engine_busy")
        }
        ApiError::Internal(_) => ("api_error", "internal_error"),
    };
    ErrorDetail {
        kind: kind.into(),
        code: Some(code.into()),
        message: e.to_string(),
        param: None,
    }
}

async fn store_outputs(
    jobs: &Jobs,
    job_id: &str,
    name: &str,
    formats: &[String],
    parsed: &Parsed,
) -> Result<OutputFiles, StoreError> {
    let mut outputs = OutputFiles::default();
    for format in formats {
        let (filename, bytes) = match format.as_str() {
            "markdown" => (format!("{name}.md"), parsed.markdown.clone().into_bytes()),
            "middle_json" => (
                format!("{name}.middle.json"),
                json_bytes(&parsed.middle_json),
            ),
            "structured_content" => (
                format!("{name}.structured_content.json"),
                json_bytes(&parsed.structured_content),
            ),
            "zip" => (format!("{name}.zip"), zip_bytes(parsed)),
            _ => continue,
        };
        let file = put_output(&jobs.store, job_id, filename, &bytes).await?;
        outputs.set(format, file);
    }
    Ok(outputs)
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// MinerU's self-contained archive: the Markdown, the middle JSON, the structured content, and
/// (ours) the MinerU 2 content list.
fn zip_bytes(parsed: &Parsed) -> Vec<u8> {
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, data) in [
        ("markdown.md", parsed.markdown.as_bytes().to_vec()),
        ("middle_json.json", pretty(&parsed.middle_json)),
        (
            "structured_content.json",
            pretty(&parsed.structured_content),
        ),
        ("content_list.json", pretty(&parsed.content_list)),
    ] {
        // Writing into memory cannot fail but for a bug.
        archive
            .start_file(path, options)
            .and_then(|()| archive.write_all(&data).map_err(Into::into))
            .expect("writing a zip into memory");
    }
    archive
        .finish()
        .expect("finishing a zip in memory")
        .into_inner()
}

async fn put_output(
    store: &Store,
    job_id: &str,
    filename: String,
    bytes: &[u8],
) -> Result<OutputFileRef, StoreError> {
    let now = now_ms() / 1000;
    let sha = store.put_blob(bytes).await?;
    let record = FileRecord {
        id: new_id("file-"),
        filename,
        bytes: bytes.len() as i64,
        created_at: now,
        // Kept as long as its job is (collected with it).
        expires_at: None,
        purpose: "parse_output".into(),
        sha256: Some(sha),
    };
    store.insert_file(&record, Some(job_id)).await?;
    Ok(OutputFileRef {
        file_id: record.id,
        bytes: record.bytes,
    })
}

/// Puts a job this worker runs back in the queue for any worker, without counting a run
/// (nothing failed); a write that loses a race (a file just finished) is retried on the fresh
/// row. False when the job is no longer this worker's.
async fn hand_back(jobs: &Jobs, mut row: JobRow, reason: &str) -> Result<bool, StoreError> {
    loop {
        if row.status != JobStatus::Running || row.owner.as_deref() != Some(&jobs.worker) {
            return Ok(false);
        }
        row.status = JobStatus::Queued;
        row.owner = None;
        row.doc.note = Some(format!("{reason}; the job was queued again"));
        if jobs.store.update_job(&row, None).await?.is_some() {
            tracing::info!(job = %row.id, reason, "job handed back to the queue");
            return Ok(true);
        }
        match jobs.store.job(&row.id).await? {
            Some(fresh) => row = fresh,
            None => return Ok(false),
        }
    }
}

/// After SIGTERM: waits up to `grace` for this worker's jobs, hands back those still running and
/// leaves the worker list, so its revision's queued jobs pass to the workers that remain.
pub async fn drain(jobs: &Jobs, grace: Duration) {
    let waited = tokio::time::timeout(grace, async {
        while jobs.running.load(Ordering::SeqCst) > 0 {
            let idle = jobs.idle.notified();
            if jobs.running.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            ?grace,
            "jobs still running at the end of the grace period; handing them back"
        );
    }
    match jobs.store.owned(&jobs.worker).await {
        Ok(rows) => {
            for row in rows {
                let reason = format!("worker {} shut down mid-job", jobs.worker);
                match hand_back(jobs, row, &reason).await {
                    Ok(true) => tracing::info!("job handed back to the queue"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand job back; its lease will run out")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this worker's jobs; their leases will run out")
        }
    }
    if let Err(e) = jobs.store.leave(&jobs.worker).await {
        tracing::warn!(error = %e, "cannot leave the worker list");
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{JobFileResult, JobProgress, OcrMode};
    use super::super::store::JobDoc;
    use super::*;

    async fn jobs() -> Jobs {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let timing = JobTiming {
            lease: Duration::from_millis(1),
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(60),
        };
        Jobs::new(store, "w-a".into(), "r1".into(), timing)
    }

    fn doc() -> JobDoc {
        let file = |status| JobFileResult {
            file_id: None,
            name: "a.pdf".into(),
            page_range: String::new(),
            status,
            parse: None,
            output_files: None,
            error: None,
        };
        JobDoc {
            created_at: iso(0),
            started_at: None,
            finished_at: None,
            tier: Tier::Flash,
            output_formats: vec!["markdown".into()],
            ocr_mode: OcrMode::Auto,
            source: "traffic".into(),
            progress: JobProgress {
                completed: 1,
                failed: 0,
                total: 2,
            },
            files: vec![file(FileStatus::Completed), file(FileStatus::Queued)],
            inputs: Vec::new(),
            note: None,
        }
    }

    #[tokio::test]
    async fn a_job_whose_worker_is_lost_runs_again_once_then_fails_with_the_reason() {
        let jobs = jobs().await;
        jobs.store.insert_job("job_1", "r1", &doc()).await.unwrap();
        let row = jobs.store.job("job_1").await.unwrap().unwrap();
        let claimed = claim(&jobs, row).await.unwrap().expect("claimed");
        assert_eq!(claimed.status, JobStatus::Running);
        tokio::time::sleep(Duration::from_millis(5)).await;

        let lost = jobs
            .store
            .expired(now_ms())
            .await
            .unwrap()
            .pop()
            .expect("expired");
        reclaim(&jobs, lost).await.unwrap();
        let again = jobs.store.job("job_1").await.unwrap().unwrap();
        assert_eq!(
            (again.status, again.attempts, again.owner.as_deref()),
            (JobStatus::Queued, 1, None)
        );

        claim(&jobs, again).await.unwrap().expect("claimed again");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let lost = jobs
            .store
            .expired(now_ms())
            .await
            .unwrap()
            .pop()
            .expect("expired");
        reclaim(&jobs, lost).await.unwrap();
        let failed = jobs.store.job("job_1").await.unwrap().unwrap();
        // The file done before the loss keeps its result: the job is partial, the other file
        // says why it failed.
        assert_eq!(failed.status, JobStatus::Partial);
        let error = failed.doc.files[1].error.as_ref().expect("a reason");
        assert_eq!(error.code.as_deref(), Some("worker_lost"));
        assert!(error.message.contains("w-a"), "{}", error.message);
        assert!(failed.doc.finished_at.is_some());
        assert!(jobs.store.expired(now_ms()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stopping_worker_hands_its_jobs_back_and_leaves() {
        let jobs = jobs().await;
        jobs.store.insert_job("job_1", "r1", &doc()).await.unwrap();
        jobs.store
            .heartbeat(&jobs.worker, &jobs.revision)
            .await
            .unwrap();
        let row = jobs.store.job("job_1").await.unwrap().unwrap();
        claim(&jobs, row).await.unwrap().expect("claimed");
        drain(&jobs, Duration::ZERO).await;
        let back = jobs.store.job("job_1").await.unwrap().unwrap();
        assert_eq!(
            (back.status, back.attempts, back.owner),
            (JobStatus::Queued, 0, None)
        );
        // Gone from the worker list: another revision's workers may now take r1's jobs.
        let claimable = jobs.store.claimable("r2", 0, 10).await.unwrap();
        assert_eq!(claimable.len(), 1);
    }

    #[tokio::test]
    async fn a_full_embedded_store_forgets_finished_jobs_and_never_running_ones() {
        let jobs = jobs().await;
        for (id, fill) in [("job_a", b'a'), ("job_b", b'b')] {
            jobs.store.insert_job(id, "r1", &doc()).await.unwrap();
            put_output(&jobs.store, id, format!("{id}.md"), &[fill; 1000])
                .await
                .unwrap();
            let mut row = jobs.store.job(id).await.unwrap().unwrap();
            row.status = JobStatus::Completed;
            jobs.store.update_job(&row, None).await.unwrap();
        }
        jobs.store
            .insert_job("job_running", "r1", &doc())
            .await
            .unwrap();
        assert_eq!(jobs.store.bytes_held().await.unwrap(), 2000);
        assert!(
            make_room(&jobs, 2000, Duration::ZERO).await.unwrap(),
            "within the budget"
        );
        assert!(jobs.store.job("job_a").await.unwrap().is_some());
        // Over it, finished jobs go; bytes stored in the last minute stay (a file may be about
        // to refer to them), so the budget is not met yet, and the running job stays.
        assert!(!make_room(&jobs, 1000, Duration::ZERO).await.unwrap());
        for gone in ["job_a", "job_b"] {
            assert!(jobs.store.job(gone).await.unwrap().is_none(), "{gone}");
        }
        assert!(jobs.store.job("job_running").await.unwrap().is_some());
    }
}
