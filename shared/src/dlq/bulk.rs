//! Acting on many rows: the preview of a bulk action, the automatic retries the maintenance
//! role runs, and the retention purge.

use super::SAMPLE_SIZE;
use super::rerun::{Rerun, plan, record_failure, rerun_locked};
use super::{COLUMNS, DlqRow, Filter, REPLAYABLE_SOURCES, filter_sql};
use crate::ids::TenantId;
use crate::{Error, Result};
use sqlx::PgPool;
use uuid::Uuid;

/// A bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Re-run each row ([`replay`]).
    Replay,
    /// Discard each row ([`discard`]).
    Discard,
}

/// What a bulk action would act on.
#[derive(Debug, Clone)]
pub struct Preview {
    /// PENDING and PARKED rows matching the filters.
    pub matched: i64,
    /// The first [`SAMPLE_SIZE`] of them, oldest first.
    pub sample: Vec<DlqRow>,
}

/// The tenant's PENDING and PARKED rows matching `filter`: how many, and the oldest few. A
/// bulk action itself runs in the background ([`super::runs`]).
pub async fn preview(pool: &PgPool, tenant_id: TenantId, filter: &Filter) -> Result<Preview> {
    filter.validate()?;
    let actionable = r#"AND "status" IN ('PENDING', 'PARKED')"#;
    let matched: i64 = bind_filter!(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM "tblEventDLQ" WHERE {}"#,
            filter_sql(actionable)
        ))),
        tenant_id,
        filter
    )
    .fetch_one(pool)
    .await?;
    let sample: Vec<DlqRow> = bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"SELECT {COLUMNS} FROM "tblEventDLQ" WHERE {}
               ORDER BY "createdAt", "dlqID" LIMIT $8"#,
            filter_sql(actionable)
        ))),
        tenant_id,
        filter
    )
    .bind(SAMPLE_SIZE)
    .fetch_all(pool)
    .await?;
    Ok(Preview { matched, sample })
}

/// Deletes up to `batch` DISCARDED and REPLAYED rows resolved more than `days` days ago;
/// returns how many.
pub async fn purge_resolved(pool: &PgPool, days: u32, batch: i64) -> Result<u64> {
    let deleted = sqlx::query(
        r#"DELETE FROM "tblEventDLQ" WHERE "dlqID" IN (
             SELECT "dlqID" FROM "tblEventDLQ"
             WHERE "status" IN ('DISCARDED', 'REPLAYED')
               AND COALESCE("resolvedAt", "updatedAt") < now() - make_interval(days => $1)
             LIMIT $2)"#,
    )
    .bind(i32::try_from(days).unwrap_or(i32::MAX))
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// What one automatic-retry pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetryReport {
    /// Rows claimed by this pass (never claimed by a concurrent pass).
    pub claimed: Vec<Uuid>,
    /// Rows whose re-run succeeded or was queued.
    pub rerun: u64,
    /// Rows whose re-run failed (backed off or parked).
    pub failed: u64,
}

/// Claims up to `limit` due PENDING rows of replayable sources with `FOR UPDATE SKIP LOCKED`
/// (concurrent passes, on other replicas too, take other rows) and re-runs each. A failure is
/// recorded as an attempt with exponential backoff and jitter, or parks the row.
pub async fn retry_due(rt: Rerun<'_>, limit: i64, by: &str) -> Result<RetryReport> {
    let mut tx = rt.pool.begin().await?;
    let rows: Vec<DlqRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblEventDLQ"
           WHERE "status" = 'PENDING' AND "nextRetryAt" <= now() AND "source" = ANY($1)
           ORDER BY "nextRetryAt" LIMIT $2 FOR UPDATE SKIP LOCKED"#
    )))
    .bind(REPLAYABLE_SOURCES)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut report = RetryReport::default();
    for row in rows {
        report.claimed.push(row.dlq_id);
        // A command without a tenant is pushed again too (its bytes as they were).
        let status = match plan(&mut tx, &row, &row.payload, false).await {
            Ok(plan) => rerun_locked(rt, &mut tx, &row, plan, by).await?.0,
            Err(Error::Database(e)) => return Err(Error::Database(e)),
            Err(e) => {
                record_failure(&mut tx, row.dlq_id, &e.to_string(), by)
                    .await?
                    .0
            }
        };
        if matches!(status.as_str(), "RETRYING" | "REPLAYED") {
            report.rerun += 1;
        } else {
            report.failed += 1;
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// RETRYING rows whose re-run command is gone from the apalis queue (deleted by hand, or the
/// queue purged) go back to PENDING with an attempt saying so, so they are retried again
/// instead of waiting forever. A minute's grace covers a command still being pushed.
pub async fn sweep_lost_reruns(pool: &PgPool) -> Result<u64> {
    Ok(sqlx::query(
        r#"UPDATE "tblEventDLQ" d SET "status" = 'PENDING', "replayJobID" = NULL,
             "nextRetryAt" = "jetDlqNextRetryAt"(d."retryCount"),
             "attempts" = d."attempts" || jsonb_build_array(jsonb_build_object(
                 'at', now(), 'by', 'maintenance', 'outcome', 'lost',
                 'error', 'the re-run command ' || d."replayJobID" || ' is no longer in the queue')),
             "updatedAt" = now()
           WHERE d."status" = 'RETRYING' AND d."replayJobID" IS NOT NULL
             AND d."updatedAt" < now() - interval '1 minute'
             AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.id = d."replayJobID")"#,
    )
    .execute(pool)
    .await?
    .rows_affected())
}
