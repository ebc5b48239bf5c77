//! Tracing setup: one subscriber per process, compact or JSON, filtered by `JET_LOG`.

use crate::config::{Config, LogFormat};
use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored),
/// which lets `jet dev` and tests share code paths with the binaries.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = match config.log_format {
        LogFormat::Compact => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
