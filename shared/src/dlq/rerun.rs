//! Re-running one row: what runs for each source ([`Plan`]), running it, and recording the
//! outcome in the row's history (backoff, or PARKED when the retries ran out).

use super::{COLUMNS, DlqRow};
use crate::ids::TenantId;
use crate::{Error, Result};
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection, PgPool};
use uuid::Uuid;

/// What re-running needs beyond the row's transaction: the pool (a listener action runs its
/// own transactions) and the datasources (a `trigger_query` action).
#[derive(Clone, Copy)]
pub struct Rerun<'a> {
    pub pool: &'a PgPool,
    pub data: &'a crate::datasource::DataRuntime,
}

/// What a re-run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Push these command bytes again on the commands queue.
    PushCommand {
        /// The command as apalis stores it.
        bytes: Vec<u8>,
        /// apalis attempts for the re-run (the original job's, at most the default).
        max_attempts: usize,
    },
    /// Re-run a parked listener action on the event as it saw it (a parked transform resumes
    /// the pipeline there; no action means the whole pipeline of a poison event).
    ListenerAction {
        listener_id: Uuid,
        event_id: Uuid,
        action_id: Option<Uuid>,
        event: Value,
    },
    /// Start this workflow with these inputs (a cron fire).
    StartWorkflow {
        /// The workflow, in the row's tenant.
        workflow_id: Uuid,
        /// `inputValues` of the fire.
        inputs: Value,
    },
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
            Plan::ListenerAction {
                listener_id,
                event_id,
                action_id,
                event,
            } => json!({
                "action": "listener_action", "listenerID": listener_id, "eventID": event_id,
                "actionID": action_id, "event": event,
            }),
        }
    }
}

/// What a re-run would do for `row` with `payload`. `edited` payloads come from an operator and
/// are checked strictly (a command must decode and name an instance of the row's tenant).
pub(super) async fn plan(
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
        "listener" => {
            let id = |key: &str| {
                payload
                    .get(key)
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
            };
            let listener_id = id("listenerID").ok_or_else(|| {
                Error::Invalid("a listener payload names its listenerID (a uuid)".into())
            })?;
            let event_id = id("eventID").ok_or_else(|| {
                Error::Invalid("a listener payload names its eventID (a uuid)".into())
            })?;
            if Some(listener_id) != row.source_id {
                return Err(Error::Invalid(
                    "payload.listenerID must be the listener the row came from".into(),
                ));
            }
            let event = payload
                .get("event")
                .cloned()
                .ok_or_else(|| Error::Invalid("a listener payload has an \"event\"".into()))?;
            crate::listener::inbox::check(&event)?;
            Ok(Plan::ListenerAction {
                listener_id,
                event_id,
                action_id: id("actionID"),
                event,
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
    /// A listener action ran (or had already run).
    ListenerAction { result: Value },
}

/// Runs `plan`; a failure of the run itself (not of the database) is the error text.
async fn execute(
    rt: Rerun<'_>,
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
        Plan::ListenerAction {
            listener_id,
            event_id,
            action_id,
            event,
        } => crate::listener::pipeline::run_parked(
            rt.pool,
            rt.data,
            listener_id,
            event_id,
            action_id,
            &event,
        )
        .await?
        .map(|result| Ran::ListenerAction { result }),
    };
    if ran.is_ok() {
        savepoint.commit().await?;
    } else {
        savepoint.rollback().await?;
    }
    Ok(ran)
}

/// Re-runs `row` (locked by the caller) and records the outcome on it; returns the new status.
pub(super) async fn rerun_locked(
    rt: Rerun<'_>,
    conn: &mut PgConnection,
    row: &DlqRow,
    plan: Plan,
    by: &str,
) -> Result<(String, Value)> {
    let ran = execute(rt, conn, row.tenant_id.map(TenantId), plan).await?;
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
        Ok(Ran::ListenerAction { result }) => sqlx::query_as(
            r#"UPDATE "tblEventDLQ" SET "status" = 'REPLAYED', "replayedAt" = now(), "resolvedAt" = now(),
                 "nextRetryAt" = NULL,
                 "attempts" = "attempts" || jsonb_build_array(jsonb_build_object(
                     'at', now(), 'by', $3::text, 'result', $2::jsonb, 'outcome', 'succeeded')),
                 "updatedAt" = now()
               WHERE "dlqID" = $1 RETURNING "status", "attempts" -> -1"#,
        )
        .bind(row.dlq_id)
        .bind(result)
        .bind(by)
        .fetch_one(&mut *conn)
        .await?,
        Err(message) => record_failure(conn, row.dlq_id, &message, by).await?,
    };
    Ok((status, attempt))
}

/// One more failed attempt: back off, or PARK when the retries ran out.
pub(super) async fn record_failure(
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
    /// The row.
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
    rt: Rerun<'_>,
    tenant_id: TenantId,
    dlq_id: Uuid,
    payload: Option<Value>,
    dry_run: bool,
    by: &str,
) -> Result<Replayed> {
    let mut tx = rt.pool.begin().await?;
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
    let (status, attempt) = rerun_locked(rt, &mut tx, &row, plan, by).await?;
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
