//! Retention of what the pipeline leaves behind: processed inbox rows (kept for a window so a
//! webhook redelivery with the same `Idempotency-Key` is still a no-op) and the records of
//! actions that succeeded (kept while a DLQ row might re-run the event's pipeline).

use crate::Result;
use sqlx::PgPool;

/// Deletes up to `batch` processed inbox rows older than `inbox_hours`, and up to `batch`
/// action records older than `record_days` (at least `inbox_hours`) whose event has no DLQ row
/// left to retry or replay; returns how many rows went.
pub async fn purge(pool: &PgPool, inbox_hours: u32, record_days: u32, batch: i64) -> Result<u64> {
    let events = sqlx::query(
        r#"DELETE FROM "tblListenerInbox" WHERE "eventID" IN (
             SELECT "eventID" FROM "tblListenerInbox"
             WHERE "status" <> 'pending' AND "processedAt" < now() - make_interval(hours => $1)
             LIMIT $2)"#,
    )
    .bind(inbox_hours as i32)
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected();
    let record_hours = (record_days.saturating_mul(24)).max(inbox_hours);
    let records = sqlx::query(
        r#"DELETE FROM "tblListenerActionRuns" WHERE ("eventID", "actionID") IN (
             SELECT r."eventID", r."actionID" FROM "tblListenerActionRuns" r
             WHERE r."createdAt" < now() - make_interval(hours => $1)
               AND NOT EXISTS (SELECT 1 FROM "tblEventDLQ" d
                               WHERE d."source" = 'listener' AND d."status" IN ('PENDING', 'RETRYING', 'PARKED')
                                 AND d."payload" ->> 'eventID' = r."eventID"::text)
             LIMIT $2)"#,
    )
    .bind(record_hours as i32)
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(events + records)
}
