//! The NOTIFY source: LISTEN on the listener's channels of its datasource's database and
//! commit each notification to the inbox as `{channel, payload, receivedAt}` (the payload
//! parsed when it is JSON).
//!
//! PostgreSQL keeps no notification for a session that is not listening: one sent while the
//! connection is down (or before the listener started) is lost. The source therefore treats a
//! dropped connection as a failure the holder sees and reports, instead of reconnecting
//! silently; CDC listeners capture changes without loss.

use super::inbox::{self, NewEvent, Source};
use super::source::{SourceContext, SourceError};
use crate::workflow::storable::scrub_message;
use chrono::Utc;
use serde_json::{Value, json};
use sqlx::postgres::{PgListener, PgNotification, PgPoolOptions};
use std::convert::Infallible;

/// Notifications committed per inbox transaction when they arrive in a burst.
const BATCH: usize = 256;

fn transient(context: &str, err: impl std::fmt::Display) -> SourceError {
    SourceError::Transient(scrub_message(&format!("{context}: {err}")))
}

/// The event of one notification.
pub fn event(note: &PgNotification) -> Value {
    let payload = note.payload();
    let parsed = serde_json::from_str::<Value>(payload)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
        .unwrap_or_else(|| Value::String(payload.to_owned()));
    json!({
        "channel": note.channel(),
        "payload": parsed,
        "receivedAt": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

/// Listens until the connection fails.
pub async fn run(ctx: &SourceContext, channels: &[String]) -> Result<Infallible, SourceError> {
    let (connect, timeout) = ctx
        .data
        .postgres_connect_options(&ctx.datasource_options)
        .await
        .map_err(|e| transient("cannot reach the datasource", e))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect_lazy_with(connect);
    let mut listener = PgListener::connect_with(&pool)
        .await
        .map_err(|e| transient("cannot connect to the datasource", e))?;
    listener
        .listen_all(channels.iter().map(String::as_str))
        .await
        .map_err(|e| transient("LISTEN failed", e))?;
    ctx.reporter.connected();
    loop {
        // `try_recv` answers None when the connection dropped; the next call would reconnect
        // silently, losing what was sent meanwhile, so the holder hears about it instead.
        let first = listener
            .try_recv()
            .await
            .map_err(|e| transient("the LISTEN connection failed", e))?
            .ok_or_else(|| {
                SourceError::Transient(
                    "the LISTEN connection was lost; notifications sent until it is back are lost"
                        .into(),
                )
            })?;
        let mut events = vec![first];
        while events.len() < BATCH {
            match listener.next_buffered() {
                Some(note) => events.push(note),
                None => break,
            }
        }
        commit(ctx, &events).await?;
    }
}

async fn commit(ctx: &SourceContext, notes: &[PgNotification]) -> Result<(), SourceError> {
    let events: Vec<NewEvent> = notes
        .iter()
        .map(|note| {
            let raw = event(note);
            // NOTIFY payloads are text without NULs and under 8000 bytes, so every
            // notification fits the inbox.
            NewEvent {
                dedupe_key: None,
                raw,
            }
        })
        .collect();
    let mut tx = ctx
        .platform
        .begin()
        .await
        .map_err(|e| transient("the platform database is unavailable", e))?;
    inbox::ingest(
        &mut tx,
        ctx.listener.listener_id,
        ctx.listener.tenant_id,
        Source::Notify,
        &events,
    )
    .await
    .map_err(|e| transient("could not store the event", e))?;
    tx.commit()
        .await
        .map_err(|e| transient("could not store the event", e))?;
    Ok(())
}
