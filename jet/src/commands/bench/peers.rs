//! `jet bench --peers`: graphile-worker, pinned in `bench/peers/package.json`, measured on the
//! same PostgreSQL right after `jet bench`'s own scenarios, and one table of ratios. Disk speed
//! swings on shared machines, so only figures of one sitting compare; this makes every figure
//! we publish reproducible from the repository alone.

use super::Figures;
use anyhow::Context;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PEER_DB: &str = "jet_bench_peers";

/// The repository's `bench/peers` folder (the scripts and the pinned package files).
fn scripts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peers");
    dir.canonicalize().unwrap_or(dir)
}

/// Installs the pinned peers under `.jet/bench-peers` with `npm ci` (again only when the
/// lockfile changed) and returns their `node_modules`.
fn install(scripts: &Path) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.jet/bench-peers");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let lock = std::fs::read(scripts.join("package-lock.json"))
        .context("bench/peers/package-lock.json is missing")?;
    let installed = dir
        .join("node_modules/graphile-worker/package.json")
        .is_file()
        && std::fs::read(dir.join("package-lock.json")).is_ok_and(|l| l == lock);
    if !installed {
        std::fs::copy(scripts.join("package.json"), dir.join("package.json"))?;
        std::fs::write(dir.join("package-lock.json"), &lock)?;
        eprintln!(
            "installing the pinned peers with npm ci into {}",
            dir.display()
        );
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .context("running npm (Node.js 20 and npm are needed for --peers)")?;
        anyhow::ensure!(status.success(), "npm ci failed");
    }
    Ok(dir.join("node_modules"))
}

/// Runs graphile-worker's script and returns its figures by metric name.
fn graphile(url: &str) -> anyhow::Result<HashMap<String, f64>> {
    let scripts = scripts();
    let modules = install(&scripts)?;
    eprintln!("graphile-worker: draining 20,000 no-op jobs twice, adding 20,000, latency");
    let out = Command::new("node")
        .arg(scripts.join("graphile.js"))
        .arg(url)
        .env("NODE_PATH", &modules)
        .stderr(Stdio::inherit())
        .output()
        .context("running node")?;
    anyhow::ensure!(out.status.success(), "the graphile-worker script failed");
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|line| {
            let mut fields = line.strip_prefix("RESULT\t")?.split('\t');
            Some((fields.next()?.to_owned(), fields.next()?.parse().ok()?))
        })
        .collect())
}

pub(super) async fn run(
    admin: &mut PgConnection,
    server: &str,
    jet: &Figures,
) -> anyhow::Result<()> {
    let recreate = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
    recreate(format!("DROP DATABASE IF EXISTS {PEER_DB} WITH (FORCE)"))
        .execute(&mut *admin)
        .await?;
    recreate(format!("CREATE DATABASE {PEER_DB}"))
        .execute(&mut *admin)
        .await?;
    let (base, _) = server.rsplit_once('/').unwrap_or((server, ""));
    let peer = graphile(&format!("{base}/{PEER_DB}"));
    recreate(format!("DROP DATABASE IF EXISTS {PEER_DB} WITH (FORCE)"))
        .execute(&mut *admin)
        .await?;
    let peer = peer?;
    let get = |metric: &str| peer.get(metric).copied().unwrap_or(f64::NAN);
    let version = "graphile-worker 0.17.3";
    println!("\n| same sitting | jet | {version} | ratio |");
    println!("|---|---|---|---|");
    let row = |what: &str, ours: f64, theirs: f64, higher_is_better: bool, unit: &str| {
        if ours.is_nan() {
            println!("| {what} | not run (`--only`) | {theirs:.1}{unit} | – |");
            return;
        }
        let ratio = if higher_is_better {
            ours / theirs
        } else {
            theirs / ours
        };
        println!("| {what} | {ours:.1}{unit} | {theirs:.1}{unit} | {ratio:.2}× |");
    };
    for (preset, name) in [
        ("defaults", "library defaults"),
        ("batching", "perfTest's batching preset"),
    ] {
        row(
            &format!("start→end node executions/s (best of 1–2 processes) vs jobs/s, {name}"),
            jet.start_end,
            get(&format!("{preset}_jobs_per_s")),
            true,
            "",
        );
        row(
            &format!("… with 1 process vs {name}"),
            jet.start_end_one,
            get(&format!("{preset}_jobs_per_s")),
            true,
            "",
        );
    }
    row(
        "enqueue → first node p50, idle",
        jet.latency_idle_p50,
        get("latency_idle_p50_ms"),
        false,
        " ms",
    );
    row(
        "enqueue → first node p50, back-to-back",
        jet.latency_b2b_p50,
        get("latency_b2b_p50_ms"),
        false,
        " ms",
    );
    row(
        "WAL bytes per node execution vs per job (batching)",
        jet.wal_per_node,
        get("batching_wal_per_job"),
        false,
        "",
    );
    row(
        "commits per node execution vs per job (batching)",
        jet.commits_per_node,
        get("batching_commits_per_job"),
        false,
        "",
    );
    row(
        "HTTP execute, 8 clients vs addJob, 8 callers (/s)",
        jet.http_execute,
        get("add_job_8_callers_per_s"),
        true,
        "",
    );
    println!(
        "(ratio: above 1× means jet is ahead; WAL and commits of graphile's defaults drain: {:.0} bytes, {:.2} commits per job)",
        get("defaults_wal_per_job"),
        get("defaults_commits_per_job")
    );
    Ok(())
}
