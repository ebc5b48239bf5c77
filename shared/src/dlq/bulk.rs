//! Acting on many rows: bulk replay and discard by filter, the automatic retries the
//! maintenance role runs, and the retention purge.

use super::rerun::{Rerun, plan, record_failure, rerun_locked};
use super::{BULK_LIMIT, SAMPLE_SIZE};
use super::{COLUMNS, DlqRow, Filter, REPLAYABLE_SOURCES, discard, filter_sql, replay};
use crate::ids::TenantId;
use crate::{Error, Result};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Re-run each row ([`replay`]).
    Replay,
    /// Discard each row ([`discard`]).
    Discard,
}

/// The outcome of one row in a bulk action.
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// The row.
    pub dlq_id: Uuid,
    /// Status afterwards, or `None` when the row could not be acted on.
    pub status: Option<String>,
    /// Why it could not (changed concurrently, a payload that cannot be re-run).
    pub error: Option<String>,
}

/// What a bulk action did (or, on a dry run, would do).
#[derive(Debug, Clone)]
pub struct BulkReport {
    /// PENDING and PARKED rows matching the filters.
    pub matched: i64,
    /// Rows acted on by this request (at most [`BULK_LIMIT`]; 0 on a dry run).
    pub processed: i64,
    /// Matching rows left for another request.
    pub remaining: i64,
    /// A dry run's first rows.
    pub sample: Vec<DlqRow>,
    /// Each row acted on.
    pub items: Vec<BulkItem>,
}

/// Replays or discards the tenant's PENDING and PARKED rows matching `filter`, oldest first, at
/// most [`BULK_LIMIT`] per request and at most `per_second` a second. Each row is its own
/// transaction, so one row that cannot be re-run does not stop the others.
pub async fn bulk(
    rt: Rerun<'_>,
    tenant_id: TenantId,
    filter: &Filter,
    action: BulkAction,
    dry_run: bool,
    per_second: Option<u32>,
    by: &str,
) -> Result<BulkReport> {
    filter.validate()?;
    let pool = rt.pool;
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
    let limit = if dry_run { SAMPLE_SIZE } else { BULK_LIMIT };
    let rows: Vec<DlqRow> = bind_filter!(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"SELECT {COLUMNS} FROM "tblEventDLQ" WHERE {}
               ORDER BY "createdAt", "dlqID" LIMIT $8"#,
            filter_sql(actionable)
        ))),
        tenant_id,
        filter
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    if dry_run {
        return Ok(BulkReport {
            matched,
            processed: 0,
            remaining: matched,
            sample: rows,
            items: Vec::new(),
        });
    }
    let gap = per_second
        .filter(|n| *n > 0)
        .map(|n| Duration::from_secs_f64(1.0 / f64::from(n)));
    let mut items = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if let Some(gap) = gap
            && i > 0
        {
            tokio::time::sleep(gap).await;
        }
        let outcome = match action {
            BulkAction::Replay => replay(rt, tenant_id, row.dlq_id, None, false, by)
                .await
                .map(|r| r.status),
            BulkAction::Discard => discard(pool, tenant_id, row.dlq_id, None, by)
                .await
                .map(|r| r.status),
        };
        items.push(match outcome {
            Ok(status) => BulkItem {
                dlq_id: row.dlq_id,
                status: Some(status),
                error: None,
            },
            Err(Error::Database(e)) => return Err(Error::Database(e)),
            Err(e) => BulkItem {
                dlq_id: row.dlq_id,
                status: None,
                error: Some(match e {
                    Error::Conflict { .. } => "the row is no longer pending or parked".into(),
                    other => other.to_string(),
                }),
            },
        });
    }
    let processed = i64::try_from(items.len()).unwrap_or(i64::MAX);
    Ok(BulkReport {
        matched,
        processed,
        remaining: (matched - processed).max(0),
        sample: Vec::new(),
        items,
    })
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
