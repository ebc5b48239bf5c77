//! The driver interface every datasource type implements, and the registry of drivers.

use super::network::DenyList;
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Bounds on one query run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole run, connecting included (upstream: `timeoutSeconds`, default 60 s).
    pub timeout: Duration,
    /// Rows kept from a result; the rest is cut off and `truncated` is set.
    pub max_rows: usize,
    /// Bytes of result JSON kept (SQL) or accepted (HTTP bodies).
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_rows: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A column of a SQL result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The database's type name (`int4`, `text`, `jsonb`, …).
    pub type_name: String,
}

/// What a query returned.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    /// Rows as objects (SQL) or the response body (HTTP: JSON when it parses, else text).
    pub data: Value,
    /// SQL: the result's columns in order.
    pub columns: Option<Vec<Column>>,
    /// SQL: rows returned, or rows affected by a statement that returns none.
    pub row_count: Option<u64>,
    /// Rows or bytes beyond the limits were dropped.
    pub truncated: bool,
    /// HTTP: the response status.
    pub status: Option<u16>,
}

/// Why a driver failed; each kind maps to one stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The datasource or query options are unusable.
    #[error("{0}")]
    Options(String),
    /// The datasource could not be reached (connect, TLS, auth handshake).
    #[error("{0}")]
    Unreachable(String),
    /// The database or remote API refused the query; its own message.
    #[error("{0}")]
    Failed(String),
    /// The run exceeded its time limit.
    #[error("the query did not finish within its time limit")]
    Timeout,
    /// The response exceeded the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The host is on this server's deny-list (`JET_DATASOURCE_DENY_HOSTS`).
    #[error("{0}")]
    Denied(String),
}

impl DriverError {
    /// The stable code the API answers this failure with.
    pub fn code(&self) -> &'static str {
        match self {
            DriverError::Options(_) => "invalid_query_options",
            DriverError::Unreachable(_) => "datasource_unreachable",
            DriverError::Failed(_) => "query_failed",
            DriverError::Timeout => "query_timeout",
            DriverError::TooLarge(_) => "result_too_large",
            DriverError::Denied(_) => "datasource_denied",
        }
    }

    /// The same failure with `secrets` and URL credentials cut out of its text.
    pub fn scrubbed(self, secrets: &[String]) -> Self {
        let clean = |m: String| super::secrets::scrub(&m, secrets);
        match self {
            DriverError::Options(m) => DriverError::Options(clean(m)),
            DriverError::Unreachable(m) => DriverError::Unreachable(clean(m)),
            DriverError::Failed(m) => DriverError::Failed(clean(m)),
            DriverError::Timeout => DriverError::Timeout,
            DriverError::TooLarge(m) => DriverError::TooLarge(clean(m)),
            DriverError::Denied(m) => DriverError::Denied(clean(m)),
        }
    }
}

/// A datasource type. `datasource_id` keys per-datasource resources (connection pools);
/// `None` for ad-hoc tests of unsaved options.
pub trait Driver: Send + Sync {
    /// Checks the datasource options' shape; the message names the field.
    fn validate_options(&self, options: &Value) -> Result<(), String>;

    /// Where the options point (scheme, host, port, database or base URL), in a form that
    /// compares equal exactly when two options reach the same place; `None` when unusable.
    fn target(&self, options: &Value) -> Option<String>;

    /// Connects and performs the cheapest real round trip.
    fn test<'a>(
        &'a self,
        datasource_id: Option<Uuid>,
        options: &'a Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Runs a query (`dataQueryOptions`, templates still in it) with `inputs` bound.
    fn execute<'a>(
        &'a self,
        datasource_id: Option<Uuid>,
        options: &'a Value,
        query: &'a Value,
        inputs: &'a Value,
        limits: Limits,
    ) -> BoxFuture<'a, Result<QueryOutput, DriverError>>;
}

/// The drivers this build has, by upstream's `datasourceType` key.
pub struct Drivers {
    postgres: super::postgres::PostgresDriver,
    rest: super::restapi::RestApiDriver,
}

impl Drivers {
    /// Types with a driver.
    pub const TYPES: [&'static str; 2] = ["postgresql", "restapi"];

    /// Drivers that connect only where `deny` allows.
    pub fn new(deny: DenyList) -> Self {
        let deny = Arc::new(deny);
        Self {
            postgres: super::postgres::PostgresDriver::new(deny.clone()),
            rest: super::restapi::RestApiDriver::new(deny),
        }
    }

    /// The PostgreSQL driver, for listeners that hold their own connections (NOTIFY, CDC) to a
    /// datasource: they connect with its checked options.
    pub fn postgres(&self) -> &super::postgres::PostgresDriver {
        &self.postgres
    }

    /// The driver of `datasource_type`, if this build has one.
    pub fn get(&self, datasource_type: &str) -> Option<&dyn Driver> {
        match datasource_type {
            "postgresql" => Some(&self.postgres),
            "restapi" => Some(&self.rest),
            _ => None,
        }
    }
}
