//! Pool exhaustion: the fleet runs with small pools (4 connections a worker, 3 for the API)
//! while idle-in-transaction sessions hold row locks on running instances, so every fleet
//! connection that needs one of them waits, holding its pool slot, until the sessions end.

use crate::chaos::Ctx;
use sqlx::Connection;
use std::time::Duration;
use tokio::time::Instant;

/// Sessions opened, each locking a few running instances.
const SESSIONS: usize = 6;

pub async fn inject(ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
    let mut held = Vec::with_capacity(SESSIONS);
    let mut locked = 0usize;
    for _ in 0..SESSIONS {
        let mut conn = sqlx::PgConnection::connect(&ctx.site.db_url).await?;
        sqlx::query("BEGIN").execute(&mut conn).await?;
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
            r#"SELECT "instanceID" FROM "tblWorkflowInstances" WHERE "status" = 'RUNNING'
               ORDER BY "createdAt" DESC LIMIT 5 FOR UPDATE SKIP LOCKED"#,
        )
        .fetch_all(&mut conn)
        .await?;
        locked += rows.len();
        held.push(conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(ctx.form.fault).await;
    for conn in held {
        // Closing ends the transaction (rolled back): the locks go with it.
        conn.close().await?;
    }
    Ok((
        Instant::now(),
        format!("{SESSIONS} idle-in-transaction sessions held {locked} runs"),
    ))
}
