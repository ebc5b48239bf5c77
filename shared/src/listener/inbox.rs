//! The inbox: every event a source receives is committed here, in the caller's transaction,
//! before the source acknowledges it (a webhook's 202, a CDC slot advance). The pipeline claims
//! pending rows; a duplicate delivery (same `dedupeKey`) is a no-op that answers the first
//! event's id.

use crate::ids::TenantId;
use crate::workflow::storable::contains_nul;
use crate::{Error, Result};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// NOTIFY channel the pipeline publishes each processed event on, for the live tail:
/// `{listenerID, eventID, rawEvent?, transformedEvent?, transformError?, filtered, truncated,
/// timestamp}`. When the whole payload would not fit a NOTIFY, `truncated` is true and the
/// events are left out (read the inbox row by `eventID`).
pub const TAIL_CHANNEL: &str = "jet_listener_tail";

/// NOTIFY channel holders listen on: a listener or its actions changed.
pub const LISTENERS_CHANNEL: &str = "jet_listeners";

/// NOTIFY channel the pipeline listens on: events arrived.
pub const INBOX_CHANNEL: &str = "jet_listener_inbox";

/// Largest event the inbox takes, as JSON text.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Where an event came from (`tblListenerInbox.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Notify,
    Cdc,
    Webhook,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Notify => "notify",
            Source::Cdc => "cdc",
            Source::Webhook => "webhook",
        }
    }
}

/// An event to commit.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Makes a redelivery a no-op (webhook `Idempotency-Key`, CDC `<lsn>/<n>`); `None` never
    /// collides.
    pub dedupe_key: Option<String>,
    pub raw: Value,
}

/// What became of one [`NewEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub event_id: Uuid,
    /// The dedupe key was already there: nothing new was written; `event_id` is the first one's.
    pub duplicate: bool,
}

/// Checks that an event can be stored: JSON without NUL characters, at most
/// [`MAX_EVENT_BYTES`].
pub fn check(raw: &Value) -> Result<()> {
    if contains_nul(raw) {
        return Err(Error::Invalid(
            "the event contains a NUL character, which cannot be stored".into(),
        ));
    }
    let size = raw.to_string().len();
    if size > MAX_EVENT_BYTES {
        return Err(Error::Invalid(format!(
            "the event is {size} bytes of JSON; at most {MAX_EVENT_BYTES} are accepted"
        )));
    }
    Ok(())
}

/// Commits `events` for `listener_id` in the caller's transaction, in one statement, in order.
/// Every event must pass [`check`] first. Answers one [`Ingested`] per event, in order.
pub async fn ingest(
    conn: &mut PgConnection,
    listener_id: Uuid,
    tenant_id: TenantId,
    source: Source,
    events: &[NewEvent],
) -> Result<Vec<Ingested>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    for event in events {
        check(&event.raw)?;
    }
    // Ids are chosen here so that each event maps back to its row; a conflicting key inserts
    // nothing and is looked up afterwards (rare: only redeliveries).
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::new_v4()).collect();
    let keys: Vec<Option<String>> = events.iter().map(|e| e.dedupe_key.clone()).collect();
    let raws: Vec<Value> = events.iter().map(|e| e.raw.clone()).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        r#"INSERT INTO "tblListenerInbox" ("eventID", "listenerID", "tenantID", "source", "dedupeKey", "rawEvent")
           SELECT id, $1, $2, $3, k, e FROM unnest($4::uuid[], $5::text[], $6::jsonb[]) WITH ORDINALITY AS t(id, k, e, n)
           ORDER BY n
           ON CONFLICT ("listenerID", "dedupeKey") DO NOTHING
           RETURNING "eventID""#,
    )
    .bind(listener_id)
    .bind(tenant_id)
    .bind(source.as_str())
    .bind(&ids)
    .bind(&keys)
    .bind(&raws)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let mut out = Vec::with_capacity(events.len());
    for (id, key) in ids.iter().zip(&keys) {
        if inserted.contains(id) {
            out.push(Ingested {
                event_id: *id,
                duplicate: false,
            });
            continue;
        }
        let first: Uuid = sqlx::query_scalar(
            r#"SELECT "eventID" FROM "tblListenerInbox" WHERE "listenerID" = $1 AND "dedupeKey" = $2"#,
        )
        .bind(listener_id)
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
        out.push(Ingested {
            event_id: first,
            duplicate: true,
        });
    }
    Ok(out)
}
