//! Who holds which listener: a lease per listener in `tblListenerHolds`. A holder renews its
//! leases every few seconds; a lease past its expiry may be taken by any listener worker, so
//! a killed holder's listeners move within one lease. Holders take at most a fair share of the
//! listeners (live listener workers from the registry), and give back what is over their
//! share, so listeners spread across replicas.

use super::source::Report;
use crate::Result;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// How long a hold lasts without renewal: the failover time after a holder dies.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a holder renews (a third of the lease: two renewals may fail before it lapses).
pub const RENEW_EVERY: Duration = Duration::from_secs(3);

/// The registry role name of listener holders.
pub const ROLE: &str = "listeners";

fn lease_secs() -> f64 {
    LEASE.as_secs_f64()
}

/// Extends every lease `worker_id` still holds; answers the listeners it holds. A listener
/// missing from the answer was lost (taken over after an expiry, or deleted).
pub async fn renew(pool: &PgPool, worker_id: &str) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        r#"UPDATE "tblListenerHolds" SET "expiresAt" = now() + make_interval(secs => $2)
           WHERE "workerID" = $1 RETURNING "listenerID""#,
    )
    .bind(worker_id)
    .bind(lease_secs())
    .fetch_all(pool)
    .await?)
}

/// How many listeners one holder should hold: the active holdable listeners shared out over
/// the live listener workers (at least this one), rounded up.
pub async fn fair_share(pool: &PgPool) -> Result<i64> {
    let (wanted, workers): (i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM "tblListeners"
                   WHERE "status" <> 'inactive' AND "listenerType" = 'postgresql'),
                  (SELECT count(*) FROM "tblWorkers"
                   WHERE $1 = ANY ("roles") AND "stoppedAt" IS NULL
                     AND "heartbeatAt" > now() - make_interval(secs => $2))"#,
    )
    .bind(ROLE)
    .bind(crate::workers::DEAD_AFTER.as_secs_f64())
    .fetch_one(pool)
    .await?;
    let workers = workers.max(1);
    Ok((wanted + workers - 1) / workers)
}

/// Takes up to `limit` active listeners that nobody holds or whose holder's lease lapsed.
/// Two holders racing for one listener: the insert of one wins, the other's conflicts with a
/// live lease and takes nothing.
pub async fn claim(pool: &PgPool, worker_id: &str, limit: i64) -> Result<Vec<Uuid>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        r#"INSERT INTO "tblListenerHolds" ("listenerID", "workerID", "expiresAt")
           SELECT l."listenerID", $1, now() + make_interval(secs => $2)
           FROM "tblListeners" l LEFT JOIN "tblListenerHolds" h ON h."listenerID" = l."listenerID"
           WHERE l."status" <> 'inactive' AND l."listenerType" = 'postgresql'
             AND (h."listenerID" IS NULL OR h."expiresAt" < now())
           ORDER BY h."expiresAt" NULLS FIRST, l."listenerID"
           LIMIT $3
           ON CONFLICT ("listenerID") DO UPDATE SET "workerID" = EXCLUDED."workerID",
             "heldSince" = now(), "expiresAt" = EXCLUDED."expiresAt", "connectedAt" = NULL,
             "retainedWalBytes" = NULL, "lagBytes" = NULL, "sampledAt" = NULL
           WHERE "tblListenerHolds"."expiresAt" < now()
           RETURNING "listenerID""#,
    )
    .bind(worker_id)
    .bind(lease_secs())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Gives a listener back (stopped, over share, or shutting down): another holder may take it
/// at once rather than after the lease.
pub async fn release(pool: &PgPool, worker_id: &str, listener_id: Uuid) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblListenerHolds" WHERE "listenerID" = $1 AND "workerID" = $2"#)
        .bind(listener_id)
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Gives back everything `worker_id` holds.
pub async fn release_all(pool: &PgPool, worker_id: &str) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblListenerHolds" WHERE "workerID" = $1"#)
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Writes what a source reported onto its hold.
pub async fn report(
    pool: &PgPool,
    worker_id: &str,
    listener_id: Uuid,
    report: &Report,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE "tblListenerHolds" SET
             "connectedAt" = CASE WHEN $3 THEN COALESCE("connectedAt", now()) END,
             "retainedWalBytes" = $4, "lagBytes" = $5,
             "sampledAt" = CASE WHEN $4::bigint IS NOT NULL OR $5::bigint IS NOT NULL THEN now() ELSE "sampledAt" END
           WHERE "listenerID" = $1 AND "workerID" = $2"#,
    )
    .bind(listener_id)
    .bind(worker_id)
    .bind(report.connected)
    .bind(report.retained_wal_bytes)
    .bind(report.lag_bytes)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets a running listener's status and error, unless a user deactivated it meanwhile. A
/// status change wakes the holders (trigger), so it is written only when it changes.
pub async fn set_status(
    pool: &PgPool,
    listener_id: Uuid,
    status: &str,
    last_error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE "tblListeners" SET "status" = $2, "lastError" = $3
           WHERE "listenerID" = $1 AND "status" <> 'inactive'
             AND ("status", "lastError") IS DISTINCT FROM ($2, $3)"#,
    )
    .bind(listener_id)
    .bind(status)
    .bind(last_error)
    .execute(pool)
    .await?;
    Ok(())
}
