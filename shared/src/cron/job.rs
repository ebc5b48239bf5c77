//! Cron jobs (`tblCronJobs`): the stored schedule, its policies and the workflow it starts.

use super::schedule::{Schedule, ScheduleError};
use crate::api_key::Creator;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::tenant_table::TenantTable;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// A row of `tblCronJobs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CronJob {
    #[sqlx(rename = "cronJobID")]
    pub cron_job_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "cronJobTitle")]
    pub title: String,
    #[sqlx(rename = "cronJobDescription")]
    pub description: Option<String>,
    #[sqlx(rename = "cronJobSchedule")]
    pub schedule: String,
    pub timezone: String,
    #[sqlx(rename = "isDisabled")]
    pub is_disabled: bool,
    #[sqlx(rename = "nextRunAt")]
    pub next_run_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "lastScheduledAt")]
    pub last_scheduled_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "timeoutSeconds")]
    pub timeout_seconds: Option<i32>,
    #[sqlx(rename = "retryAttempts")]
    pub retry_attempts: i32,
    #[sqlx(rename = "retryDelaySeconds")]
    pub retry_delay_seconds: i32,
    #[sqlx(rename = "overlapPolicy")]
    pub overlap_policy: String,
    #[sqlx(rename = "catchupPolicy")]
    pub catchup_policy: String,
    #[sqlx(rename = "maxCatchupRuns")]
    pub max_catchup_runs: i32,
    #[sqlx(rename = "workflowID")]
    pub workflow_id: Option<Uuid>,
    #[sqlx(rename = "workflowConfig")]
    pub workflow_config: Option<Value>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str = r#""cronJobID", "tenantID", "cronJobTitle", "cronJobDescription", "cronJobSchedule", "timezone",
    "isDisabled", "nextRunAt", "lastScheduledAt", "timeoutSeconds", "retryAttempts", "retryDelaySeconds",
    "overlapPolicy", "catchupPolicy", "maxCatchupRuns", "workflowID", "workflowConfig", "creatorID",
    "createdByApiKeyID", "createdAt", "updatedAt""#;

const TABLE: TenantTable = TenantTable {
    table: "tblCronJobs",
    id: "cronJobID",
    columns: COLUMNS,
    noun: "cron job",
};

/// Everything a caller sets on a job; create and update both write all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct CronJobSpec {
    pub title: String,
    pub description: Option<String>,
    pub schedule: String,
    pub timezone: String,
    pub workflow_id: Uuid,
    pub workflow_config: Option<Value>,
    pub is_disabled: bool,
    pub timeout_seconds: Option<i32>,
    pub retry_attempts: i32,
    pub retry_delay_seconds: i32,
    pub overlap_policy: String,
    pub catchup_policy: String,
    pub max_catchup_runs: i32,
}

impl CronJobSpec {
    /// The spec of a stored job (the base a PATCH applies to). A job without a workflow (an
    /// upstream row from before workflows) gets the nil id, which no workflow has.
    pub fn of(job: &CronJob) -> Self {
        Self {
            title: job.title.clone(),
            description: job.description.clone(),
            schedule: job.schedule.clone(),
            timezone: job.timezone.clone(),
            workflow_id: job.workflow_id.unwrap_or_default(),
            workflow_config: job.workflow_config.clone(),
            is_disabled: job.is_disabled,
            timeout_seconds: job.timeout_seconds,
            retry_attempts: job.retry_attempts,
            retry_delay_seconds: job.retry_delay_seconds,
            overlap_policy: job.overlap_policy.clone(),
            catchup_policy: job.catchup_policy.clone(),
            max_catchup_runs: job.max_catchup_runs,
        }
    }

    /// The first due time after `now`; `None` while disabled (nothing is due).
    pub fn next_run_after(
        &self,
        now: DateTime<Utc>,
    ) -> std::result::Result<Option<DateTime<Utc>>, ScheduleError> {
        let schedule = Schedule::parse(&self.schedule, &self.timezone)?;
        Ok((!self.is_disabled)
            .then(|| schedule.next_after(now))
            .flatten())
    }

    /// Whether a change from `before` moves the job's due times (and `nextRunAt` is recomputed).
    pub fn reschedules(&self, before: &CronJobSpec) -> bool {
        self.schedule != before.schedule
            || self.timezone != before.timezone
            || self.is_disabled != before.is_disabled
    }
}

/// The database's clock: due times are compared with it, never with a process's clock.
pub async fn db_now(conn: impl PgExecutor<'_>) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(conn)
        .await?)
}

/// Creates a job due at `next_run_at`.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    spec: &CronJobSpec,
    next_run_at: Option<DateTime<Utc>>,
    creator: Creator,
) -> Result<CronJob> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblCronJobs" ("tenantID", "cronJobTitle", "cronJobDescription", "cronJobSchedule", "timezone",
             "workflowID", "workflowConfig", "isDisabled", "timeoutSeconds", "retryAttempts", "retryDelaySeconds",
             "overlapPolicy", "catchupPolicy", "maxCatchupRuns", "nextRunAt", "creatorID", "createdByApiKeyID")
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(&spec.title)
    .bind(&spec.description)
    .bind(&spec.schedule)
    .bind(&spec.timezone)
    .bind(spec.workflow_id)
    .bind(&spec.workflow_config)
    .bind(spec.is_disabled)
    .bind(spec.timeout_seconds)
    .bind(spec.retry_attempts)
    .bind(spec.retry_delay_seconds)
    .bind(&spec.overlap_policy)
    .bind(&spec.catchup_policy)
    .bind(spec.max_catchup_runs)
    .bind(next_run_at)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(conn)
    .await?)
}

/// One job of the tenant.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<CronJob> {
    TABLE.get(conn, tenant_id, id).await
}

/// One job of the tenant, locked until the caller's transaction ends: updates, manual runs and
/// the scheduler's fires of one job happen one at a time.
pub async fn get_for_update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<CronJob> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblCronJobs" WHERE "tenantID" = $1 AND "cronJobID" = $2 FOR UPDATE"#
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("cron job"))
}

/// A page of the tenant's jobs, newest first.
pub async fn list(pool: &PgPool, tenant_id: TenantId, page: PageRequest) -> Result<Page<CronJob>> {
    TABLE.list(pool, tenant_id, page).await
}

/// Writes `spec`; `next_run_at` replaces the due time only when `reschedule` is set.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    spec: &CronJobSpec,
    reschedule: Option<Option<DateTime<Utc>>>,
) -> Result<CronJob> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblCronJobs" SET "cronJobTitle" = $3, "cronJobDescription" = $4, "cronJobSchedule" = $5,
             "timezone" = $6, "workflowID" = $7, "workflowConfig" = $8, "isDisabled" = $9, "timeoutSeconds" = $10,
             "retryAttempts" = $11, "retryDelaySeconds" = $12, "overlapPolicy" = $13, "catchupPolicy" = $14,
             "maxCatchupRuns" = $15, "nextRunAt" = CASE WHEN $16 THEN $17 ELSE "nextRunAt" END, "updatedAt" = now()
           WHERE "tenantID" = $1 AND "cronJobID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(&spec.title)
    .bind(&spec.description)
    .bind(&spec.schedule)
    .bind(&spec.timezone)
    .bind(spec.workflow_id)
    .bind(&spec.workflow_config)
    .bind(spec.is_disabled)
    .bind(spec.timeout_seconds)
    .bind(spec.retry_attempts)
    .bind(spec.retry_delay_seconds)
    .bind(&spec.overlap_policy)
    .bind(&spec.catchup_policy)
    .bind(spec.max_catchup_runs)
    .bind(reschedule.is_some())
    .bind(reschedule.flatten())
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("cron job"))
}

/// Deletes a job with its history (upstream's history FK does not cascade).
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, id: Uuid) -> Result<()> {
    sqlx::query(
        r#"DELETE FROM "tblCronJobHistory" h USING "tblCronJobs" j
           WHERE h."cronJobID" = j."cronJobID" AND j."tenantID" = $1 AND j."cronJobID" = $2"#,
    )
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    TABLE.delete(conn, tenant_id, id).await
}

/// The `workflowOptions` of a workflow of the tenant (its input definitions).
pub async fn workflow_options(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    workflow_id: Uuid,
) -> Result<Option<Value>> {
    sqlx::query_scalar(
        r#"SELECT "workflowOptions" FROM "tblWorkflows" WHERE "workflowID" = $1 AND "tenantID" = $2"#,
    )
    .bind(workflow_id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("workflow"))
}
