//! `jet bench` scenario (f): the API's own rate. Eight clients call `POST …/execute` on a
//! `jet-api` process as fast as it answers; no worker runs, so this is the cost of creating a
//! run (auth, validation, the instance, its first log row and its start command, one commit).

use super::cpu;
use super::shapes::{self, Shape};
use super::{fresh_db, pct, worker_bin};
use anyhow::Context;
use serde_json::json;
use sqlx::PgConnection;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;

/// A `jet-api` process, stopped when dropped.
struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Returns instances created per second.
pub(super) async fn run(
    admin: &mut PgConnection,
    server: &str,
    requests: usize,
) -> anyhow::Result<f64> {
    let (pool, _, _) = fresh_db(admin, server, 2).await?;
    // A tenant of its own: `fresh_db`'s bootstrap does not hand out its API key.
    let boot = jet_shared::bootstrap::bootstrap(&pool, "http bench", None).await?;
    let workflow = shapes::save(&pool, boot.tenant.tenant_id, Shape::Chain(2)).await?;
    let api_bin = worker_bin()?.with_file_name("jet-api");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let api = Api(Command::new(&api_bin)
        .env("DATABASE_URL", super::db_url(server))
        .env(
            "VAULT_ENCRYPTION_KEY",
            jet_shared::crypto::VaultKey::generate().to_hex(),
        )
        .env("JET_API_ADDR", format!("127.0.0.1:{port}"))
        .env("JET_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", api_bin.display()))?);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = Instant::now();
    while client.get(format!("{base}/health")).send().await.is_err() {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(30),
            "jet-api did not answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!(
        "{base}/api/v1/tenants/{}/workflows/{workflow}/execute",
        boot.tenant.tenant_id.0
    );
    let auth = format!("api_key {}", boot.api_key.expose());
    let postgres = cpu::Postgres::find(&pool).await;
    let postgres_before = postgres.as_ref().map(cpu::Postgres::seconds);
    let api_before = cpu::processes_seconds([api.0.id()]);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, auth, next) = (client.clone(), url.clone(), auth.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let (mut created, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let sent = Instant::now();
                let resp = client
                    .post(&url)
                    .header("Authorization", &auth)
                    .json(&json!({"inputValues": {}}))
                    .send()
                    .await;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                match resp {
                    Ok(r) if r.status().is_success() => created += 1,
                    _ => failed += 1,
                }
            }
            (created, failed, latencies)
        }));
    }
    let (mut created, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
    for c in clients {
        let (c, f, l) = c.await?;
        created += c;
        failed += f;
        latencies.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    let api_cpu = cpu::processes_seconds([api.0.id()]) - api_before;
    let postgres_cpu = postgres
        .as_ref()
        .zip(postgres_before)
        .map(|(p, before)| p.seconds() - before);
    drop(api);
    let stored: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblWorkflowInstances""#)
        .fetch_one(&pool)
        .await?;
    let rate = created as f64 / seconds;
    println!(
        "\n| f: POST …/execute over HTTP, {CLIENTS} clients | instances created/s | p50 | p99 | failed |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {created} in {seconds:.2} s | {rate:.0} | {:.1} ms | {:.1} ms | {failed} |",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
    );
    println!(
        "CPU: {} (the workers' column is jet-api here)",
        cpu::describe(postgres_cpu, api_cpu, seconds)
    );
    anyhow::ensure!(
        stored as usize == created,
        "{stored} instances stored for {created} created"
    );
    pool.close().await;
    Ok(rate)
}
