//! Logical-replication CDC from a `postgresql` datasource (pgoutput). Being built: the entry
//! points below are what the API (activate, delete) and the holder call.

use super::config::CdcConfig;
use super::source::{SourceContext, SourceError};
use crate::datasource::DataRuntime;
use crate::{Error, Result};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// Creates the listener's publication and slot on the source (idempotent) and its checkpoint
/// row in the platform database; a source that cannot do CDC is `Error::Invalid` saying what
/// to change.
pub async fn provision(
    _platform: &mut PgConnection,
    _data: &DataRuntime,
    _datasource_options: &Value,
    _listener_id: Uuid,
    _config: &CdcConfig,
) -> Result<()> {
    Err(Error::Invalid(
        "CDC listeners are not available in this build yet".into(),
    ))
}

/// Drops the listener's slot and publication on the source (idempotent).
pub async fn deprovision(
    _data: &DataRuntime,
    _datasource_options: &Value,
    _listener_id: Uuid,
) -> Result<()> {
    Ok(())
}

/// Streams changes into the inbox until the source fails.
pub async fn run(
    _ctx: &SourceContext,
    _config: &CdcConfig,
) -> std::result::Result<std::convert::Infallible, SourceError> {
    Err(SourceError::Fatal(
        "CDC listeners are not available in this build yet".into(),
    ))
}
