//! `jet migrate`: apply our migrations and apalis-postgres's to `DATABASE_URL`.

use anyhow::Context;
use jet_shared::config::Config;

pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = jet_shared::telemetry::init(&config, "jet");
    let pool = jet_shared::db::connect(config.require_database_url()?, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    jet_shared::db::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}
