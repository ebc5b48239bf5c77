//! The `nodes` role: claims node executions in batches, runs them, and settles each in one
//! transaction. Wake-up by LISTEN/NOTIFY with a polling fallback (NOTIFY is only a hint: the
//! worker always re-queries). Long nodes keep their lease with heartbeats; expired leases of
//! dead workers are reaped back into the ready set by every replica.

use crate::graph_cache::GraphCache;
use jet_shared::dataquery;
use jet_shared::datasource::DataRuntime;
use jet_shared::ids::TenantId;
use jet_shared::lifecycle::Shutdown;
use jet_shared::metrics;
use jet_shared::workflow::graph::Graph;
use jet_shared::workflow::nodes::{ErrorMode, NodeType, Outcome};
use jet_shared::workflow::queue::{self, Claimed};
use jet_shared::workflow::settle::{self, NodeResult, Settled};
use jet_shared::workflow::{nodes, storable, subworkflow};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

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
    /// Claims without a result after which an execution fails instead of running again.
    pub max_claims: i32,
    /// Largest node output stored; a larger one fails its node.
    pub max_output_bytes: usize,
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
            max_claims: config.node_max_claims.clamp(1, 1000),
            max_output_bytes: config.node_max_output_bytes.max(1024),
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
            max_claims: 5,
            max_output_bytes: 1 << 20,
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

/// Runs the node loops until shutdown: `concurrency` loops that each claim a batch, run it
/// and settle it in one transaction. A batch in flight when shutdown begins is finished (its
/// leases kept alive) before its loop returns, unless the shutdown aborts first: then what
/// is unfinished is stopped and released to other workers.
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
    // Register interest before the first claim, so no NOTIFY between them is missed. The
    // listener has a connection of its own: the pool's are for the claim loops.
    let listening = jet_shared::db::listener_pool(&pool);
    let mut listener = sqlx::postgres::PgListener::connect_with(&listening).await?;
    listener.listen("jet_node_executions").await?;
    let cache = Arc::new(GraphCache::default());
    let mut loops = tokio::task::JoinSet::new();
    for n in 0..settings.concurrency {
        let ctx = LoopContext {
            pool: pool.clone(),
            owner: format!("{worker_id}-nodes-{n}"),
            settings: settings.clone(),
            cache: cache.clone(),
            data: data.clone(),
        };
        loops.spawn(claim_loop(ctx, wake.clone(), shutdown.clone()));
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

/// What a claim loop's batches share: the pool, the lease owner, settings and caches.
struct LoopContext {
    pool: PgPool,
    owner: String,
    settings: Settings,
    cache: Arc<GraphCache>,
    data: Arc<DataRuntime>,
}

/// Executions a claim loop holds in batches that have not returned, by id with the claim
/// count of their lease: what it hands back if shutdown stops them before they finish.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<HashMap<i64, i32>>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, claimed: &[Claimed]) {
        self.lock()
            .extend(claimed.iter().map(|c| (c.execution_id, c.claim_count)));
    }

    fn remove(&self, ids: &[i64]) {
        let mut held = self.lock();
        for id in ids {
            held.remove(id);
        }
    }

    fn all(&self) -> Vec<(i64, i32)> {
        self.lock()
            .iter()
            .map(|(&id, &claims)| (id, claims))
            .collect()
    }
}

/// One claim loop: claim a batch, run it, and claim again as soon as the batch's early
/// results are settled; sleep until woken or the poll interval when there is nothing to
/// claim. Stragglers (slow nodes, results whose instance is locked) finish in the background
/// within a budget of `2 × batch` executions in flight per loop. Expired leases are reaped
/// along the way. On shutdown the loop stops claiming and lets its batches finish (their
/// leases kept alive) until the shutdown aborts; then it stops them and releases what they
/// still hold, so other workers take it at once.
async fn claim_loop(
    ctx: LoopContext,
    wake: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ctx = Arc::new(ctx);
    let settings = &ctx.settings;
    let slots = Arc::new(tokio::sync::Semaphore::new(2 * settings.batch as usize));
    let mut batches = tokio::task::JoinSet::new();
    let held = Held::default();
    let mut last_reap = tokio::time::Instant::now();
    loop {
        while batches.try_join_next().is_some() {}
        if shutdown.is_triggered() {
            break;
        }
        if last_reap.elapsed() >= settings.lease / 2 {
            match queue::reap_expired(&ctx.pool).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(reaped = n, "returned expired leases to the ready set"),
                Err(err) => tracing::warn!(error = %err, "reaping failed"),
            }
            last_reap = tokio::time::Instant::now();
        }
        let mut permits = tokio::select! {
            () = shutdown.wait() => break,
            first = slots.clone().acquire_owned() => vec![first?],
        };
        while (permits.len() as i64) < settings.batch {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let want = permits.len() as i64;
        let batch = match queue::claim_batch(&ctx.pool, &ctx.owner, settings.lease, want).await {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, "claim failed; retrying");
                tokio::time::sleep(settings.poll).await;
                continue;
            }
        };
        if batch.claimed.is_empty() {
            drop(permits);
            // NOTIFY is only a hint: whatever wakes the loop, it re-queries.
            tokio::select! {
                () = shutdown.wait() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(settings.poll) => {}
            }
            continue;
        }
        if batch.claimed.len() as i64 == settings.batch {
            wake.notify_one();
        }
        permits.truncate(batch.claimed.len());
        held.add(&batch.claimed);
        let ids: Vec<i64> = batch.claimed.iter().map(|c| c.execution_id).collect();
        let (early, settled_early) = tokio::sync::oneshot::channel();
        let (batch_ctx, batch_held) = (ctx.clone(), held.clone());
        batches.spawn(async move {
            run_batch(batch_ctx, batch, permits, early).await;
            // Settled, retried, parked or left to expire: nothing of it is ours to release.
            batch_held.remove(&ids);
        });
        // Either the early results are settled or the batch ended; claim again. A drain
        // does not wait for that: the batch goes on in `batches`, watched by `drain`.
        tokio::select! {
            _ = settled_early => {}
            () = shutdown.wait() => break,
        }
    }
    drain(&ctx, batches, &held, shutdown).await;
    Ok(())
}

/// Lets the batches of a stopping claim loop finish until the shutdown aborts; then stops
/// them (scripts included) and releases what they hold, fenced by owner and claim count.
async fn drain(
    ctx: &LoopContext,
    mut batches: tokio::task::JoinSet<()>,
    held: &Held,
    mut shutdown: Shutdown,
) {
    let finished = async { while batches.join_next().await.is_some() {} };
    tokio::select! {
        () = finished => return,
        () = shutdown.wait_abort() => {}
    }
    // Scripts run on blocking threads an aborted task cannot stop: interrupt them too.
    jet_shared::workflow::sandbox::abort_all();
    batches.abort_all();
    while batches.join_next().await.is_some() {}
    let unfinished = held.all();
    match queue::release_unfinished(&ctx.pool, &ctx.owner, &unfinished).await {
        Ok(released) => tracing::info!(
            owner = %ctx.owner,
            released,
            "shutdown grace over: released the leases of unfinished nodes to other workers"
        ),
        Err(err) => tracing::warn!(
            owner = %ctx.owner,
            error = %err,
            "could not release unfinished nodes; they run again when their leases expire"
        ),
    }
}

/// What became of one claimed execution after running it.
enum Ran {
    /// Ready to settle.
    Settle(settle::Pending),
    /// Failed with retries left: give it back, due after `delay`.
    Retry(Claimed, Duration, String),
    /// Its instance is no longer running: drop it.
    Discard(Claimed),
    /// Nothing left to do here: a sub-workflow node parked its execution to wait for its
    /// child, or lost its lease before writing anything.
    Parked,
}

/// Results that finish within this window of the first settle together; a slower node
/// settles later on its own, so it never holds the rest of its batch.
const SETTLE_WINDOW: Duration = Duration::from_millis(20);

/// How long a result whose instance another transaction holds keeps being tried (its lease
/// kept alive meanwhile) before it is let go, and its node runs again elsewhere.
const MAX_BUSY_WAIT: Duration = Duration::from_secs(60);

/// A node's run, finished, with the slot it holds in its claim loop's budget and its span
/// (kept open until its result is settled, so the settle's log lines carry its context).
type Finished = (
    anyhow::Result<Ran>,
    tokio::sync::OwnedSemaphorePermit,
    Duration,
    tracing::Span,
);

/// The span of one node execution: a root of the log context (never the claim loop's or
/// another execution's span, so a line names exactly one execution), and in traces a child
/// of the span that started its instance. `node_type` is recorded once the graph is read.
fn node_span(owner: &str, c: &Claimed, view: Option<&queue::InstanceView>) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "node",
        worker = %owner,
        instance = %c.instance_id,
        node = %c.node_id,
        attempt = c.node_attempt,
        retry = c.retry_count,
        node_type = tracing::field::Empty,
    );
    let parent = view.and_then(|v| v.trace_context.as_deref());
    jet_shared::telemetry::set_remote_parent(&span, parent);
    span
}

/// Runs a claimed batch (read with its claim): the nodes concurrently (scripts on
/// blocking threads), and settles their results as they finish: whatever finishes within
/// [`SETTLE_WINDOW`] of the first goes into one settle transaction, the rest into later ones.
/// `early` is told once the first group is settled, so the claim loop moves on while
/// stragglers finish here. A result whose instance is locked elsewhere is tried again with
/// backoff, its lease kept, for up to [`MAX_BUSY_WAIT`].
async fn run_batch(
    ctx: Arc<LoopContext>,
    batch: queue::ClaimedBatch,
    permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    early: tokio::sync::oneshot::Sender<()>,
) {
    let queue::ClaimedBatch { claimed, views } = batch;
    // Keep every lease of the batch until its last result is settled (or the batch is
    // aborted at the end of a shutdown drain: the guard stops the heartbeat with it).
    let _heartbeat = keep_leases(&ctx.pool, &ctx.owner, &claimed, ctx.settings.lease);
    // Each node is a task of its own, not a future polled by this one: while this task
    // awaits a settle (which needs a pooled connection), a node future it alone polled would
    // stand still, holding the connection (or the pool's turn for one) it had been given.
    // Every batch doing so at once took all connections and none was used until the pool's
    // acquire timeout: the stall of two workers draining a backlog. Tasks keep moving. They
    // are aborted with the set if this batch is (end of a shutdown drain).
    let mut running = tokio::task::JoinSet::new();
    for (c, permit) in claimed.into_iter().zip(permits) {
        let view = views.get(&c.instance_id).cloned();
        let span = node_span(&ctx.owner, &c, view.as_ref());
        let ctx = ctx.clone();
        running.spawn(async move {
            let ran = run_one(
                &ctx.pool,
                &ctx.owner,
                &ctx.cache,
                &ctx.data,
                c,
                view,
                &ctx.settings,
            )
            .instrument(span.clone())
            .await;
            (ran, permit, Duration::ZERO, span)
        });
    }
    let mut early = Some(early);
    while let Some(first) = next_finished(&mut running).await {
        let mut ran: Vec<Finished> = vec![first];
        let window = tokio::time::sleep(SETTLE_WINDOW);
        tokio::pin!(window);
        loop {
            tokio::select! {
                next = next_finished(&mut running) => match next {
                    Some(r) => ran.push(r),
                    None => break,
                },
                () = &mut window => break,
            }
        }
        for (pending, permit, waited, span) in settle_ran(&ctx.pool, &ctx.owner, ran).await {
            if waited >= MAX_BUSY_WAIT {
                span.in_scope(|| {
                    tracing::warn!(
                        "instance stayed locked by another transaction; letting the lease expire"
                    )
                });
                continue;
            }
            let pause = (Duration::from_millis(20) * 2u32.pow(waited.as_secs().min(5) as u32))
                .min(Duration::from_secs(1));
            running.spawn(async move {
                tokio::time::sleep(pause).await;
                (Ok(Ran::Settle(pending)), permit, waited + pause, span)
            });
        }
        if let Some(early) = early.take() {
            let _ = early.send(());
        }
    }
}

/// The next node of a batch to finish; `None` once all have. A node task that panicked is
/// logged and skipped: its lease expires and it runs again elsewhere.
async fn next_finished(running: &mut tokio::task::JoinSet<Finished>) -> Option<Finished> {
    loop {
        match running.join_next().await? {
            Ok(finished) => return Some(finished),
            Err(err) => {
                tracing::error!(error = %err, "node task failed; its lease will expire")
            }
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extends the leases of `claimed` every third of a lease until aborted. A failed heartbeat
/// (a lost connection, a restarting database) is retried at the next tick: stopping at the
/// first error would let long nodes lose their leases and run twice.
fn keep_leases(pool: &PgPool, owner: &str, claimed: &[Claimed], lease: Duration) -> AbortOnDrop {
    let (pool, owner) = (pool.clone(), owner.to_owned());
    let held: Vec<(i64, i32)> = claimed
        .iter()
        .map(|c| (c.execution_id, c.claim_count))
        .collect();
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(err) = queue::heartbeat_batch(&pool, &owner, &held, lease).await {
                tracing::warn!(error = %err, "lease heartbeat failed; retrying at the next tick");
            }
        }
    }))
}

/// Settles the results of finished nodes, hands back failed tries and drops results of runs
/// that ended; returns the results whose instance another transaction holds, to try again.
/// One failure never keeps the others from being settled.
async fn settle_ran(
    pool: &PgPool,
    owner: &str,
    ran: Vec<Finished>,
) -> Vec<(
    settle::Pending,
    tokio::sync::OwnedSemaphorePermit,
    Duration,
    tracing::Span,
)> {
    let mut pending = Vec::new();
    let mut held = HashMap::new();
    for (outcome, permit, waited, span) in ran {
        match outcome {
            Ok(Ran::Settle(p)) => {
                held.insert(p.claimed.execution_id, (permit, waited, span));
                pending.push(p);
            }
            Ok(Ran::Retry(c, delay, message)) => {
                let released = queue::release(pool, &c, owner, Some((delay, &message)));
                if let Err(err) = released.instrument(span.clone()).await {
                    span.in_scope(|| {
                        tracing::warn!(error = %err,
                        "retry not recorded; the lease will expire and the node runs again")
                    });
                }
            }
            Ok(Ran::Discard(c)) => {
                if let Err(err) = queue::discard(pool, &c, owner).await {
                    span.in_scope(|| tracing::warn!(error = %err, "discard failed"));
                }
            }
            Ok(Ran::Parked) => {}
            Err(err) => span
                .in_scope(|| tracing::warn!(error = %err, "node not run; its lease will expire")),
        }
    }
    let settled = settle::settle_batch(pool, owner, pending).await;
    for (execution, result) in settled.outcomes {
        let span = held
            .get(&execution)
            .map_or_else(tracing::Span::none, |(_, _, span)| span.clone());
        let _in_node = span.enter();
        match result {
            Ok(Settled::LostLease) => tracing::warn!(
                execution,
                "lease lost before settling; another worker runs this node"
            ),
            Ok(Settled::Duplicate) => {
                tracing::info!(execution, "duplicate result ignored")
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(execution, error = %err,
                    "settle failed; the lease will expire and the node runs again")
            }
        }
    }
    settled
        .busy
        .into_iter()
        .filter_map(|p| {
            let (permit, waited, span) = held.remove(&p.claimed.execution_id)?;
            Some((p, permit, waited, span))
        })
        .collect()
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
    let Some(view) = view.filter(|v| v.status == "RUNNING") else {
        return Ok(Ran::Discard(c));
    };
    // Claims that never produced a result: each ended with a dead worker or a result that
    // could not be stored. Running it again would repeat its side effects for nothing.
    // Claims handed back by draining workers ran nothing to its end: they do not count.
    let unsettled_claims = c.claim_count - c.retry_count - c.release_count;
    if unsettled_claims > settings.max_claims {
        let message = format!(
            "the node was claimed {unsettled_claims} times without a result (its worker stopped or its result could not be stored); giving up (JET_NODE_MAX_CLAIMS = {})",
            settings.max_claims
        );
        tracing::warn!(error = %message, "node fails instead of running again");
        let graph = match (view.workflow_id, view.workflow_version) {
            (Some(workflow_id), Some(version)) => cache.get(pool, workflow_id, version).await?,
            _ => Arc::new(Graph {
                nodes: Default::default(),
                edges: vec![],
            }),
        };
        return Ok(Ran::Settle(settle::Pending {
            claimed: c,
            graph,
            result: NodeResult::Failed(message),
        }));
    }
    let (graph, options) = match (view.workflow_id, view.workflow_version) {
        (Some(workflow_id), Some(version)) => (
            cache.get(pool, workflow_id, version).await?,
            view.workflow_options.clone(),
        ),
        // A test run carries its graph in its context.
        _ => match jet_shared::workflow::instance::test_graph(&view.context) {
            Ok((graph, options)) => (Arc::new(graph), options),
            Err(err) => {
                let empty = Arc::new(Graph {
                    nodes: Default::default(),
                    edges: vec![],
                });
                return Ok(Ran::Settle(settle::Pending {
                    claimed: c,
                    graph: empty,
                    result: NodeResult::Failed(err.to_string()),
                }));
            }
        },
    };
    let Some(node) = graph.nodes.get(&c.node_id).cloned() else {
        let result = NodeResult::Failed(format!("node {} is no longer in the workflow", c.node_id));
        return Ok(Ran::Settle(settle::Pending {
            claimed: c,
            graph,
            result,
        }));
    };
    tracing::Span::current().record("node_type", node.node_type.as_str());
    let policy = policy(&node.config, &options);
    let timeout = policy.timeout;
    let started = std::time::Instant::now();
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
        // A query writes outside the engine, where no settle can fence it. A worker that was
        // frozen or cut off after claiming must not run it once its lease has moved on (the
        // node may have run and settled elsewhere meanwhile): `run_node` checks the lease,
        // and extends it, as its last step before the query.
        // A lease that cannot be checked counts as lost: the query does not run, and the
        // node runs again once the lease expires (as any node whose worker lost the database).
        let fence = async {
            Ok(queue::heartbeat(pool, &c, owner, settings.lease)
                .await
                .inspect_err(|err| tracing::warn!(error = %err, "lease not checked"))
                .unwrap_or(false))
        };
        let run = dataquery::run_node(
            pool,
            data,
            TenantId(c.tenant_id),
            &node.config,
            &view.context,
            fence,
        );
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(Some(outcome))) => Ok(outcome),
            Ok(Ok(None)) => {
                tracing::warn!("lease not held before the query ran; the query did not run");
                return Ok(Ran::Parked);
            }
            Ok(Err(message)) => Err(message),
            Err(_) => Err(format!("the query did not finish within {timeout:?}")),
        }
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
    // A result that cannot be stored is the node's failure, not its settle's.
    let result = result
        .and_then(|outcome| storable::check(&outcome, settings.max_output_bytes).map(|()| outcome));
    let failed = result.is_err();
    let ran = conclude(
        c,
        graph,
        node.node_type,
        &node.config,
        policy,
        result.map_err(|message| storable::scrub_message(&message)),
    );
    let outcome = match (&ran, failed) {
        (_, false) => metrics::NodeOutcome::Completed,
        (Ran::Retry(..), true) => metrics::NodeOutcome::Retried,
        (_, true) => metrics::NodeOutcome::Failed,
    };
    metrics::record_node_execution(node.node_type.as_str(), outcome, started.elapsed());
    Ok(ran)
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
    Ran::Settle(settle::Pending {
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
