//! The process's Prometheus metrics: one registry holding every `jet_…` family, the calls the
//! API and the worker roles record through, and the scrape that renders them as text.
//!
//! The registry is process-wide (a `static`): recording is a call from wherever the event
//! happens, with no handle threaded through every role. Labels take values from closed sets
//! (operation ids, node types, outcomes, queue names, statuses), never ids or paths, so the
//! number of series stays bounded whatever the traffic.

mod sampler;

pub use sampler::Sampler;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The `Content-Type` of a scrape: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A label set: label names are fixed by the code, values come from closed sets.
type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Latency buckets in seconds, 1 ms to 30 s: requests, node runs and claims alike.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// Executions per claim: powers of two up to the largest `JET_NODE_BATCH` (1000).
fn batch_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ])
}

/// Every metric family of the process.
pub(crate) struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    http_duration: HistogramFamily,
    node_executions: Family<Labels, Counter>,
    node_duration: HistogramFamily,
    claim_duration: Histogram,
    claim_batch: Histogram,
    leases_reaped: Counter,
    leases_lost: Counter,
    pool_connections: Family<Labels, Gauge>,
    pool_max: Gauge,
    api_info: Family<Labels, Gauge>,
    worker_info: Family<Labels, Gauge>,
    pub(crate) ops: sampler::OpsGauges,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(seconds_histogram),
            node_executions: Family::default(),
            node_duration: Family::new_with_constructor(seconds_histogram),
            claim_duration: seconds_histogram(),
            claim_batch: batch_histogram(),
            leases_reaped: Counter::default(),
            leases_lost: Counter::default(),
            pool_connections: Family::default(),
            pool_max: Gauge::default(),
            api_info: Family::default(),
            worker_info: Family::default(),
            ops: sampler::OpsGauges::default(),
        };
        // Counters are registered without `_total`: the encoder appends it.
        let r = &mut m.registry;
        r.register(
            "jet_http_requests",
            "HTTP requests answered, by OpenAPI operation id (`unmatched` when no route matched) and status code",
            m.http_requests.clone(),
        );
        r.register(
            "jet_http_request_duration_seconds",
            "Time to answer an HTTP request (to its response head), by operation id",
            m.http_duration.clone(),
        );
        r.register(
            "jet_node_executions",
            "Node executions run by workers, by node type and outcome (completed, failed, retried)",
            m.node_executions.clone(),
        );
        r.register(
            "jet_node_execution_duration_seconds",
            "Time a node took to run (not counting its settle), by node type",
            m.node_duration.clone(),
        );
        r.register(
            "jet_node_claim_duration_seconds",
            "Time of one claim query of the node queue, empty claims included",
            m.claim_duration.clone(),
        );
        r.register(
            "jet_node_claim_batch_size",
            "Node executions taken by one claim that found work",
            m.claim_batch.clone(),
        );
        r.register(
            "jet_node_leases_reaped",
            "Expired node leases (their holder stopped renewing them) returned to the ready set",
            m.leases_reaped.clone(),
        );
        r.register(
            "jet_node_leases_lost",
            "Node results dropped at settle because their lease had expired and moved on",
            m.leases_lost.clone(),
        );
        r.register(
            "jet_db_pool_connections",
            "Connections of this process's database pool, by state (in_use, idle)",
            m.pool_connections.clone(),
        );
        r.register(
            "jet_db_pool_max_connections",
            "Size limit of this process's database pool (JET_DB_MAX_CONNECTIONS)",
            m.pool_max.clone(),
        );
        r.register(
            "jet_api_info",
            "1 for a process serving the HTTP API, with its version",
            m.api_info.clone(),
        );
        r.register(
            "jet_worker_info",
            "1 for a process running worker roles, with its version, roles and worker id",
            m.worker_info.clone(),
        );
        m.ops.register(r);
        m
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

/// Records one answered HTTP request.
pub fn record_http_request(operation: &str, status: u16, elapsed: Duration) {
    let m = metrics();
    m.http_requests
        .get_or_create(&vec![
            ("operation", operation.to_owned()),
            ("status", status.to_string()),
        ])
        .inc();
    m.http_duration
        .get_or_create(&vec![("operation", operation.to_owned())])
        .observe(elapsed.as_secs_f64());
}

/// How a node's run ended, as far as its worker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOutcome {
    /// It produced an outcome (which may still be an `end` node failing its run).
    Completed,
    /// It failed with a retry left: it runs again after a backoff.
    Retried,
    /// It failed for good: its error edge or `errorHandling` decide what follows.
    Failed,
}

impl NodeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            NodeOutcome::Completed => "completed",
            NodeOutcome::Retried => "retried",
            NodeOutcome::Failed => "failed",
        }
    }
}

/// Records one run of a node of type `node_type` (a `NodeType::as_str`).
pub fn record_node_execution(node_type: &str, outcome: NodeOutcome, elapsed: Duration) {
    let m = metrics();
    m.node_executions
        .get_or_create(&vec![
            ("node_type", node_type.to_owned()),
            ("outcome", outcome.as_str().to_owned()),
        ])
        .inc();
    m.node_duration
        .get_or_create(&vec![("node_type", node_type.to_owned())])
        .observe(elapsed.as_secs_f64());
}

/// Records one claim of the node queue that took `elapsed` and returned `claimed` rows.
pub(crate) fn record_claim(claimed: usize, elapsed: Duration) {
    let m = metrics();
    m.claim_duration.observe(elapsed.as_secs_f64());
    if claimed > 0 {
        m.claim_batch.observe(claimed as f64);
    }
}

/// Records `n` expired leases returned to the ready set.
pub(crate) fn record_leases_reaped(n: u64) {
    metrics().leases_reaped.inc_by(n);
}

/// Records a result that arrived after its lease was lost.
pub(crate) fn record_lease_lost() {
    metrics().leases_lost.inc();
}

/// Marks this process as serving the API (`jet_api_info`).
pub fn set_api_info() {
    metrics()
        .api_info
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
        .set(1);
}

/// Marks this process as a worker (`jet_worker_info`) with its roles (comma-separated) and id.
pub fn set_worker_info(roles: &str, worker_id: &str) {
    metrics()
        .worker_info
        .get_or_create(&vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("roles", roles.to_owned()),
            ("worker_id", worker_id.to_owned()),
        ])
        .set(1);
}

/// Everything a scrape needs: the process's pool and the sampler of the `jet_ops` views.
#[derive(Clone)]
pub struct Scrape {
    pool: PgPool,
    sampler: std::sync::Arc<Sampler>,
}

impl Scrape {
    /// A scrape of `pool`, sampling the views at most every `sample_every`.
    pub fn new(pool: PgPool, sample_every: Duration) -> Self {
        Self {
            pool,
            sampler: std::sync::Arc::new(Sampler::new(sample_every)),
        }
    }

    /// The text of one scrape: pool figures read now, view gauges refreshed when stale.
    pub async fn render(&self) -> String {
        let m = metrics();
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        let size = i64::from(self.pool.size());
        m.pool_connections
            .get_or_create(&vec![("state", "in_use".to_owned())])
            .set(size.saturating_sub(idle).max(0));
        m.pool_connections
            .get_or_create(&vec![("state", "idle".to_owned())])
            .set(idle);
        m.pool_max
            .set(i64::from(self.pool.options().get_max_connections()));
        self.sampler.refresh(&self.pool).await;
        encode()
    }
}

/// The registry as Prometheus text.
pub fn encode() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label value.
    if let Err(err) = prometheus_text::encode(&mut out, &metrics().registry) {
        tracing::error!(error = %err, "metrics encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_figures_appear_in_the_text_with_their_labels() {
        record_node_execution(
            "unit_test_type",
            NodeOutcome::Retried,
            Duration::from_millis(3),
        );
        record_http_request("unitTestOperation", 418, Duration::from_millis(2));
        let text = encode();
        assert!(
            text.contains(
                r#"jet_node_executions_total{node_type="unit_test_type",outcome="retried"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"jet_node_execution_duration_seconds_bucket{le="0.005",node_type="unit_test_type"} 1"#)
                || text.contains(r#"jet_node_execution_duration_seconds_bucket{node_type="unit_test_type",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"jet_http_requests_total{operation="unitTestOperation",status="418"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE jet_queue_depth gauge"), "{text}");
    }
}
