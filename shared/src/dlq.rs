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
//! the fire would have started. Other sources (`listener`, `cdc`, `webhook`) plug in by adding
//! a [`Plan`] in [`plan`]; until then their rows are not claimed by automatic retries and a
//! replay is a 409.

use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// Every source that parks rows here.
pub const SOURCES: &[&str] = &["command", "listener", "cdc", "cron", "webhook"];
/// Every status a row can have.
pub const STATUSES: &[&str] = &["PENDING", "RETRYING", "PARKED", "REPLAYED", "DISCARDED"];
/// Sources this version knows how to re-run.
pub const REPLAYABLE_SOURCES: &[&str] = &["command", "cron"];
/// Rows one bulk request touches at most; the rest stay for the next request.
pub const BULK_LIMIT: i64 = 100;
/// Rows shown in a bulk dry run.
pub const SAMPLE_SIZE: i64 = 10;

/// One DLQ row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DlqRow {
    #[sqlx(rename = "dlqID")]
    pub dlq_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: Option<Uuid>,
    pub source: String,
    #[sqlx(rename = "sourceID")]
    pub source_id: Option<Uuid>,
    pub payload: Value,
    #[sqlx(rename = "originalPayload")]
    pub original_payload: Option<Value>,
    pub error: String,
    #[sqlx(rename = "retryCount")]
    pub retry_count: i32,
    #[sqlx(rename = "maxRetries")]
    pub max_retries: i32,
    #[sqlx(rename = "nextRetryAt")]
    pub next_retry_at: Option<DateTime<Utc>>,
    pub status: String,
    pub attempts: Value,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    #[sqlx(rename = "resolvedAt")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "replayedAt")]
    pub replayed_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "discardedAt")]
    pub discarded_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "discardedBy")]
    pub discarded_by: Option<String>,
}

const COLUMNS: &str = r#""dlqID", "tenantID", "source", "sourceID", "payload", "originalPayload", "error",
    "retryCount", "maxRetries", "nextRetryAt", "status", "attempts", "createdAt", "updatedAt",
    "resolvedAt", "replayedAt", "discardedAt", "discardedBy""#;

/// The filters of a list or a bulk action; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub source: Option<String>,
    pub status: Option<String>,
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

/// What a re-run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Push these command bytes again on the commands queue.
    PushCommand { bytes: Vec<u8>, max_attempts: usize },
    /// Start this workflow with these inputs (a cron fire).
    StartWorkflow { workflow_id: Uuid, inputs: Value },
}

impl Plan {
    /// The plan for a dry run's answer.
    pub fn describe(&self) -> Value {
        match self {
            Plan::PushCommand {
                bytes,
                max_attempts,
            } => json!({
                "action": "push_command",
                "command": serde_json::from_slice::<Value>(bytes)
                    .unwrap_or_else(|_| json!({"raw": hex::encode(bytes)})),
                "maxAttempts": max_attempts,
            }),
            Plan::StartWorkflow {
                workflow_id,
                inputs,
            } => {
                json!({"action": "start_workflow", "workflowID": workflow_id, "inputValues": inputs})
            }
        }
    }
}

/// What a re-run would do for `row` with `payload`. `edited` payloads come from an operator and
/// are checked strictly (a command must decode and name an instance of the row's tenant).
async fn plan(
    conn: &mut PgConnection,
    row: &DlqRow,
    payload: &Value,
    edited: bool,
) -> Result<Plan> {
    match row.source.as_str() {
        "command" => {
            let command = payload
                .get("command")
                .ok_or_else(|| Error::Invalid("a command payload has a \"command\"".into()))?;
            let bytes = match command.get("raw").and_then(Value::as_str) {
                Some(raw) if !edited => hex::decode(raw)
                    .map_err(|_| Error::Invalid("payload.command.raw is not hex".into()))?,
                _ => serde_json::to_vec(command)
                    .map_err(|e| Error::Invalid(format!("payload.command: {e}")))?,
            };
            if edited {
                serde_json::from_slice::<crate::commands::Command>(&bytes).map_err(|e| {
                    Error::Invalid(format!("payload.command is not a command: {e}"))
                })?;
                let tenant: Option<Uuid> = sqlx::query_scalar(r#"SELECT "jetCommandTenant"($1)"#)
                    .bind(command)
                    .fetch_one(&mut *conn)
                    .await?;
                if tenant.is_none() || tenant != row.tenant_id {
                    return Err(Error::Invalid(
                        "payload.command must name an instance or request of this tenant".into(),
                    ));
                }
            }
            let max_attempts = payload
                .get("maxAttempts")
                .and_then(Value::as_u64)
                .map_or(crate::commands::MAX_ATTEMPTS, |n| {
                    usize::try_from(n).unwrap_or(crate::commands::MAX_ATTEMPTS)
                });
            Ok(Plan::PushCommand {
                bytes,
                max_attempts,
            })
        }
        "cron" => {
            let workflow_id = payload
                .get("workflowID")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| {
                    Error::Invalid("a cron payload names its workflowID (a uuid)".into())
                })?;
            let inputs = payload.get("inputValues").cloned().unwrap_or(Value::Null);
            Ok(Plan::StartWorkflow {
                workflow_id,
                inputs,
            })
        }
        other => Err(Error::Conflict {
            constraint: format!("dlq_source_not_replayable:{other}"),
        }),
    }
}

/// What a re-run did.
enum Ran {
    /// The command is queued again; apalis settles the row.
    Pushed { job_id: String },
    /// The workflow started.
    Started { instance_id: Uuid },
}

/// Runs `plan`; a failure of the run itself (not of the database) is the error text.
async fn execute(
    conn: &mut PgConnection,
    tenant_id: Option<TenantId>,
    plan: Plan,
) -> Result<Result<Ran, String>> {
    let mut savepoint = conn.begin().await?;
    let ran = match plan {
        Plan::PushCommand {
            bytes,
            max_attempts,
        } => crate::commands::push_raw(&mut savepoint, bytes, max_attempts)
            .await
            .map(|job_id| Ran::Pushed { job_id })
            .map_err(|e| format!("{e:#}")),
        Plan::StartWorkflow {
            workflow_id,
            inputs,
        } => match tenant_id {
            None => Err("a workflow is started only in a known tenant".to_owned()),
            Some(tenant_id) => crate::cron::fire::start_workflow(
                &mut savepoint,
                tenant_id,
                Some(workflow_id),
                &inputs,
            )
            .await
            .map(|instance_id| Ran::Started { instance_id })
            .map_err(|e| match e {
                Error::Invalid(m) => m,
                other => other.to_string(),
            }),
        },
    };
    if ran.is_ok() {
        savepoint.commit().await?;
    } else {
        savepoint.rollback().await?;
    }
    Ok(ran)
}

/// Re-runs `row` (locked by the caller) and records the outcome on it; returns the new status.
async fn rerun_locked(
    conn: &mut PgConnection,
    row: &DlqRow,
    plan: Plan,
    by: &str,
) -> Result<(String, Value)> {
    let ran = execute(conn, row.tenant_id.map(TenantId), plan).await?;
    let (status, attempt): (String, Value) = match ran {
        Ok(Ran::Pushed { job_id }) => sqlx::query_as(
            r#"UPDATE "tblEventDLQ" SET "status" = 'RETRYING', "replayJobID" = $2, "nextRetryAt" = NULL,
                 "attempts" = "attempts" || jsonb_build_array(jsonb_build_object(
                     'at', now(), 'by', $3::text, 'jobID', $2, 'outcome', 'pushed')),
                 "updatedAt" = now()
               WHERE "dlqID" = $1 RETURNING "status", "attempts" -> -1"#,
        )
        .bind(row.dlq_id)
        .bind(&job_id)
        .bind(by)
        .fetch_one(&mut *conn)
        .await?,
        Ok(Ran::Started { instance_id }) => sqlx::query_as(
            r#"UPDATE "tblEventDLQ" SET "status" = 'REPLAYED', "replayedAt" = now(), "resolvedAt" = now(),
                 "nextRetryAt" = NULL,
                 "attempts" = "attempts" || jsonb_build_array(jsonb_build_object(
                     'at', now(), 'by', $3::text, 'instanceID', $2, 'outcome', 'succeeded')),
                 "updatedAt" = now()
               WHERE "dlqID" = $1 RETURNING "status", "attempts" -> -1"#,
        )
        .bind(row.dlq_id)
        .bind(instance_id)
        .bind(by)
        .fetch_one(&mut *conn)
        .await?,
        Err(message) => record_failure(conn, row.dlq_id, &message, by).await?,
    };
    Ok((status, attempt))
}

/// One more failed attempt: back off, or PARK when the retries ran out.
async fn record_failure(
    conn: &mut PgConnection,
    dlq_id: Uuid,
    message: &str,
    by: &str,
) -> Result<(String, Value)> {
    Ok(sqlx::query_as(
        r#"UPDATE "tblEventDLQ" SET
             "attempts" = "attempts" || jsonb_build_array(jsonb_build_object(
                 'at', now(), 'error', $2::text, 'by', $3::text, 'outcome', 'failed')),
             "error" = $2,
             "retryCount" = "retryCount" + 1,
             "status" = CASE WHEN "retryCount" + 1 >= "maxRetries" THEN 'PARKED' ELSE 'PENDING' END,
             "nextRetryAt" = CASE WHEN "retryCount" + 1 >= "maxRetries" THEN NULL
                                  ELSE "jetDlqNextRetryAt"("retryCount" + 1) END,
             "updatedAt" = now()
           WHERE "dlqID" = $1 RETURNING "status", "attempts" -> -1"#,
    )
    .bind(dlq_id)
    .bind(message)
    .bind(by)
    .fetch_one(&mut *conn)
    .await?)
}

/// The answer to a replay.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub dlq_id: Uuid,
    /// The row's status afterwards (unchanged on a dry run).
    pub status: String,
    /// What ran (or would run).
    pub plan: Value,
    /// The attempt recorded; `None` on a dry run.
    pub attempt: Option<Value>,
}

async fn lock(conn: &mut PgConnection, tenant_id: TenantId, dlq_id: Uuid) -> Result<DlqRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblEventDLQ" WHERE "dlqID" = $1 AND "tenantID" = $2 FOR UPDATE"#
    )))
    .bind(dlq_id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("dlq row"))
}

/// Replays one PENDING or PARKED row, optionally with an edited payload (the first payload is
/// kept in `originalPayload`). A dry run answers what would run and writes nothing.
pub async fn replay(
    pool: &PgPool,
    tenant_id: TenantId,
    dlq_id: Uuid,
    payload: Option<Value>,
    dry_run: bool,
    by: &str,
) -> Result<Replayed> {
    let mut tx = pool.begin().await?;
    let row = lock(&mut tx, tenant_id, dlq_id).await?;
    if !matches!(row.status.as_str(), "PENDING" | "PARKED") {
        return Err(Error::Conflict {
            constraint: "dlq_not_replayable".into(),
        });
    }
    let edited = payload.as_ref().is_some_and(|p| *p != row.payload);
    let payload = payload.unwrap_or_else(|| row.payload.clone());
    let plan = plan(&mut tx, &row, &payload, edited).await?;
    let described = plan.describe();
    if dry_run {
        return Ok(Replayed {
            dlq_id,
            status: row.status,
            plan: described,
            attempt: None,
        });
    }
    if edited {
        sqlx::query(
            r#"UPDATE "tblEventDLQ" SET "originalPayload" = COALESCE("originalPayload", "payload"),
                 "payload" = $2 WHERE "dlqID" = $1"#,
        )
        .bind(dlq_id)
        .bind(&payload)
        .execute(&mut *tx)
        .await?;
    }
    let (status, attempt) = rerun_locked(&mut tx, &row, plan, by).await?;
    tx.commit().await?;
    Ok(Replayed {
        dlq_id,
        status,
        plan: described,
        attempt: Some(attempt),
    })
}

/// Discards one PENDING or PARKED row: kept as DISCARDED with who and when; the history gets
/// the discard and its `reason`.
pub async fn discard(
    pool: &PgPool,
    tenant_id: TenantId,
    dlq_id: Uuid,
    reason: Option<&str>,
    by: &str,
) -> Result<DlqRow> {
    let mut tx = pool.begin().await?;
    let row = lock(&mut tx, tenant_id, dlq_id).await?;
    if !matches!(row.status.as_str(), "PENDING" | "PARKED") {
        return Err(Error::Conflict {
            constraint: "dlq_not_discardable".into(),
        });
    }
    let row: DlqRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblEventDLQ" SET "status" = 'DISCARDED', "discardedBy" = $2, "discardedAt" = now(),
             "resolvedAt" = now(), "nextRetryAt" = NULL, "updatedAt" = now(),
             "attempts" = "attempts" || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
                 'at', now(), 'by', $2::text, 'outcome', 'discarded', 'reason', $3::text)))
           WHERE "dlqID" = $1 RETURNING {COLUMNS}"#
    )))
    .bind(dlq_id)
    .bind(by)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// A bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Replay,
    Discard,
}

/// The outcome of one row in a bulk action.
#[derive(Debug, Clone)]
pub struct BulkItem {
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
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &Filter,
    action: BulkAction,
    dry_run: bool,
    per_second: Option<u32>,
    by: &str,
) -> Result<BulkReport> {
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
            BulkAction::Replay => replay(pool, tenant_id, row.dlq_id, None, false, by)
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
pub async fn retry_due(pool: &PgPool, limit: i64, by: &str) -> Result<RetryReport> {
    let mut tx = pool.begin().await?;
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
            Ok(plan) => rerun_locked(&mut tx, &row, plan, by).await?.0,
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
