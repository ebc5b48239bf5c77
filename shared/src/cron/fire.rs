//! Firing a job: the overlap policy, the history row (unique per due time), and the workflow
//! instance created with its start node queued, all in the caller's transaction. A fire that
//! cannot start is retried (`retryAttempts`) and finally parked in `tblEventDLQ`.

use super::job::CronJob;
use super::schedule::Trigger;
use crate::ids::TenantId;
use crate::workflow::instance;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

/// What became of one fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The instance was created; the row is RUNNING.
    Running,
    /// Held by `buffer_one` until the running instance ends.
    Queued,
    /// Not run: `skip` while a run was in progress, or one fire already buffered.
    Skipped,
    /// Could not start; tried again after `retryDelaySeconds`.
    Retrying,
    /// Could not start and no retries are left: FAILURE, parked in the DLQ.
    Failed,
    /// This due time already has its row: another replica fired it.
    AlreadyFired,
}

/// Fires `job` for the due time `scheduled_at`; the caller holds the job's row lock, so overlap
/// decisions of one job never race. Returns the history row (none when already fired).
pub async fn fire(
    conn: &mut PgConnection,
    job: &CronJob,
    scheduled_at: DateTime<Utc>,
    trigger: Trigger,
) -> Result<(Option<Uuid>, Fired)> {
    let initial = match job.overlap_policy.as_str() {
        "allow" => "RUNNING",
        policy => {
            let (running, queued): (bool, bool) = sqlx::query_as(
                r#"SELECT COALESCE(bool_or("status" IN ('RUNNING', 'RETRYING')), false),
                          COALESCE(bool_or("status" = 'QUEUED'), false)
                   FROM "tblCronJobHistory" WHERE "cronJobID" = $1 AND "status" IN ('RUNNING', 'RETRYING', 'QUEUED')"#,
            )
            .bind(job.cron_job_id)
            .fetch_one(&mut *conn)
            .await?;
            match (policy, running || queued, queued) {
                (_, false, _) => "RUNNING",
                ("buffer_one", true, false) => "QUEUED",
                _ => "SKIPPED",
            }
        }
    };
    let result = (initial == "SKIPPED").then(overlap_result);
    let history_id: Option<Uuid> = sqlx::query_scalar(
        r#"INSERT INTO "tblCronJobHistory" ("cronJobID", "status", "triggerType", "scheduledAt", "startTime", "endTime", "result")
           VALUES ($1, $2, $3, $4, clock_timestamp(), CASE WHEN $2 = 'SKIPPED' THEN clock_timestamp() END, $5)
           ON CONFLICT ON CONSTRAINT "uq_tblCronJobHistory_cronJobID_scheduledAt" DO NOTHING
           RETURNING "cronJobHistoryID""#,
    )
    .bind(job.cron_job_id)
    .bind(initial)
    .bind(trigger.as_str())
    .bind(scheduled_at)
    .bind(result)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(history_id) = history_id else {
        return Ok((None, Fired::AlreadyFired));
    };
    let fired = match initial {
        "RUNNING" => start(conn, job, history_id, 1).await?,
        "QUEUED" => Fired::Queued,
        _ => Fired::Skipped,
    };
    Ok((Some(history_id), fired))
}

/// Records the due times a job missed as one SKIPPED row naming how many there were.
pub async fn record_missed(
    conn: &mut PgConnection,
    job: &CronJob,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    count: u64,
) -> Result<()> {
    sqlx::query(
        r#"INSERT INTO "tblCronJobHistory" ("cronJobID", "status", "triggerType", "scheduledAt", "startTime", "endTime", "result")
           VALUES ($1, 'SKIPPED', 'SCHEDULED', $2, clock_timestamp(), clock_timestamp(), $3)
           ON CONFLICT ON CONSTRAINT "uq_tblCronJobHistory_cronJobID_scheduledAt" DO NOTHING"#,
    )
    .bind(job.cron_job_id)
    .bind(first)
    .bind(missed_result(first, last, count))
    .execute(conn)
    .await?;
    Ok(())
}

/// The `result` of a fire skipped by the overlap policy.
pub(super) fn overlap_result() -> String {
    json!({"reason": "overlap", "message": "the previous run was still in progress"}).to_string()
}

/// The `result` of the row counting missed due times.
pub(super) fn missed_result(first: DateTime<Utc>, last: DateTime<Utc>, count: u64) -> String {
    json!({"reason": "missed", "missed": count, "from": first, "to": last,
           "message": format!("{count} due times passed while no scheduler ran")})
    .to_string()
}

/// Starts the instance of the history row `history_id` (attempt `attempt`). A failure to
/// start is rolled back to a savepoint and recorded on the row: RETRYING while attempts
/// remain, else FAILURE plus a DLQ row holding what would have been started.
pub async fn start(
    conn: &mut PgConnection,
    job: &CronJob,
    history_id: Uuid,
    attempt: i32,
) -> Result<Fired> {
    let mut savepoint = conn.begin().await?;
    let started = create_instance(&mut savepoint, job).await;
    let error = match started {
        Ok(instance_id) => {
            savepoint.commit().await?;
            sqlx::query(
                r#"UPDATE "tblCronJobHistory" SET "status" = 'RUNNING', "instanceID" = $2, "attempt" = $3,
                     "startTime" = clock_timestamp(), "retryAt" = NULL, "result" = $4, "updatedAt" = now()
                   WHERE "cronJobHistoryID" = $1"#,
            )
            .bind(history_id)
            .bind(instance_id)
            .bind(attempt)
            .bind(json!({"instanceID": instance_id}).to_string())
            .execute(&mut *conn)
            .await?;
            return Ok(Fired::Running);
        }
        Err(e) => {
            savepoint.rollback().await?;
            e
        }
    };
    let message = match &error {
        Error::Invalid(m) => m.clone(),
        other => {
            tracing::warn!(job = %job.cron_job_id, error = %other, "cron fire could not start");
            other.to_string()
        }
    };
    if attempt <= job.retry_attempts {
        sqlx::query(
            r#"UPDATE "tblCronJobHistory" SET "status" = 'RETRYING', "attempt" = $2,
                 "retryAt" = clock_timestamp() + make_interval(secs => $3), "result" = $4, "updatedAt" = now()
               WHERE "cronJobHistoryID" = $1"#,
        )
        .bind(history_id)
        .bind(attempt)
        .bind(f64::from(job.retry_delay_seconds.max(0)))
        .bind(json!({"error": message, "attempt": attempt}).to_string())
        .execute(&mut *conn)
        .await?;
        return Ok(Fired::Retrying);
    }
    let row: (Option<DateTime<Utc>>, Option<String>) = sqlx::query_as(
        r#"UPDATE "tblCronJobHistory" SET "status" = 'FAILURE', "attempt" = $2, "retryAt" = NULL,
             "endTime" = clock_timestamp(),
             "durationMs" = LEAST(EXTRACT(EPOCH FROM clock_timestamp() - "startTime") * 1000, 2147483647)::integer,
             "result" = $3, "updatedAt" = now()
           WHERE "cronJobHistoryID" = $1 RETURNING "scheduledAt", "triggerType""#,
    )
    .bind(history_id)
    .bind(attempt)
    .bind(json!({"error": message, "attempts": attempt}).to_string())
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblEventDLQ" ("tenantID", "source", "sourceID", "payload", "error", "retryCount", "maxRetries", "status")
           VALUES ($1, 'cron', $2, $3, $4, $5, $6, 'PARKED')"#,
    )
    .bind(job.tenant_id)
    .bind(job.cron_job_id)
    .bind(json!({
        "cronJobID": job.cron_job_id,
        "cronJobHistoryID": history_id,
        "workflowID": job.workflow_id,
        "inputValues": input_values(job),
        "scheduledAt": row.0,
        "triggerType": row.1,
    }))
    .bind(&message)
    .bind(attempt - 1)
    .bind(job.retry_attempts)
    .execute(&mut *conn)
    .await?;
    Ok(Fired::Failed)
}

/// The inputs a job starts its workflow with (`workflowConfig.inputValues`).
pub(super) fn input_values(job: &CronJob) -> Value {
    job.workflow_config
        .as_ref()
        .and_then(|c| c.get("inputValues"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The workflow run a fire starts, as `executeWorkflow` starts it.
async fn create_instance(conn: &mut PgConnection, job: &CronJob) -> Result<Uuid> {
    start_workflow(conn, job.tenant_id, job.workflow_id, &input_values(job)).await
}

/// Starts `workflow_id` with `inputs` in `tenant_id`: the workflow must exist in that tenant and
/// be enabled, and the inputs must fit its input definitions. Also re-runs a parked fire from
/// the DLQ. `Error::Invalid` says why the run cannot start.
pub async fn start_workflow(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    workflow_id: Option<Uuid>,
    inputs: &Value,
) -> Result<Uuid> {
    let workflow_id =
        workflow_id.ok_or_else(|| Error::Invalid("the cron job names no workflow".into()))?;
    let workflow: Option<(Option<bool>, Option<Value>)> = sqlx::query_as(
        r#"SELECT "isDisabled", "workflowOptions" FROM "tblWorkflows" WHERE "workflowID" = $1 AND "tenantID" = $2"#,
    )
    .bind(workflow_id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (disabled, options) =
        workflow.ok_or_else(|| Error::Invalid("the workflow no longer exists".into()))?;
    if disabled == Some(true) {
        return Err(Error::Invalid("the workflow is disabled".into()));
    }
    let inputs =
        instance::check_inputs(&options.unwrap_or_default(), inputs).map_err(Error::Invalid)?;
    instance::create(conn, tenant_id, workflow_id, &inputs)
        .await
        .map_err(|e| match e.downcast::<Error>() {
            Ok(domain) => domain,
            Err(other) => match other.downcast::<sqlx::Error>() {
                Ok(db) => Error::from(db),
                Err(other) => Error::Invalid(format!("{other:#}")),
            },
        })
}
