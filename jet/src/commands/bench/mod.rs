//! `jet bench`: engine throughput and latency on a local PostgreSQL, for 1 and 2 `jet-worker`
//! processes. Run the release build (`cargo build --release --bins && target/release/jet bench
//! --peers`): `--peers` runs graphile-worker on the same server right after, because disk speed
//! swings and only figures of the same sitting compare.
//!
//! Drains (enqueued first, then drained): (a) 10,000 instances of start→end, (b) 1,000 of a
//! 10-node chain, (c) 500 of 10 javascript steps, (d) 50 of a fanout of 100 branches into one
//! join; each with commits and WAL bytes per node execution and the CPU seconds PostgreSQL and
//! the workers used. Then enqueue-to-first-node latency at idle and back-to-back, (e) one loop
//! of 2,000 iterations (is the last hundred as fast as the first?), and (f) `POST …/execute`
//! over HTTP from 8 clients.

mod cpu;
mod cron;
mod http;
mod listeners;
mod long_loop;
mod peers;
mod shapes;

use super::flag_value;
use anyhow::Context;
use jet_shared::ids::TenantId;
use jet_shared::workflow::instance;
use serde_json::json;
use shapes::Shape;
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
        return cron::run(&args[1..]).await;
    }
    if args.first().is_some_and(|a| a == "listeners") {
        return listeners::run(&args[1..]).await;
    }
    let scale: usize = flag_value(args, "--scale")?
        .map(str::parse)
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let peers = args.iter().any(|a| a == "--peers");
    WAL_DETAIL.store(
        args.iter().any(|a| a == "--wal-detail"),
        std::sync::atomic::Ordering::Relaxed,
    );
    // `--only a,e,latency`: just those scenarios (a–f by letter, `latency`), to rerun one.
    let only: Option<Vec<String>> =
        flag_value(args, "--only")?.map(|list| list.split(',').map(str::to_owned).collect());
    let wanted = |scenario: &str| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|s| s == scenario))
    };
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
    let mut figures = Figures::default();

    let drains = [
        ("a: start→end", Shape::Chain(2), 10_000 / scale),
        ("b: 10-node chain", Shape::Chain(10), 1_000 / scale),
        ("c: 10 javascript steps", Shape::Javascript(10), 500 / scale),
        ("d: fanout 100 → join", Shape::Fanout(100), 50 / scale),
    ];
    let mut rows = Vec::new();
    for workers in [1usize, 2] {
        for (label, shape, instances) in drains {
            if !wanted(&label[..1]) {
                continue;
            }
            let (pool, tenant, _) = fresh_db(&mut admin, &server, 2).await?;
            let workflow = shapes::save(&pool, tenant, shape).await?;
            enqueue(&pool, tenant, workflow, instances, &json!({})).await?;
            let drained = drain(&pool, &bin, &server, workers, instances).await?;
            let executions = (instances * shape.executions()) as f64;
            let rate = executions / drained.seconds;
            if label.starts_with("a:") {
                figures.start_end = rate.max(figures.start_end);
                if workers == 1 {
                    figures.start_end_one = rate;
                    figures.wal_per_node = drained.wal_bytes / executions;
                    figures.commits_per_node = drained.commits / executions;
                }
            }
            rows.push(format!(
                "| {workers} | {label} | {instances} | {:.2} s | {rate:.0} | {:.0} | {:.2} | {:.0} | {} | {:.1} |",
                drained.seconds,
                instances as f64 / drained.seconds,
                drained.commits / executions,
                drained.wal_bytes / executions,
                drained
                    .postgres_cpu
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1}")),
                drained.worker_cpu,
            ));
            pool.close().await;
        }
    }
    println!(
        "\n| worker processes | scenario | instances | drain time | node executions/s | instances/s | commits/node | WAL bytes/node | PostgreSQL CPU s | worker CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }

    if wanted("latency") {
        latency(&mut admin, &server, &bin, &mut figures).await?;
    }
    if wanted("e") {
        long_loop::run(&mut admin, &server, &bin, 2_000 / scale).await?;
    }
    if wanted("f") {
        figures.http_execute = http::run(&mut admin, &server, 4_000 / scale).await?;
    }
    drop_db(&mut admin).await?;
    if peers {
        peers::run(&mut admin, &server, &figures).await?;
    }
    Ok(())
}

/// Enqueue → first node completed with one worker, idle and back-to-back.
async fn latency(
    admin: &mut PgConnection,
    server: &str,
    bin: &PathBuf,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let (pool, tenant, workflow) = fresh_db(admin, server, 2).await?;
    let fleet = spawn_workers(bin, &db_url(server), 1)?;
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
    figures.latency_idle_p50 = pct(&idle, 0.5);
    figures.latency_b2b_p50 = pct(&b2b, 0.5);
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
    Ok(())
}

/// The figures `jet bench --peers` sets beside graphile-worker's; NaN for a scenario not run.
pub(super) struct Figures {
    /// Best start→end node executions/s over 1 and 2 worker processes.
    pub start_end: f64,
    /// start→end node executions/s with one worker process.
    pub start_end_one: f64,
    pub wal_per_node: f64,
    pub commits_per_node: f64,
    pub latency_idle_p50: f64,
    pub latency_b2b_p50: f64,
    /// Instances created per second over HTTP by 8 clients.
    pub http_execute: f64,
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            start_end: f64::NAN,
            start_end_one: f64::NAN,
            wal_per_node: f64::NAN,
            commits_per_node: f64::NAN,
            latency_idle_p50: f64::NAN,
            latency_b2b_p50: f64::NAN,
            http_execute: f64::NAN,
        }
    }
}

/// What one drain cost: wall time, PostgreSQL's work, the workers' CPU.
pub(super) struct Drained {
    pub seconds: f64,
    pub commits: f64,
    pub wal_bytes: f64,
    pub postgres_cpu: Option<f64>,
    pub worker_cpu: f64,
}

/// Starts `workers` worker processes on an enqueued backlog and waits until `instances` ended.
pub(super) async fn drain(
    pool: &PgPool,
    bin: &PathBuf,
    server: &str,
    workers: usize,
    instances: usize,
) -> anyhow::Result<Drained> {
    let before = stats(pool).await?;
    let postgres = cpu::Postgres::find(pool).await;
    let postgres_before = postgres.as_ref().map(cpu::Postgres::seconds);
    let started = Instant::now();
    let fleet = spawn_workers(bin, &db_url(server), workers)?;
    wait_done(pool, instances).await?;
    let seconds = started.elapsed().as_secs_f64();
    let worker_cpu = fleet.cpu_seconds();
    let postgres_cpu = postgres
        .as_ref()
        .zip(postgres_before)
        .map(|(p, before)| p.seconds() - before);
    drop(fleet);
    let after = stats(pool).await?;
    if WAL_DETAIL.load(std::sync::atomic::Ordering::Relaxed) {
        let executions: f64 = sqlx::query_scalar(
            r#"SELECT count(*)::float8 FROM "tblWorkflowInstanceLogs" WHERE "eventType" = 'NODE_COMPLETED'"#,
        )
        .fetch_one(pool)
        .await?;
        print_wal_detail(pool, &before.lsn, &after.lsn, executions.max(1.0)).await?;
    }
    Ok(Drained {
        seconds,
        commits: (after.commits - before.commits) as f64,
        wal_bytes: (after.wal_bytes - before.wal_bytes) as f64,
        postgres_cpu,
        worker_cpu,
    })
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
    let workflow = shapes::save(&pool, boot.tenant.tenant_id, Shape::Chain(nodes)).await?;
    Ok((pool, boot.tenant.tenant_id, workflow))
}

/// Creates `n` instances (instance row, INPUT_SET, start command), 500 per transaction.
pub(super) async fn enqueue(
    pool: &PgPool,
    tenant: TenantId,
    workflow: Uuid,
    n: usize,
    inputs: &serde_json::Value,
) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let mut tx = pool.begin().await?;
        for _ in 0..left.min(500) {
            instance::create(&mut tx, tenant, workflow, inputs).await?;
        }
        tx.commit().await?;
        left = left.saturating_sub(500);
    }
    Ok(())
}

/// Worker processes; dropping the fleet stops them (also when the bench fails midway).
pub(super) struct Fleet(Vec<Child>);

impl Fleet {
    /// CPU seconds the worker processes have used so far.
    pub(super) fn cpu_seconds(&self) -> f64 {
        cpu::processes_seconds(self.0.iter().map(Child::id))
    }
}

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

pub(super) fn spawn_workers(bin: &PathBuf, url: &str, n: usize) -> anyhow::Result<Fleet> {
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

pub(super) async fn wait_done(pool: &PgPool, n: usize) -> anyhow::Result<()> {
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

pub(super) struct Stats {
    pub commits: i64,
    pub wal_bytes: i64,
    /// Where the WAL stood, for `--wal-detail`.
    pub lsn: String,
}

/// Set by `--wal-detail`: each drain also prints its WAL by record type (pg_walinspect).
static WAL_DETAIL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The WAL written between two LSNs by record type, per node execution (needs the
/// `pg_walinspect` extension, PostgreSQL 15+, and the segments still on disk).
async fn print_wal_detail(
    pool: &PgPool,
    from: &str,
    to: &str,
    executions: f64,
) -> anyhow::Result<()> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .execute(pool)
        .await?;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        r#"SELECT "resource_manager/record_type", count, record_size, fpi_size
           FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, true)
           WHERE count > 0 ORDER BY record_size + fpi_size DESC LIMIT 12"#,
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    println!("  | WAL record type | records/node | record bytes/node | page image bytes/node |");
    println!("  |---|---|---|---|");
    for (kind, count, record, fpi) in rows {
        println!(
            "  | {kind} | {:.2} | {:.0} | {:.0} |",
            count as f64 / executions,
            record as f64 / executions,
            fpi as f64 / executions
        );
    }
    Ok(())
}

pub(super) async fn stats(pool: &PgPool) -> anyhow::Result<Stats> {
    // Statistics are flushed lazily; give them a moment and read a fresh snapshot.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let (commits, wal_bytes, lsn): (i64, i64, String) = sqlx::query_as(
        "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, pg_current_wal_lsn()::text
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Stats {
        commits,
        wal_bytes,
        lsn,
    })
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
