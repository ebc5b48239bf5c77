//! What every handler can reach: the pool, the JWT verifier and the configuration.

use jet_shared::auth::JwtVerifier;
use jet_shared::config::Config;
use sqlx::PgPool;
use std::sync::Arc;

/// Shared, cheaply cloneable service state.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub pool: PgPool,
    /// Verifies user JWTs.
    pub jwt: JwtVerifier,
    /// The loaded configuration.
    pub config: Arc<Config>,
}

impl AppState {
    /// Builds the state; fails on a malformed JWT key.
    pub fn new(pool: PgPool, config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            jwt: JwtVerifier::new(&config.jwt)?,
            pool,
            config: Arc::new(config),
        })
    }
}
