//! The `listeners` role: holds NOTIFY and CDC listeners and runs the pipeline.
//!
//! **Holding.** Each active `postgresql` listener is held by exactly one worker of the fleet
//! through a lease (`tblListenerHolds`), renewed every few seconds; a holder killed with
//! `kill -9` loses its leases after [`holds::LEASE`] and another listener worker takes them.
//! A holder takes at most its fair share (listeners over live listener workers) and gives
//! back what is over it, so listeners spread across replicas. Changes (create, update,
//! activate, deactivate, delete) wake the holders through NOTIFY `jet_listeners`; a held
//! listener whose definition or datasource changed is restarted, one that was deactivated or
//! deleted is stopped and released.
//!
//! **Sources.** A held listener runs its source (NOTIFY or CDC) in a task that restarts it
//! with capped exponential backoff forever. After [`FAILURES_BEFORE_ERROR`] failures in a row
//! the listener's status is `error` with the reason; it returns to `active` by itself when the
//! source connects again. A fatal failure (the slot is gone, the datasource is not
//! PostgreSQL) stops the source until the listener is changed or activated again.
//!
//! **Pipeline.** Inbox events are claimed with `SKIP LOCKED` (woken by NOTIFY
//! `jet_listener_inbox`) and run through the listener's actions; see
//! [`jet_shared::listener::pipeline`]. Every replica of the role runs the pipeline.

use chrono::{DateTime, Utc};
use jet_shared::datasource::{self, DataRuntime};
use jet_shared::ids::TenantId;
use jet_shared::lifecycle::Shutdown;
use jet_shared::listener::inbox::{INBOX_CHANNEL, LISTENERS_CHANNEL};
use jet_shared::listener::source::{Reporter, SourceContext, SourceError};
use jet_shared::listener::{Kind, Listener, cdc, holds, model, notify, pipeline};
use jet_shared::workflow::storable::scrub_message;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Source failures in a row before the listener shows status `error`.
pub const FAILURES_BEFORE_ERROR: u32 = 3;
/// Longest wait between source restarts.
const MAX_SOURCE_BACKOFF: Duration = Duration::from_secs(60);

/// Tunables of the role.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events one pipeline claim takes.
    pub pipeline_batch: i64,
    /// Events run at once by this worker's pipeline.
    pub pipeline_parallel: usize,
    /// Longest pipeline sleep without a notification (bounds what a lost NOTIFY delays).
    pub pipeline_poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pipeline_batch: 32,
            pipeline_parallel: 8,
            pipeline_poll: Duration::from_secs(1),
        }
    }
}

/// Runs the holder and the pipeline until shutdown; gives every held listener back on the way
/// out so another worker takes it at once.
pub async fn run(
    pool: PgPool,
    worker_id: String,
    settings: Settings,
    data: Arc<DataRuntime>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let wakes = Wakes::default();
    let waker = tokio::spawn(relay_notifications(
        pool.clone(),
        wakes.clone(),
        shutdown.clone(),
    ));
    let holder = hold_listeners(
        pool.clone(),
        worker_id,
        data.clone(),
        wakes.clone(),
        shutdown.clone(),
    );
    let pipeline = run_pipeline(pool, settings, data, wakes, shutdown);
    let (held, piped) = tokio::join!(holder, pipeline);
    waker.abort();
    held.and(piped)
}

// ---------------------------------------------------------------------------------------
// Holding

/// A source this worker runs.
struct Running {
    /// What the source was started with; a change restarts it.
    fingerprint: Fingerprint,
    task: tokio::task::JoinHandle<()>,
    reporter: Reporter,
    /// The source stopped for good (until the listener changes or is activated again).
    fatal: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a running source depends on. Title, description and actions are not in it: the
/// pipeline reads actions per event, and restarting a NOTIFY source would lose notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    datasource_updated: DateTime<Utc>,
    config: String,
    datasource_id: Uuid,
}

/// A held listener as the holder sees it.
#[derive(sqlx::FromRow)]
struct Wanted {
    #[sqlx(rename = "listenerID")]
    listener_id: Uuid,
    #[sqlx(rename = "tenantID")]
    tenant_id: TenantId,
    status: String,
    #[sqlx(rename = "listenerType")]
    listener_type: String,
    #[sqlx(rename = "listenerConfig")]
    config: serde_json::Value,
    #[sqlx(rename = "datasourceID")]
    datasource_id: Uuid,
    #[sqlx(rename = "datasourceUpdatedAt")]
    datasource_updated_at: DateTime<Utc>,
}

impl Wanted {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            datasource_updated: self.datasource_updated_at,
            config: self.config.to_string(),
            datasource_id: self.datasource_id,
        }
    }

    fn should_run(&self) -> bool {
        self.status != "inactive" && self.listener_type == "postgresql"
    }
}

async fn load_wanted(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, Wanted>> {
    let rows: Vec<Wanted> = sqlx::query_as(
        r#"SELECT l."listenerID", l."tenantID", l."status", l."listenerType", l."listenerConfig",
                  l."datasourceID", d."updatedAt" AS "datasourceUpdatedAt"
           FROM "tblListeners" l JOIN "tblDatasources" d ON d."datasourceID" = l."datasourceID"
           WHERE l."listenerID" = ANY($1)"#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|w| (w.listener_id, w)).collect())
}

async fn hold_listeners(
    pool: PgPool,
    worker_id: String,
    data: Arc<DataRuntime>,
    wakes: Wakes,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut held: HashMap<Uuid, Running> = HashMap::new();
    let mut failures = 0u32;
    let mut renewed_at = tokio::time::Instant::now();
    while !shutdown.is_triggered() {
        let pause = match hold_round(&pool, &worker_id, &data, &mut held, &mut renewed_at).await {
            Ok(()) => {
                failures = 0;
                holds::RENEW_EVERY
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, "listener holder round failed; retrying");
                // Leases that could not be renewed lapse; another worker may take them once
                // the database is back. Stop the sources before that can happen, so two
                // workers never listen for the same listener (NOTIFY would deliver twice).
                if !held.is_empty() && renewed_at.elapsed() >= holds::LEASE - holds::RENEW_EVERY {
                    tracing::warn!(
                        held = held.len(),
                        "listener leases could not be renewed; stopping their sources"
                    );
                    held.clear();
                }
                Duration::from_millis(250 * u64::from(failures.min(8)))
            }
        };
        tokio::select! {
            () = shutdown.wait() => break,
            () = wakes.listeners.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    // Stop every source, then hand the listeners back for another worker to take at once.
    held.clear();
    if let Err(err) = holds::release_all(&pool, &worker_id).await {
        tracing::warn!(error = %err, "could not release held listeners; they move when their leases lapse");
    }
    Ok(())
}

/// One holder round: renew, reconcile what is held with what is wanted, take a fair share.
async fn hold_round(
    pool: &PgPool,
    worker_id: &str,
    data: &Arc<DataRuntime>,
    held: &mut HashMap<Uuid, Running>,
    renewed_at: &mut tokio::time::Instant,
) -> anyhow::Result<()> {
    // Bounded, so a database that stopped answering is noticed before the leases lapse.
    let mine = tokio::time::timeout(holds::RENEW_EVERY, holds::renew(pool, worker_id))
        .await
        .map_err(|_| anyhow::anyhow!("renewing listener leases timed out"))??;
    *renewed_at = tokio::time::Instant::now();
    // Lost (taken over after a lapse, or the listener was deleted): stop at once.
    held.retain(|id, _| mine.contains(id));
    let wanted = load_wanted(pool, &mine).await?;
    for id in &mine {
        let Some(listener) = wanted.get(id).filter(|w| w.should_run()) else {
            held.remove(id);
            holds::release(pool, worker_id, *id).await?;
            continue;
        };
        let fingerprint = listener.fingerprint();
        let restart = match held.get(id) {
            None => true,
            Some(running) if running.fingerprint != fingerprint => true,
            // Activated again after a fatal stop.
            Some(running) => running.fatal.load(Ordering::SeqCst) && listener.status == "active",
        };
        if restart {
            held.remove(id);
            held.insert(*id, start(pool, data, listener.tenant_id, *id, fingerprint));
            continue;
        }
        if let Some(running) = held.get(id) {
            let report = running.reporter.get();
            holds::report(pool, worker_id, *id, &report).await?;
            if report.connected
                && listener.status == "error"
                && !running.fatal.load(Ordering::SeqCst)
            {
                holds::set_status(pool, *id, "active", None).await?;
            }
        }
    }
    let share = holds::fair_share(pool).await?;
    let count = i64::try_from(held.len()).unwrap_or(i64::MAX);
    if count > share {
        // Over the share (another worker joined): give the newest back.
        let extra: Vec<Uuid> = held
            .keys()
            .copied()
            .take((count - share) as usize)
            .collect();
        for id in extra {
            held.remove(&id);
            holds::release(pool, worker_id, id).await?;
        }
    } else if count < share {
        let taken = holds::claim(pool, worker_id, share - count).await?;
        if !taken.is_empty() {
            let wanted = load_wanted(pool, &taken).await?;
            for id in taken {
                match wanted.get(&id).filter(|w| w.should_run()) {
                    Some(w) => {
                        tracing::info!(listener = %id, "holding listener");
                        held.insert(id, start(pool, data, w.tenant_id, id, w.fingerprint()));
                    }
                    None => holds::release(pool, worker_id, id).await?,
                }
            }
        }
    }
    Ok(())
}

/// Starts the source task of a listener.
fn start(
    pool: &PgPool,
    data: &Arc<DataRuntime>,
    tenant_id: TenantId,
    listener_id: Uuid,
    fingerprint: Fingerprint,
) -> Running {
    let reporter = Reporter::default();
    let fatal = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(keep_source_running(
        pool.clone(),
        data.clone(),
        tenant_id,
        listener_id,
        reporter.clone(),
        fatal.clone(),
    ));
    Running {
        fingerprint,
        task,
        reporter,
        fatal,
    }
}

/// Runs a listener's source, restarting it with capped exponential backoff; keeps the
/// listener's status and error current.
async fn keep_source_running(
    pool: PgPool,
    data: Arc<DataRuntime>,
    tenant_id: TenantId,
    listener_id: Uuid,
    reporter: Reporter,
    fatal: Arc<AtomicBool>,
) {
    let mut failures = 0u32;
    loop {
        let stopped = match context(&pool, &data, tenant_id, listener_id, &reporter).await {
            Ok(ctx) => match &ctx.kind {
                Kind::Notify { channels } => notify::run(&ctx, channels).await.err(),
                Kind::Cdc(config) => cdc::run(&ctx, config).await.err(),
                Kind::Webhook => Some(SourceError::Fatal(
                    "webhook listeners receive events over HTTP; no worker holds them".into(),
                )),
            },
            Err(err) => Some(err),
        };
        let had_connected = reporter.get().connected;
        reporter.disconnected();
        let Some(err) = stopped else { return };
        let message = scrub_message(&err.to_string());
        if had_connected {
            failures = 0;
        }
        failures += 1;
        match err {
            SourceError::Fatal(_) => {
                tracing::warn!(listener = %listener_id, error = %message, "listener source stopped");
                fatal.store(true, Ordering::SeqCst);
                if let Err(e) = holds::set_status(&pool, listener_id, "error", Some(&message)).await
                {
                    tracing::warn!(listener = %listener_id, error = %e, "could not record the listener's error");
                }
                return;
            }
            SourceError::Transient(_) => {
                tracing::warn!(listener = %listener_id, error = %message, failures, "listener source failed; reconnecting");
                if failures >= FAILURES_BEFORE_ERROR
                    && let Err(e) =
                        holds::set_status(&pool, listener_id, "error", Some(&message)).await
                {
                    tracing::warn!(listener = %listener_id, error = %e, "could not record the listener's error");
                }
            }
        }
        let delay = Duration::from_millis(500)
            .saturating_mul(1 << failures.min(8))
            .min(MAX_SOURCE_BACKOFF);
        tokio::time::sleep(delay).await;
    }
}

/// What the source of `listener_id` runs with, read fresh at each (re)start.
async fn context(
    pool: &PgPool,
    data: &Arc<DataRuntime>,
    tenant_id: TenantId,
    listener_id: Uuid,
    reporter: &Reporter,
) -> Result<SourceContext, SourceError> {
    let transient =
        |e: jet_shared::Error| SourceError::Transient(format!("reading the listener failed: {e}"));
    let listener: Listener = model::get(pool, tenant_id, listener_id)
        .await
        .map_err(transient)?;
    let kind = Kind::parse(&listener.listener_type, &listener.config)
        .map_err(|e| SourceError::Fatal(format!("the listener's configuration is invalid: {e}")))?;
    let datasource = datasource::get(pool, data, tenant_id, listener.datasource_id)
        .await
        .map_err(|e| match e {
            jet_shared::Error::Invalid(m) => SourceError::Fatal(m),
            jet_shared::Error::NotFound(_) => {
                SourceError::Fatal("the listener's datasource no longer exists".into())
            }
            other => transient(other),
        })?;
    if datasource.datasource_type != "postgresql" {
        return Err(SourceError::Fatal(format!(
            "a postgresql listener needs a postgresql datasource, not `{}`",
            datasource.datasource_type
        )));
    }
    Ok(SourceContext {
        platform: pool.clone(),
        data: data.clone(),
        listener,
        kind,
        datasource_type: datasource.datasource_type,
        datasource_options: datasource.options,
        reporter: reporter.clone(),
    })
}

// ---------------------------------------------------------------------------------------
// Pipeline

async fn run_pipeline(
    pool: PgPool,
    settings: Settings,
    data: Arc<DataRuntime>,
    wakes: Wakes,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        let pause = match pipeline::claim(&pool, settings.pipeline_batch).await {
            Ok(events) => {
                failures = 0;
                let full =
                    i64::try_from(events.len()).unwrap_or(i64::MAX) >= settings.pipeline_batch;
                match pipeline::process_batch(&pool, &data, events, settings.pipeline_parallel)
                    .await
                {
                    Ok(outcomes) => {
                        for (id, outcome) in outcomes {
                            // A failure leaves the event pending; it runs again after its lease.
                            if let Err(err) = outcome {
                                tracing::warn!(event = %id, error = %err, "listener event failed; it runs again after its lease");
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "reading the batch's listeners failed; the events run again after their lease")
                    }
                }
                if full {
                    continue;
                }
                settings.pipeline_poll
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, "claiming listener events failed; retrying");
                Duration::from_millis(250 * u64::from(failures.min(8)))
            }
        };
        tokio::select! {
            () = shutdown.wait() => break,
            () = wakes.inbox.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

/// Wake-ups for the holder (a listener changed) and the pipeline (events arrived).
#[derive(Clone, Default)]
struct Wakes {
    listeners: Arc<tokio::sync::Notify>,
    inbox: Arc<tokio::sync::Notify>,
}

/// Relays NOTIFY `jet_listeners` and `jet_listener_inbox` to the loops, over one connection of
/// its own (not the shared pool's, whose connections the loops need). While it is down the
/// loops poll on their timers; after a reconnect both are woken, since anything may have
/// happened meanwhile.
async fn relay_notifications(pool: PgPool, wakes: Wakes, mut shutdown: Shutdown) {
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut failures = 0u32;
    while !shutdown.is_triggered() {
        let listening = async {
            let mut listener = PgListener::connect_with(&own).await?;
            listener
                .listen_all([LISTENERS_CHANNEL, INBOX_CHANNEL])
                .await?;
            wakes.listeners.notify_one();
            wakes.inbox.notify_one();
            failures = 0;
            while let Some(note) = listener.try_recv().await? {
                match note.channel() {
                    LISTENERS_CHANNEL => wakes.listeners.notify_one(),
                    _ => wakes.inbox.notify_one(),
                }
            }
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = shutdown.wait() => break,
            result = listening => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "listener notifications unavailable; polling");
                }
            }
        }
        failures += 1;
        let delay = Duration::from_millis(250).saturating_mul(1 << failures.min(6));
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    own.close().await;
}
