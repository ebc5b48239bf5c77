//! `jet bench listeners`: CDC from a source database into workflow instances, on a private
//! durable cluster with `wal_level = logical` (the platform and the source are two databases
//! of it), with one `jet-worker --roles listeners` process.
//!
//! - Latency: source commit → workflow instance created, p50/p99, idle (one insert every
//!   20 ms) and under load (a writer inserting as fast as it can).
//! - Throughput: the writer's one-row autocommit inserts for `--seconds`; changes captured per
//!   second against produced, the lag left when the writer stops, and what each change cost the
//!   platform: commits and WAL bytes (the source's own WAL for the same inserts, measured
//!   without a consumer, is subtracted).
//! - Webhook ingest: 16 concurrent senders posting to a `jet-api` process for `--seconds`;
//!   accepted events/s (each 202 is sent after its event is committed) and request latency.

use super::super::flag_value;
use super::{pct, worker_bin};
use anyhow::Context;
use jet::pg::{Access, Cluster, Durability};
use jet_shared::datasource::{self, DataRuntime, NewDatasource};
use jet_shared::ids::TenantId;
use serde_json::json;
use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

struct Setup {
    platform: PgPool,
    source: PgPool,
    tenant: TenantId,
    workflow: Uuid,
    listener: Uuid,
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = flag_value(args, "--seconds")?
        .map(str::parse)
        .transpose()?
        .unwrap_or(10);
    let bin = worker_bin()?;
    let dir = std::env::temp_dir().join(format!("jet-bench-listeners-{}", Uuid::new_v4().simple()));
    let mut cluster = Cluster::prepare(&dir, Durability::Durable, Access::Trust, None)?;
    cluster.start()?;
    let result = bench(&cluster, &bin, seconds).await;
    let _ = cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench(cluster: &Cluster, bin: &std::path::Path, seconds: u64) -> anyhow::Result<()> {
    let vault = jet_shared::crypto::VaultKey::generate();
    let setup = setup(cluster, &vault).await?;
    println!(
        "jet bench listeners: CDC (pgoutput, SQL polling) → trigger_workflow, 1 listener worker"
    );

    // The source's own WAL per insert, with nobody consuming, to subtract later.
    let (source_wal, _) = write_for(&setup.source, Duration::from_secs(2)).await?;
    let source_wal_per_insert = source_wal.wal_bytes as f64 / source_wal.rows.max(1) as f64;

    let data = DataRuntime::new(
        Some(vault.clone()),
        jet_shared::datasource::network::DenyList::new(&[], None),
    );
    provision(&setup, &data).await?;
    let worker = Worker(
        Command::new(bin)
            .args(["--roles", "listeners"])
            .env("DATABASE_URL", cluster.url("jet_bench_platform"))
            .env("VAULT_ENCRYPTION_KEY", vault.to_hex())
            .env("JET_DATASOURCE_DENY_HOSTS", "none")
            .env("JET_WORKER_ID", "bench-listeners")
            .env("JET_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting jet-worker")?,
    );
    wait_until(
        "the listener to connect",
        Duration::from_secs(60),
        || async {
            let connected: Option<bool> = sqlx::query_scalar(
            r#"SELECT "connectedAt" IS NOT NULL FROM "tblListenerHolds" WHERE "listenerID" = $1"#,
        )
        .bind(setup.listener)
        .fetch_optional(&setup.platform)
        .await?;
            Ok(connected == Some(true))
        },
    )
    .await?;
    // Warm up: the first changes pay for connections and caches.
    for _ in 0..20 {
        insert_one(&setup.source).await?;
    }
    wait_for_instances(&setup, 20).await?;

    println!("\n| scenario | changes | captured | changes/s | p50 commit→instance | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    // Idle: one change every 20 ms.
    let before = instance_count(&setup).await?;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(insert_one(&setup.source).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_instances(&setup, before + ids.len() as i64).await?;
    let lags = latencies(&setup, &ids).await?;
    println!(
        "| idle (1 insert / 20 ms) | {} | {} | - | {:.1} ms | {:.1} ms | {:.1} ms |",
        ids.len(),
        lags.len(),
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.iter().copied().fold(0.0, f64::max)
    );

    // Load: a writer as fast as it can.
    let before = instance_count(&setup).await?;
    let platform_before = db_stats(&setup.platform).await?;
    let started = Instant::now();
    let (written, ids) = write_for(&setup.source, Duration::from_secs(seconds)).await?;
    let writing = started.elapsed();
    let captured_when_writer_stopped = instance_count(&setup).await? - before;
    let drained = wait_for_instances(&setup, before + written.rows).await?;
    let total = started.elapsed();
    let platform_after = db_stats(&setup.platform).await?;
    let lags = latencies(&setup, &ids).await?;
    let produced_rate = written.rows as f64 / writing.as_secs_f64();
    let consumed_rate = written.rows as f64 / total.as_secs_f64();
    println!(
        "| load ({seconds} s writer) | {} | {} | {:.0} produced, {:.0} consumed ({:.2}×) | {:.1} ms | {:.1} ms | {:.1} ms |",
        written.rows,
        lags.len(),
        produced_rate,
        consumed_rate,
        consumed_rate / produced_rate,
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.iter().copied().fold(0.0, f64::max)
    );
    let changes = written.rows.max(1) as f64;
    let platform_wal = (platform_after.wal_bytes - platform_before.wal_bytes) as f64
        - source_wal_per_insert * written.rows as f64;
    println!(
        "\nwhen the writer stopped {captured_when_writer_stopped} of {} changes had instances; the rest followed in {:.1} s.",
        written.rows,
        drained.as_secs_f64()
    );
    println!(
        "platform cost per change: {:.2} commits, {:.0} WAL bytes (cluster WAL minus the source's {:.0} bytes per insert)",
        (platform_after.commits - platform_before.commits) as f64 / changes,
        platform_wal / changes,
        source_wal_per_insert
    );
    drop(worker);
    webhooks(cluster, &vault, seconds).await
}

/// 16 senders posting webhook deliveries as fast as they can to a `jet-api` process.
async fn webhooks(
    cluster: &Cluster,
    vault: &jet_shared::crypto::VaultKey,
    seconds: u64,
) -> anyhow::Result<()> {
    const SENDERS: usize = 16;
    let api_bin = worker_bin()?.with_file_name("jet-api");
    anyhow::ensure!(
        api_bin.is_file(),
        "{} is missing: build the binaries first",
        api_bin.display()
    );
    let platform = jet_shared::db::connect(&cluster.url("jet_bench_platform"), 4).await?;
    let boot = jet_shared::bootstrap::bootstrap(&platform, "webhooks", None).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _api = Worker(
        Command::new(&api_bin)
            .env("DATABASE_URL", cluster.url("jet_bench_platform"))
            .env("VAULT_ENCRYPTION_KEY", vault.to_hex())
            .env("JET_API_ADDR", format!("127.0.0.1:{port}"))
            .env("JET_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting jet-api")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let auth = format!("api_key {}", boot.api_key.expose());
    let tenant = boot.tenant.tenant_id.0;
    wait_until("jet-api to answer", Duration::from_secs(30), || async {
        Ok(client.get(format!("{base}/health")).send().await.is_ok())
    })
    .await?;
    let ds: serde_json::Value = client
        .post(format!("{base}/api/v1/tenants/{tenant}/datasources"))
        .header("Authorization", &auth)
        .json(&json!({"datasourceTitle": "hooks", "datasourceType": "webhook", "datasourceOptions": {}}))
        .send()
        .await?
        .json()
        .await?;
    let token = ds["webhookCredentials"]["webhookToken"]
        .as_str()
        .context("the webhook datasource's token")?
        .to_owned();
    let listener: serde_json::Value = client
        .post(format!("{base}/api/v1/tenants/{tenant}/listeners"))
        .header("Authorization", &auth)
        .json(&json!({"listenerTitle": "hooks", "listenerType": "webhook", "datasourceID": ds["datasourceID"],
                      "endpointPath": "bench/orders"}))
        .send()
        .await?
        .json()
        .await?;
    let id = listener["listenerID"].as_str().context("listener id")?;
    client
        .post(format!(
            "{base}/api/v1/tenants/{tenant}/listeners/{id}/activate"
        ))
        .header("Authorization", &auth)
        .send()
        .await?
        .error_for_status()?;
    let url = format!("{base}/webhooks/v1/inbound/{tenant}/bench/orders");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        senders.push(tokio::spawn(async move {
            let (mut accepted, mut refused, mut latencies) = (0u64, 0u64, Vec::new());
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let sent = Instant::now();
                let resp = client
                    .post(&url)
                    .header("X-Webhook-Token", &token)
                    .json(&json!({"sender": sender, "n": n, "total": 12.5}))
                    .send()
                    .await;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => accepted += 1,
                    _ => refused += 1,
                }
            }
            (accepted, refused, latencies)
        }));
    }
    let (mut accepted, mut refused, mut latencies) = (0u64, 0u64, Vec::new());
    for sender in senders {
        let (a, r, l) = sender.await?;
        accepted += a;
        refused += r;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblListenerInbox" WHERE "source" = 'webhook'"#)
            .fetch_one(&platform)
            .await?;
    println!(
        "\nwebhook ingest, {SENDERS} senders for {seconds} s: {:.0} accepted events/s (durable 202), request p50 {:.1} ms, p99 {:.1} ms; {refused} refused; {stored} events stored for {accepted} accepted",
        accepted as f64 / elapsed,
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
    );
    anyhow::ensure!(
        stored as u64 == accepted,
        "every accepted delivery is stored"
    );
    Ok(())
}

async fn setup(cluster: &Cluster, vault: &jet_shared::crypto::VaultKey) -> anyhow::Result<Setup> {
    let admin = jet_shared::db::connect(&cluster.url("postgres"), 2).await?;
    for db in ["jet_bench_platform", "jet_bench_source"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await?;
    }
    let platform = jet_shared::db::connect(&cluster.url("jet_bench_platform"), 8).await?;
    jet_shared::db::migrate(&platform).await?;
    let source = jet_shared::db::connect(&cluster.url("jet_bench_source"), 8).await?;
    sqlx::query(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric NOT NULL, note text, created_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(&source)
    .await?;
    let boot = jet_shared::bootstrap::bootstrap(&platform, "bench", None).await?;
    let tenant = boot.tenant.tenant_id;
    let workflow = super::shapes::save(&platform, tenant, super::shapes::Shape::Chain(2)).await?;
    let data = DataRuntime::new(
        Some(vault.clone()),
        jet_shared::datasource::network::DenyList::new(&[], None),
    );
    let mut conn = platform.acquire().await?;
    let ds = datasource::insert(
        &mut conn,
        &data,
        tenant,
        &NewDatasource {
            title: "source".into(),
            datasource_type: "postgresql".into(),
            description: None,
            tags: Vec::new(),
            options: json!({"connectionOption": "connectionString", "connectionString": cluster.url("jet_bench_source")}),
        },
        Default::default(),
    )
    .await?;
    let listener: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerType", "listenerConfig", "status")
           VALUES ($1, $2, 'orders', 'postgresql', '{"mode": "cdc", "tables": ["public.orders"], "operations": ["INSERT"]}', 'inactive')
           RETURNING "listenerID""#,
    )
    .bind(tenant)
    .bind(ds.datasource_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblListenerActions" ("listenerID", "actionType", "actionConfig")
           VALUES ($1, 'trigger_workflow', jsonb_build_object('workflowID', $2::text, 'inputValues', '{"id": "{{event.new.id}}"}'::jsonb))"#,
    )
    .bind(listener)
    .bind(workflow.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(Setup {
        platform,
        source,
        tenant,
        workflow,
        listener,
    })
}

/// Creates the publication and slot, then activates the listener.
async fn provision(setup: &Setup, data: &DataRuntime) -> anyhow::Result<()> {
    let ds = datasource::get(
        &setup.platform,
        data,
        setup.tenant,
        listener_datasource(setup).await?,
    )
    .await?;
    let kind = jet_shared::listener::Kind::parse(
        "postgresql",
        &json!({"mode": "cdc", "tables": ["public.orders"], "operations": ["INSERT"]}),
    )?;
    let jet_shared::listener::Kind::Cdc(config) = kind else {
        anyhow::bail!("not cdc")
    };
    let mut conn = setup.platform.acquire().await?;
    jet_shared::listener::cdc::provision(&mut conn, data, &ds.options, setup.listener, &config)
        .await?;
    sqlx::query(r#"UPDATE "tblListeners" SET "status" = 'active', "updatedAt" = now() WHERE "listenerID" = $1"#)
        .bind(setup.listener)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn listener_datasource(setup: &Setup) -> anyhow::Result<Uuid> {
    Ok(
        sqlx::query_scalar(r#"SELECT "datasourceID" FROM "tblListeners" WHERE "listenerID" = $1"#)
            .bind(setup.listener)
            .fetch_one(&setup.platform)
            .await?,
    )
}

async fn insert_one(source: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("INSERT INTO orders (total, note) VALUES (12.50, 'bench') RETURNING id")
            .fetch_one(source)
            .await?,
    )
}

struct Written {
    rows: i64,
    wal_bytes: i64,
}

/// One-row autocommit inserts, one connection, as fast as it goes for `how_long`.
async fn write_for(source: &PgPool, how_long: Duration) -> anyhow::Result<(Written, Vec<i64>)> {
    let wal_before = wal_lsn(source).await?;
    let deadline = Instant::now() + how_long;
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        ids.push(insert_one(source).await?);
    }
    let wal_bytes = wal_lsn(source).await? - wal_before;
    Ok((
        Written {
            rows: ids.len() as i64,
            wal_bytes,
        },
        ids,
    ))
}

async fn wal_lsn(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
            .fetch_one(pool)
            .await?,
    )
}

struct DbStats {
    commits: i64,
    wal_bytes: i64,
}

async fn db_stats(platform: &PgPool) -> anyhow::Result<DbStats> {
    let _ = sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(platform)
        .await;
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(platform)
    .await?;
    Ok(DbStats {
        commits,
        wal_bytes: wal_lsn(platform).await?,
    })
}

async fn instance_count(setup: &Setup) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "workflowID" = $1"#,
        )
        .bind(setup.workflow)
        .fetch_one(&setup.platform)
        .await?,
    )
}

async fn wait_for_instances(setup: &Setup, n: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    wait_until("the instances", Duration::from_secs(600), || async {
        Ok(instance_count(setup).await? >= n)
    })
    .await?;
    Ok(started.elapsed())
}

/// Commit → instance latency of the given source rows, in milliseconds (both databases share
/// the cluster's clock: the row's `created_at` is its insert time, the instance's `createdAt`
/// the start of the transaction that created it).
async fn latencies(setup: &Setup, ids: &[i64]) -> anyhow::Result<Vec<f64>> {
    let inserted: Vec<(i64, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, created_at FROM orders WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&setup.source)
            .await?;
    let created: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        r#"SELECT l."payload" -> 'input' ->> 'id', i."createdAt" FROM "tblWorkflowInstances" i
           JOIN "tblWorkflowInstanceLogs" l ON l."instanceID" = i."instanceID" AND l."eventType" = 'INPUT_SET'
           WHERE i."workflowID" = $1"#,
    )
    .bind(setup.workflow)
    .fetch_all(&setup.platform)
    .await?;
    let by_id: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        created.into_iter().collect();
    Ok(inserted
        .iter()
        .filter_map(|(id, at)| {
            by_id
                .get(&id.to_string())
                .map(|made| (*made - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect())
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
