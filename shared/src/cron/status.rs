//! What `status/connections` reports: the scheduler replicas alive, a tenant's next due job,
//! and its recent fire lag.

use crate::Result;
use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A replica counts as alive this long after its last heartbeat (it beats every few seconds).
pub const ALIVE_SECONDS: f64 = 30.0;

/// A live scheduler replica.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Replica {
    #[sqlx(rename = "workerID")]
    pub worker_id: String,
    #[sqlx(rename = "startedAt")]
    pub started_at: DateTime<Utc>,
    #[sqlx(rename = "heartbeatAt")]
    pub heartbeat_at: DateTime<Utc>,
}

/// The scheduler's state as one tenant sees it.
#[derive(Debug, Clone)]
pub struct Status {
    pub replicas: Vec<Replica>,
    pub next_job: Option<(Uuid, String, DateTime<Utc>)>,
    /// Median and 99th percentile of due time → start over the tenant's last 1000 scheduled
    /// fires, in milliseconds.
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
}

/// Reads the status for `tenant_id`.
pub async fn status(pool: &PgPool, tenant_id: TenantId) -> Result<Status> {
    let replicas = sqlx::query_as(
        r#"SELECT "workerID", "startedAt", "heartbeatAt" FROM "tblCronSchedulers"
           WHERE "heartbeatAt" > now() - make_interval(secs => $1) ORDER BY "workerID""#,
    )
    .bind(ALIVE_SECONDS)
    .fetch_all(pool)
    .await?;
    let next_job = sqlx::query_as(
        r#"SELECT "cronJobID", "cronJobTitle", "nextRunAt" FROM "tblCronJobs"
           WHERE "tenantID" = $1 AND NOT "isDisabled" AND "nextRunAt" IS NOT NULL
           ORDER BY "nextRunAt" LIMIT 1"#,
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let (lag_p50_ms, lag_p99_ms): (Option<f64>, Option<f64>) = sqlx::query_as(
        r#"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)
           FROM (SELECT EXTRACT(EPOCH FROM h."startTime" - h."scheduledAt")::float8 * 1000 AS lag
                 FROM "tblCronJobHistory" h JOIN "tblCronJobs" j ON j."cronJobID" = h."cronJobID"
                 WHERE j."tenantID" = $1 AND h."triggerType" = 'SCHEDULED' AND h."status" <> 'SKIPPED'
                 ORDER BY h."scheduledAt" DESC LIMIT 1000) recent"#,
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?;
    Ok(Status {
        replicas,
        next_job,
        lag_p50_ms,
        lag_p99_ms,
    })
}
