//! The `nodes` role: claims node executions in batches, runs them, and settles each in one
//! transaction. Wake-up by LISTEN/NOTIFY with a polling fallback (NOTIFY is only a hint: the
//! worker always re-queries). Long nodes keep their lease with heartbeats; expired leases of
//! dead workers are reaped back into the ready set by every replica.

use jet_shared::dataquery;
use jet_shared::datasource::DataRuntime;
use jet_shared::ids::TenantId;
use jet_shared::lifecycle::Shutdown;
use jet_shared::workflow::graph::Graph;
use jet_shared::workflow::nodes::{ErrorMode, NodeType, Outcome};
use jet_shared::workflow::queue::{self, Claimed, NodeResult, Settled};
use jet_shared::workflow::{definition, nodes, subworkflow};
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
    /// Claim loops in this process, each with one batch in flight.
    pub concurrency: usize,
    /// Lease length; a dead worker's executions run again this long after its last heartbeat.
    pub lease: Duration,
    /// Poll interval when no NOTIFY arrives.
    pub poll: Duration,
    /// Slots for scripts (javascript nodes, expression conditions): they run on blocking
    /// threads, and without a bound every claimed script would compete for the cores at once.
    pub scripts: Arc<tokio::sync::Semaphore>,
    /// Sub-workflow instances a tenant may have running; a node that would start more fails.
    pub max_running_children: i64,
}

impl Settings {
    /// Lease and batch from configuration; a 500 ms poll fallback.
    pub fn from_config(config: &jet_shared::config::Config) -> Self {
        Self {
            batch: config.node_batch.clamp(1, 1000),
            concurrency: config.node_concurrency.clamp(1, 64),
            lease: Duration::from_secs(config.node_lease_seconds.clamp(1, 3600)),
            scripts: script_slots(config.js_concurrency),
            max_running_children: config.max_running_children.max(0),
            ..Self::default()
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 32,
            concurrency: 4,
            lease: Duration::from_secs(10),
            poll: Duration::from_millis(500),
            scripts: script_slots(0),
            max_running_children: 1000,
        }
    }
}

/// `configured` script slots, or with 0 one per core this process may use.
fn script_slots(configured: usize) -> Arc<tokio::sync::Semaphore> {
    let slots = match configured {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    Arc::new(tokio::sync::Semaphore::new(slots))
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

/// A workflow's graph as of one `updatedAt`.
#[derive(Clone)]
struct CachedWorkflow {
    updated_at: chrono::DateTime<chrono::Utc>,
    graph: Arc<Graph>,
}

/// Workflow graphs by id, reloaded when the workflow's `updatedAt` moves, so a batch does not
/// reload the same graph for every node.
#[derive(Default)]
struct GraphCache(Mutex<HashMap<Uuid, CachedWorkflow>>);

impl GraphCache {
    /// The graph as of `updated_at` (read with the batch); reloaded when it moved. The lock is
    /// held only to look up and to insert, never while loading and validating, so one large
    /// graph does not stall the other loops' nodes.
    async fn get(
        &self,
        pool: &PgPool,
        workflow_id: Uuid,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> anyhow::Result<Arc<Graph>> {
        if let Some(hit) = self.0.lock().await.get(&workflow_id)
            && Some(hit.updated_at) == updated_at
        {
            return Ok(hit.graph.clone());
        }
        let mut conn = pool.acquire().await?;
        let graph = Arc::new(definition::load_graph(&mut conn, workflow_id).await?);
        drop(conn);
        if let Some(updated_at) = updated_at {
            self.0.lock().await.insert(
                workflow_id,
                CachedWorkflow {
                    updated_at,
                    graph: graph.clone(),
                },
            );
        }
        Ok(graph)
    }
}

/// Runs the node loops until shutdown: `concurrency` loops that each claim a batch, run it
/// and settle it in one transaction. A batch in flight when shutdown begins is finished (its
/// nodes are short; long ones keep heartbeating) before its loop returns.
///
/// One LISTEN connection serves all loops and wakes one idle loop per notification; a loop
/// that claims a full batch wakes a sibling, since more work is likely waiting. So a burst
/// of NOTIFYs does not turn into a herd of empty claims.
pub async fn run(
    pool: PgPool,
    worker_id: String,
    settings: Settings,
    data: Arc<DataRuntime>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let wake = Arc::new(tokio::sync::Notify::new());
    // Register interest before the first claim, so no NOTIFY between them is missed.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen("jet_node_executions").await?;
    let cache = Arc::new(GraphCache::default());
    let mut loops = tokio::task::JoinSet::new();
    for n in 0..settings.concurrency {
        loops.spawn(claim_loop(
            pool.clone(),
            format!("{worker_id}-nodes-{n}"),
            settings.clone(),
            cache.clone(),
            data.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
    }
    let mut stopping = shutdown.clone();
    loop {
        tokio::select! {
            () = stopping.wait() => break,
            n = listener.try_recv() => match n {
                Ok(Some(_)) => wake.notify_one(),
                // The connection dropped; the next call reconnects. Loops poll meanwhile.
                Ok(None) => wake.notify_waiters(),
                Err(err) => {
                    tracing::warn!(error = %err, "notification listener failed; polling");
                    tokio::time::sleep(settings.poll).await;
                }
            },
        }
    }
    while let Some(done) = loops.join_next().await {
        done??;
    }
    Ok(())
}

/// One claim loop: claim a batch, run it, settle it; sleep until woken or the poll interval
/// when there is nothing to claim. Expired leases are reaped along the way.
async fn claim_loop(
    pool: PgPool,
    owner: String,
    settings: Settings,
    cache: Arc<GraphCache>,
    data: Arc<DataRuntime>,
    wake: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
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
            // NOTIFY is only a hint: whatever wakes the loop, it re-queries.
            tokio::select! {
                () = shutdown.wait() => return Ok(()),
                () = wake.notified() => {}
                () = tokio::time::sleep(settings.poll) => {}
            }
            continue;
        }
        if claimed.len() as i64 == settings.batch {
            wake.notify_one();
        }
        if let Err(err) = run_batch(&pool, &owner, &cache, &data, claimed, &settings).await {
            tracing::warn!(error = %err, "batch not settled; its leases will expire and it runs again");
        }
    }
}

/// What became of one claimed execution after running it.
enum Ran {
    /// Ready to settle.
    Settle(queue::Pending),
    /// Failed with retries left: give it back, due after `delay`.
    Retry(Claimed, Duration, String),
    /// Its instance is no longer running: drop it.
    Discard(Claimed),
    /// Nothing left to do here: a sub-workflow node parked its execution to wait for its
    /// child, or lost its lease before writing anything.
    Parked,
}

/// Runs a claimed batch: one read for all contexts, the nodes concurrently (scripts on
/// blocking threads), then one settle transaction for all results.
async fn run_batch(
    pool: &PgPool,
    owner: &str,
    cache: &GraphCache,
    data: &DataRuntime,
    claimed: Vec<Claimed>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let lease = settings.lease;
    let instance_ids: Vec<Uuid> = claimed.iter().map(|c| c.instance_id).collect();
    let views = queue::prepare(pool, &instance_ids).await?;
    // Keep every lease of the batch while it runs (only long nodes outlive a third of it).
    let heartbeat = {
        let (pool, owner) = (pool.clone(), owner.to_owned());
        let held: Vec<(i64, i32)> = claimed
            .iter()
            .map(|c| (c.execution_id, c.claim_count))
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if queue::heartbeat_batch(&pool, &owner, &held, lease)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut runs = Vec::with_capacity(claimed.len());
    for c in claimed {
        let view = views.get(&c.instance_id).cloned();
        runs.push(run_one(pool, owner, cache, data, c, view, settings));
    }
    let ran = futures::future::join_all(runs).await;
    heartbeat.abort();

    let mut pending = Vec::new();
    for outcome in ran {
        match outcome {
            Ok(Ran::Settle(p)) => pending.push(p),
            Ok(Ran::Retry(c, delay, message)) => {
                queue::release(pool, &c, owner, Some((delay, &message))).await?;
            }
            Ok(Ran::Discard(c)) => queue::discard(pool, &c, owner).await?,
            Ok(Ran::Parked) => {}
            Err(err) => tracing::warn!(error = %err, "node not run; its lease will expire"),
        }
    }
    for (execution, result) in queue::settle_batch(pool, owner, pending).await {
        match result {
            Ok(Settled::LostLease) => tracing::warn!(
                execution,
                "lease lost before settling; another worker runs this node"
            ),
            Ok(Settled::Duplicate) => tracing::info!(execution, "duplicate result ignored"),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(execution, error = %err, "settle failed; the lease will expire and the node runs again")
            }
        }
    }
    Ok(())
}

/// Runs one node of a batch.
async fn run_one(
    pool: &PgPool,
    owner: &str,
    cache: &GraphCache,
    data: &DataRuntime,
    c: Claimed,
    view: Option<queue::InstanceView>,
    settings: &Settings,
) -> anyhow::Result<Ran> {
    let span = tracing::info_span!("node", instance = %c.instance_id, node = %c.node_id, attempt = c.node_attempt);
    let _guard = span.enter();
    let Some(view) = view.filter(|v| v.status == "RUNNING") else {
        return Ok(Ran::Discard(c));
    };
    let (graph, options) = match view.workflow_id {
        Some(workflow_id) => (
            cache
                .get(pool, workflow_id, view.workflow_updated_at)
                .await?,
            view.workflow_options.clone(),
        ),
        // A test run carries its graph in its context.
        None => match jet_shared::workflow::instance::test_graph(&view.context) {
            Ok((graph, options)) => (Arc::new(graph), options),
            Err(err) => {
                let empty = Arc::new(Graph {
                    nodes: Default::default(),
                    edges: vec![],
                });
                return Ok(Ran::Settle(queue::Pending {
                    claimed: c,
                    graph: empty,
                    result: NodeResult::Failed(err.to_string()),
                }));
            }
        },
    };
    let Some(node) = graph.nodes.get(&c.node_id).cloned() else {
        let result = NodeResult::Failed(format!("node {} is no longer in the workflow", c.node_id));
        return Ok(Ran::Settle(queue::Pending {
            claimed: c,
            graph,
            result,
        }));
    };
    let policy = policy(&node.config, &options);
    let timeout = policy.timeout;
    let result = if node.node_type == NodeType::SubWorkflow {
        let step = match c.child_instance_id {
            None => {
                let parent = subworkflow::ParentRun {
                    tenant_id: c.tenant_id,
                    is_test: view.is_test,
                    max_running_children: settings.max_running_children,
                };
                // Only an explicit timeout bounds the wait: a child may rightly wait for
                // people or delays far longer than any platform default.
                let wait = node
                    .config
                    .get("timeoutSeconds")
                    .and_then(serde_json::Value::as_u64)
                    .map(Duration::from_secs);
                subworkflow::start(pool, &c, owner, &node.config, &view.context, parent, wait)
                    .await?
            }
            Some(child) => subworkflow::collect(pool, child, &node.config).await?,
        };
        match step {
            subworkflow::Step::Done(result) => result,
            subworkflow::Step::Waiting => return Ok(Ran::Parked),
            subworkflow::Step::LostLease => {
                tracing::warn!(
                    "lease lost before starting the sub-workflow; another worker has the node"
                );
                return Ok(Ran::Parked);
            }
        }
    } else if node.node_type == NodeType::DataQuery {
        let run = dataquery::run_node(
            pool,
            data,
            TenantId(c.tenant_id),
            &node.config,
            &view.context,
        );
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("the query did not finish within {timeout:?}")))
    } else if node.node_type.needs_sandbox(&node.config) {
        // Scripts block their thread until done or interrupted at `timeout` (which starts
        // when the script does, so waiting for a slot does not eat into it).
        let _slot = settings.scripts.acquire().await?;
        let (node, ctx) = (node.clone(), view.context);
        tokio::task::spawn_blocking(move || {
            nodes::run(node.node_type, &node.id, &node.config, &ctx, timeout)
        })
        .await
        .map_err(|e| anyhow::anyhow!("script thread failed: {e}"))?
    } else {
        nodes::run(
            node.node_type,
            &node.id,
            &node.config,
            &view.context,
            timeout,
        )
    };
    Ok(conclude(
        c,
        graph,
        node.node_type,
        &node.config,
        policy,
        result,
    ))
}

/// Turns a node's run into what happens next: settle its outcome; retry a failure while
/// retries are left (unless the error mode forbids them); then continue on the `error` handle
/// or fail, as `errorHandling` says.
fn conclude(
    c: Claimed,
    graph: Arc<Graph>,
    node_type: NodeType,
    config: &serde_json::Value,
    policy: Policy,
    result: Result<Outcome, String>,
) -> Ran {
    let mode = ErrorMode::of(node_type, config);
    let result = match result {
        Ok(outcome) => NodeResult::Completed(outcome),
        Err(message) if mode.retries() && c.retry_count < policy.retry_limit => {
            let delay = backoff(policy.retry_delay, c.retry_count);
            tracing::info!(error = %message, retry_in_ms = delay.as_millis() as u64, "node failed; retrying");
            return Ran::Retry(c, delay, message);
        }
        Err(message) if mode.continues() => {
            tracing::info!(error = %message, "node failed; continuing on its error handle");
            NodeResult::Completed(nodes::caught_failure(config, &message, c.retry_count + 1))
        }
        Err(message) => NodeResult::Failed(message),
    };
    Ran::Settle(queue::Pending {
        claimed: c,
        graph,
        result,
    })
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
    fn script_slots_default_to_the_cores_and_follow_the_setting() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(script_slots(0).available_permits(), cores);
        assert_eq!(script_slots(3).available_permits(), 3);
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
