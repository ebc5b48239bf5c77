//! Bulk replay and discard as background runs: [`start`] counts the matching rows and answers
//! a handle at once; the maintenance role calls [`work`], which takes one running run (a short
//! lock, `SKIP LOCKED`, so replicas share runs but never one run), acts on the next rows after
//! its cursor at most `perSecond` a second, and records its progress. A row that a replay
//! sends back to PENDING is not taken again by the same run (the cursor has passed it).

use super::bulk::BulkAction;
use super::rerun::Rerun;
use super::{Filter, discard, filter_sql, replay};
use crate::ids::TenantId;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long one replica keeps a run before another may continue it.
const LOCK: Duration = Duration::from_secs(30);

/// A row of `tblDlqBulkRuns`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BulkRun {
    #[sqlx(rename = "runID")]
    pub run_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    pub action: String,
    pub filters: Value,
    #[sqlx(rename = "perSecond")]
    pub per_second: Option<i32>,
    /// `running` or `done`.
    pub status: String,
    pub matched: i64,
    pub processed: i64,
    pub succeeded: i64,
    pub failed: i64,
    #[sqlx(rename = "cursorCreatedAt")]
    pub cursor_created_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "cursorDlqID")]
    pub cursor_dlq_id: Option<Uuid>,
    #[sqlx(rename = "createdBy")]
    pub created_by: String,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    #[sqlx(rename = "finishedAt")]
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = r#""runID", "tenantID", "action", "filters", "perSecond", "status", "matched", "processed",
    "succeeded", "failed", "cursorCreatedAt", "cursorDlqID", "createdBy", "createdAt", "updatedAt", "finishedAt""#;

const ACTIONABLE: &str = r#"AND "status" IN ('PENDING', 'PARKED')"#;

fn filters_json(f: &Filter) -> Value {
    json!({"source": f.source, "status": f.status, "sourceID": f.source_id, "error": f.error,
           "from": f.from, "to": f.to})
}

fn filter_of(v: &Value) -> Filter {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let time = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Filter {
        source: text("source"),
        status: text("status"),
        source_id: text("sourceID").and_then(|s| s.parse().ok()),
        error: text("error"),
        from: time("from"),
        to: time("to"),
    }
}

/// Starts a run over the tenant's PENDING and PARKED rows matching `filter`.
pub async fn start(
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &Filter,
    action: BulkAction,
    per_second: Option<u32>,
    by: &str,
) -> Result<BulkRun> {
    filter.validate()?;
    let matched: i64 = bind_filter!(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM "tblEventDLQ" WHERE {}"#,
            filter_sql(ACTIONABLE)
        ))),
        tenant_id,
        filter
    )
    .fetch_one(pool)
    .await?;
    let action = match action {
        BulkAction::Replay => "replay",
        BulkAction::Discard => "discard",
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblDlqBulkRuns" ("tenantID", "action", "filters", "perSecond", "matched", "createdBy", "status", "finishedAt")
           VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 = 0 THEN 'done' ELSE 'running' END,
                   CASE WHEN $5 = 0 THEN now() END)
           RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(action)
    .bind(filters_json(filter))
    .bind(per_second.map(|n| n as i32))
    .bind(matched)
    .bind(by)
    .fetch_one(pool)
    .await?)
}

/// One run of the tenant; `NotFound` for another tenant's.
pub async fn get(pool: &PgPool, tenant_id: TenantId, run_id: Uuid) -> Result<BulkRun> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblDlqBulkRuns" WHERE "runID" = $1 AND "tenantID" = $2"#
    )))
    .bind(run_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("bulk run"))
}

/// Takes one running run and works on it for about `budget`; answers the run worked on and
/// how many rows it acted on (`None`: no run was waiting).
pub async fn work(rt: Rerun<'_>, budget: Duration) -> Result<Option<(Uuid, usize)>> {
    let run: Option<BulkRun> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblDlqBulkRuns" SET "lockedUntil" = now() + make_interval(secs => $1)
           WHERE "runID" = (SELECT "runID" FROM "tblDlqBulkRuns"
                            WHERE "status" = 'running' AND ("lockedUntil" IS NULL OR "lockedUntil" < now())
                            ORDER BY "createdAt" LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING {COLUMNS}"#
    )))
    .bind(LOCK.as_secs_f64())
    .fetch_optional(rt.pool)
    .await?;
    let Some(run) = run else { return Ok(None) };
    let filter = filter_of(&run.filters);
    let gap = run
        .per_second
        .filter(|n| *n > 0)
        .map(|n| Duration::from_secs_f64(1.0 / f64::from(n)));
    let started = Instant::now();
    let mut cursor = (run.cursor_created_at, run.cursor_dlq_id);
    let (mut acted, mut succeeded, mut failed) = (0usize, 0i64, 0i64);
    let mut finished = false;
    while started.elapsed() < budget.min(LOCK / 2) {
        let next: Option<(Uuid, DateTime<Utc>)> = bind_filter!(
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                r#"SELECT "dlqID", "createdAt" FROM "tblEventDLQ" WHERE {}
                     AND ($8::timestamptz IS NULL OR ("createdAt", "dlqID") > ($8, $9))
                   ORDER BY "createdAt", "dlqID" LIMIT 1"#,
                filter_sql(ACTIONABLE)
            ))),
            run.tenant_id,
            filter
        )
        .bind(cursor.0)
        .bind(cursor.1)
        .fetch_optional(rt.pool)
        .await?;
        let Some((dlq_id, created_at)) = next else {
            finished = true;
            break;
        };
        if let Some(gap) = gap
            && acted > 0
        {
            tokio::time::sleep(gap).await;
        }
        let by = run.created_by.as_str();
        let outcome = match run.action.as_str() {
            "discard" => discard(rt.pool, run.tenant_id, dlq_id, Some("bulk discard"), by)
                .await
                .map(|r| r.status),
            _ => replay(rt, run.tenant_id, dlq_id, None, false, by)
                .await
                .map(|r| r.status),
        };
        match outcome {
            Ok(status) if matches!(status.as_str(), "REPLAYED" | "RETRYING" | "DISCARDED") => {
                succeeded += 1
            }
            Ok(_) => failed += 1,
            Err(Error::Database(e)) => return Err(Error::Database(e)),
            // Changed concurrently (no longer pending or parked) or a payload that cannot run.
            Err(_) => failed += 1,
        }
        acted += 1;
        cursor = (Some(created_at), Some(dlq_id));
    }
    sqlx::query(
        r#"UPDATE "tblDlqBulkRuns" SET "processed" = "processed" + $2, "succeeded" = "succeeded" + $3,
             "failed" = "failed" + $4, "cursorCreatedAt" = $5, "cursorDlqID" = $6, "lockedUntil" = NULL,
             "status" = CASE WHEN $7 THEN 'done' ELSE "status" END,
             "finishedAt" = CASE WHEN $7 THEN now() END, "updatedAt" = now()
           WHERE "runID" = $1"#,
    )
    .bind(run.run_id)
    .bind(acted as i64)
    .bind(succeeded)
    .bind(failed)
    .bind(cursor.0)
    .bind(cursor.1)
    .bind(finished)
    .execute(rt.pool)
    .await?;
    Ok(Some((run.run_id, acted)))
}
