//! `jet bench`: engine throughput and latency on a local PostgreSQL, for 1 and 2 `jet-worker`
//! processes. Run the release build (`cargo build --release --bins && target/release/jet
//! bench`) right after `bash ../shared/bench/peers/run.sh`: disk speed swings, so only figures
//! of the same sitting compare.
//!
//! Scenarios: (a) 10,000 instances of start→end, (b) 1,000 instances of a 10-node chain, both
//! enqueued first and then drained; enqueue-to-first-node latency at idle and back-to-back;
//! PostgreSQL commits and WAL bytes per node execution.

use super::flag_value;
use anyhow::Context;
use jet_shared::ids::TenantId;
use jet_shared::workflow::definition;
use jet_shared::workflow::graph::{EditorEdge, EditorNode};
use jet_shared::workflow::instance;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BENCH_DB: &str = "jet_bench";

/// The `jet-worker` binary beside this one; warns when this is a debug build.
pub(super) fn worker_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .context("no binary dir")?
        .join("jet-worker");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --bins` first",
        bin.display()
    );
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are only meaningful from `target/release/jet bench`"
        );
    }
    Ok(bin)
}

/// A connection to the bench server, for creating and dropping the bench database.
pub(super) async fn connect_admin(server: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(server)
        .await
        .with_context(|| format!("connecting to {server} (set JET_BENCH_DATABASE_URL)"))
}

#[allow(clippy::disallowed_methods)] // a benchmark knob, not service configuration
pub(super) fn server_url() -> String {
    std::env::var("JET_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub(super) fn db_url(server: &str) -> String {
    let (base, _) = server.rsplit_once('/').unwrap_or((server, ""));
    format!("{base}/{BENCH_DB}")
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "cron") {
        return super::bench_cron::run(&args[1..]).await;
    }
    if args.first().is_some_and(|a| a == "listeners") {
        return super::bench_listeners::run(&args[1..]).await;
    }
    let scale: usize = flag_value(args, "--scale")?
        .map(str::parse)
        .transpose()?
        .unwrap_or(1);
    let server = server_url();
    let bin = worker_bin()?;
    let mut admin = connect_admin(&server).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut admin)
        .await?;
    println!(
        "jet bench: PostgreSQL {version} (synchronous_commit={sync}), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let mut rows = Vec::new();
    for workers in [1usize, 2] {
        for (label, nodes, instances) in [
            ("a: start→end", 2usize, 10_000 / scale),
            ("b: 10-node chain", 10, 1_000 / scale),
        ] {
            let (pool, tenant, workflow) = fresh_db(&mut admin, &server, nodes).await?;
            enqueue(&pool, tenant, workflow, instances).await?;
            let before = stats(&pool).await?;
            let started = Instant::now();
            let fleet = spawn_workers(&bin, &db_url(&server), workers)?;
            wait_done(&pool, instances).await?;
            let elapsed = started.elapsed();
            drop(fleet);
            let after = stats(&pool).await?;
            let executions = (instances * nodes) as f64;
            rows.push(format!(
                "| {workers} | {label} | {instances} | {:.2} s | {:.0} | {:.0} | {:.2} | {:.0} |",
                elapsed.as_secs_f64(),
                executions / elapsed.as_secs_f64(),
                instances as f64 / elapsed.as_secs_f64(),
                (after.commits - before.commits) as f64 / executions,
                (after.wal_bytes - before.wal_bytes) as f64 / executions,
            ));
            pool.close().await;
        }
    }
    println!(
        "\n| worker processes | scenario | instances | drain time | node executions/s | instances/s | commits/node | WAL bytes/node |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }

    let (pool, tenant, workflow) = fresh_db(&mut admin, &server, 2).await?;
    let fleet = spawn_workers(&bin, &db_url(&server), 1)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = latencies(
        &pool,
        tenant,
        workflow,
        50,
        Some(Duration::from_millis(300)),
    )
    .await?;
    let b2b = latencies(&pool, tenant, workflow, 200, None).await?;
    drop(fleet);
    println!("\n| enqueue → first node completed (1 worker) | p50 | p99 | n |");
    println!("|---|---|---|---|");
    println!(
        "| idle (300 ms between runs) | {:.1} ms | {:.1} ms | {} |",
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle.len()
    );
    println!(
        "| back-to-back | {:.1} ms | {:.1} ms | {} |",
        pct(&b2b, 0.5),
        pct(&b2b, 0.99),
        b2b.len()
    );
    pool.close().await;
    drop_db(&mut admin).await
}

/// Drops the bench database.
pub(super) async fn drop_db(admin: &mut PgConnection) -> anyhow::Result<()> {
    let drop = format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(admin)
        .await?;
    Ok(())
}

/// A fresh bench database with a tenant and a chain workflow of `nodes` nodes.
pub(super) async fn fresh_db(
    admin: &mut PgConnection,
    server: &str,
    nodes: usize,
) -> anyhow::Result<(PgPool, TenantId, Uuid)> {
    let drop = format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&mut *admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {BENCH_DB}")))
        .execute(&mut *admin)
        .await?;
    let pool = jet_shared::db::connect(&db_url(server), 8).await?;
    jet_shared::db::migrate(&pool).await?;
    let boot = jet_shared::bootstrap::bootstrap(&pool, "bench", None).await?;
    let workflow = chain_workflow(&pool, boot.tenant.tenant_id, nodes).await?;
    Ok((pool, boot.tenant.tenant_id, workflow))
}

/// Saves a chain workflow of `nodes` nodes (start → join… → end) in `tenant`.
pub(super) async fn chain_workflow(
    pool: &PgPool,
    tenant: TenantId,
    nodes: usize,
) -> anyhow::Result<Uuid> {
    let ids: Vec<String> = (0..nodes).map(|_| Uuid::new_v4().to_string()).collect();
    let editor_nodes: Vec<EditorNode> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (t, data) = match i {
                0 => ("start", json!({})),
                i if i == nodes - 1 => ("end", json!({})),
                _ => ("join", json!({})),
            };
            EditorNode {
                id: id.clone(),
                node_type: t.into(),
                data,
                position: None,
            }
        })
        .collect();
    let edges: Vec<EditorEdge> = ids
        .windows(2)
        .map(|w| EditorEdge {
            source: w[0].clone(),
            target: w[1].clone(),
            source_handle: None,
            target_handle: None,
        })
        .collect();
    let mut tx = pool.begin().await?;
    let wf = definition::insert(
        &mut tx,
        tenant,
        "bench",
        &json!({}),
        &editor_nodes,
        &edges,
        Default::default(),
    )
    .await?;
    tx.commit().await?;
    Ok(wf.workflow_id)
}

/// Creates `n` instances (instance row, INPUT_SET, start command), 500 per transaction.
async fn enqueue(pool: &PgPool, tenant: TenantId, workflow: Uuid, n: usize) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let mut tx = pool.begin().await?;
        for _ in 0..left.min(500) {
            instance::create(&mut tx, tenant, workflow, &json!({})).await?;
        }
        tx.commit().await?;
        left = left.saturating_sub(500);
    }
    Ok(())
}

/// Worker processes; dropping the fleet stops them (also when the bench fails midway).
pub(super) struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn spawn_workers(bin: &PathBuf, url: &str, n: usize) -> anyhow::Result<Fleet> {
    spawn_roles(bin, url, n, "commands,nodes")
}

/// `n` worker processes running `roles`.
pub(super) fn spawn_roles(
    bin: &PathBuf,
    url: &str,
    n: usize,
    roles: &str,
) -> anyhow::Result<Fleet> {
    let mut fleet = Fleet(Vec::with_capacity(n));
    for i in 0..n {
        let child = Command::new(bin)
            .args(["--roles", roles])
            .env("DATABASE_URL", url)
            .env("JET_WORKER_ID", format!("bench-{i}"))
            .env("JET_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting jet-worker")?;
        fleet.0.push(child);
    }
    Ok(fleet)
}

async fn wait_done(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let done: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "status" = 'COMPLETED'"#,
        )
        .fetch_one(pool)
        .await?;
        if done as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {n} instances completed in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Stats {
    commits: i64,
    wal_bytes: i64,
}

async fn stats(pool: &PgPool) -> anyhow::Result<Stats> {
    // Statistics are flushed lazily; give them a moment and read a fresh snapshot.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let (commits, wal_bytes): (i64, i64) = sqlx::query_as(
        "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Stats { commits, wal_bytes })
}

/// Enqueue → start node completed, in ms, from the log's transaction timestamps.
async fn latencies(
    pool: &PgPool,
    tenant: TenantId,
    workflow: Uuid,
    n: usize,
    gap: Option<Duration>,
) -> anyhow::Result<Vec<f64>> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tx = pool.begin().await?;
        let id = instance::create(&mut tx, tenant, workflow, &json!({})).await?;
        tx.commit().await?;
        ids.push(id);
        if let Some(gap) = gap {
            wait_instance(pool, id).await?;
            tokio::time::sleep(gap).await;
        }
    }
    for id in &ids {
        wait_instance(pool, *id).await?;
    }
    let rows: Vec<f64> = sqlx::query_scalar(
        r#"SELECT extract(epoch FROM (SELECT min(c."createdAt") FROM "tblWorkflowInstanceLogs" c
                                      WHERE c."instanceID" = i."instanceID" AND c."eventType" = 'NODE_COMPLETED')
                                     - i."createdAt")::float8 * 1000
           FROM "tblWorkflowInstances" i WHERE i."instanceID" = ANY($1)"#,
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

async fn wait_instance(pool: &PgPool, id: Uuid) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: String = sqlx::query_scalar(
            r#"SELECT "status" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
        )
        .bind(id)
        .fetch_one(pool)
        .await?;
        if status != "RUNNING" {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "instance {id} did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(super) fn pct(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}
