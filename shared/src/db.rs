//! The connection pool and the migrator: our schema (`migrations/`) plus apalis-postgres's.

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// Our own migrations, embedded at compile time from the workspace's `migrations/` folder.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. Connections are checked out with a bounded wait so an overloaded database
/// turns into an error instead of a hung request.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

/// A pool of one connection of its own, opened on first use with `pool`'s settings, for a
/// `PgListener`. A listener holds its connection for good; taken from the shared pool it
/// would shrink the pool of every role in the process, and a listener reconnecting after a
/// database restart would queue behind the very work it is meant to wake.
pub fn listener_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Applies every pending migration: apalis-postgres's queue schema first (our migrations add
/// triggers to its tables), then ours. Safe to run from several processes at once (both
/// migrators take an advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    apalis_postgres::PostgresStorage::<()>::setup(pool)
        .await
        .context("applying apalis-postgres migrations")?;
    MIGRATOR
        .run(pool)
        .await
        .context("applying Jet Fleet migrations")?;
    Ok(())
}

/// Versions of our migrations that this binary knows but the database has not applied.
/// Empty means the schema is current; `/ready` reports not-ready otherwise.
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .or_else(|err| match &err {
                // A database that was never migrated has no migrations table yet.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    Ok(Vec::new())
                }
                _ => Err(err),
            })?;
    Ok(MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}
