//! The chaos suite (`jet chaos`, and in a short form the `chaos_suite` test): each cell runs a
//! steady load of workflow runs on a real fleet (a private PostgreSQL cluster, `jet-api` and
//! three `jet-worker` processes), injects one fault, heals it, and ends with a ledger check:
//! every run ended, every node attempt settled exactly once, no effect duplicated, and the
//! time to recover.

pub mod cells;
pub mod fleet;
pub mod flows;
pub mod ledger;
pub mod load;
pub mod proxy;
pub mod site;

use crate::pg::{Access, Cluster, Durability};
use cells::Cell;
use fleet::{Process, free_port};
use ledger::Ledger;
use site::Site;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Worker processes in every cell.
pub const WORKERS: usize = 3;

/// How long and how hard each cell runs.
#[derive(Debug, Clone)]
pub struct Form {
    /// Runs started per second.
    pub rate: u32,
    /// Load before the fault.
    pub warmup: Duration,
    /// How long a fault lasts (an outage, a cut, a stall, pool exhaustion).
    pub fault: Duration,
    /// Load after the fault heals.
    pub after: Duration,
    /// Node lease of the workers (`JET_NODE_LEASE_SECONDS`).
    pub lease_seconds: u64,
    /// Longest wait for recovery and for every run to end.
    pub limit: Duration,
}

impl Form {
    /// The CI form: a few seconds per phase.
    pub fn short() -> Self {
        Self {
            rate: 8,
            warmup: Duration::from_secs(2),
            fault: Duration::from_secs(3),
            after: Duration::from_secs(2),
            lease_seconds: 2,
            limit: Duration::from_secs(90),
        }
    }

    /// `jet chaos`: longer faults (a database outage past the pools' 10 s acquire timeout)
    /// under a heavier load.
    pub fn full() -> Self {
        Self {
            rate: 20,
            warmup: Duration::from_secs(5),
            fault: Duration::from_secs(12),
            after: Duration::from_secs(5),
            lease_seconds: 3,
            limit: Duration::from_secs(180),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub cell: Cell,
    pub ledger: Ledger,
    /// Heal → a new run accepted and completed.
    pub recovery: Option<Duration>,
    /// Load stopped → no run left running.
    pub drained: Option<Duration>,
    /// What the fault did (kills, terminated backends, refused settles…).
    pub note: String,
}

impl Row {
    /// Whether the cell passed: nothing lost, nothing duplicated, recovered.
    pub fn passed(&self) -> bool {
        self.ledger.lost_total() == 0
            && self.ledger.duplicated() == 0
            && self.recovery.is_some()
            && self.drained.is_some()
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The table header (Markdown).
pub const TABLE_HEADER: &str = "| cell | instances | lost | duplicated | re-run effects | recovery time | backlog drained | fault |\n|---|---|---|---|---|---|---|---|";

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.ledger;
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.cell.name(),
            l.instances,
            l.lost_total(),
            l.duplicated(),
            l.reruns,
            secs(self.recovery),
            secs(self.drained),
            self.note
        )
    }
}

/// A private throwaway cluster for the suite, removed when dropped.
pub struct SuiteCluster {
    pub cluster: Cluster,
    dir: PathBuf,
}

impl SuiteCluster {
    /// Prepares and starts a cluster in a fresh temporary directory.
    pub fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("jet-chaos-{}", uuid::Uuid::new_v4().simple()));
        let mut cluster = Cluster::prepare(&dir, Durability::Throwaway, Access::Trust, None)?;
        cluster.start()?;
        Ok(Self { cluster, dir })
    }
}

impl Drop for SuiteCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cells` one after another on one private cluster, with `bin_dir` holding `jet-api`
/// and `jet-worker` (their output goes to files in `logs`); `each` sees every row as it is
/// measured.
pub async fn run(
    bin_dir: &Path,
    logs: &Path,
    form: &Form,
    cells: &[Cell],
    mut each: impl FnMut(&Row),
) -> anyhow::Result<Vec<Row>> {
    for bin in ["jet-api", "jet-worker"] {
        anyhow::ensure!(
            bin_dir.join(bin).is_file(),
            "{} is missing: build the binaries first (`cargo build --bins`)",
            bin_dir.join(bin).display()
        );
    }
    let mut cluster = tokio::task::block_in_place(SuiteCluster::start)?;
    let mut rows = Vec::new();
    for &cell in cells {
        let row = run_cell(&mut cluster.cluster, bin_dir, logs, form, cell).await?;
        each(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Everything a cell's fault may touch.
pub struct Ctx<'a> {
    pub form: &'a Form,
    pub cluster: &'a mut Cluster,
    pub site: &'a Site,
    pub workers: &'a mut Vec<Process>,
    pub proxy: Option<&'a proxy::Proxy>,
}

impl Ctx<'_> {
    /// Executions worker `n` holds a lease on now.
    pub async fn leases_of(&self, n: usize) -> Vec<i64> {
        sqlx::query_scalar(
            r#"SELECT "executionID" FROM "tblNodeExecutions" WHERE "leaseOwner" LIKE $1 AND "leaseExpiresAt" > now()"#,
        )
        .bind(format!("chaos-{n}-%"))
        .fetch_all(&self.site.pool)
        .await
        .unwrap_or_default()
    }

    /// Waits (up to `secs`) until worker `n` holds a lease; its leases then.
    pub async fn until_holding(&self, n: usize, secs: u64) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let held = self.leases_of(n).await;
            if !held.is_empty() || tokio::time::Instant::now() > deadline {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn run_cell(
    cluster: &mut Cluster,
    bin_dir: &Path,
    logs: &Path,
    form: &Form,
    cell: Cell,
) -> anyhow::Result<Row> {
    let tuning = cell.tuning();
    let api_port = free_port()?;
    let db = format!("chaos_{}", cell.name().replace('-', "_"));
    let mut site = Site::create(&cluster.url("postgres"), &db, api_port).await?;
    let vault_key = site.vault_key.clone();
    let base_env = |pool: u32| {
        vec![
            ("VAULT_ENCRYPTION_KEY".to_owned(), vault_key.clone()),
            ("JET_DATASOURCE_DENY_HOSTS".to_owned(), "none".to_owned()),
            ("JET_LOG".to_owned(), "warn".to_owned()),
            ("JET_DB_MAX_CONNECTIONS".to_owned(), pool.to_string()),
        ]
    };
    let mut api_env = base_env(tuning.api_pool);
    api_env.push(("DATABASE_URL".into(), site.db_url.clone()));
    api_env.push(("JET_API_ADDR".into(), format!("127.0.0.1:{api_port}")));
    let api = Process::start(
        &bin_dir.join("jet-api"),
        api_env,
        logs.join(format!("{db}-api.log")),
    )?;
    if let Err(err) = site.wait_ready(60).await {
        anyhow::bail!("{err}\n{}", api.tail(20));
    }
    site.define().await?;

    let upstream: std::net::SocketAddr = format!(
        "127.0.0.1:{}",
        cluster
            .url("postgres")
            .rsplit_once(':')
            .and_then(|(_, p)| p.split('/').next())
            .unwrap_or("5432")
    )
    .parse()?;
    let proxy = if tuning.proxied_workers > 0 {
        Some(proxy::Proxy::start(upstream).await?)
    } else {
        None
    };
    let mut workers = Vec::with_capacity(WORKERS);
    for n in 0..WORKERS {
        let url = match &proxy {
            Some(p) if n < tuning.proxied_workers => p.url_for(&site.db_url),
            _ => site.db_url.clone(),
        };
        let mut env = base_env(tuning.worker_pool);
        env.push(("DATABASE_URL".into(), url));
        env.push(("JET_WORKER_ID".into(), format!("chaos-{n}")));
        env.push((
            "JET_NODE_LEASE_SECONDS".into(),
            form.lease_seconds.to_string(),
        ));
        workers.push(Process::start(
            &bin_dir.join("jet-worker"),
            env,
            logs.join(format!("{db}-worker-{n}.log")),
        )?);
    }

    let site = Arc::new(site);
    let load = load::Load::start(site.clone(), form.rate);
    tokio::time::sleep(form.warmup).await;
    let mut ctx = Ctx {
        form,
        cluster,
        site: &site,
        workers: &mut workers,
        proxy: proxy.as_ref(),
    };
    let (healed, note) = cell.inject(&mut ctx).await?;
    let recovery = load::probe(&site, healed, form.limit).await;
    let since_heal = healed.elapsed();
    if since_heal < form.after {
        tokio::time::sleep(form.after - since_heal).await;
    }
    load.stop_starting();
    let stopped = tokio::time::Instant::now();
    // Requests in flight when the load stops get their answer (or time out) first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drained = load::drained(&site, stopped, form.limit).await;
    drop(load);
    let ledger = ledger::check(&site.pool, &site.effect_nodes).await?;
    let row = Row {
        cell,
        ledger,
        recovery,
        drained,
        note,
    };
    drop(workers);
    drop(api);
    drop(proxy);
    site.pool.close().await;
    Ok(row)
}
