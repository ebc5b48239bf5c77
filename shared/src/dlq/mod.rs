//! The event DLQ (`tblEventDLQ`): what the system could not finish by itself, from every source,
//! with its attempt history. Rows are listed, replayed (re-running only what failed), discarded,
//! and retried automatically by the maintenance role.
//!
//! Lifecycle: PENDING (an automatic retry is due at `nextRetryAt`) → RETRYING (a command re-run
//! is in flight; triggers on `apalis.jobs` settle it) → REPLAYED, or back to PENDING with one
//! more attempt and a longer backoff, or PARKED once `retryCount` reaches `maxRetries`. An
//! operator replays or discards PENDING and PARKED rows; a replay that fails comes back the
//! same way, so a row is never lost and never retried forever.
//!
//! Re-runs by source: `command` pushes the command's bytes again; `cron` starts the workflow
//! the fire would have started; `listener` re-runs the one pipeline action that failed. Other
//! sources plug in by adding a [`Plan`]; until then their rows are not claimed by automatic
//! retries and a replay is a 409.

use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Every source that parks rows here.
pub const SOURCES: &[&str] = &["command", "listener", "cdc", "cron", "webhook"];
/// Every status a row can have.
pub const STATUSES: &[&str] = &["PENDING", "RETRYING", "PARKED", "REPLAYED", "DISCARDED"];
/// Sources this version knows how to re-run.
pub const REPLAYABLE_SOURCES: &[&str] = &["command", "cron", "listener"];
/// Rows shown in a bulk dry run.
pub const SAMPLE_SIZE: i64 = 10;

/// One DLQ row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DlqRow {
    /// `dlqID`.
    #[sqlx(rename = "dlqID")]
    pub dlq_id: Uuid,
    /// None when the tenant could not be known (visible only through SQL).
    #[sqlx(rename = "tenantID")]
    pub tenant_id: Option<Uuid>,
    /// One of [`SOURCES`].
    pub source: String,
    /// What produced it: the instance or human step (command), the cron job, the listener, …
    #[sqlx(rename = "sourceID")]
    pub source_id: Option<Uuid>,
    /// What a re-run runs.
    pub payload: Value,
    /// The first payload, when a replay ran an edited one.
    #[sqlx(rename = "originalPayload")]
    pub original_payload: Option<Value>,
    /// The last error.
    pub error: String,
    /// Retries made since the row landed.
    #[sqlx(rename = "retryCount")]
    pub retry_count: i32,
    /// Retries allowed before the row is PARKED.
    #[sqlx(rename = "maxRetries")]
    pub max_retries: i32,
    /// When a PENDING row is retried automatically.
    #[sqlx(rename = "nextRetryAt")]
    pub next_retry_at: Option<DateTime<Utc>>,
    /// One of [`STATUSES`].
    pub status: String,
    /// Every try, oldest first: `{at, error?, by, outcome?, jobID?, instanceID?, reason?}`.
    pub attempts: Value,
    /// When it landed.
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    /// When it was REPLAYED or DISCARDED.
    #[sqlx(rename = "resolvedAt")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// When a re-run last succeeded.
    #[sqlx(rename = "replayedAt")]
    pub replayed_at: Option<DateTime<Utc>>,
    /// When it was discarded.
    #[sqlx(rename = "discardedAt")]
    pub discarded_at: Option<DateTime<Utc>>,
    /// Who discarded it: `user:<id>` or `apikey:<id>`.
    #[sqlx(rename = "discardedBy")]
    pub discarded_by: Option<String>,
}

pub(crate) const COLUMNS: &str = r#""dlqID", "tenantID", "source", "sourceID", "payload", "originalPayload", "error",
    "retryCount", "maxRetries", "nextRetryAt", "status", "attempts", "createdAt", "updatedAt",
    "resolvedAt", "replayedAt", "discardedAt", "discardedBy""#;

/// The filters of a list or a bulk action; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// One of [`SOURCES`].
    pub source: Option<String>,
    /// One of [`STATUSES`].
    pub status: Option<String>,
    /// The row's `sourceID`.
    pub source_id: Option<Uuid>,
    /// Case-insensitive substring of the last error.
    pub error: Option<String>,
    /// Rows created at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Rows created before this time.
    pub to: Option<DateTime<Utc>>,
}

impl Filter {
    /// Checks the enumerations, so a typo is a 422 rather than an empty page.
    pub fn validate(&self) -> Result<()> {
        if let Some(source) = &self.source
            && !SOURCES.contains(&source.as_str())
        {
            return Err(Error::Invalid(format!(
                "source must be one of {}",
                SOURCES.join(", ")
            )));
        }
        if let Some(status) = &self.status
            && !STATUSES.contains(&status.as_str())
        {
            return Err(Error::Invalid(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err(Error::Invalid("from must not be after to".into()));
        }
        Ok(())
    }
}

/// The filter as SQL over parameters $1 (tenant) .. $7; `extra` is ANDed in.
fn filter_sql(extra: &str) -> String {
    format!(
        r#""tenantID" = $1
          AND ($2::text IS NULL OR "source" = $2)
          AND ($3::text IS NULL OR "status" = $3)
          AND ($4::uuid IS NULL OR "sourceID" = $4)
          AND ($5::text IS NULL OR strpos(lower("error"), lower($5)) > 0)
          AND ($6::timestamptz IS NULL OR "createdAt" >= $6)
          AND ($7::timestamptz IS NULL OR "createdAt" < $7)
          {extra}"#
    )
}

macro_rules! bind_filter {
    ($query:expr, $tenant:expr, $filter:expr) => {
        $query
            .bind($tenant)
            .bind(&$filter.source)
            .bind(&$filter.status)
            .bind($filter.source_id)
            .bind(&$filter.error)
            .bind($filter.from)
            .bind($filter.to)
    };
}

/// A tenant's rows matching `filter`, newest first.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &Filter,
    request: PageRequest,
) -> Result<Page<DlqRow>> {
    filter.validate()?;
    let total: i64 = bind_filter!(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM "tblEventDLQ" WHERE {}"#,
            filter_sql("")
        ))),
        tenant_id,
        filter
    )
    .fetch_one(pool)
    .await?;
    let items: Vec<DlqRow> = bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"SELECT {COLUMNS} FROM "tblEventDLQ" WHERE {}
               ORDER BY "createdAt" DESC, "dlqID" LIMIT $8 OFFSET $9"#,
            filter_sql("")
        ))),
        tenant_id,
        filter
    )
    .bind(request.limit())
    .bind(request.offset())
    .fetch_all(pool)
    .await?;
    Ok(Page {
        items,
        total_count: total,
        request,
    })
}

/// One row of the tenant; another tenant's row is not found.
pub async fn get(pool: &PgPool, tenant_id: TenantId, dlq_id: Uuid) -> Result<DlqRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblEventDLQ" WHERE "dlqID" = $1 AND "tenantID" = $2"#
    )))
    .bind(dlq_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("dlq row"))
}

mod bulk;
mod rerun;
pub mod runs;

pub use bulk::{
    BulkAction, Preview, RetryReport, preview, purge_resolved, retry_due, sweep_lost_reruns,
};
pub use rerun::{Plan, Replayed, Rerun, discard, replay};
