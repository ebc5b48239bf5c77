//! Creating and dropping a CDC listener's publication and slot on the source, and its
//! checkpoint row on the platform.

use super::pgoutput::Lsn;
use crate::datasource::driver::DriverError;
use crate::datasource::{DataRuntime, secrets};
use crate::listener::config::{CdcConfig, quote_ident};
use crate::listener::names;
use crate::{Error, Result};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

/// Why a connection to the source did not open; its text carries none of the secrets.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub message: String,
    /// Trying again later can help (unreachable, refused); not so for unusable options or a
    /// host on the deny-list.
    pub retryable: bool,
}

/// A dedicated connection to a `postgresql` datasource, within its connect timeout.
pub async fn connect(
    data: &DataRuntime,
    options: &Value,
) -> std::result::Result<PgConnection, ConnectError> {
    let (connect, timeout) = data.postgres_connect_options(options).await.map_err(|e| {
        let retryable = !matches!(e, DriverError::Options(_) | DriverError::Denied(_));
        ConnectError {
            message: e.to_string(),
            retryable,
        }
    })?;
    let message = match tokio::time::timeout(timeout, PgConnection::connect_with(&connect)).await {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => secrets::scrub(&e.to_string(), &secrets::values(options, "postgresql")),
        Err(_) => format!("the connection did not open within {} s", timeout.as_secs()),
    };
    Err(ConnectError {
        message,
        retryable: true,
    })
}

/// A source statement's failure as `Error::Invalid`: the source's own message (which never
/// holds the password) tells the user what the source refused.
fn refused(what: &str, err: sqlx::Error, options: &Value) -> Error {
    let text = match &err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    Error::Invalid(secrets::scrub(
        &format!("the datasource refused to {what}: {text}"),
        &secrets::values(options, "postgresql"),
    ))
}

/// Checks that the source can do CDC for `config`: the messages say exactly what to change.
async fn preflight(conn: &mut PgConnection, config: &CdcConfig, options: &Value) -> Result<()> {
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| refused("report its settings", e, options))?;
    if wal_level != "logical" {
        return Err(Error::Invalid(format!(
            "the datasource's server has wal_level = {wal_level}, and CDC needs logical \
             replication: set wal_level = logical in postgresql.conf and restart the server"
        )));
    }
    let (role, can_replicate): (String, bool) = sqlx::query_as(
        "SELECT rolname::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| refused("report its role", e, options))?;
    if !can_replicate {
        return Err(Error::Invalid(format!(
            "the datasource's role {role} may not use logical replication: as a superuser, run \
             ALTER ROLE {} REPLICATION",
            quote_ident(&role)
        )));
    }
    for table in &config.tables {
        let kind: Option<String> = sqlx::query_scalar(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| refused("list its tables", e, options))?;
        match kind.as_deref() {
            Some("r" | "p") => {}
            None => {
                return Err(Error::Invalid(format!(
                    "table {table} does not exist in the datasource's database: create it or \
                     remove it from listenerConfig.tables"
                )));
            }
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "{table} is not a table (a view or another kind of relation), and only \
                     tables can be captured: remove it from listenerConfig.tables"
                )));
            }
        }
    }
    Ok(())
}

/// Creates or updates the publication to capture exactly `config`'s tables and operations.
async fn publish(
    conn: &mut PgConnection,
    publication: &str,
    config: &CdcConfig,
    options: &Value,
) -> Result<()> {
    let tables = config
        .tables
        .iter()
        .map(|t| t.quoted())
        .collect::<Vec<_>>()
        .join(", ");
    let operations = config
        .operations
        .iter()
        .map(|o| o.as_str().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(", ");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(publication)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| refused("list its publications", e, options))?;
    let publication = quote_ident(publication);
    // Identifiers are quoted and the operations come from a closed set: nothing here is input
    // text spliced into SQL.
    let statements = if exists {
        vec![
            format!("ALTER PUBLICATION {publication} SET TABLE {tables}"),
            format!("ALTER PUBLICATION {publication} SET (publish = '{operations}')"),
        ]
    } else {
        vec![format!(
            "CREATE PUBLICATION {publication} FOR TABLE {tables} WITH (publish = '{operations}')"
        )]
    };
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| refused("publish the tables", e, options))?;
    }
    Ok(())
}

/// The slot's confirmed position, creating the slot when it does not exist; `true` when it
/// was created now.
async fn ensure_slot(conn: &mut PgConnection, slot: &str, options: &Value) -> Result<(Lsn, bool)> {
    let existing: Option<Option<String>> = sqlx::query_scalar(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| refused("list its replication slots", e, options))?;
    if let Some(lsn) = existing {
        return Ok((
            lsn.as_deref().and_then(Lsn::parse).unwrap_or_default(),
            false,
        ));
    }
    let lsn: String = sqlx::query_scalar(
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
    )
    .bind(slot)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| refused("create a logical replication slot", e, options))?;
    Ok((Lsn::parse(&lsn).unwrap_or_default(), true))
}

/// See [`super::provision`].
pub async fn provision(
    platform: &mut PgConnection,
    data: &DataRuntime,
    options: &Value,
    listener_id: Uuid,
    config: &CdcConfig,
) -> Result<()> {
    let mut conn = connect(data, options)
        .await
        .map_err(|e| Error::Invalid(format!("cannot connect to the datasource: {}", e.message)))?;
    let (slot, publication) = names(listener_id);
    preflight(&mut conn, config, options).await?;
    publish(&mut conn, &publication, config, options).await?;
    let (consistent, created) = ensure_slot(&mut conn, &slot, options).await?;
    let _ = conn.close().await;
    // A new slot starts at its consistent point: nothing older exists for it. An existing one
    // keeps its checkpoint, so a re-activation resumes where it stopped.
    sqlx::query(
        r#"INSERT INTO "tblListenerCheckpoints" ("listenerID", "slotName", "publicationName", "lsn")
           VALUES ($1, $2, $3, $4::pg_lsn)
           ON CONFLICT ("listenerID") DO UPDATE SET
               "slotName" = EXCLUDED."slotName",
               "publicationName" = EXCLUDED."publicationName",
               "lsn" = CASE WHEN $5 THEN EXCLUDED."lsn" ELSE "tblListenerCheckpoints"."lsn" END,
               "updatedAt" = now()"#,
    )
    .bind(listener_id)
    .bind(&slot)
    .bind(&publication)
    .bind(consistent.to_string())
    .bind(created)
    .execute(&mut *platform)
    .await?;
    Ok(())
}

/// See [`super::deprovision`].
pub async fn deprovision(data: &DataRuntime, options: &Value, listener_id: Uuid) -> Result<()> {
    let mut conn = connect(data, options)
        .await
        .map_err(|e| Error::Invalid(format!("cannot connect to the datasource: {}", e.message)))?;
    let (slot, publication) = names(listener_id);
    drop_slot(&mut conn, &slot)
        .await
        .map_err(|e| refused("drop the replication slot", e, options))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote_ident(&publication)
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| refused("drop the publication", e, options))?;
    let _ = conn.close().await;
    Ok(())
}

/// Drops `slot` if it exists; a session holding it (a holder still polling) is terminated
/// first, and the drop retried for a few seconds while that session goes away.
pub async fn drop_slot(
    conn: &mut PgConnection,
    slot: &str,
) -> std::result::Result<(), sqlx::Error> {
    const TRIES: u32 = 50;
    for attempt in 1..=TRIES {
        let active: Option<Option<i32>> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(active_pid) = active else {
            return Ok(());
        };
        if let Some(pid) = active_pid {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut *conn)
                .await?;
        }
        match sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            // 55006 object_in_use: still held; 42704: dropped meanwhile.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42704") => {
                return Ok(());
            }
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("55006") && attempt < TRIES =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
