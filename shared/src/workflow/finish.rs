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

/// [`finish_instance`] for many instances in a fixed number of statements.
pub(crate) async fn finish_many(
    conn: &mut PgConnection,
    ended: &[(Uuid, &str, Option<String>)],
) -> Result<()> {
    if ended.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ended.iter().map(|e| e.0).collect();
    let statuses: Vec<&str> = ended.iter().map(|e| e.1).collect();
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" i SET "status" = e.status, "completedAt" = now(), "updatedAt" = now()
           FROM unnest($1::uuid[], $2::text[]) AS e(id, status) WHERE i."instanceID" = e.id"#,
    )
    .bind(&ids)
    .bind(&statuses)
    .execute(&mut *conn)
    .await?;
    sqlx::query(r#"DELETE FROM "tblNodeExecutions" WHERE "instanceID" = ANY($1)"#)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    // A run that ended (another branch reached `end`) asks nobody anything any more.
    sqlx::query(
        r#"UPDATE "tblWorkflowDataCollectionRequests" SET "status" = 'CANCELLED', "updatedAt" = now()
           WHERE "instanceID" = ANY($1) AND "status" = 'PENDING'"#,
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    super::subworkflow::ended(&mut *conn, &ids).await?;
    let (reason_ids, reasons): (Vec<Uuid>, Vec<Value>) = ended
        .iter()
        .filter_map(|(id, _, reason)| reason.as_ref().map(|r| (*id, json!({"__error": r}))))
        .unzip();
    if !reason_ids.is_empty() {
        sqlx::query(
            r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "outputVariable", "payload")
               SELECT id, 'SYSTEM_SET', '__error', payload FROM unnest($1::uuid[], $2::jsonb[]) AS r(id, payload)"#,
        )
        .bind(&reason_ids)
        .bind(&reasons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
