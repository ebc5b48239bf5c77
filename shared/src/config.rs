//! Configuration, read only from environment variables (documented in `.env.example`).
//!
//! This is the one module allowed to read the environment; everything else receives a
//! [`Config`]. Parsing is a pure function of a variable lookup so it is unit-tested.

use crate::crypto::VaultKey;
use crate::datasource::network::{DEFAULT_DENY, DenyEntry};
use std::net::SocketAddr;

/// Log filter when `JET_LOG` is unset: info, without Postgres's "already exists" notices.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Why the configuration could not be loaded: names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The offending environment variable.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable single lines.
    Compact,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How user JWTs are verified. At least one key must be set for Bearer auth to work.
#[derive(Clone, Default)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<String>,
    /// PEM public key (SPKI or PKCS#1) for RS256 tokens.
    pub rs256_public_key_pem: Option<String>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rs256_public_key_pem", &self.rs256_public_key_pem.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Everything the binaries can be told from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`; `jet dev` fills it in for its embedded cluster.
    pub database_url: Option<String>,
    /// `VAULT_ENCRYPTION_KEY`: 64 hex chars, encrypts `datasourceOptions`.
    pub vault_key: Option<VaultKey>,
    /// `JET_API_ADDR`: where `jet-api` listens.
    pub api_addr: SocketAddr,
    /// `JET_LOG`: a tracing filter such as `info,jet_api=debug`.
    pub log_filter: String,
    /// `JET_LOG_FORMAT`: `compact` or `json`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set: spans are exported over
    /// OTLP/HTTP. The OpenTelemetry SDK reads the `OTEL_*` variables themselves.
    pub otel_exporting: bool,
    /// `OTEL_SERVICE_NAME` is set (otherwise each binary names itself).
    pub otel_service_named: bool,
    /// `JET_DB_MAX_CONNECTIONS`: pool size per process.
    pub db_max_connections: u32,
    /// `JET_MAX_BODY_BYTES`: larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `JET_WEBHOOK_MAX_BODY_BYTES`: larger inbound webhook deliveries get 413 (in place of
    /// `max_body_bytes` on `/webhooks/…`).
    pub webhook_max_body_bytes: usize,
    /// `JET_JWT_*`: user token verification.
    pub jwt: JwtConfig,
    /// `JET_WORKER_ROLES`: comma-separated roles for `jet-worker`; empty means all.
    pub worker_roles: Option<String>,
    /// `JET_WORKER_ID`: unique name of this worker replica (default: host name and pid).
    pub worker_id: Option<String>,
    /// `JET_NODE_LEASE_SECONDS`: how long a claimed node execution is held before other
    /// workers may take it over (a crashed worker's nodes re-run after this).
    pub node_lease_seconds: u64,
    /// `JET_SHUTDOWN_GRACE_SECONDS`: after SIGTERM, how long a worker lets running nodes
    /// finish before it stops them and releases their leases to other workers (Kubernetes:
    /// keep `terminationGracePeriodSeconds` a few seconds above it).
    pub shutdown_grace_seconds: u64,
    /// `JET_NODE_BATCH`: node executions claimed per query.
    pub node_batch: i64,
    /// `JET_NODE_CONCURRENCY`: claim loops per worker process, each with its own batch in
    /// flight, so one process overlaps one batch's round trips with another's.
    pub node_concurrency: usize,
    /// `JET_AUDIT_RETENTION_DAYS`: audit rows older than this are pruned; 0 keeps them forever.
    pub audit_retention_days: u32,
    /// `JET_DLQ_RETENTION_DAYS`: DISCARDED and REPLAYED DLQ rows resolved longer ago than this
    /// are purged; 0 keeps them forever.
    pub dlq_retention_days: u32,
    /// `JET_LISTENER_INBOX_RETENTION_HOURS`: processed listener events are kept this long (the
    /// window in which a webhook's `Idempotency-Key` makes a redelivery a no-op); 0 keeps them.
    pub listener_inbox_retention_hours: u32,
    /// `JET_WORKER_HEALTH_ADDR`: where `jet-worker` answers `/health` and `/ready` (unset: no
    /// listener). `/ready` is 503 while any of its roles is down and restarting.
    pub worker_health_addr: Option<SocketAddr>,
    /// `JET_NODE_MAX_CLAIMS`: a node execution claimed this many times without a result (its
    /// worker died or its result could not be stored each time) fails instead of running again.
    pub node_max_claims: i32,
    /// `JET_NODE_MAX_OUTPUT_BYTES`: a node whose output is larger fails with a clear error
    /// instead of bloating every later read of its run's context.
    pub node_max_output_bytes: usize,
    /// `JET_MAX_GRAPH_NODES`: most nodes a saved or test-run workflow may have (422
    /// `graph_too_large` beyond).
    pub max_graph_nodes: usize,
    /// `JET_SSE_MAX_STREAMS`: concurrent instance event streams per API process (429
    /// `too_many_streams` beyond).
    pub sse_max_streams: usize,
    /// `JET_SSE_MAX_STREAMS_PER_TENANT`: concurrent instance event streams per tenant and API
    /// process.
    pub sse_max_streams_per_tenant: usize,
    /// `JET_JS_CONCURRENCY`: scripts (javascript nodes, expression conditions) running at once
    /// per worker process; 0 means the machine's available parallelism.
    pub js_concurrency: usize,
    /// `JET_MAX_RUNNING_CHILDREN`: sub-workflow instances a tenant may have running at once;
    /// a `subWorkflow` node that would start one more fails.
    pub max_running_children: i64,
    /// `JET_DATASOURCE_DENY_HOSTS`: where datasources may not connect (default: loopback,
    /// link-local and the platform database's host; `none` denies nothing).
    pub datasource_deny: Vec<DenyEntry>,
    /// `JET_METRICS_ADDR`: where `jet-worker` answers `/metrics` (unset: no listener; the
    /// same address as `JET_WORKER_HEALTH_ADDR` shares that listener). `jet-api` serves
    /// `/metrics` on its own address.
    pub metrics_addr: Option<SocketAddr>,
    /// `JET_METRICS_SAMPLE_SECONDS`: the fleet gauges read from the `jet_ops` views (queue
    /// depth, DLQ, cron, listeners) are sampled at most this often per process.
    pub metrics_sample_seconds: u64,
}

impl Config {
    /// Reads the process environment.
    #[allow(clippy::disallowed_methods)] // the one place allowed to read the environment
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses configuration from any variable lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let vault_key = get("VAULT_ENCRYPTION_KEY")
            .map(|hex| {
                VaultKey::from_hex(&hex).map_err(|reason| ConfigError {
                    var: "VAULT_ENCRYPTION_KEY",
                    reason,
                })
            })
            .transpose()?;
        let log_format = match get("JET_LOG_FORMAT").as_deref() {
            None | Some("compact") => LogFormat::Compact,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    var: "JET_LOG_FORMAT",
                    reason: format!("expected `compact` or `json`, got `{other}`"),
                });
            }
        };
        let rs256_public_key_pem = get("JET_JWT_RS256_PUBLIC_KEY")
            .map(|value| read_pem_or_path(&value))
            .transpose()?;
        Ok(Config {
            database_url: get("DATABASE_URL"),
            vault_key,
            api_addr: parse("JET_API_ADDR", get("JET_API_ADDR"), "127.0.0.1:8080")?,
            log_filter: get("JET_LOG").unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
            log_format,
            otel_exporting: get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some(),
            otel_service_named: get("OTEL_SERVICE_NAME").is_some(),
            db_max_connections: parse(
                "JET_DB_MAX_CONNECTIONS",
                get("JET_DB_MAX_CONNECTIONS"),
                "10",
            )?,
            max_body_bytes: parse("JET_MAX_BODY_BYTES", get("JET_MAX_BODY_BYTES"), "1048576")?,
            webhook_max_body_bytes: parse(
                "JET_WEBHOOK_MAX_BODY_BYTES",
                get("JET_WEBHOOK_MAX_BODY_BYTES"),
                "1048576",
            )?,
            jwt: JwtConfig {
                hs256_secret: get("JET_JWT_HS256_SECRET"),
                rs256_public_key_pem,
                issuer: get("JET_JWT_ISSUER"),
                audience: get("JET_JWT_AUDIENCE"),
            },
            worker_roles: get("JET_WORKER_ROLES"),
            worker_id: get("JET_WORKER_ID"),
            node_lease_seconds: parse(
                "JET_NODE_LEASE_SECONDS",
                get("JET_NODE_LEASE_SECONDS"),
                "10",
            )?,
            shutdown_grace_seconds: parse(
                "JET_SHUTDOWN_GRACE_SECONDS",
                get("JET_SHUTDOWN_GRACE_SECONDS"),
                "20",
            )?,
            node_batch: parse("JET_NODE_BATCH", get("JET_NODE_BATCH"), "32")?,
            node_concurrency: parse("JET_NODE_CONCURRENCY", get("JET_NODE_CONCURRENCY"), "4")?,
            audit_retention_days: parse(
                "JET_AUDIT_RETENTION_DAYS",
                get("JET_AUDIT_RETENTION_DAYS"),
                "365",
            )?,
            dlq_retention_days: parse(
                "JET_DLQ_RETENTION_DAYS",
                get("JET_DLQ_RETENTION_DAYS"),
                "30",
            )?,
            listener_inbox_retention_hours: parse(
                "JET_LISTENER_INBOX_RETENTION_HOURS",
                get("JET_LISTENER_INBOX_RETENTION_HOURS"),
                "24",
            )?,
            worker_health_addr: get("JET_WORKER_HEALTH_ADDR")
                .map(|v| parse("JET_WORKER_HEALTH_ADDR", Some(v), ""))
                .transpose()?,
            node_max_claims: parse("JET_NODE_MAX_CLAIMS", get("JET_NODE_MAX_CLAIMS"), "5")?,
            node_max_output_bytes: parse(
                "JET_NODE_MAX_OUTPUT_BYTES",
                get("JET_NODE_MAX_OUTPUT_BYTES"),
                "1048576",
            )?,
            max_graph_nodes: parse("JET_MAX_GRAPH_NODES", get("JET_MAX_GRAPH_NODES"), "1000")?,
            sse_max_streams: parse("JET_SSE_MAX_STREAMS", get("JET_SSE_MAX_STREAMS"), "256")?,
            sse_max_streams_per_tenant: parse(
                "JET_SSE_MAX_STREAMS_PER_TENANT",
                get("JET_SSE_MAX_STREAMS_PER_TENANT"),
                "32",
            )?,
            js_concurrency: parse("JET_JS_CONCURRENCY", get("JET_JS_CONCURRENCY"), "0")?,
            max_running_children: parse(
                "JET_MAX_RUNNING_CHILDREN",
                get("JET_MAX_RUNNING_CHILDREN"),
                "1000",
            )?,
            datasource_deny: deny_entries(get("JET_DATASOURCE_DENY_HOSTS"))?,
            metrics_addr: get("JET_METRICS_ADDR")
                .map(|v| parse("JET_METRICS_ADDR", Some(v), ""))
                .transpose()?,
            metrics_sample_seconds: parse(
                "JET_METRICS_SAMPLE_SECONDS",
                get("JET_METRICS_SAMPLE_SECONDS"),
                "15",
            )?,
        })
    }

    /// `DATABASE_URL`, or an error saying how to provide it.
    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or(ConfigError {
            var: "DATABASE_URL",
            reason: "not set (e.g. postgres://user@127.0.0.1:5432/jet); `jet dev` sets it for you"
                .into(),
        })
    }
}

fn parse<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = value.unwrap_or_else(|| default.to_owned());
    raw.trim().parse().map_err(|e: T::Err| ConfigError {
        var,
        reason: format!("cannot parse `{raw}`: {e}"),
    })
}

/// The deny-list entries: the default when unset, nothing for `none` (an explicit word, so a
/// blank line copied from `.env.example` never switches the protection off).
fn deny_entries(value: Option<String>) -> Result<Vec<DenyEntry>, ConfigError> {
    let Some(value) = value else {
        return Ok(DEFAULT_DENY.to_vec());
    };
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(vec![]);
    }
    value
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            DenyEntry::parse(e).map_err(|reason| ConfigError {
                var: "JET_DATASOURCE_DENY_HOSTS",
                reason,
            })
        })
        .collect()
}

/// A PEM given inline, or a path to a file holding one (handy with mounted secrets).
fn read_pem_or_path(value: &str) -> Result<String, ConfigError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.to_owned());
    }
    std::fs::read_to_string(value).map_err(|e| ConfigError {
        var: "JET_JWT_RS256_PUBLIC_KEY",
        reason: format!("neither a PEM nor a readable file `{value}`: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cfg = load(&[]).expect("defaults are valid");
        assert_eq!(cfg.api_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.log_format, LogFormat::Compact);
        assert_eq!(cfg.max_body_bytes, 1_048_576);
        assert_eq!(cfg.webhook_max_body_bytes, 1_048_576);
        assert!(cfg.database_url.is_none());
        assert!(cfg.require_database_url().is_err());
    }

    #[test]
    fn a_malformed_vault_key_names_the_variable() {
        let err = load(&[("VAULT_ENCRYPTION_KEY", "abc")]).expect_err("too short");
        assert_eq!(err.var, "VAULT_ENCRYPTION_KEY");
    }

    #[test]
    fn an_unknown_log_format_is_rejected() {
        let err = load(&[("JET_LOG_FORMAT", "xml")]).expect_err("unknown");
        assert_eq!(err.var, "JET_LOG_FORMAT");
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let err = load(&[("JET_DB_MAX_CONNECTIONS", "many")]).expect_err("not a number");
        assert_eq!(err.var, "JET_DB_MAX_CONNECTIONS");
    }

    #[test]
    fn the_datasource_deny_list_defaults_to_local_addresses_and_none_empties_it() {
        assert_eq!(load(&[]).expect("valid").datasource_deny, DEFAULT_DENY);
        assert_eq!(
            load(&[("JET_DATASOURCE_DENY_HOSTS", "  ")])
                .expect("valid")
                .datasource_deny,
            DEFAULT_DENY,
            "blank is unset, never `deny nothing`"
        );
        assert!(
            load(&[("JET_DATASOURCE_DENY_HOSTS", "none")])
                .expect("valid")
                .datasource_deny
                .is_empty()
        );
        let custom = load(&[("JET_DATASOURCE_DENY_HOSTS", "loopback, 10.0.0.0/8")])
            .expect("valid")
            .datasource_deny;
        assert_eq!(custom.len(), 2);
        let err = load(&[("JET_DATASOURCE_DENY_HOSTS", "10.0.0.0/99")]).expect_err("bad prefix");
        assert_eq!(err.var, "JET_DATASOURCE_DENY_HOSTS");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let cfg = load(&[("DATABASE_URL", "  ")]).expect("valid");
        assert!(cfg.database_url.is_none());
    }
}
