//! The `maintenance` role: expires overdue human steps every couple of seconds (each request
//! flips once, whichever replica sees it) and runs hourly housekeeping, one replica per round
//! (a transaction advisory lock elects it). On the same tick it retries due DLQ rows
//! (`jet_shared::dlq::retry_due`).

use jet_shared::config::Config;
use jet_shared::lifecycle::Shutdown;
use sqlx::PgPool;
use std::time::Duration;

/// Advisory-lock key of the maintenance round ("jetmaint").
const ROUND_LOCK: i64 = 0x6a65_746d_6169_6e74;
/// How often pending human steps are checked for expiry.
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_secs(2);
/// DLQ rows one automatic-retry pass claims at most.
const DLQ_RETRY_BATCH: i64 = 100;
/// Rows deleted per statement, so a backlog never holds long locks.
const PRUNE_BATCH: i64 = 1000;

/// What the role does and how often.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Audit rows older than this many days are deleted; 0 keeps them forever.
    pub audit_retention_days: u32,
    /// DISCARDED and REPLAYED DLQ rows resolved longer ago are purged; 0 keeps them forever.
    pub dlq_retention_days: u32,
    /// Processed listener events older than this many hours are deleted; 0 keeps them.
    pub listener_inbox_retention_hours: u32,
    /// Time between rounds.
    pub interval: Duration,
}

impl Settings {
    /// Settings from configuration; one round per hour.
    pub fn from_config(config: &Config) -> Self {
        Self {
            audit_retention_days: config.audit_retention_days,
            dlq_retention_days: config.dlq_retention_days,
            listener_inbox_retention_hours: config.listener_inbox_retention_hours,
            interval: Duration::from_secs(3600),
        }
    }
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// False when another replica held the round lock.
    pub ran: bool,
    /// Audit rows deleted.
    pub audit_rows_pruned: u64,
    /// Resolved DLQ rows purged.
    pub dlq_rows_purged: u64,
    /// Processed listener events and their action records deleted.
    pub listener_rows_purged: u64,
}

/// Runs rounds until shutdown, and the DLQ's bulk runs beside them; `data` lets DLQ retries
/// re-run listener actions that query datasources.
pub async fn run(
    pool: PgPool,
    settings: Settings,
    data: std::sync::Arc<jet_shared::datasource::DataRuntime>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let bulk = work_bulk_runs(pool.clone(), data.clone(), shutdown.clone());
    let rounds = run_rounds(pool, settings, data, shutdown);
    let (_, result) = tokio::join!(bulk, rounds);
    result
}

/// Works through bulk DLQ runs (any replica may; one run is worked by one replica at a time).
async fn work_bulk_runs(
    pool: PgPool,
    data: std::sync::Arc<jet_shared::datasource::DataRuntime>,
    mut shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        let rt = jet_shared::dlq::Rerun {
            pool: &pool,
            data: &data,
        };
        let idle = match jet_shared::dlq::runs::work(rt, BULK_SLICE).await {
            Ok(Some((run, acted))) => {
                tracing::debug!(%run, acted, "dlq bulk run worked on");
                false
            }
            Ok(None) => true,
            Err(err) => {
                tracing::warn!(error = %err, "dlq bulk run failed; retrying");
                true
            }
        };
        if idle {
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(BULK_POLL) => {}
            }
        }
    }
}

/// How often the slots of deactivated CDC listeners are checked against their WAL limit.
const PAUSED_SLOT_CHECK: Duration = Duration::from_secs(60);

/// How long one replica works on a bulk run before recording progress and looking again.
const BULK_SLICE: Duration = Duration::from_secs(2);
/// How often an idle replica looks for bulk runs.
const BULK_POLL: Duration = Duration::from_millis(500);

async fn run_rounds(
    pool: PgPool,
    settings: Settings,
    data: std::sync::Arc<jet_shared::datasource::DataRuntime>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    loop {
        match round(&pool, &settings).await {
            Ok(report) if report.ran => {
                tracing::info!(
                    pruned = report.audit_rows_pruned,
                    dlq_purged = report.dlq_rows_purged,
                    listener_purged = report.listener_rows_purged,
                    "maintenance round done"
                );
            }
            Ok(_) => tracing::debug!("another replica runs this maintenance round"),
            Err(err) => {
                tracing::warn!(error = %err, "maintenance round failed; retrying next interval")
            }
        }
        // Human steps expire on a short tick; the housekeeping round runs every `interval`.
        let next_round = tokio::time::Instant::now() + settings.interval;
        let mut slots_checked: Option<tokio::time::Instant> = None;
        while tokio::time::Instant::now() < next_round {
            if slots_checked.is_none_or(|t| t.elapsed() >= PAUSED_SLOT_CHECK) {
                slots_checked = Some(tokio::time::Instant::now());
                match jet_shared::listener::cdc::guard_paused_slots(&pool, &data).await {
                    Ok(found) => {
                        for (listener, outcome) in found {
                            if let jet_shared::listener::cdc::Paused::Dropped(bytes) = outcome {
                                tracing::warn!(%listener, retained_bytes = bytes, "a paused CDC listener's slot was over its WAL limit and was dropped");
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "checking paused CDC slots failed"),
                }
            }
            match jet_shared::workflow::human::expire_due(&pool).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "human steps expired"),
                Err(err) => tracing::warn!(error = %err, "expiring human steps failed"),
            }
            match jet_shared::dlq::sweep_lost_reruns(&pool).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    rows = n,
                    "dlq re-runs whose command vanished are pending again"
                ),
                Err(err) => tracing::warn!(error = %err, "sweeping lost dlq re-runs failed"),
            }
            // Due DLQ rows are retried on the same tick; SKIP LOCKED shares them between replicas.
            match jet_shared::dlq::retry_due(
                jet_shared::dlq::Rerun {
                    pool: &pool,
                    data: &data,
                },
                DLQ_RETRY_BATCH,
                "maintenance",
            )
            .await
            {
                Ok(report) if report.claimed.is_empty() => {}
                Ok(report) => tracing::info!(
                    claimed = report.claimed.len(),
                    rerun = report.rerun,
                    failed = report.failed,
                    "dlq rows retried"
                ),
                Err(err) => tracing::warn!(error = %err, "retrying dlq rows failed"),
            }
            tokio::select! {
                () = shutdown.wait() => return Ok(()),
                () = tokio::time::sleep(EXPIRY_TICK.min(settings.interval)) => {}
            }
        }
    }
}

/// One round, if this replica wins the round lock.
pub async fn round(pool: &PgPool, settings: &Settings) -> anyhow::Result<RoundReport> {
    let mut tx = pool.begin().await?;
    let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(ROUND_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !won {
        return Ok(RoundReport::default());
    }
    let mut pruned = 0;
    if settings.audit_retention_days > 0 {
        loop {
            let n = jet_shared::audit::prune_older_than(
                pool,
                settings.audit_retention_days,
                PRUNE_BATCH,
            )
            .await?;
            pruned += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    let mut purged = 0;
    if settings.dlq_retention_days > 0 {
        loop {
            let n = jet_shared::dlq::purge_resolved(pool, settings.dlq_retention_days, PRUNE_BATCH)
                .await?;
            purged += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    let mut listener_rows = 0;
    if settings.listener_inbox_retention_hours > 0 {
        loop {
            let n = jet_shared::listener::retention::purge(
                pool,
                settings.listener_inbox_retention_hours,
                settings.dlq_retention_days,
                PRUNE_BATCH,
            )
            .await?;
            listener_rows += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    tx.commit().await?;
    Ok(RoundReport {
        ran: true,
        audit_rows_pruned: pruned,
        dlq_rows_purged: purged,
        listener_rows_purged: listener_rows,
    })
}
