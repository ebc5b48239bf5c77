//! The fleet gauges read from the `jet_ops` views: queue depth and oldest ready age per
//! queue, DLQ rows by status, cron lag and listener lag.
//!
//! The views count rows, so reading them on every scrape of every replica would put the
//! scrape rate on the database. Instead a scrape refreshes them only when the last sample is
//! older than `JET_METRICS_SAMPLE_SECONDS`, one scrape at a time, each view read under a
//! `statement_timeout`. A view that fails to read keeps its last figures (its
//! `jet_ops_sample_timestamp_seconds` stops moving and `jet_ops_sample_failures_total`
//! counts up); the others are still refreshed and served. Per queue, never per tenant: the
//! number of series must not grow with the number of tenants.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::{FloatGauge, Labels};

/// Longest a view read may run before the database cancels it.
const STATEMENT_TIMEOUT: &str = "1s";
/// Longest a whole view sample may take, the connection checkout included: the four views
/// together stay within Prometheus's default 10 s scrape timeout even when all time out.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(2);
/// The queues of `jet_ops.queue_depth`: always exported, so an empty queue reads 0.
const QUEUES: [&str; 2] = ["nodes", "listener_events"];
/// The states of a queue's rows, as columns of `jet_ops.queue_depth`.
const QUEUE_STATES: [&str; 4] = ["ready", "delayed", "leased", "expired_leases"];

/// The gauges the sampler sets.
#[derive(Default)]
pub(crate) struct OpsGauges {
    queue_depth: Family<Labels, FloatGauge>,
    queue_oldest_ready: Family<Labels, FloatGauge>,
    dlq_entries: Family<Labels, FloatGauge>,
    cron_overdue: FloatGauge,
    cron_lag_p99: FloatGauge,
    listener_lag_bytes: FloatGauge,
    listener_pending: FloatGauge,
    listeners_unheld: FloatGauge,
    sample_failures: Family<Labels, Counter>,
    sample_timestamp: Family<Labels, Gauge<f64, AtomicU64>>,
}

/// The views the sampler reads, as the `view` label of its own figures.
const VIEWS: [&str; 4] = ["queue_depth", "dlq_summary", "cron", "listeners"];

impl OpsGauges {
    /// Registers the gauges, every known series present from the start (at 0, and a sample
    /// timestamp of 0 for "never"): a family with no series is left out of a scrape, and
    /// dashboards and alerts must find the name before the first event or sample.
    pub(crate) fn register(&self, r: &mut Registry) {
        for queue in QUEUES {
            for state in QUEUE_STATES {
                self.queue_depth
                    .get_or_create(&queue_state(queue, state))
                    .set(0.0);
            }
            self.queue_oldest_ready
                .get_or_create(&vec![("queue", queue.to_owned())])
                .set(0.0);
        }
        for status in crate::dlq::STATUSES {
            self.dlq_entries
                .get_or_create(&vec![("status", (*status).to_owned())])
                .set(0.0);
        }
        for view in VIEWS {
            let label = vec![("view", view.to_owned())];
            self.sample_failures.get_or_create(&label).inc_by(0);
            self.sample_timestamp.get_or_create(&label).set(0.0);
        }
        r.register(
            "jet_queue_depth",
            "Rows of a queue (nodes, listener_events) by state (ready, delayed, leased, expired_leases), from jet_ops.queue_depth",
            self.queue_depth.clone(),
        );
        r.register(
            "jet_queue_oldest_ready_age_seconds",
            "How long the oldest ready row of a queue has been runnable, from jet_ops.queue_depth",
            self.queue_oldest_ready.clone(),
        );
        r.register(
            "jet_dlq_entries",
            "DLQ rows by status, from jet_ops.dlq_summary",
            self.dlq_entries.clone(),
        );
        r.register(
            "jet_cron_overdue_seconds",
            "How late the most overdue enabled cron job is (0 when none is), from jet_ops.cron",
            self.cron_overdue.clone(),
        );
        r.register(
            "jet_cron_fire_lag_p99_seconds",
            "Largest p99 over enabled cron jobs of due time to fired, last hour, from jet_ops.cron",
            self.cron_lag_p99.clone(),
        );
        r.register(
            "jet_listener_lag_bytes",
            "Largest CDC listener lag behind the WAL its holder last sampled, from jet_ops.listeners",
            self.listener_lag_bytes.clone(),
        );
        r.register(
            "jet_listener_pending_events",
            "Listener events waiting for the pipeline, all listeners, from jet_ops.listeners",
            self.listener_pending.clone(),
        );
        r.register(
            "jet_listeners_unheld",
            "Active listeners no live worker holds, from jet_ops.listeners",
            self.listeners_unheld.clone(),
        );
        r.register(
            "jet_ops_sample_failures",
            "Failed reads of a jet_ops view by the metrics sampler (its gauges keep their last figures)",
            self.sample_failures.clone(),
        );
        r.register(
            "jet_ops_sample_timestamp_seconds",
            "Unix time of the last successful sample of a jet_ops view",
            self.sample_timestamp.clone(),
        );
    }
}

/// Refreshes [`OpsGauges`] at most once per interval.
pub struct Sampler {
    every: Duration,
    /// When the last refresh ran; held across a refresh so concurrent scrapes wait for it
    /// rather than start their own.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Sampler {
    /// A sampler refreshing at most every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Samples every view when the last sample is older than the interval.
    pub async fn refresh(&self, pool: &PgPool) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        let g = &super::metrics().ops;
        self.sample("queue_depth", sample_queues(pool, g)).await;
        self.sample("dlq_summary", sample_dlq(pool, g)).await;
        self.sample("cron", sample_cron(pool, g)).await;
        self.sample("listeners", sample_listeners(pool, g)).await;
        *last = Some(Instant::now());
    }

    async fn sample(
        &self,
        view: &'static str,
        read: impl std::future::Future<Output = Result<(), sqlx::Error>>,
    ) {
        let g = &super::metrics().ops;
        let label = vec![("view", view.to_owned())];
        match tokio::time::timeout(SAMPLE_DEADLINE, read).await {
            Ok(Ok(())) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                g.sample_timestamp.get_or_create(&label).set(now);
            }
            Ok(Err(err)) => {
                tracing::warn!(view, error = %err, "metrics: jet_ops view not sampled; keeping its last figures");
                g.sample_failures.get_or_create(&label).inc();
            }
            Err(_) => {
                tracing::warn!(
                    view,
                    "metrics: jet_ops view sample timed out; keeping its last figures"
                );
                g.sample_failures.get_or_create(&label).inc();
            }
        }
    }
}

/// Runs one view read in its own transaction under [`STATEMENT_TIMEOUT`].
async fn read<T>(pool: &PgPool, query: &'static str) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query_as(query).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

async fn sample_dlq(pool: &PgPool, g: &OpsGauges) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, f64)> = read(
        pool,
        "SELECT status::text, sum(rows)::float8 FROM jet_ops.dlq_summary GROUP BY status",
    )
    .await?;
    // A status that emptied reads 0 rather than keeping its last figure.
    for status in crate::dlq::STATUSES {
        if !rows.iter().any(|(s, _)| s == status) {
            g.dlq_entries
                .get_or_create(&vec![("status", (*status).to_owned())])
                .set(0.0);
        }
    }
    for (status, n) in rows {
        g.dlq_entries
            .get_or_create(&vec![("status", status)])
            .set(n);
    }
    Ok(())
}

fn queue_state(queue: &str, state: &str) -> Labels {
    vec![("queue", queue.to_owned()), ("state", state.to_owned())]
}

type QueueRow = (String, f64, f64, f64, f64, f64);

async fn sample_queues(pool: &PgPool, g: &OpsGauges) -> Result<(), sqlx::Error> {
    let rows: Vec<QueueRow> = read(
        pool,
        "SELECT queue, sum(ready)::float8, sum(delayed)::float8, sum(leased)::float8, \
                sum(expired_leases)::float8, \
                COALESCE(extract(epoch FROM max(oldest_ready_age)), 0)::float8 \
         FROM jet_ops.queue_depth GROUP BY queue",
    )
    .await?;
    for queue in QUEUES {
        let row = rows.iter().find(|r| r.0 == queue);
        let (ready, delayed, leased, expired, age) =
            row.map_or((0.0, 0.0, 0.0, 0.0, 0.0), |r| (r.1, r.2, r.3, r.4, r.5));
        for (state, n) in QUEUE_STATES
            .into_iter()
            .zip([ready, delayed, leased, expired])
        {
            g.queue_depth
                .get_or_create(&queue_state(queue, state))
                .set(n);
        }
        g.queue_oldest_ready
            .get_or_create(&vec![("queue", queue.to_owned())])
            .set(age.max(0.0));
    }
    Ok(())
}

async fn sample_cron(pool: &PgPool, g: &OpsGauges) -> Result<(), sqlx::Error> {
    let rows: Vec<(f64, f64)> = read(
        pool,
        "SELECT COALESCE(extract(epoch FROM max(overdue)), 0)::float8, \
                COALESCE(extract(epoch FROM max(lag_p99)), 0)::float8 \
         FROM jet_ops.cron WHERE NOT is_disabled",
    )
    .await?;
    let (overdue, lag) = rows.first().copied().unwrap_or_default();
    g.cron_overdue.set(overdue);
    g.cron_lag_p99.set(lag);
    Ok(())
}

async fn sample_listeners(pool: &PgPool, g: &OpsGauges) -> Result<(), sqlx::Error> {
    let rows: Vec<(f64, f64, f64)> = read(
        pool,
        "SELECT COALESCE(max(lag_bytes), 0)::float8, COALESCE(sum(pending_events), 0)::float8, \
                (count(*) FILTER (WHERE held_by IS NULL OR lease_expires_at < now()))::float8 \
         FROM jet_ops.listeners WHERE status = 'active'",
    )
    .await?;
    let (lag, pending, unheld) = rows.first().copied().unwrap_or_default();
    g.listener_lag_bytes.set(lag);
    g.listener_pending.set(pending);
    g.listeners_unheld.set(unheld);
    Ok(())
}
