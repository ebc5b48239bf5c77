//! The CDC loop: fetch whole transactions, commit their events and the checkpoint in one
//! platform transaction, then acknowledge them on the source; heartbeats, lag samples and the
//! retained-WAL limit.

use super::event::{self, Outcome, Transaction};
use super::pgoutput::{Lsn, Relation};
use super::provision::drop_slot;
use super::transport::{Transport, missing_slot, source_error};
use crate::listener::config::CdcConfig;
use crate::listener::inbox::{self, NewEvent, Source};
use crate::listener::source::{SourceContext, SourceError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// Changes asked for per fetch; a transaction is never split, so a larger one comes whole.
const MAX_CHANGES: i32 = 2000;
/// Idle polling backs off from here…
const MIN_IDLE_DELAY: Duration = Duration::from_millis(5);
/// …to here: the worst added latency on a quiet source.
const MAX_IDLE_DELAY: Duration = Duration::from_millis(25);
/// How often an idle consumer moves the slot past WAL that held nothing for it.
const IDLE_ADVANCE_EVERY: Duration = Duration::from_secs(1);
/// How often retained WAL and lag are sampled (and the limit checked).
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// One running CDC consumer.
pub struct Stream<'a, T: Transport> {
    ctx: &'a SourceContext,
    config: &'a CdcConfig,
    transport: T,
    slot: String,
    secrets: Vec<String>,
    /// Relations seen so far; pgoutput sends each before its first change in every fetch.
    relations: HashMap<u32, Relation>,
    /// The slot's position as far as we have moved it.
    acknowledged: Lsn,
}

/// What a sample says about the slot beyond what it reports.
struct SlotStats {
    /// `confirmed_flush_lsn`: where the next fetch starts.
    confirmed: Lsn,
}

impl<'a, T: Transport> Stream<'a, T> {
    pub fn new(
        ctx: &'a SourceContext,
        config: &'a CdcConfig,
        transport: T,
        slot: String,
        secrets: Vec<String>,
    ) -> Self {
        Self {
            ctx,
            config,
            transport,
            slot,
            secrets,
            relations: HashMap::new(),
            acknowledged: Lsn(0),
        }
    }

    /// Runs until the source or the platform fails.
    pub async fn run(mut self) -> Result<Infallible, SourceError> {
        let stats = self.sample().await?;
        self.acknowledged = stats.confirmed;
        // A crash between the platform commit and the slot advance leaves the slot behind the
        // checkpoint: catch it up now instead of re-reading and skipping those transactions.
        let checkpoint = self.checkpoint().await?;
        if checkpoint > self.acknowledged {
            self.transport.acknowledge(checkpoint).await?;
            self.acknowledged = checkpoint;
        }
        self.ctx.reporter.connected();
        let heartbeat = Duration::from_secs(self.config.heartbeat_seconds);
        let mut last_sample = Instant::now();
        // When the slot last moved: an idle source gets a heartbeat after `heartbeat` of this.
        let mut last_moved = Instant::now();
        let mut last_idle_advance = Instant::now();
        // The flushed position an empty fetch found nothing up to.
        let mut quiet_at: Option<Lsn> = None;
        let mut busy = false;
        let mut delay = MIN_IDLE_DELAY;
        loop {
            if last_sample.elapsed() >= SAMPLE_EVERY {
                self.sample().await?;
                last_sample = Instant::now();
            }
            if last_moved.elapsed() >= heartbeat {
                self.heartbeat().await?;
                last_moved = Instant::now();
            }
            // While changes keep coming, fetch again at once. Otherwise ask first whether the
            // source flushed anything since the last empty fetch: far cheaper than a fetch,
            // which sets up logical decoding each time.
            let flushed = if busy {
                None
            } else {
                Some(self.flushed().await?)
            };
            if flushed.is_none() || flushed != quiet_at {
                let messages = self.transport.fetch(MAX_CHANGES).await?;
                let txs = event::transactions(messages, &mut self.relations).map_err(|e| {
                    SourceError::Fatal(format!(
                        "the replication stream of slot {} cannot be decoded: {e}",
                        self.slot
                    ))
                })?;
                if let Some(last) = txs.last().map(|t| t.end_lsn) {
                    self.commit(&txs).await?;
                    self.transport.acknowledge(last).await?;
                    self.acknowledged = self.acknowledged.max(last);
                    last_moved = Instant::now();
                    busy = true;
                    delay = MIN_IDLE_DELAY;
                    continue;
                }
                busy = false;
                quiet_at = flushed;
            }
            // The fetch saw every transaction flushed before `quiet_at` and none was for us:
            // the slot may move past that WAL (at most once a second, each move decodes too),
            // so that unrelated writes on the source are not read again and again.
            if let Some(lsn) = quiet_at
                && lsn > self.acknowledged
                && last_idle_advance.elapsed() >= IDLE_ADVANCE_EVERY
            {
                self.transport.acknowledge(lsn).await?;
                self.acknowledged = lsn;
                last_moved = Instant::now();
                last_idle_advance = Instant::now();
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_IDLE_DELAY);
        }
    }

    /// Writes the events of every transaction past the checkpoint, and the new checkpoint, in
    /// one platform transaction. The row lock makes a second consumer (a holder that has not
    /// noticed it lost its lease) wait and then see the new checkpoint.
    async fn commit(&mut self, txs: &[Transaction]) -> Result<(), SourceError> {
        let listener = &self.ctx.listener;
        let mut db = self.ctx.platform.begin().await.map_err(platform)?;
        let checkpoint: Option<String> = sqlx::query_scalar(
            r#"SELECT "lsn"::text FROM "tblListenerCheckpoints" WHERE "listenerID" = $1 FOR UPDATE"#,
        )
        .bind(listener.listener_id)
        .fetch_optional(&mut *db)
        .await
        .map_err(platform)?;
        let checkpoint = checkpoint
            .as_deref()
            .and_then(Lsn::parse)
            .ok_or_else(no_checkpoint)?;
        let mut events = Vec::new();
        let mut poison = Vec::new();
        for tx in txs.iter().filter(|t| t.end_lsn > checkpoint) {
            for (index, outcome) in event::events(tx, &self.relations, self.config)
                .into_iter()
                .enumerate()
            {
                let key = format!("{}/{index}", tx.end_lsn);
                match outcome {
                    Outcome::Event(raw) => events.push(NewEvent {
                        dedupe_key: Some(key),
                        raw,
                    }),
                    Outcome::Poison { payload, error } => poison.push((key, payload, error)),
                }
            }
        }
        inbox::ingest(
            &mut db,
            listener.listener_id,
            listener.tenant_id,
            Source::Cdc,
            &events,
        )
        .await
        .map_err(|e| SourceError::Transient(format!("platform database: {e}")))?;
        for (key, mut payload, error) in poison {
            payload["dedupeKey"] = json!(key);
            payload["listenerID"] = json!(listener.listener_id);
            park(&mut db, self.ctx, payload, &error).await?;
        }
        let last = txs.last().map(|t| t.end_lsn).unwrap_or_default();
        if last > checkpoint {
            sqlx::query(
                r#"UPDATE "tblListenerCheckpoints" SET "lsn" = $2::pg_lsn, "updatedAt" = now()
                   WHERE "listenerID" = $1"#,
            )
            .bind(listener.listener_id)
            .bind(last.to_string())
            .execute(&mut *db)
            .await
            .map_err(platform)?;
        }
        db.commit().await.map_err(platform)
    }

    /// The committed checkpoint.
    async fn checkpoint(&self) -> Result<Lsn, SourceError> {
        let lsn: Option<String> = sqlx::query_scalar(
            r#"SELECT "lsn"::text FROM "tblListenerCheckpoints" WHERE "listenerID" = $1"#,
        )
        .bind(self.ctx.listener.listener_id)
        .fetch_optional(&self.ctx.platform)
        .await
        .map_err(platform)?;
        lsn.as_deref()
            .and_then(Lsn::parse)
            .ok_or_else(no_checkpoint)
    }

    /// Writes a little WAL so that an idle source's slot has somewhere to move.
    async fn heartbeat(&mut self) -> Result<(), SourceError> {
        sqlx::query("SELECT pg_logical_emit_message(false, 'jet_heartbeat', '')")
            .execute(self.transport.session())
            .await
            .map_err(|e| source_error(&e, &self.slot, &self.secrets))?;
        Ok(())
    }

    /// The source's flushed WAL position: a fetch after this sees every transaction
    /// committed before it.
    async fn flushed(&mut self) -> Result<Lsn, SourceError> {
        let flushed: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(self.transport.session())
            .await
            .map_err(|e| source_error(&e, &self.slot, &self.secrets))?;
        Lsn::parse(&flushed)
            .ok_or_else(|| SourceError::Transient(format!("the source answered LSN {flushed:?}")))
    }

    /// Reports retained WAL and lag to the holder; past the retained-WAL limit, drops the slot.
    async fn sample(&mut self) -> Result<SlotStats, SourceError> {
        let row: Option<(Option<i64>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, \
                    (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, \
                    confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(self.transport.session())
        .await
        .map_err(|e| source_error(&e, &self.slot, &self.secrets))?;
        let Some((retained, lag, confirmed)) = row else {
            return Err(SourceError::Fatal(missing_slot(&self.slot)));
        };
        self.ctx.reporter.sample(retained, lag);
        let limit = self.config.max_retained_wal_mb.saturating_mul(1 << 20);
        if let Some(bytes) = retained
            && u64::try_from(bytes).unwrap_or(0) > limit
        {
            return Err(self.over_limit(bytes).await);
        }
        Ok(SlotStats {
            confirmed: confirmed
                .as_deref()
                .and_then(Lsn::parse)
                .unwrap_or_default(),
        })
    }

    /// Drops the slot (the only thing that frees the source's WAL) and says what was lost.
    async fn over_limit(&mut self, retained: i64) -> SourceError {
        if let Err(e) = drop_slot(self.transport.session(), &self.slot).await {
            return source_error(&e, &self.slot, &self.secrets);
        }
        let from = match self.checkpoint().await {
            Ok(lsn) => lsn.max(self.acknowledged).to_string(),
            Err(_) => self.acknowledged.to_string(),
        };
        SourceError::Fatal(format!(
            "the replication slot {} held {} MB of WAL on the source, more than this listener's \
             maxRetainedWalMb of {}: the slot was dropped so that the source's disk does not \
             fill up. Changes committed on the source after LSN {from} were not captured. \
             Activating the listener again creates a new slot, which captures changes from then on.",
            self.slot,
            retained >> 20,
            self.config.max_retained_wal_mb,
        ))
    }
}

/// Parks an event that cannot be stored in the DLQ, in the caller's transaction.
async fn park(
    db: &mut sqlx::PgConnection,
    ctx: &SourceContext,
    payload: Value,
    error: &str,
) -> Result<(), SourceError> {
    sqlx::query(
        r#"INSERT INTO "tblEventDLQ" ("tenantID", "source", "sourceID", "payload", "error",
                                     "retryCount", "maxRetries", "status")
           VALUES ($1, 'cdc', $2, $3, $4, 0, 0, 'PARKED')"#,
    )
    .bind(ctx.listener.tenant_id)
    .bind(ctx.listener.listener_id)
    .bind(payload)
    .bind(error)
    .execute(db)
    .await
    .map_err(platform)?;
    Ok(())
}

fn platform(e: sqlx::Error) -> SourceError {
    SourceError::Transient(format!("platform database: {e}"))
}

fn no_checkpoint() -> SourceError {
    SourceError::Fatal(
        "the listener has no CDC checkpoint (it was never activated as CDC): activate the \
         listener again"
            .into(),
    )
}
