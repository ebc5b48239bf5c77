//! The worker registry (`tblWorkers`): each worker process registers at start, heartbeats,
//! and marks itself stopped on a clean exit. A worker whose heartbeat is older than
//! [`DEAD_AFTER`] is dead. Listener holders read it to share listeners out fairly.

use crate::Result;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;

/// How often a worker heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A worker that has not heartbeated for this long is dead (three missed heartbeats).
pub const DEAD_AFTER: Duration = Duration::from_secs(15);

/// Registers (or re-registers after a restart under the same id) a live worker.
pub async fn register(pool: &PgPool, worker_id: &str, roles: &[String]) -> Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    sqlx::query(
        r#"INSERT INTO "tblWorkers" ("workerID", "host", "pid", "roles", "version")
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT ("workerID") DO UPDATE SET "host" = EXCLUDED."host", "pid" = EXCLUDED."pid",
             "roles" = EXCLUDED."roles", "version" = EXCLUDED."version", "startedAt" = now(),
             "heartbeatAt" = now(), "stoppedAt" = NULL"#,
    )
    .bind(worker_id)
    .bind(host)
    .bind(std::process::id() as i32)
    .bind(roles)
    .bind(env!("CARGO_PKG_VERSION"))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the worker is alive.
pub async fn heartbeat(pool: &PgPool, worker_id: &str) -> Result<()> {
    sqlx::query(
        r#"UPDATE "tblWorkers" SET "heartbeatAt" = now(), "stoppedAt" = NULL WHERE "workerID" = $1"#,
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a clean stop.
pub async fn stopped(pool: &PgPool, worker_id: &str) -> Result<()> {
    sqlx::query(r#"UPDATE "tblWorkers" SET "stoppedAt" = now() WHERE "workerID" = $1"#)
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Live workers running `role`.
pub async fn alive_with_role(conn: impl PgExecutor<'_>, role: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblWorkers"
           WHERE $1 = ANY ("roles") AND "stoppedAt" IS NULL
             AND "heartbeatAt" > now() - make_interval(secs => $2)"#,
    )
    .bind(role)
    .bind(DEAD_AFTER.as_secs_f64())
    .fetch_one(conn)
    .await?)
}
