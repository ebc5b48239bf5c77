//! Deactivated CDC listeners keep their slot, so nothing is lost while they are paused; but
//! a slot nobody reads retains WAL on the source without end. The maintenance role checks
//! those slots against each listener's `maxRetainedWalMb` and drops one that is over it (the
//! only thing that frees the source's disk), saying so in the listener's `lastError`. The
//! listener stays inactive; activating it again creates a new slot.

use super::provision::{connect, drop_slot};
use crate::Result;
use crate::datasource::{self, DataRuntime};
use crate::ids::TenantId;
use crate::listener::{Kind, names};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// What checking one paused listener found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paused {
    /// Its slot retains this many bytes, within the limit (or the slot is gone already).
    Within(Option<i64>),
    /// Over the limit: the slot was dropped.
    Dropped(i64),
    /// The source could not be checked now (it is tried again next time).
    Unchecked(String),
}

/// Checks every deactivated CDC listener's slot; answers each listener checked and what was
/// found.
pub async fn guard_paused_slots(pool: &PgPool, data: &DataRuntime) -> Result<Vec<(Uuid, Paused)>> {
    let paused: Vec<(Uuid, TenantId, Uuid, Value)> = sqlx::query_as(
        r#"SELECT l."listenerID", l."tenantID", l."datasourceID", l."listenerConfig"
           FROM "tblListeners" l JOIN "tblListenerCheckpoints" c ON c."listenerID" = l."listenerID"
           WHERE l."status" = 'inactive' AND l."listenerType" = 'postgresql'
             AND l."listenerConfig" ->> 'mode' = 'cdc'"#,
    )
    .fetch_all(pool)
    .await?;
    let mut found = Vec::with_capacity(paused.len());
    for (listener_id, tenant_id, datasource_id, config) in paused {
        let outcome = check(pool, data, listener_id, tenant_id, datasource_id, &config).await;
        found.push((listener_id, outcome?));
    }
    Ok(found)
}

async fn check(
    pool: &PgPool,
    data: &DataRuntime,
    listener_id: Uuid,
    tenant_id: TenantId,
    datasource_id: Uuid,
    config: &Value,
) -> Result<Paused> {
    let Ok(Kind::Cdc(cdc)) = Kind::parse("postgresql", config) else {
        return Ok(Paused::Unchecked(
            "the listener's configuration is not CDC".into(),
        ));
    };
    let source = match datasource::get(pool, data, tenant_id, datasource_id).await {
        Ok(ds) => ds,
        Err(e) => return Ok(Paused::Unchecked(e.to_string())),
    };
    let mut conn = match connect(data, &source.options).await {
        Ok(conn) => conn,
        Err(e) => return Ok(Paused::Unchecked(e.message)),
    };
    let (slot, _) = names(listener_id);
    let retained: Option<Option<i64>> = match sqlx::query_scalar(
        "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&slot)
    .fetch_optional(&mut conn)
    .await
    {
        Ok(r) => r,
        Err(e) => return Ok(Paused::Unchecked(e.to_string())),
    };
    let retained = retained.flatten();
    let limit = cdc.max_retained_wal_mb.saturating_mul(1 << 20);
    let Some(bytes) = retained.filter(|b| u64::try_from(*b).unwrap_or(0) > limit) else {
        return Ok(Paused::Within(retained));
    };
    if let Err(e) = drop_slot(&mut conn, &slot).await {
        return Ok(Paused::Unchecked(e.to_string()));
    }
    let checkpoint: Option<String> = sqlx::query_scalar(
        r#"SELECT "lsn"::text FROM "tblListenerCheckpoints" WHERE "listenerID" = $1"#,
    )
    .bind(listener_id)
    .fetch_optional(pool)
    .await?;
    let message = format!(
        "while this listener was deactivated its replication slot {slot} held {} MB of WAL on the \
         source, more than its maxRetainedWalMb of {}: the slot was dropped so that the source's \
         disk does not fill up. Changes committed on the source after LSN {} were not captured. \
         Activating the listener again creates a new slot, which captures changes from then on.",
        bytes >> 20,
        cdc.max_retained_wal_mb,
        checkpoint.unwrap_or_else(|| "0/0".into()),
    );
    sqlx::query(r#"UPDATE "tblListeners" SET "lastError" = $2 WHERE "listenerID" = $1"#)
        .bind(listener_id)
        .bind(message)
        .execute(pool)
        .await?;
    let _ = sqlx::Connection::close(conn).await;
    Ok(Paused::Dropped(bytes))
}
