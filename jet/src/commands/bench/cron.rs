//! `jet bench cron`: fire lag (due time → history row and instance written) of `N` jobs that
//! fire every second, with 1 and 3 `jet-worker --roles cron` processes. Also checks the
//! ledger: every (job, second) in the window fired exactly once.

use super::super::flag_value;
use super::{connect_admin, db_url, drop_db, fresh_db, pct, server_url, spawn_roles, worker_bin};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let jobs: i64 = flag_value(args, "--jobs")?
        .map(str::parse)
        .transpose()?
        .unwrap_or(200);
    let seconds: i64 = flag_value(args, "--seconds")?
        .map(str::parse)
        .transpose()?
        .unwrap_or(20);
    let server = server_url();
    let bin = worker_bin()?;
    let mut admin = connect_admin(&server).await?;
    println!("jet bench cron: {jobs} jobs firing every second for {seconds} s");
    println!("\n| schedulers | fires | p50 lag | p99 lag | max lag | duplicates | missing |");
    println!("|---|---|---|---|---|---|---|");
    for replicas in [1usize, 3] {
        let (pool, tenant, workflow) = fresh_db(&mut admin, &server, 2).await?;
        sqlx::query(
            r#"INSERT INTO "tblCronJobs" ("tenantID", "cronJobTitle", "cronJobSchedule", "workflowID", "isDisabled",
                 "catchupPolicy", "maxCatchupRuns")
               SELECT $1, 'bench ' || n, '* * * * * *', $2, true, 'catch_up', 1000 FROM generate_series(1, $3) n"#,
        )
        .bind(tenant)
        .bind(workflow)
        .bind(jobs)
        .execute(&pool)
        .await?;
        let fleet = spawn_roles(&bin, &db_url(&server), replicas, "cron")?;
        wait_for("the schedulers to start", || async {
            let live: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblCronSchedulers""#)
                .fetch_one(&pool)
                .await?;
            Ok(live as usize >= replicas)
        })
        .await?;
        let first: DateTime<Utc> = sqlx::query_scalar(
            r#"UPDATE "tblCronJobs" SET "isDisabled" = false,
                 "nextRunAt" = date_trunc('second', now()) + interval '2 seconds' RETURNING "nextRunAt""#,
        )
        .fetch_all(&pool)
        .await?[0];
        let end = first + chrono::Duration::seconds(seconds - 1);
        wait_for("the window to pass", || async {
            let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
            Ok(now > end + chrono::Duration::seconds(1))
        })
        .await?;
        drop(fleet);
        let lags: Vec<f64> = sqlx::query_scalar(
            r#"SELECT EXTRACT(EPOCH FROM "startTime" - "scheduledAt")::float8 * 1000 FROM "tblCronJobHistory"
               WHERE "scheduledAt" BETWEEN $1 AND $2"#,
        )
        .bind(first)
        .bind(end)
        .fetch_all(&pool)
        .await?;
        let (duplicates, distinct): (i64, i64) = sqlx::query_as(
            r#"SELECT count(*) - count(DISTINCT ("cronJobID", "scheduledAt")), count(DISTINCT ("cronJobID", "scheduledAt"))
               FROM "tblCronJobHistory" WHERE "scheduledAt" BETWEEN $1 AND $2"#,
        )
        .bind(first)
        .bind(end)
        .fetch_one(&pool)
        .await?;
        let max = lags.iter().copied().fold(0.0, f64::max);
        println!(
            "| {replicas} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {duplicates} | {} |",
            lags.len(),
            pct(&lags, 0.5),
            pct(&lags, 0.99),
            max,
            jobs * seconds - distinct,
        );
        // Where the tail is: the slowest due seconds of the window (second 0 is the first
        // fire after the schedulers started).
        let worst: Vec<(f64, f64)> = sqlx::query_as(
            r#"SELECT EXTRACT(EPOCH FROM "scheduledAt" - $1)::float8,
                      max(EXTRACT(EPOCH FROM "startTime" - "scheduledAt"))::float8 * 1000
               FROM "tblCronJobHistory" WHERE "scheduledAt" BETWEEN $1 AND $2
               GROUP BY "scheduledAt" ORDER BY 2 DESC LIMIT 3"#,
        )
        .bind(first)
        .bind(end)
        .fetch_all(&pool)
        .await?;
        let worst: Vec<String> = worst
            .iter()
            .map(|(s, ms)| format!("second {s:.0}: {ms:.1} ms"))
            .collect();
        println!(
            "|   | slowest due seconds: {} | | | | | |",
            worst.join(", ")
        );
        pool.close().await;
    }
    drop_db(&mut admin).await
}

/// Polls `probe` every 20 ms until it holds; fails after two minutes.
async fn wait_for<F, Fut>(what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !probe().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
