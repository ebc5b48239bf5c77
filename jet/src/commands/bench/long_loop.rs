//! `jet bench` scenario (e): one loop of many iterations. The cost of a step must not grow with
//! an instance's history, so the last hundred iterations are timed against the first hundred,
//! and the log each iteration writes is weighed at both ends.

use super::cpu;
use super::shapes::{self, Shape, loop_executions};
use super::{drain, enqueue, fresh_db};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use std::path::PathBuf;

/// Iterations compared at each end of the loop.
const WINDOW: usize = 100;

pub(super) async fn run(
    admin: &mut PgConnection,
    server: &str,
    bin: &PathBuf,
    items: usize,
) -> anyhow::Result<()> {
    let items = items.max(2 * WINDOW);
    let (pool, tenant, _) = fresh_db(admin, server, 2).await?;
    let workflow = shapes::save(&pool, tenant, Shape::Loop).await?;
    enqueue(
        &pool,
        tenant,
        workflow,
        1,
        &json!({"items": (0..items).collect::<Vec<_>>()}),
    )
    .await?;
    let drained = drain(&pool, bin, server, 1, 1).await?;
    let seconds = drained.seconds;

    // The loop node completes once per item and once more to exit: the most completions.
    let loop_completions: Vec<DateTime<Utc>> = sqlx::query_scalar(
        r#"WITH loop_node AS (
               SELECT "nodeID" FROM "tblWorkflowInstanceLogs" WHERE "eventType" = 'NODE_COMPLETED'
               GROUP BY 1 ORDER BY count(*) DESC LIMIT 1)
           SELECT "createdAt" FROM "tblWorkflowInstanceLogs"
           WHERE "eventType" = 'NODE_COMPLETED' AND "nodeID" = (SELECT "nodeID" FROM loop_node)
           ORDER BY "logID""#,
    )
    .fetch_all(&pool)
    .await?;
    anyhow::ensure!(
        loop_completions.len() == items + 1,
        "the loop completed {} times for {items} items",
        loop_completions.len()
    );
    let span = |from: usize, to: usize| {
        (loop_completions[to] - loop_completions[from])
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let first_ms = span(0, WINDOW);
    let last_ms = span(items - WINDOW, items);
    // Log bytes per iteration: every row of the loop's and the body's k-th dispatch.
    let per_iteration: Vec<(i32, i64)> = sqlx::query_as(
        r#"SELECT "nodeAttempt", sum(pg_column_size(l.*))::bigint FROM "tblWorkflowInstanceLogs" l
           WHERE "nodeAttempt" IS NOT NULL GROUP BY 1 ORDER BY 1"#,
    )
    .fetch_all(&pool)
    .await?;
    let mean_bytes = |range: std::ops::RangeInclusive<i32>| {
        let window: Vec<f64> = per_iteration
            .iter()
            .filter(|(k, _)| range.contains(k))
            .map(|(_, bytes)| *bytes as f64)
            .collect();
        window.iter().sum::<f64>() / window.len().max(1) as f64
    };
    let last = i32::try_from(items)?;
    let window = i32::try_from(WINDOW)?;
    let executions = loop_executions(items) as f64;
    println!(
        "\n| e: loop of {items} items (1 worker) | node executions/s | first {WINDOW} iterations | last {WINDOW} iterations | log bytes/iteration, first {WINDOW} | last {WINDOW} | commits/node | WAL bytes/node |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {seconds:.2} s | {:.0} | {first_ms:.0} ms | {last_ms:.0} ms ({:.2}×) | {:.0} | {:.0} | {:.2} | {:.0} |",
        executions / seconds,
        last_ms / first_ms.max(1e-9),
        mean_bytes(1..=window),
        mean_bytes(last - window + 1..=last),
        drained.commits / executions,
        drained.wal_bytes / executions,
    );
    println!(
        "CPU: {}",
        cpu::describe(drained.postgres_cpu, drained.worker_cpu, seconds)
    );
    pool.close().await;
    Ok(())
}
