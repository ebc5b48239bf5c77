//! What a holder gives the source it runs (a NOTIFY connection or a CDC stream), and how the
//! source reports back. A source runs until it fails; the holder restarts it with capped
//! exponential backoff, keeps `status`/`lastError` current, and stops it (drops its future)
//! when the listener changes, is deactivated, or the holder loses its lease.

use super::{Kind, Listener};
use crate::datasource::DataRuntime;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};

/// Everything a running source needs.
#[derive(Clone)]
pub struct SourceContext {
    /// The platform database: the inbox, checkpoints.
    pub platform: PgPool,
    pub data: Arc<DataRuntime>,
    pub listener: Listener,
    pub kind: Kind,
    /// The listener's datasource, its options decrypted.
    pub datasource_type: String,
    pub datasource_options: Value,
    pub reporter: Reporter,
}

/// Why a source stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The source or the connection failed; the holder retries with backoff forever.
    Transient(String),
    /// Retrying cannot help until someone changes something (the slot was dropped, the
    /// datasource is not PostgreSQL): the holder sets status `error` with this message and
    /// waits for the listener to change.
    Fatal(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Transient(m) | SourceError::Fatal(m) => f.write_str(m),
        }
    }
}

/// What a source last told its holder, written to `tblListenerHolds` by the holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The source connection is up (and, for CDC, the stream is reading).
    pub connected: bool,
    /// CDC: WAL the slot retains on the source, in bytes.
    pub retained_wal_bytes: Option<i64>,
    /// CDC: how far the committed checkpoint trails the source's WAL position, in bytes.
    pub lag_bytes: Option<i64>,
}

/// A source's channel back to its holder. Cloning shares it.
#[derive(Clone, Default)]
pub struct Reporter(Arc<Mutex<Report>>);

impl Reporter {
    /// The source connection is up.
    pub fn connected(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).connected = true;
    }

    /// The source connection is down.
    pub fn disconnected(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).connected = false;
    }

    /// A CDC lag sample.
    pub fn sample(&self, retained_wal_bytes: Option<i64>, lag_bytes: Option<i64>) {
        let mut report = self.0.lock().unwrap_or_else(|e| e.into_inner());
        report.retained_wal_bytes = retained_wal_bytes;
        report.lag_bytes = lag_bytes;
    }

    /// The latest report.
    pub fn get(&self) -> Report {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
