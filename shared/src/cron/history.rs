//! Fire history (`tblCronJobHistory`): one row per due time of a job, unique per
//! `(cronJobID, scheduledAt)`. Status: QUEUED (held by `buffer_one`), RETRYING (could not
//! start yet), RUNNING (its instance runs), then SUCCESS, FAILURE, TIMEOUT or SKIPPED.

use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, QueryBuilder};
use uuid::Uuid;

/// A row of `tblCronJobHistory`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    #[sqlx(rename = "cronJobHistoryID")]
    pub history_id: Uuid,
    #[sqlx(rename = "cronJobID")]
    pub cron_job_id: Uuid,
    pub status: String,
    #[sqlx(rename = "triggerType")]
    pub trigger_type: Option<String>,
    #[sqlx(rename = "scheduledAt")]
    pub scheduled_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "startTime")]
    pub start_time: Option<DateTime<Utc>>,
    #[sqlx(rename = "endTime")]
    pub end_time: Option<DateTime<Utc>>,
    #[sqlx(rename = "durationMs")]
    pub duration_ms: Option<i32>,
    /// JSON text, as upstream stores it.
    pub result: Option<String>,
    #[sqlx(rename = "instanceID")]
    pub instance_id: Option<Uuid>,
    pub attempt: i32,
    #[sqlx(rename = "retryAt")]
    pub retry_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
}

/// Selected columns, qualified with the alias `h`.
pub(crate) const COLUMNS: &str = r#"h."cronJobHistoryID", h."cronJobID", h."status", h."triggerType", h."scheduledAt",
    h."startTime", h."endTime", h."durationMs", h."result", h."instanceID", h."attempt", h."retryAt", h."createdAt""#;

/// Every status a history row can have.
pub const STATUSES: &[&str] = &[
    "QUEUED", "RETRYING", "RUNNING", "SUCCESS", "FAILURE", "TIMEOUT", "SKIPPED",
];

/// Filters of the history list.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub status: Option<String>,
    /// `scheduledAt` at or after this.
    pub from: Option<DateTime<Utc>>,
    /// `scheduledAt` before this.
    pub to: Option<DateTime<Utc>>,
}

/// A job's fires, newest due time first. `NotFound` when the job is not the tenant's.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    cron_job_id: Uuid,
    filter: &HistoryFilter,
    page: PageRequest,
) -> Result<Page<HistoryRow>> {
    let exists: bool = sqlx::query_scalar(
        r#"SELECT EXISTS (SELECT 1 FROM "tblCronJobs" WHERE "tenantID" = $1 AND "cronJobID" = $2)"#,
    )
    .bind(tenant_id)
    .bind(cron_job_id)
    .fetch_one(pool)
    .await?;
    if !exists {
        return Err(Error::NotFound("cron job"));
    }
    let build = |select: &str| {
        let mut q = QueryBuilder::new(select);
        q.push(r#" FROM "tblCronJobHistory" h WHERE h."cronJobID" = "#)
            .push_bind(cron_job_id);
        if let Some(s) = &filter.status {
            q.push(r#" AND h."status" = "#).push_bind(s.clone());
        }
        if let Some(from) = filter.from {
            q.push(r#" AND h."scheduledAt" >= "#).push_bind(from);
        }
        if let Some(to) = filter.to {
            q.push(r#" AND h."scheduledAt" < "#).push_bind(to);
        }
        q
    };
    let total: i64 = build("SELECT count(*)")
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    let mut q = build(&format!("SELECT {COLUMNS}"));
    q.push(r#" ORDER BY h."scheduledAt" DESC NULLS LAST, h."cronJobHistoryID" LIMIT "#)
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let items = q.build_query_as().fetch_all(pool).await?;
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}

/// One history row.
pub async fn get(conn: impl PgExecutor<'_>, history_id: Uuid) -> Result<HistoryRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblCronJobHistory" h WHERE h."cronJobHistoryID" = $1"#
    )))
    .bind(history_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("cron job history"))
}
