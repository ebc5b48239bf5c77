//! The `cron` role: fires due cron jobs, exactly once per due time across any number of
//! replicas (row locks with `SKIP LOCKED` plus a unique key per due time), times out long
//! runs, retries fires that could not start, and starts buffered fires.
//!
//! It sleeps until the earliest due time (read from the database's clock), woken early by
//! NOTIFY `jet_cron` when a job is created, enabled or moved earlier, or when a run that
//! holds back a buffered fire ends. The LISTEN connection is registered before the first
//! query; while it is down (it reconnects on the next receive) a notification can be lost,
//! which only delays a wake-up until the sleep cap (`max_sleep`). Database errors never end
//! the role: every failure is logged and retried with capped exponential backoff.

use jet_shared::cron::schedule::MISFIRE_GRACE;
use jet_shared::cron::scheduler::{self, Round};
use jet_shared::lifecycle::Shutdown;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;

/// Tunables of the scheduler loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs claimed (and retries/buffered fires started) per transaction.
    pub batch: i64,
    /// Transactions firing due jobs at once: many jobs due at the same second are fired in
    /// parallel batches (`SKIP LOCKED` splits them) instead of one after another.
    pub parallel: usize,
    /// A due time further behind than this counts as missed (see the catch-up policy).
    pub grace: Duration,
    /// Longest sleep without a notification: bounds what a lost NOTIFY can delay.
    pub max_sleep: Duration,
    /// How often the replica records itself as alive.
    pub heartbeat: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 32,
            parallel: 2,
            grace: MISFIRE_GRACE,
            max_sleep: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// Doubling delays from 250 ms, capped at 30 s; reset after a success.
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(250).saturating_mul(1 << self.0.min(7));
        self.0 += 1;
        delay.min(Duration::from_secs(30))
    }
}

/// Runs the scheduler until shutdown.
pub async fn run(
    pool: PgPool,
    worker_id: String,
    settings: Settings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut backoff = Backoff(0);
    let mut listener = loop {
        match listen(&pool).await {
            Ok(l) => break l,
            Err(err) => {
                let delay = backoff.next();
                tracing::warn!(error = %err, ?delay, "cron listener cannot connect; retrying");
                tokio::select! {
                    () = shutdown.wait() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    backoff = Backoff(0);
    let mut last_beat: Option<tokio::time::Instant> = None;
    while !shutdown.is_triggered() {
        if last_beat.is_none_or(|t| t.elapsed() >= settings.heartbeat) {
            match scheduler::heartbeat(&pool, &worker_id).await {
                Ok(()) => last_beat = Some(tokio::time::Instant::now()),
                Err(err) => tracing::warn!(error = %err, "cron heartbeat failed"),
            }
        }
        let wait = match work(&pool, &settings).await {
            Ok((round, wait)) => {
                backoff = Backoff(0);
                if round.started + round.held + round.failed + round.timed_out > 0 {
                    tracing::debug!(?round, "cron round");
                }
                if round.claimed as i64 >= settings.batch {
                    continue;
                }
                // Something due that this replica could not claim is held by another one,
                // which is firing it right now: look again shortly rather than spin.
                wait.unwrap_or(settings.max_sleep)
                    .clamp(Duration::from_millis(5), settings.max_sleep)
            }
            Err(err) => {
                let delay = backoff.next();
                tracing::warn!(error = %err, ?delay, "cron round failed; retrying");
                delay
            }
        };
        tokio::select! {
            () = shutdown.wait() => break,
            note = listener.try_recv() => {
                // Ok(None): the connection dropped and the next call reconnects. Either way
                // the loop re-queries; a failed reconnect backs off.
                if let Err(err) = note {
                    let delay = backoff.next();
                    tracing::warn!(error = %err, ?delay, "cron listener failed; polling");
                    tokio::time::sleep(delay).await;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
    if let Err(err) = scheduler::leave(&pool, &worker_id).await {
        tracing::warn!(error = %err, "could not leave the scheduler list");
    }
    Ok(())
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("jet_cron").await?;
    Ok(listener)
}

/// One round: due jobs first (their lag is what users see), then waiting fires and
/// time-outs; then how long until the next due time.
async fn work(pool: &PgPool, settings: &Settings) -> anyhow::Result<(Round, Option<Duration>)> {
    let fired = futures::future::join_all(
        (0..settings.parallel).map(|_| scheduler::fire_due(pool, settings.batch, settings.grace)),
    )
    .await;
    let mut round = Round::default();
    for r in fired {
        let r = r?;
        // One full batch means more may be due: the caller loops without sleeping.
        round.claimed = round.claimed.max(r.claimed);
        round.started += r.started;
        round.held += r.held;
        round.failed += r.failed;
    }
    let waiting = scheduler::start_waiting(pool, settings.batch).await?;
    let timed_out = scheduler::time_out(pool, settings.batch).await?;
    round.started += waiting.started;
    round.held += waiting.held;
    round.failed += waiting.failed;
    round.timed_out = timed_out;
    let wait = scheduler::next_wake(pool).await?;
    Ok((round, wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_thirty_seconds() {
        let mut b = Backoff(0);
        assert_eq!(b.next(), Duration::from_millis(250));
        assert_eq!(b.next(), Duration::from_millis(500));
        assert_eq!(b.next(), Duration::from_secs(1));
        for _ in 0..20 {
            assert!(b.next() <= Duration::from_secs(30));
        }
        assert_eq!(b.next(), Duration::from_secs(30));
    }
}
