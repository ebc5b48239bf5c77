//! The stateless worker: parses which roles to run and runs each role's loop until shutdown.
//! Any number of replicas may run against the same database.
#![doc = include_str!("../README.md")]

pub mod commands;
pub mod cron;
mod graph_cache;
mod health;
pub mod listeners;
pub mod maintenance;
pub mod nodes;
mod registry;
pub mod supervise;

use jet_shared::config::Config;
use jet_shared::lifecycle::{RoleHealth, Shutdown};
use sqlx::PgPool;
use std::fmt;
use std::str::FromStr;

/// A role a worker process can take on. All are on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Consumes the apalis command queue (start, cancel, …).
    Commands,
    /// Claims and runs workflow node executions.
    Nodes,
    /// Housekeeping: retention of the audit trail.
    Maintenance,
    /// Fires cron jobs, exactly once per due time across replicas.
    Cron,
    /// Holds NOTIFY and CDC listeners (one holder per listener across the fleet) and runs
    /// the listener pipeline.
    Listeners,
}

impl Role {
    /// Every role, in start order.
    pub const ALL: &'static [Role] = &[
        Role::Commands,
        Role::Nodes,
        Role::Maintenance,
        Role::Cron,
        Role::Listeners,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Commands => "commands",
            Role::Nodes => "nodes",
            Role::Maintenance => "maintenance",
            Role::Cron => "cron",
            Role::Listeners => "listeners",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.name() == s.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "unknown worker role `{s}`; known roles: {}",
                    known.join(", ")
                )
            })
    }
}

/// Parses a comma-separated role list; `None`, empty or `all` selects every role.
pub fn parse_roles(spec: Option<&str>) -> Result<Vec<Role>, String> {
    let spec = spec.map(str::trim).unwrap_or("");
    if spec.is_empty() || spec == "all" {
        return Ok(Role::ALL.to_vec());
    }
    let mut roles = Vec::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let role: Role = part.parse()?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

/// Runs the selected roles until `shutdown`, each under a supervisor that restarts it when it
/// fails and reports it in `health` meanwhile; returns the first error seen at shutdown.
pub async fn run_roles(
    pool: PgPool,
    config: &Config,
    roles: &[Role],
    health: RoleHealth,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use supervise::supervise;
    let mut tasks = tokio::task::JoinSet::new();
    let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
    for &role in roles {
        tracing::info!(%role, worker = %worker_id, "starting worker role");
        let (pool, worker_id, stop) = (pool.clone(), worker_id.clone(), shutdown.clone());
        let health = health.clone();
        match role {
            Role::Commands => {
                tasks.spawn(supervise(
                    role,
                    health,
                    shutdown.clone(),
                    move |generation| {
                        // A restarted consumer registers under a new name: apalis holds a
                        // session lock on the old one, possibly on a connection still pooled.
                        let name = match generation {
                            0 => worker_id.clone(),
                            g => format!("{worker_id}-r{g}"),
                        };
                        commands::run(pool.clone(), name, stop.clone())
                    },
                ));
            }
            Role::Nodes => {
                let settings = nodes::Settings::from_config(config);
                let data =
                    std::sync::Arc::new(jet_shared::datasource::DataRuntime::from_config(config));
                tasks.spawn(supervise(role, health, shutdown.clone(), move |_| {
                    nodes::run(
                        pool.clone(),
                        worker_id.clone(),
                        settings.clone(),
                        data.clone(),
                        stop.clone(),
                    )
                }));
            }
            Role::Maintenance => {
                let settings = maintenance::Settings::from_config(config);
                let data =
                    std::sync::Arc::new(jet_shared::datasource::DataRuntime::from_config(config));
                tasks.spawn(supervise(role, health, shutdown.clone(), move |_| {
                    maintenance::run(pool.clone(), settings.clone(), data.clone(), stop.clone())
                }));
            }
            Role::Cron => {
                tasks.spawn(supervise(role, health, shutdown.clone(), move |_| {
                    cron::run(
                        pool.clone(),
                        worker_id.clone(),
                        cron::Settings::default(),
                        stop.clone(),
                    )
                }));
            }
            Role::Listeners => {
                let data =
                    std::sync::Arc::new(jet_shared::datasource::DataRuntime::from_config(config));
                tasks.spawn(supervise(role, health, shutdown.clone(), move |_| {
                    listeners::run(
                        pool.clone(),
                        worker_id.clone(),
                        listeners::Settings::default(),
                        data.clone(),
                        stop.clone(),
                    )
                }));
            }
        }
    }
    // The registry keeps beating while the roles drain, and records the stop only once they
    // have: a draining worker is alive and still holds work.
    let (roles_done, registry_stop) = Shutdown::new();
    let registry = tokio::spawn(registry::keep_registered(
        pool.clone(),
        worker_id.clone(),
        roles.iter().map(Role::to_string).collect(),
        registry_stop,
    ));
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = result.and(Err(err)),
            Err(join) => result = result.and(Err(anyhow::anyhow!("worker role panicked: {join}"))),
        }
    }
    roles_done.trigger();
    match registry.await {
        Ok(done) => result.and(done),
        Err(join) => result.and(Err(anyhow::anyhow!("worker registry panicked: {join}"))),
    }
}

/// How long a worker may take to hand back what it holds once its drain is over (release
/// leases and listeners, leave the scheduler, record its stop) before it exits regardless: a
/// role stuck behind a database that is down must not keep a replica from exiting.
pub const HAND_BACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Turns signals into the stages of `trigger`: the first SIGTERM/SIGINT starts the drain; the
/// end of `grace` or a second signal aborts it (what still runs is stopped and released); a
/// third signal, or [`HAND_BACK_LIMIT`] after the abort, exits the process at once.
fn drive_shutdown(
    mut signals: jet_shared::lifecycle::Signals,
    trigger: jet_shared::lifecycle::ShutdownTrigger,
    grace: std::time::Duration,
) {
    tokio::spawn(async move {
        let first = signals.recv().await;
        tracing::info!(
            signal = first,
            grace_secs = grace.as_secs(),
            "draining: no new work; running nodes may finish within the grace period"
        );
        trigger.trigger();
        tokio::select! {
            second = signals.recv() => tracing::warn!(signal = second, "second signal: stopping running nodes now and releasing them"),
            () = tokio::time::sleep(grace) => tracing::info!("grace period over: stopping running nodes and releasing them"),
        }
        trigger.abort();
        tokio::select! {
            _ = signals.recv() => {}
            () = tokio::time::sleep(HAND_BACK_LIMIT) => {}
        }
        // What is still held is leased: it runs again elsewhere once the leases expire.
        tracing::error!("could not hand everything back in time; exiting anyway");
        std::process::exit(1)
    });
}

/// `<host>-<pid>`: unique per live process on a host, readable in `leaseOwner` columns.
pub fn default_worker_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// Everything `jet-worker` does after reading config: pool, schema check, roles.
pub async fn run(config: Config, roles: Vec<Role>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let url = config.require_database_url()?.to_owned();
    let pool = jet_shared::db::connect(&url, config.db_max_connections)
        .await
        .context("connecting to DATABASE_URL")?;
    let pending = jet_shared::db::pending_migrations(&pool).await?;
    anyhow::ensure!(
        pending.is_empty(),
        "{} migrations pending: run `jet migrate` first",
        pending.len()
    );
    let (trigger, shutdown) = Shutdown::new();
    let grace = std::time::Duration::from_secs(config.shutdown_grace_seconds);
    drive_shutdown(jet_shared::lifecycle::Signals::install(), trigger, grace);
    let health = RoleHealth::default();
    serve_endpoints(&config, &pool, &roles, &health, &shutdown).await?;
    let result = run_roles(pool.clone(), &config, &roles, health, shutdown).await;
    pool.close().await;
    tracing::info!("worker stopped");
    result
}

/// Starts the health and metrics listeners that are configured: one listener when
/// `JET_WORKER_HEALTH_ADDR` and `JET_METRICS_ADDR` are the same address, two otherwise.
async fn serve_endpoints(
    config: &Config,
    pool: &PgPool,
    roles: &[Role],
    health: &RoleHealth,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let scrape = config.metrics_addr.map(|_| {
        let names: Vec<String> = roles.iter().map(Role::to_string).collect();
        let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
        jet_shared::metrics::set_worker_info(&names.join(","), &worker_id);
        let every = std::time::Duration::from_secs(config.metrics_sample_seconds.max(1));
        jet_shared::metrics::Scrape::new(pool.clone(), every)
    });
    match (config.worker_health_addr, config.metrics_addr) {
        (Some(h), Some(m)) if h == m => {
            health::serve(h, Some(health.clone()), scrape, shutdown.clone()).await?;
        }
        (h, m) => {
            if let Some(addr) = h {
                health::serve(addr, Some(health.clone()), None, shutdown.clone()).await?;
            }
            if let Some(addr) = m {
                health::serve(addr, None, scrape, shutdown.clone()).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_all_select_every_role() {
        assert_eq!(parse_roles(None), Ok(Role::ALL.to_vec()));
        assert_eq!(parse_roles(Some(" all ")), Ok(Role::ALL.to_vec()));
    }

    #[test]
    fn unknown_roles_are_named_in_the_error() {
        let err = parse_roles(Some("maintenance,bogus")).expect_err("bogus is unknown");
        assert!(
            err.contains("bogus") && err.contains("maintenance"),
            "{err}"
        );
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(
            parse_roles(Some("maintenance, maintenance")),
            Ok(vec![Role::Maintenance])
        );
    }
}
