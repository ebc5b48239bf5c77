//! What every handler can reach: the pool, the JWT verifier, the configuration, the
//! datasource runtime and the NOTIFY hubs.

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
    /// The vault key and datasource drivers (with their connection pools).
    pub data: Arc<jet_shared::datasource::DataRuntime>,
    /// Fans app-page events out to SSE streams.
    pub pages: crate::notify_hub::NotifyHub,
    /// Fans listener tail events out to SSE streams.
    pub tails: crate::notify_hub::NotifyHub,
    /// Wakes run-and-wait requests when their instance ends.
    pub ended: crate::notify_hub::NotifyHub,
    /// Worker roles running in this process (`jet dev`): `/ready` is 503 while one is down.
    /// Empty for a standalone API.
    pub worker_roles: jet_shared::lifecycle::RoleHealth,
    /// Bounds on concurrent SSE streams (`JET_SSE_MAX_STREAMS`, `…_PER_TENANT`).
    pub streams: crate::stream_limits::StreamLimits,
}

impl AppState {
    /// Builds the state; fails on a malformed JWT key.
    pub fn new(pool: PgPool, config: Config) -> anyhow::Result<Self> {
        if config.vault_key.is_none() {
            tracing::warn!(
                "VAULT_ENCRYPTION_KEY is not set: datasource routes answer 422 until it is"
            );
        }
        Ok(Self {
            jwt: JwtVerifier::new(&config.jwt)?,
            data: Arc::new(jet_shared::datasource::DataRuntime::from_config(&config)),
            pages: crate::notify_hub::NotifyHub::new(
                pool.clone(),
                jet_shared::app_page::CHANNEL,
                crate::notify_hub::app_page,
            ),
            tails: crate::notify_hub::NotifyHub::new(
                pool.clone(),
                jet_shared::listener::inbox::TAIL_CHANNEL,
                crate::notify_hub::listener_tail,
            ),
            ended: crate::notify_hub::NotifyHub::new(
                pool.clone(),
                jet_shared::workflow::instance::ENDED_CHANNEL,
                crate::notify_hub::instance_ended,
            ),
            worker_roles: Default::default(),
            streams: crate::stream_limits::StreamLimits::new(
                config.sse_max_streams,
                config.sse_max_streams_per_tenant,
            ),
            pool,
            config: Arc::new(config),
        })
    }
}
