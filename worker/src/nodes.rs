//! The `nodes` role: claims node executions in batches, runs them, and settles each in one
//! transaction. Wake-up by LISTEN/NOTIFY with a polling fallback (NOTIFY is only a hint: the
//! worker always re-queries). Long nodes keep their lease with heartbeats; expired leases of
//! dead workers are reaped back into the ready set by every replica.

use jet_shared::lifecycle::Shutdown;
use jet_shared::workflow::graph::Graph;
use jet_shared::workflow::queue::{self, Claimed, NodeResult, Settled};
use jet_shared::workflow::{definition, instance, nodes};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

/// Tunables of the node loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Executions claimed per query.
    pub batch: i64,
    /// Lease length; a dead worker's executions run again this long after its last heartbeat.
    pub lease: Duration,
    /// Poll interval when no NOTIFY arrives.
    pub poll: Duration,
}

impl Settings {
    /// Lease and batch from configuration; a 500 ms poll fallback.
    pub fn from_config(config: &jet_shared::config::Config) -> Self {
        Self {
            batch: config.node_batch.clamp(1, 1000),
            lease: Duration::from_secs(config.node_lease_seconds.clamp(1, 3600)),
            ..Self::default()
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 32,
            lease: Duration::from_secs(10),
            poll: Duration::from_millis(500),
        }
    }
}

/// Retry policy of a node: `nodeConfig` > `workflowOptions` defaults > platform defaults.
#[derive(Debug, Clone, Copy)]
struct Policy {
    retry_limit: i32,
    retry_delay: Duration,
    timeout: Duration,
}

fn policy(config: &serde_json::Value, options: &serde_json::Value) -> Policy {
    let pick = |node_key: &str, wf_key: &str, default: u64| {
        config
            .get(node_key)
            .and_then(serde_json::Value::as_u64)
            .or_else(|| options.get(wf_key).and_then(serde_json::Value::as_u64))
            .unwrap_or(default)
    };
    Policy {
        retry_limit: pick("retryLimit", "defaultRetryLimit", 0).min(10) as i32,
        retry_delay: Duration::from_secs(
            pick("retryDelaySeconds", "defaultRetryDelaySeconds", 5).min(300),
        ),
        timeout: Duration::from_secs(
            pick("timeoutSeconds", "defaultNodeTimeoutSeconds", 60).clamp(1, 3600),
        ),
    }
}

/// Exponential backoff with jitter: uniform in [base·2^n / 2, base·2^n], capped at 5 minutes.
fn backoff(base: Duration, retries_so_far: i32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << retries_so_far.clamp(0, 10))
        .min(Duration::from_secs(300));
    exp.mul_f64(0.5 + 0.5 * jitter())
}

/// A number in [0, 1]. Jitter only spreads retries apart; the clock's nanoseconds suffice.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1001) / 1000.0
}

/// A workflow's graph and options as of one `updatedAt`.
#[derive(Clone)]
struct CachedWorkflow {
    updated_at: chrono::DateTime<chrono::Utc>,
    graph: Arc<Graph>,
    options: serde_json::Value,
}

/// Workflow graphs by id, reloaded when the workflow's `updatedAt` moves, so a batch does not
/// reload the same graph for every node.
#[derive(Default)]
struct GraphCache(Mutex<HashMap<Uuid, CachedWorkflow>>);

impl GraphCache {
    async fn get(
        &self,
        pool: &PgPool,
        workflow_id: Uuid,
    ) -> anyhow::Result<(Arc<Graph>, serde_json::Value)> {
        let (updated_at, options) = definition::version(pool, workflow_id).await?;
        let mut cache = self.0.lock().await;
        if let Some(hit) = cache.get(&workflow_id)
            && hit.updated_at == updated_at
        {
            return Ok((hit.graph.clone(), hit.options.clone()));
        }
        let mut conn = pool.acquire().await?;
        let graph = Arc::new(definition::load_graph(&mut conn, workflow_id).await?);
        cache.insert(
            workflow_id,
            CachedWorkflow {
                updated_at,
                graph: graph.clone(),
                options: options.clone(),
            },
        );
        Ok((graph, options))
    }
}

/// Runs the node loop until shutdown; held executions are finished or released first.
pub async fn run(
    pool: PgPool,
    worker_id: String,
    settings: Settings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let owner = format!("{worker_id}-nodes");
    let cache = Arc::new(GraphCache::default());
    // Register interest before the first query, so no NOTIFY between them is missed.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen("jet_node_executions").await?;
    let mut last_reap = tokio::time::Instant::now();
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        if last_reap.elapsed() >= settings.lease / 2 {
            match queue::reap_expired(&pool).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(reaped = n, "returned expired leases to the ready set"),
                Err(err) => tracing::warn!(error = %err, "reaping failed"),
            }
            last_reap = tokio::time::Instant::now();
        }
        let claimed = match queue::claim(&pool, &owner, settings.lease, settings.batch).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "claim failed; retrying");
                tokio::time::sleep(settings.poll).await;
                continue;
            }
        };
        if claimed.is_empty() {
            // Sleep until a NOTIFY, the poll interval, or shutdown; then re-query regardless.
            tokio::select! {
                () = shutdown.wait() => return Ok(()),
                n = listener.try_recv() => {
                    if let Err(err) = n {
                        tracing::warn!(error = %err, "notification listener failed; polling");
                        tokio::time::sleep(settings.poll).await;
                    }
                }
                () = tokio::time::sleep(settings.poll) => {}
            }
            continue;
        }
        let mut set = tokio::task::JoinSet::new();
        for c in claimed {
            let (pool, owner, cache, lease) =
                (pool.clone(), owner.clone(), cache.clone(), settings.lease);
            set.spawn(async move {
                if let Err(err) = execute(&pool, &owner, &cache, &c, lease).await {
                    tracing::warn!(execution = c.execution_id, error = %err, "execution not settled; its lease will expire");
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

/// Runs one claimed execution and settles (or releases) it.
async fn execute(
    pool: &PgPool,
    owner: &str,
    cache: &GraphCache,
    c: &Claimed,
    lease: Duration,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", instance = %c.instance_id, node = %c.node_id, attempt = c.node_attempt);
    let _guard = span.enter();
    let Some((Some(workflow_id), status)) = instance::runtime(pool, c.instance_id).await? else {
        return Ok(()); // the instance is gone; its executions went with it
    };
    if status != "RUNNING" {
        queue::discard(pool, c, owner).await?;
        return Ok(());
    }
    let (graph, options) = cache.get(pool, workflow_id).await?;
    let Some(node) = graph.nodes.get(&c.node_id).cloned() else {
        let result = NodeResult::Failed(format!("node {} is no longer in the workflow", c.node_id));
        queue::settle(pool, c, owner, &graph, &result).await?;
        return Ok(());
    };
    let policy = policy(&node.config, &options);
    let ctx = instance::load_context(pool, c.instance_id).await?;
    // Keep the lease while the node runs (only long nodes outlive a half lease).
    let heartbeat = {
        let (pool, c, owner) = (pool.clone(), c.clone(), owner.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if !matches!(queue::heartbeat(&pool, &c, &owner, lease).await, Ok(true)) {
                    return;
                }
            }
        })
    };
    let timeout = policy.timeout;
    let run = if node.node_type.needs_sandbox(&node.config) {
        // Scripts block their thread until done or interrupted at `timeout`.
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            nodes::run(node.node_type, &node.id, &node.config, &ctx, timeout)
        })
        .await
        .map_err(|e| anyhow::anyhow!("script thread failed: {e}"))
        .map(Ok)?
    } else {
        tokio::time::timeout(timeout, async {
            nodes::run(node.node_type, &node.id, &node.config, &ctx, timeout)
        })
        .await
    };
    heartbeat.abort();
    let outcome = match run {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(message)) => Err(message),
        Err(_) => Err(format!("timed out after {} s", policy.timeout.as_secs())),
    };
    let result = match outcome {
        Ok(outcome) => NodeResult::Completed(outcome),
        Err(message) if c.retry_count < policy.retry_limit => {
            let delay = backoff(policy.retry_delay, c.retry_count);
            tracing::info!(error = %message, retry_in_ms = delay.as_millis() as u64, "node failed; retrying");
            queue::release(pool, c, owner, Some((delay, &message))).await?;
            return Ok(());
        }
        Err(message) => NodeResult::Failed(message),
    };
    match queue::settle(pool, c, owner, &graph, &result).await? {
        Settled::LostLease => {
            tracing::warn!("lease lost before settling; another worker runs this node")
        }
        Settled::Duplicate => tracing::info!("duplicate result ignored"),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_config_beats_workflow_defaults_beats_platform() {
        let p = policy(
            &json!({"retryLimit": 2}),
            &json!({"defaultRetryLimit": 5, "defaultRetryDelaySeconds": 1}),
        );
        assert_eq!(p.retry_limit, 2);
        assert_eq!(p.retry_delay, Duration::from_secs(1));
        assert_eq!(policy(&json!({}), &json!({})).retry_limit, 0);
    }

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        for n in 0..4 {
            let d = backoff(Duration::from_secs(1), n);
            let full = Duration::from_secs(1 << n);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
        assert!(backoff(Duration::from_secs(100), 9) <= Duration::from_secs(300));
    }
}
