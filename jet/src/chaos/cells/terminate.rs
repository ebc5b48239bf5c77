//! `pg_terminate_backend` on every backend of the cell's database (API, workers, the
//! harness's own), every half second for the fault's length: connections die mid-query,
//! mid-transaction and mid-LISTEN, over and over.

use crate::chaos::Ctx;
use std::time::Duration;
use tokio::time::Instant;

pub async fn inject(ctx: &mut Ctx<'_>) -> anyhow::Result<(Instant, String)> {
    let until = Instant::now() + ctx.form.fault;
    let mut terminated = 0i64;
    while Instant::now() < until {
        // A fresh connection each round: the harness's pool is terminated too.
        let killed: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .fetch_one(&ctx.site.pool)
        .await
        .ok();
        terminated += killed.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((Instant::now(), format!("{terminated} backends terminated")))
}
