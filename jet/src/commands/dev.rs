//! `jet dev`: the whole system in one process — a private PostgreSQL cluster (unless
//! `DATABASE_URL` is set), migrations, a demo tenant and admin key on first run, the API and
//! every worker role. Ctrl-C stops it all, the cluster included.

use super::bootstrap::print_bootstrapped;
use super::flag_value;
use crate::pg::{self, Access, Cluster, Durability};
use anyhow::Context;
use jet_shared::config::Config;
use jet_shared::crypto::VaultKey;
use jet_shared::lifecycle::{Shutdown, shutdown_signal};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const STATE_DIR: &str = ".jet";

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    let _telemetry = jet_shared::telemetry::init(&config, "jet-dev");
    if let Some(addr) = flag_value(args, "--api-addr")? {
        config.api_addr = addr.parse().with_context(|| format!("--api-addr {addr}"))?;
    }
    let state_dir = Path::new(STATE_DIR);
    std::fs::create_dir_all(state_dir)?;
    let cluster = match &config.database_url {
        Some(_) => None,
        None => {
            let port = flag_value(args, "--pg-port")?
                .map(str::parse)
                .transpose()
                .context("--pg-port")?;
            let mut cluster = Cluster::prepare(
                &state_dir.join("dev-pg"),
                Durability::Durable,
                Access::Password,
                port,
            )?;
            cluster.start()?;
            pg::ensure_database(&cluster, "jet").await?;
            config.database_url = Some(cluster.url("jet"));
            Some(cluster)
        }
    };
    if config.vault_key.is_none() {
        config.vault_key = Some(dev_vault_key(state_dir)?);
    }
    let result = serve_everything(config).await;
    if let Some(cluster) = cluster {
        println!("stopping PostgreSQL");
        cluster.stop()?;
    }
    result
}

async fn serve_everything(config: Config) -> anyhow::Result<()> {
    let url = config.require_database_url()?.to_owned();
    let pool = jet_shared::db::connect(&url, config.db_max_connections)
        .await
        .context("connecting to the database")?;
    jet_shared::db::migrate(&pool).await?;
    let (local, acceptor) = jet_api::bind(config.api_addr).await?;
    let base = format!("http://{local}");

    // Installed before anything is announced: an early Ctrl-C still stops everything cleanly.
    let signal = shutdown_signal();
    println!("Jet Fleet dev is running");
    println!("API:       {base}   (docs: {base}/docs, spec: {base}/openapi.json)");
    println!("Database:  {url}");
    if jet_shared::bootstrap::any_tenant(&pool).await? {
        println!("Tenants exist already; the admin key was printed on the first run.");
        println!("`jet bootstrap` (with DATABASE_URL above) makes another tenant and key.");
    } else {
        let done = jet_shared::bootstrap::bootstrap(&pool, "Demo", None).await?;
        print_bootstrapped(&done, Some(&base));
    }
    println!("Press Ctrl-C to stop.");

    let roles = jet_worker::Role::ALL.to_vec();
    let (trigger, shutdown) = Shutdown::new();
    let mut state = jet_api::AppState::new(pool.clone(), config.clone())?;
    let health = jet_shared::lifecycle::RoleHealth::default();
    state.worker_roles = health.clone();
    let mut api_shutdown = shutdown.clone();
    let mut api = tokio::spawn(jet_api::serve(acceptor, state, async move {
        api_shutdown.wait().await
    }));
    let worker_config = config.clone();
    let worker_shutdown = shutdown.clone();
    let mut workers = tokio::spawn(async move {
        jet_worker::run_roles(pool, &worker_config, &roles, health, worker_shutdown).await
    });

    // Stop on a signal, or as soon as either half ends on its own (which is a failure).
    let early = tokio::select! {
        () = signal => None,
        r = &mut api => Some(("API", r)),
        r = &mut workers => Some(("workers", r)),
    };
    trigger.trigger();
    // Running nodes get the worker's grace period, then are stopped and released.
    let grace = std::time::Duration::from_secs(config.shutdown_grace_seconds);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        trigger.abort();
    });
    if let Some((what, result)) = early {
        result.context("task panicked")??;
        anyhow::bail!("the {what} stopped unexpectedly");
    }
    api.await.context("API task panicked")??;
    workers.await.context("worker task panicked")??;
    Ok(())
}

/// The vault key of the dev database, kept beside it so encrypted rows stay readable.
fn dev_vault_key(state_dir: &Path) -> anyhow::Result<VaultKey> {
    let path = state_dir.join("vault.key");
    if let Ok(hex) = std::fs::read_to_string(&path) {
        return VaultKey::from_hex(&hex).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let key = VaultKey::generate();
    std::fs::write(&path, key.to_hex())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(key)
}
