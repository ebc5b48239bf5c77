//! Ending a run: detecting that nothing can move it any more, and finishing it with
//! everything that goes with that (its queue rows, its open human steps, its parent and
//! children).

use crate::Result;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// The instances of `ids` that nothing can move any more: no queued or running execution
/// (a parked sub-workflow wait included), no human step waiting for input, and none answered
/// or expired whose resume has not moved the run yet.
pub(crate) async fn without_pending_work(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        r#"SELECT i FROM unnest($1::uuid[]) AS i
           WHERE NOT EXISTS (SELECT 1 FROM "tblNodeExecutions" e WHERE e."instanceID" = i)
             AND NOT EXISTS (SELECT 1 FROM "tblWorkflowDataCollectionRequests" r
                             WHERE r."instanceID" = i
                               AND (r."status" = 'PENDING' OR (r."status" <> 'CANCELLED' AND r."resumedAt" IS NULL)))"#,
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Ends an instance: its status, `completedAt`, a `SYSTEM_SET` row with the reason, and no
/// execution left behind; a parent waiting on it is woken, its own children are cancelled.
pub async fn finish_instance(
    conn: &mut PgConnection,
    instance_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> Result<()> {
    finish_many(conn, &[(instance_id, status, reason.map(str::to_owned))]).await
}

/// [`finish_instance`] for many instances, in one statement ([`end_runs`]).
pub(crate) async fn finish_many(
    conn: &mut PgConnection,
    ended: &[(Uuid, &str, Option<String>)],
) -> Result<()> {
    end_runs(conn, ended, How::Finished).await?;
    Ok(())
}

/// Cancels a RUNNING instance with everything [`finish_instance`] does, its version bumped
/// (a settle of a node still running loses its CAS). `false` when it was not RUNNING.
pub(crate) async fn cancel_run(conn: &mut PgConnection, instance_id: Uuid) -> Result<bool> {
    Ok(end_runs(conn, &[(instance_id, "CANCELLED", None)], How::Cancelled).await? > 0)
}

/// How [`end_runs`] ends its runs.
#[derive(Clone, Copy, PartialEq)]
enum How {
    /// By a settle that already holds the instance and moved its version.
    Finished,
    /// From outside (the API, a cron timeout, a parent): only if still RUNNING, version bumped.
    Cancelled,
}

/// Ends runs in one statement, returning how many it ended: their status and `completedAt`;
/// their queued executions removed; their open human steps cancelled; parent nodes waiting for
/// them due now (with a NOTIFY); their RUNNING descendants cancelled the same way; and a
/// `SYSTEM_SET` row with each reason given. One statement, because ending a run is on the
/// path of every run's last settle: it used to be five round trips.
async fn end_runs(
    conn: &mut PgConnection,
    ended: &[(Uuid, &str, Option<String>)],
    how: How,
) -> Result<i64> {
    if ended.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = ended.iter().map(|e| e.0).collect();
    let statuses: Vec<&str> = ended.iter().map(|e| e.1).collect();
    let reasons: Vec<Option<Value>> = ended
        .iter()
        .map(|(_, _, reason)| reason.as_ref().map(|r| json!({"__error": r})))
        .collect();
    let (count, _woke_parents): (i64, bool) = sqlx::query_as(
        r#"WITH RECURSIVE descendants AS (
             SELECT "instanceID" FROM "tblWorkflowInstances" WHERE "parentInstanceID" = ANY($1) AND "status" = 'RUNNING'
             UNION
             SELECT i."instanceID" FROM "tblWorkflowInstances" i JOIN descendants d ON i."parentInstanceID" = d."instanceID"
             WHERE i."status" = 'RUNNING'
           ), targets AS (
             SELECT t.id, t.status, $4::bool AS cancelled FROM unnest($1::uuid[], $2::text[]) AS t(id, status)
             UNION ALL
             SELECT "instanceID", 'CANCELLED', true FROM descendants
           ), ended AS (
             UPDATE "tblWorkflowInstances" i SET "status" = t.status, "completedAt" = now(), "updatedAt" = now(),
               "version" = i."version" + CASE WHEN t.cancelled THEN 1 ELSE 0 END
             FROM targets t
             WHERE i."instanceID" = t.id AND (NOT t.cancelled OR i."status" = 'RUNNING')
             RETURNING i."instanceID"
           ), dequeued AS (
             -- Each statement below takes the ended ids as one array, so it probes its index
             -- (a join with the CTE can be planned as a scan of the whole queue).
             DELETE FROM "tblNodeExecutions" e WHERE e."instanceID" = ANY(ARRAY(SELECT "instanceID" FROM ended))
           ), unasked AS (
             -- A run that ended asks nobody anything any more.
             UPDATE "tblWorkflowDataCollectionRequests" r SET "status" = 'CANCELLED', "updatedAt" = now()
             WHERE r."instanceID" = ANY(ARRAY(SELECT "instanceID" FROM ended)) AND r."status" = 'PENDING'
           ), woken AS (
             -- Parent nodes parked on a child that ended: due now.
             UPDATE "tblNodeExecutions" e SET "availableAt" = now()
             WHERE e."childInstanceID" = ANY(ARRAY(SELECT "instanceID" FROM ended))
             RETURNING 1
           ), explained AS (
             INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "outputVariable", "payload")
             SELECT r.id, 'SYSTEM_SET', '__error', r.reason
             FROM unnest($1::uuid[], $3::jsonb[]) AS r(id, reason) JOIN ended ON ended."instanceID" = r.id
             WHERE r.reason IS NOT NULL
           ), notified AS (
             -- The queue's NOTIFY trigger fires on inserts only; woken rows became due by update.
             SELECT pg_notify('jet_node_executions', '') FROM (SELECT 1 FROM woken LIMIT 1) w
           )
           SELECT (SELECT count(*) FROM ended WHERE "instanceID" = ANY($1)), EXISTS (SELECT 1 FROM notified)"#,
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&reasons)
    .bind(how == How::Cancelled)
    .fetch_one(&mut *conn)
    .await?;
    Ok(count)
}
