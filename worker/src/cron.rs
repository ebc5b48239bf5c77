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

use jet_shared::cron::job::db_now;
use jet_shared::cron::schedule::MISFIRE_GRACE;
use jet_shared::cron::scheduler::{self, Round, Wake};
use jet_shared::lifecycle::Shutdown;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;

/// Tunables of the scheduler loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs claimed (and retries/buffered fires started) per transaction. A batch is fired
    /// set-based, in a handful of statements, so a large one costs little more than a small one.
    pub batch: i64,
    /// Transactions firing due jobs at once: many jobs due at the same second are fired in
    /// parallel batches (`SKIP LOCKED` splits them) instead of one after another.
    pub parallel: usize,
    /// How soon to look again when work that is due is held by another replica: it fires
    /// and advances those jobs itself, so looking sooner only competes for the database.
    pub held_recheck: Duration,
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
            batch: 100,
            parallel: 2,
            held_recheck: Duration::from_millis(25),
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
    // The listener has a connection of its own: the pool's are for the scheduling rounds.
    let listening = jet_shared::db::listener_pool(&pool);
    let mut listener = loop {
        match listen(&listening).await {
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
            Ok((round, wake)) => {
                backoff = Backoff(0);
                if round.started + round.held + round.failed + round.timed_out > 0 {
                    tracing::debug!(?round, "cron round");
                }
                if round.claimed as i64 >= settings.batch {
                    continue;
                }
                sleep_for(&wake, &settings)
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

/// How long to sleep after a round that did not fill its batch: until the next due time
/// (at least 1 ms, the timer's resolution; a time that came due during the round is looked
/// at right away), or `held_recheck` when what is due is held by another replica. Every
/// replica wakes at a due time and `SKIP LOCKED` shares the due jobs out; one that finds
/// them all taken waits for their holder rather than re-querying every few milliseconds.
fn sleep_for(wake: &Wake, settings: &Settings) -> Duration {
    match wake.after {
        None => settings.max_sleep,
        Some(_) if wake.held_elsewhere => settings.held_recheck,
        Some(after) => after.max(Duration::from_millis(1)),
    }
    .min(settings.max_sleep)
}

/// One round: due jobs first (their lag is what users see), then waiting fires and
/// time-outs; then when there is work next.
async fn work(pool: &PgPool, settings: &Settings) -> anyhow::Result<(Round, Wake)> {
    let round_start = db_now(pool).await?;
    let fired = futures::future::join_all(
        (0..settings.parallel).map(|_| scheduler::fire_due(pool, settings.batch, settings.grace)),
    )
    .await;
    let mut round = Round::default();
    for r in fired {
        let r = r?;
        // One full batch means more may be due: the caller loops without sleeping.
        round.claimed = round.claimed.max(r.claimed);
        round.add(r);
    }
    round.add(scheduler::start_waiting(pool, settings.batch).await?);
    round.timed_out = scheduler::time_out(pool, settings.batch).await?;
    let wake = scheduler::next_wake(pool, round_start).await?;
    Ok((round, wake))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_next_due_time_or_waits_for_the_holder() {
        let settings = Settings::default();
        let wake = |after: Option<u64>, held: bool| Wake {
            after: after.map(Duration::from_millis),
            held_elsewhere: held,
        };
        assert_eq!(sleep_for(&wake(None, false), &settings), settings.max_sleep);
        assert_eq!(
            sleep_for(&wake(Some(300), false), &settings),
            Duration::from_millis(300)
        );
        assert_eq!(
            sleep_for(&wake(Some(0), false), &settings),
            Duration::from_millis(1),
            "due during the round: look again at once"
        );
        assert_eq!(
            sleep_for(&wake(Some(0), true), &settings),
            settings.held_recheck
        );
        assert_eq!(
            sleep_for(&wake(Some(3_600_000), false), &settings),
            settings.max_sleep
        );
    }

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
