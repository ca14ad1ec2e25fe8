//! Where `/v1` state lives: uploads, files, their bytes, parse jobs and the workers that run them.
//!
//! One SQL dialect subset serves two databases (ADR 0018): PostgreSQL, shared by every worker of
//! a deployment so that a job's upload, submission, polls and run may each land on a different
//! pod, and an embedded SQLite file for a worker alone. Every change to a job is a
//! compare-and-set on its `version`, so a cancellation, a lease that ran out and the worker
//! running the job can race without one silently undoing another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::model::{JobFileResult, JobProgress, JobStatus, OcrMode, Tier};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("job store holds a malformed job {id}: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
    #[error("job store URL {0:?} is neither postgres:// nor sqlite://")]
    Scheme(String),
}

/// Which database: the SQL differs in a word or two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Set once the tables are known to exist.
    schema: Arc<AtomicBool>,
}

/// Milliseconds since the epoch: leases and ages are compared in the database.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An id such as `job_` followed by 24 hex digits, as MinerU makes them.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: String,
    pub filename: String,
    pub bytes: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub purpose: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    pub id: String,
    pub filename: String,
    pub bytes: i64,
    pub mime_type: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub purpose: String,
    pub sha256: Option<String>,
    pub status: String,
    pub file_id: Option<String>,
    pub has_data: bool,
}

/// What a job is, beyond the columns the database sorts and leases by. Serialized into the
/// job's row, so a worker that never saw the submission can run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDoc {
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub tier: Tier,
    pub output_formats: Vec<String>,
    pub ocr_mode: OcrMode,
    /// Who sent it, for the metrics: `traffic`, `probe` or `golden`.
    pub source: String,
    pub progress: JobProgress,
    pub files: Vec<JobFileResult>,
    /// Per file: the blob to parse and the page selection as requested.
    pub inputs: Vec<JobInput>,
    /// Why the job ended as it did when no file says so (a worker lost, shutdown).
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInput {
    pub sha256: String,
    pub page_range: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub status: JobStatus,
    pub revision: String,
    pub owner: Option<String>,
    pub attempts: i64,
    pub version: i64,
    pub doc: JobDoc,
}

impl Store {
    /// A store at `url`, connected when first used: a database that is down when the worker
    /// starts makes `/v1` answer 503 until it is back, and nothing else.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(StoreError::Scheme(url.to_owned()));
        };
        let postgres = dialect == Dialect::Postgres;
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time: one connection avoids "database is locked".
            .max_connections(if postgres { 8 } else { 1 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            // An in-memory SQLite database lives as long as its connection.
            .idle_timeout(postgres.then_some(std::time::Duration::from_secs(600)))
            .max_lifetime(postgres.then_some(std::time::Duration::from_secs(1800)))
            .connect_lazy(url)?;
        Ok(Self {
            pool,
            dialect,
            schema: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Opens `url` and creates the tables.
    #[cfg(test)]
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::open(url)?;
        store.ensure_schema().await?;
        Ok(store)
    }

    /// Creates the tables unless that is known to be done.
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        if !self.schema.load(Ordering::SeqCst) {
            self.migrate().await?;
            self.schema.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let blob = match self.dialect {
            Dialect::Postgres => "BYTEA",
            Dialect::Sqlite => "BLOB",
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS mineru_blobs (sha256 TEXT PRIMARY KEY, \
                 data {blob} NOT NULL, created_at BIGINT NOT NULL)"
            ),
            "CREATE TABLE IF NOT EXISTS mineru_files (id TEXT PRIMARY KEY, filename TEXT NOT \
             NULL, bytes BIGINT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, \
             purpose TEXT NOT NULL, sha256 TEXT, job_id TEXT)"
                .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS mineru_uploads (id TEXT PRIMARY KEY, filename TEXT \
                 NOT NULL, bytes BIGINT NOT NULL, mime_type TEXT NOT NULL, created_at BIGINT NOT \
                 NULL, expires_at BIGINT NOT NULL, purpose TEXT NOT NULL, sha256 TEXT, status \
                 TEXT NOT NULL, file_id TEXT, data {blob})"
            ),
            "CREATE TABLE IF NOT EXISTS mineru_jobs (id TEXT PRIMARY KEY, seq BIGINT NOT NULL, \
             status TEXT NOT NULL, revision TEXT NOT NULL, owner TEXT, lease_until BIGINT, \
             attempts BIGINT NOT NULL, finished_ms BIGINT, version BIGINT NOT NULL, doc TEXT \
             NOT NULL)"
                .to_owned(),
            "CREATE INDEX IF NOT EXISTS mineru_jobs_by_status ON mineru_jobs (status, seq)"
                .to_owned(),
            // The bytes a job will parse, kept while the job is: a source file may expire or
            // be deleted meanwhile, an inline source has no file at all.
            "CREATE TABLE IF NOT EXISTS mineru_job_inputs (job_id TEXT NOT NULL, sha256 TEXT NOT \
             NULL)"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS mineru_workers (id TEXT PRIMARY KEY, revision TEXT NOT \
             NULL, heartbeat_ms BIGINT NOT NULL)"
                .to_owned(),
        ];
        let mut conn = self.pool.acquire().await?;
        // Workers start together: one creates the tables, the others wait for it.
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_lock(4242001)")
                .execute(&mut *conn)
                .await?;
        }
        let mut result = Ok(());
        for statement in &statements {
            if let Err(e) = sqlx::query(AssertSqlSafe(statement.as_str()))
                .execute(&mut *conn)
                .await
            {
                result = Err(e.into());
                break;
            }
        }
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_unlock(4242001)")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    /// Closes the connections (before an embedded database's file is removed).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ── blobs ─────────────────────────────────────────────────────────

    pub async fn put_blob(&self, data: &[u8]) -> Result<String, StoreError> {
        let sha = sha256_hex(data);
        sqlx::query(
            "INSERT INTO mineru_blobs (sha256, data, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(&sha)
        .bind(data)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(sha)
    }

    pub async fn blob(&self, sha: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM mineru_blobs WHERE sha256 = $1")
            .bind(sha)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    pub async fn blob_size(&self, sha: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT length(data) FROM mineru_blobs WHERE sha256 = $1")
            .bind(sha)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    // ── files ─────────────────────────────────────────────────────────

    pub async fn insert_file(
        &self,
        file: &FileRecord,
        job_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mineru_files (id, filename, bytes, created_at, expires_at, purpose, \
             sha256, job_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&file.id)
        .bind(&file.filename)
        .bind(file.bytes)
        .bind(file.created_at)
        .bind(file.expires_at)
        .bind(&file.purpose)
        .bind(&file.sha256)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A file that exists and has not expired at `now` (seconds).
    pub async fn file(&self, id: &str, now: i64) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, filename, bytes, created_at, expires_at, purpose, sha256 FROM \
             mineru_files WHERE id = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(file_record))
    }

    /// Files in `created_at` order, `limit` after the one named `after`.
    pub async fn files(
        &self,
        now: i64,
        purpose: Option<&str>,
        descending: bool,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let order = if descending { "DESC" } else { "ASC" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, filename, bytes, created_at, expires_at, purpose, sha256 FROM \
             mineru_files WHERE (expires_at IS NULL OR expires_at > $1) AND ($2 = '' OR \
             purpose = $2) ORDER BY created_at {order}, id {order}"
        )))
        .bind(now)
        .bind(purpose.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(file_record).collect())
    }

    /// Deletes a file's record; true when there was one.
    pub async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM mineru_files WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ── uploads ───────────────────────────────────────────────────────

    pub async fn insert_upload(&self, upload: &UploadRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mineru_uploads (id, filename, bytes, mime_type, created_at, \
             expires_at, purpose, sha256, status, file_id) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10)",
        )
        .bind(&upload.id)
        .bind(&upload.filename)
        .bind(upload.bytes)
        .bind(&upload.mime_type)
        .bind(upload.created_at)
        .bind(upload.expires_at)
        .bind(&upload.purpose)
        .bind(&upload.sha256)
        .bind(&upload.status)
        .bind(&upload.file_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, filename, bytes, mime_type, created_at, expires_at, purpose, sha256, \
             status, file_id, data IS NOT NULL FROM mineru_uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UploadRecord {
            id: r.get(0),
            filename: r.get(1),
            bytes: r.get(2),
            mime_type: r.get(3),
            created_at: r.get(4),
            expires_at: r.get(5),
            purpose: r.get(6),
            sha256: r.get(7),
            status: r.get(8),
            file_id: r.get(9),
            has_data: truthy(&r, 10),
        }))
    }

    /// Stores the bytes of a pending upload; false when it is no longer pending.
    pub async fn put_upload_data(&self, id: &str, data: &[u8]) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE mineru_uploads SET data = $1 WHERE id = $2 AND status = 'pending'")
                .bind(data)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn upload_data(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM mineru_uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get::<Option<Vec<u8>>, _>(0)))
    }

    /// Moves a pending upload to `status`; false when another request got there first.
    pub async fn finish_upload(
        &self,
        id: &str,
        status: &str,
        sha256: Option<&str>,
        file_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mineru_uploads SET status = $1, sha256 = COALESCE($2, sha256), file_id = \
             $3, data = NULL WHERE id = $4 AND status = 'pending'",
        )
        .bind(status)
        .bind(sha256)
        .bind(file_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ── jobs ──────────────────────────────────────────────────────────

    pub async fn insert_job(
        &self,
        id: &str,
        revision: &str,
        doc: &JobDoc,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mineru_jobs (id, seq, status, revision, owner, lease_until, attempts, \
             finished_ms, version, doc) VALUES ($1, $2, 'queued', $3, NULL, NULL, 0, NULL, 0, \
             $4)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(revision)
        .bind(encode(doc))
        .execute(&self.pool)
        .await?;
        for input in &doc.inputs {
            sqlx::query("INSERT INTO mineru_job_inputs (job_id, sha256) VALUES ($1, $2)")
                .bind(id)
                .bind(&input.sha256)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!("{JOB_COLUMNS} WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    /// Every job, newest first or oldest first.
    pub async fn jobs(&self, descending: bool) -> Result<Vec<JobRow>, StoreError> {
        let order = if descending { "DESC" } else { "ASC" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{JOB_COLUMNS} ORDER BY seq {order}, id {order}"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    /// Writes `row`'s status, owner and document if nobody changed the job since `row` was read;
    /// returns the new version, or `None` when the write lost a race.
    pub async fn update_job(
        &self,
        row: &JobRow,
        lease_until: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let finished = row.status.is_terminal().then(now_ms);
        let done = sqlx::query(
            "UPDATE mineru_jobs SET status = $1, owner = $2, lease_until = $3, attempts = $4, \
             finished_ms = $5, doc = $6, version = version + 1 WHERE id = $7 AND version = $8",
        )
        .bind(row.status.as_str())
        .bind(&row.owner)
        .bind(lease_until)
        .bind(row.attempts)
        .bind(finished)
        .bind(encode(&row.doc))
        .bind(&row.id)
        .bind(row.version)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() > 0).then_some(row.version + 1))
    }

    /// Writes a job taken back from a worker whose lease ran out, if it still has at `now` (a
    /// renewal landing meanwhile wins) and nobody changed it since it was read.
    pub async fn reclaim_job(&self, row: &JobRow, now: i64) -> Result<bool, StoreError> {
        let finished = row.status.is_terminal().then(now_ms);
        let done = sqlx::query(
            "UPDATE mineru_jobs SET status = $1, owner = NULL, lease_until = NULL, attempts = $2, \
             finished_ms = $3, doc = $4, version = version + 1 WHERE id = $5 AND version = $6 AND \
             status = 'running' AND lease_until < $7",
        )
        .bind(row.status.as_str())
        .bind(row.attempts)
        .bind(finished)
        .bind(encode(&row.doc))
        .bind(&row.id)
        .bind(row.version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Extends the lease of a job `owner` still runs; false when it is no longer its to run
    /// (canceled, or taken back after the lease ran out).
    pub async fn renew(
        &self,
        id: &str,
        owner: &str,
        attempts: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mineru_jobs SET lease_until = $1 WHERE id = $2 AND owner = $3 AND status = \
             'running' AND attempts = $4",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .bind(attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Queued jobs this worker may take, oldest first: its own revision's, and those of a
    /// revision no live worker serves any more (rolled back, scaled away).
    pub async fn claimable(
        &self,
        revision: &str,
        live_since: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{JOB_COLUMNS} WHERE status = 'queued' AND (revision = $1 OR revision NOT IN \
             (SELECT revision FROM mineru_workers WHERE heartbeat_ms > $2)) ORDER BY seq, id \
             LIMIT $3"
        )))
        .bind(revision)
        .bind(live_since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(decodable(&rows))
    }

    /// Running jobs whose lease ran out before `now`: their worker died or lost the database.
    pub async fn expired(&self, now: i64) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{JOB_COLUMNS} WHERE status = 'running' AND lease_until < $1"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(decodable(&rows))
    }

    /// Running jobs `owner` holds.
    pub async fn owned(&self, owner: &str) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{JOB_COLUMNS} WHERE status = 'running' AND owner = $1"
        )))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    // ── workers ───────────────────────────────────────────────────────

    pub async fn heartbeat(&self, worker: &str, revision: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mineru_workers (id, revision, heartbeat_ms) VALUES ($1, $2, $3) ON \
             CONFLICT (id) DO UPDATE SET revision = excluded.revision, heartbeat_ms = \
             excluded.heartbeat_ms",
        )
        .bind(worker)
        .bind(revision)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn leave(&self, worker: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mineru_workers WHERE id = $1")
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets what is older than `retention_ms`: finished jobs, expired files and uploads,
    /// then bytes nothing refers to any more.
    pub async fn collect(&self, retention_ms: i64) -> Result<(), StoreError> {
        let now = now_ms();
        let cutoff = now - retention_ms;
        let now_s = now / 1000;
        for (statement, value) in [
            // Outputs go with their job, whenever it finished.
            (
                "DELETE FROM mineru_files WHERE job_id IN (SELECT id FROM mineru_jobs WHERE \
                 finished_ms IS NOT NULL AND finished_ms < $1)",
                cutoff,
            ),
            (
                "DELETE FROM mineru_jobs WHERE finished_ms IS NOT NULL AND finished_ms < $1",
                cutoff,
            ),
            (
                "DELETE FROM mineru_files WHERE expires_at IS NOT NULL AND expires_at <= $1",
                now_s,
            ),
            ("DELETE FROM mineru_uploads WHERE expires_at <= $1", now_s),
            ("DELETE FROM mineru_workers WHERE heartbeat_ms < $1", cutoff),
            (ORPHAN_INPUTS, cutoff),
            (UNREFERENCED_BLOBS, cutoff),
        ] {
            sqlx::query(statement)
                .bind(value)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Whether this is a worker's own embedded database (its size is the worker's to bound).
    pub fn embedded(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    /// Bytes of files and pending uploads held.
    pub async fn bytes_held(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(SUM(length(data)), 0) FROM mineru_blobs) + (SELECT \
             COALESCE(SUM(length(data)), 0) FROM mineru_uploads)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0).unwrap_or(0))
    }

    /// Forgets the finished job that finished first, with its outputs and the bytes nothing
    /// else refers to; false when no job has finished.
    pub async fn forget_oldest_finished(&self, before: i64) -> Result<bool, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT id FROM mineru_jobs WHERE finished_ms IS NOT NULL AND finished_ms <= $1 ORDER \
             BY finished_ms, id LIMIT 1",
        )
        .bind(before)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(false);
        };
        let id: String = row.get(0);
        for statement in [
            "DELETE FROM mineru_files WHERE job_id = $1",
            "DELETE FROM mineru_job_inputs WHERE job_id = $1",
            "DELETE FROM mineru_jobs WHERE id = $1",
        ] {
            sqlx::query(statement).bind(&id).execute(&self.pool).await?;
        }
        // A minute's margin: bytes just stored for a file about to be recorded stay.
        sqlx::query(UNREFERENCED_BLOBS)
            .bind(now_ms() - 60_000)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }
}

/// Blobs older than `$1` that no file or upload refers to.
const UNREFERENCED_BLOBS: &str = "DELETE FROM mineru_blobs WHERE created_at < $1 AND sha256 NOT \
     IN (SELECT sha256 FROM mineru_files WHERE sha256 IS NOT NULL) AND sha256 NOT IN (SELECT \
     sha256 FROM mineru_uploads WHERE sha256 IS NOT NULL) AND sha256 NOT IN (SELECT sha256 FROM \
     mineru_job_inputs)";

/// Inputs of jobs that are gone (`$1` unused: every statement of a collection takes one).
const ORPHAN_INPUTS: &str = "DELETE FROM mineru_job_inputs WHERE job_id NOT IN (SELECT id FROM \
     mineru_jobs) AND $1 = $1";

const JOB_COLUMNS: &str =
    "SELECT id, status, revision, owner, attempts, version, doc FROM mineru_jobs";

/// The rows that decode; one that does not (written by a newer worker, say) is left for the
/// workers that can read it rather than stopping every claim.
fn decodable(rows: &[AnyRow]) -> Vec<JobRow> {
    rows.iter()
        .filter_map(|row| {
            job_row(row)
                .map_err(|e| tracing::warn!(error = %e, "skipping a job this worker cannot read"))
                .ok()
        })
        .collect()
}

fn encode(doc: &JobDoc) -> String {
    serde_json::to_string(doc).expect("a job document always serializes")
}

fn job_row(row: &AnyRow) -> Result<JobRow, StoreError> {
    let id: String = row.get(0);
    let status: String = row.get(1);
    let doc: String = row.get(6);
    let doc = serde_json::from_str(&doc).map_err(|source| StoreError::Corrupt {
        id: id.clone(),
        source,
    })?;
    Ok(JobRow {
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
        revision: row.get(2),
        owner: row.get(3),
        attempts: row.get(4),
        version: row.get(5),
        doc,
        id,
    })
}

fn file_record(row: &AnyRow) -> FileRecord {
    FileRecord {
        id: row.get(0),
        filename: row.get(1),
        bytes: row.get(2),
        created_at: row.get(3),
        expires_at: row.get(4),
        purpose: row.get(5),
        sha256: row.get(6),
    }
}

/// A boolean expression's value: PostgreSQL answers a bool, SQLite an integer.
fn truthy(row: &AnyRow, index: usize) -> bool {
    row.try_get::<bool, _>(index)
        .or_else(|_| row.try_get::<i64, _>(index).map(|n| n != 0))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    fn doc() -> JobDoc {
        JobDoc {
            created_at: "2026-12-07T00:00:00Z".into(),
            started_at: None,
            finished_at: None,
            tier: Tier::Flash,
            output_formats: vec!["markdown".into()],
            ocr_mode: OcrMode::Auto,
            source: "traffic".into(),
            progress: JobProgress::default(),
            files: Vec::new(),
            inputs: Vec::new(),
            note: None,
        }
    }

    #[tokio::test]
    async fn blobs_are_content_addressed_and_stored_once() {
        let (store, _dir) = sqlite().await;
        let a = store.put_blob(b"%PDF-1.7").await.unwrap();
        let b = store.put_blob(b"%PDF-1.7").await.unwrap();
        assert_eq!(a, b);
        assert_eq!(
            store.blob(&a).await.unwrap().as_deref(),
            Some(&b"%PDF-1.7"[..])
        );
        assert_eq!(store.blob_size(&a).await.unwrap(), Some(8));
        assert_eq!(store.blob("00").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_job_change_loses_to_a_concurrent_one() {
        let (store, _dir) = sqlite().await;
        store.insert_job("job_a", "r1", &doc()).await.unwrap();
        let read = store.job("job_a").await.unwrap().unwrap();
        assert_eq!((read.status, read.version), (JobStatus::Queued, 0));
        // The canceler and the claimer both read version 0; the first write wins.
        let mut canceled = read.clone();
        canceled.status = JobStatus::Canceled;
        assert_eq!(store.update_job(&canceled, None).await.unwrap(), Some(1));
        let mut claimed = read;
        claimed.status = JobStatus::Running;
        claimed.owner = Some("w1".into());
        assert_eq!(
            store.update_job(&claimed, Some(now_ms())).await.unwrap(),
            None
        );
        let now = store.job("job_a").await.unwrap().unwrap();
        assert_eq!(now.status, JobStatus::Canceled);
        // A canceled job's lease cannot be renewed: its runner learns it should stop.
        assert!(!store.renew("job_a", "w1", 0, now_ms()).await.unwrap());
    }

    #[tokio::test]
    async fn a_renewal_beats_taking_the_lease_back_and_a_new_run_ends_the_old_ones_renewals() {
        let (store, _dir) = sqlite().await;
        store.insert_job("job_a", "r1", &doc()).await.unwrap();
        let mut running = store.job("job_a").await.unwrap().unwrap();
        running.status = JobStatus::Running;
        running.owner = Some("w1".into());
        let version = store
            .update_job(&running, Some(now_ms() - 1))
            .await
            .unwrap();
        // Read as expired, then renewed before the reclaim is written: the reclaim loses.
        let mut expired = store.expired(now_ms()).await.unwrap().pop().unwrap();
        assert_eq!(Some(expired.version), version);
        assert!(
            store
                .renew("job_a", "w1", 0, now_ms() + 60_000)
                .await
                .unwrap()
        );
        expired.status = JobStatus::Queued;
        expired.attempts = 1;
        assert!(!store.reclaim_job(&expired, now_ms()).await.unwrap());
        // Once taken back (the lease ran out again) and claimed anew by the same worker, the
        // first run's renewals no longer count.
        assert!(
            store
                .reclaim_job(&expired, now_ms() + 120_000)
                .await
                .unwrap()
        );
        let mut again = store.job("job_a").await.unwrap().unwrap();
        again.status = JobStatus::Running;
        again.owner = Some("w1".into());
        store
            .update_job(&again, Some(now_ms() + 60_000))
            .await
            .unwrap();
        assert!(!store.renew("job_a", "w1", 0, now_ms()).await.unwrap());
        assert!(store.renew("job_a", "w1", 1, now_ms()).await.unwrap());
    }

    #[tokio::test]
    async fn jobs_of_a_revision_nobody_serves_are_claimable_by_anyone() {
        let (store, _dir) = sqlite().await;
        store.insert_job("job_own", "stable", &doc()).await.unwrap();
        store
            .insert_job("job_canary", "canary", &doc())
            .await
            .unwrap();
        let live_since = now_ms() - 10_000;
        store.heartbeat("canary-0", "canary").await.unwrap();
        let ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let claimable = store.claimable("stable", live_since, 10).await.unwrap();
        assert_eq!(ids(claimable), ["job_own"]);
        store.leave("canary-0").await.unwrap();
        let claimable = store.claimable("stable", live_since, 10).await.unwrap();
        assert_eq!(ids(claimable), ["job_own", "job_canary"]);
    }

    #[tokio::test]
    async fn uploads_take_their_bytes_once_while_pending() {
        let (store, _dir) = sqlite().await;
        let upload = UploadRecord {
            id: "upload_1".into(),
            filename: "a.pdf".into(),
            bytes: 3,
            mime_type: "application/pdf".into(),
            created_at: 1,
            expires_at: i64::MAX,
            purpose: "parse".into(),
            sha256: None,
            status: "pending".into(),
            file_id: None,
            has_data: false,
        };
        store.insert_upload(&upload).await.unwrap();
        assert!(store.put_upload_data("upload_1", b"abc").await.unwrap());
        assert!(store.upload("upload_1").await.unwrap().unwrap().has_data);
        assert!(
            store
                .finish_upload("upload_1", "completed", Some("sha"), Some("file-1"))
                .await
                .unwrap()
        );
        assert!(!store.put_upload_data("upload_1", b"abc").await.unwrap());
        let done = store.upload("upload_1").await.unwrap().unwrap();
        assert_eq!(
            (done.status.as_str(), done.file_id.as_deref(), done.has_data),
            ("completed", Some("file-1"), false)
        );
    }
}
