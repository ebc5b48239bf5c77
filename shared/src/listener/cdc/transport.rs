//! How pgoutput messages get from the source's slot to us, behind [`Transport`] so that a
//! streaming transport (the replication protocol) could replace SQL polling without touching
//! decoding or the commit protocol.

use super::pgoutput::{self, Lsn, Message, ParseError};
use crate::listener::source::SourceError;
use sqlx::PgConnection;
use std::future::Future;

/// A source of committed pgoutput messages for one slot.
pub trait Transport: Send {
    /// Messages of whole transactions committed after the slot's confirmed position, about
    /// `max_changes` at most (a transaction is never split, so one large one returns whole).
    /// Nothing is consumed until [`Transport::acknowledge`].
    fn fetch(
        &mut self,
        max_changes: i32,
    ) -> impl Future<Output = Result<Vec<Result<Message, ParseError>>, SourceError>> + Send;

    /// Everything up to `lsn` is committed in the platform: the slot may let it go.
    fn acknowledge(&mut self, lsn: Lsn) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// An ordinary SQL session on the source, for slot statistics and heartbeats.
    fn session(&mut self) -> &mut PgConnection;
}

/// Polls `pg_logical_slot_peek_binary_changes` over one dedicated connection, and advances
/// the slot with `pg_replication_slot_advance`. Each call decodes from the slot's
/// `restart_lsn`, so a long-open transaction on the source makes every poll re-read the WAL
/// since it began; the slot is held only for the duration of each call.
pub struct SqlPolling {
    conn: PgConnection,
    slot: String,
    publication: String,
    secrets: Vec<String>,
}

impl SqlPolling {
    pub fn new(
        conn: PgConnection,
        slot: String,
        publication: String,
        secrets: Vec<String>,
    ) -> Self {
        Self {
            conn,
            slot,
            publication,
            secrets,
        }
    }
}

impl Transport for SqlPolling {
    async fn fetch(
        &mut self,
        max_changes: i32,
    ) -> Result<Vec<Result<Message, ParseError>>, SourceError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
             'proto_version', '1', 'publication_names', $3)",
        )
        .bind(&self.slot)
        .bind(max_changes)
        .bind(&self.publication)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| source_error(&e, &self.slot, &self.secrets))?;
        Ok(rows.iter().map(|data| pgoutput::parse(data)).collect())
    }

    async fn acknowledge(&mut self, lsn: Lsn) -> Result<(), SourceError> {
        sqlx::query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)")
            .bind(&self.slot)
            .bind(lsn.to_string())
            .execute(&mut self.conn)
            .await
            .map_err(|e| source_error(&e, &self.slot, &self.secrets))?;
        Ok(())
    }

    fn session(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// A failed statement on the source: a vanished slot is fatal, anything else transient.
pub fn source_error(err: &sqlx::Error, slot: &str, secrets: &[String]) -> SourceError {
    if let sqlx::Error::Database(db) = err
        && db.code().as_deref() == Some(UNDEFINED_OBJECT)
        && db.message().contains(slot)
    {
        return SourceError::Fatal(missing_slot(slot));
    }
    SourceError::Transient(crate::datasource::secrets::scrub(
        &format!("CDC source: {err}"),
        secrets,
    ))
}

/// SQLSTATE 42704: what PostgreSQL answers for a slot that does not exist.
const UNDEFINED_OBJECT: &str = "42704";

/// The message for a slot that is gone.
pub fn missing_slot(slot: &str) -> String {
    format!(
        "the replication slot {slot} no longer exists on the source (it was dropped), so changes \
         since the last checkpoint were not captured; activate the listener again to create a \
         new slot"
    )
}
