//! The `commands` role: consumes the apalis-postgres command queue. Each command runs in one
//! transaction and is idempotent, so a redelivery after a crash changes nothing.
//!
//! Wake-ups: the queue's NOTIFY trigger (pubsub) plus a 1 s poll, because NOTIFY is only a
//! hint (lost while the listener reconnects). A crashed worker's commands are re-enqueued
//! after `heartbeat × missed_heartbeats` = 6 s, not apalis's 5-minute default.

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage, Pubsub};
use jet_shared::commands::{Command, QUEUE};
use jet_shared::lifecycle::Shutdown;
use jet_shared::workflow::instance;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

/// What the handlers share: the pool, and the slots that bound how many of its connections
/// commands may hold at once.
#[derive(Clone)]
struct Handlers {
    pool: PgPool,
    slots: Arc<tokio::sync::Semaphore>,
}

/// Commands in flight per process: apalis runs a whole fetched batch (32) at once, and each
/// command holds a pooled transaction, so unbounded they would queue for every connection of
/// the pool ahead of the node loops. Half the pool leaves the other roles theirs.
fn command_slots(pool: &PgPool) -> usize {
    (pool.options().get_max_connections() as usize / 2).max(1)
}

/// Commands arrive as raw JSON and are decoded here: apalis leaves a payload it cannot decode
/// stuck in `Queued` forever, whereas an undecodable command aborted here is `Killed` and the
/// DLQ trigger parks it.
async fn handle(raw: serde_json::Value, handlers: Data<Handlers>) -> Result<(), BoxDynError> {
    let command: Command = serde_json::from_value(raw)
        .map_err(|e| AbortError::new(format!("undecodable command: {e}")))?;
    let _slot = handlers.slots.acquire().await?;
    let pool = &handlers.pool;
    if let Command::ResumeHumanStep {
        collection_request_id,
    } = command
    {
        let span = answer_span(pool, collection_request_id).await;
        jet_shared::workflow::human::resume(pool, collection_request_id)
            .instrument(span)
            .await?;
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    match command {
        Command::StartInstance { instance_id } => {
            if let Err(err) = instance::start(&mut tx, instance_id).await {
                // A workflow that cannot start (edited into an invalid graph) fails its
                // instance instead of retrying forever.
                tracing::warn!(%instance_id, error = %err, "instance cannot start");
                jet_shared::workflow::finish::finish_instance(
                    &mut tx,
                    instance_id,
                    "FAILED",
                    Some(&err.to_string()),
                )
                .await?;
            }
        }
        Command::CancelInstance { instance_id } => {
            instance::cancel(&mut tx, instance_id).await?;
        }
        Command::ResumeHumanStep { .. } => {} // handled above, outside this transaction
    }
    tx.commit().await?;
    Ok(())
}

/// The span of a human answer's resume: a root for logs, and in traces a child of the span
/// that started the request's instance (the lookup is made only when spans are exported).
async fn answer_span(pool: &PgPool, request: uuid::Uuid) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "human_answer", %request, instance = tracing::field::Empty);
    if jet_shared::telemetry::exporting() {
        match jet_shared::workflow::human::trace_of(pool, request).await {
            Ok(Some((instance, trace))) => {
                span.record("instance", tracing::field::display(instance));
                jet_shared::telemetry::set_remote_parent(&span, trace.as_deref());
            }
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "trace of a human answer not read"),
        }
    }
    span
}

/// Consumes commands until shutdown.
pub async fn run(pool: PgPool, worker_id: String, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let config = Config::default()
        .queue(QUEUE)
        .batch_size(32)
        .heartbeat_interval(Duration::from_secs(2))
        .missed_heartbeats(3)
        // The fetch already marks a command Queued under this worker, and orphan recovery
        // re-enqueues Queued commands of dead workers too; the extra Running write would cost
        // a commit per command for nothing.
        .lock_tasks(false);
    // The NOTIFY listener has a connection of its own, not one of the handlers'.
    let listening = jet_shared::db::listener_pool(&pool);
    let strategy = Strategy::new()
        .stream(Pubsub::new(listening, QUEUE.to_owned()))
        .interval(Duration::from_secs(1));
    let backend = PostgresStorage::<serde_json::Value>::new(&pool)
        .with_config(config)
        .poll_with_strategy(strategy);
    let worker = WorkerBuilder::new(format!("{worker_id}-commands"))
        .backend(backend)
        .data(Handlers {
            slots: Arc::new(tokio::sync::Semaphore::new(command_slots(&pool))),
            pool,
        })
        .build(handle);
    worker
        .run_until(async move {
            shutdown.wait().await;
            Ok::<(), std::io::Error>(())
        })
        .await?;
    Ok(())
}
