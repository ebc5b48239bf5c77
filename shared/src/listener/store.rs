//! The listener API's SQL: listeners and their actions (create, replace, clone, activate,
//! delete), ring-buffer reads, and who holds each running listener. Every statement is
//! scoped by tenant, so another tenant's id is simply not found.

use super::model::{ACTION_COLUMNS, Action, COLUMNS, Listener};
use crate::api_key::Creator;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// Most ring-buffer events one read returns.
pub const MAX_BUFFER_READ: i64 = 1000;

/// What a caller sets on a listener; create and replace (PUT) both write all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub datasource_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub listener_type: String,
    pub config: Value,
    pub endpoint_path: Option<String>,
}

impl ListenerSpec {
    /// The spec of a stored listener.
    pub fn of(listener: &Listener) -> Self {
        Self {
            datasource_id: listener.datasource_id,
            title: listener.title.clone(),
            description: listener.description.clone(),
            listener_type: listener.listener_type.clone(),
            config: listener.config.clone(),
            endpoint_path: listener.endpoint_path.clone(),
        }
    }
}

/// What a caller sets on an action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionFields {
    pub action_type: String,
    pub config: Value,
    pub is_enabled: bool,
    pub order_index: i32,
}

/// List filters; `None` matches every row.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub listener_type: Option<String>,
}

/// A page of the tenant's listeners, newest first.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &ListFilter,
    page: PageRequest,
) -> Result<Page<Listener>> {
    const WHERE: &str = r#""tenantID" = $1 AND ($2::text IS NULL OR "status" = $2)
        AND ($3::text IS NULL OR "listenerType" = $3)"#;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        r#"SELECT count(*) FROM "tblListeners" WHERE {WHERE}"#
    )))
    .bind(tenant_id)
    .bind(&filter.status)
    .bind(&filter.listener_type)
    .fetch_one(pool)
    .await?;
    let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblListeners" WHERE {WHERE}
           ORDER BY "createdAt" DESC, "listenerID" LIMIT $4 OFFSET $5"#
    )))
    .bind(tenant_id)
    .bind(&filter.status)
    .bind(&filter.listener_type)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}

/// Creates an `inactive` listener.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    spec: &ListenerSpec,
    creator: Creator,
) -> Result<Listener> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerDescription",
             "listenerType", "listenerConfig", "endpointPath", "creatorID", "createdByApiKeyID")
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(spec.datasource_id)
    .bind(&spec.title)
    .bind(&spec.description)
    .bind(&spec.listener_type)
    .bind(&spec.config)
    .bind(&spec.endpoint_path)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(conn)
    .await?)
}

/// One listener of the tenant, locked until the caller's transaction ends, so that two
/// changes to one listener happen one after the other.
pub async fn get_for_update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<Listener> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblListeners" WHERE "tenantID" = $1 AND "listenerID" = $2 FOR UPDATE"#
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("listener"))
}

/// Replaces the editable fields (PUT); bumps `updatedAt`, which wakes the holders.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    spec: &ListenerSpec,
) -> Result<Listener> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblListeners" SET "datasourceID" = $3, "listenerTitle" = $4, "listenerDescription" = $5,
             "listenerType" = $6, "listenerConfig" = $7, "endpointPath" = $8, "updatedAt" = now()
           WHERE "tenantID" = $1 AND "listenerID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(spec.datasource_id)
    .bind(&spec.title)
    .bind(&spec.description)
    .bind(&spec.listener_type)
    .bind(&spec.config)
    .bind(&spec.endpoint_path)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("listener"))
}

/// Deletes a listener; its actions, holds, checkpoint, inbox and buffers go with it.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, id: Uuid) -> Result<()> {
    let deleted =
        sqlx::query(r#"DELETE FROM "tblListeners" WHERE "tenantID" = $1 AND "listenerID" = $2"#)
            .bind(tenant_id)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(Error::NotFound("listener"));
    }
    Ok(())
}

/// An `inactive` copy titled "<title> (copy)" with copies of its actions. The copy has no
/// `endpointPath` (paths are unique per tenant) and none of the source's counters.
pub async fn clone(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    creator: Creator,
) -> Result<Listener> {
    let copy: Listener = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerDescription",
             "listenerType", "listenerConfig", "folderID", "creatorID", "createdByApiKeyID")
           SELECT "tenantID", "datasourceID", left("listenerTitle" || ' (copy)', 255), "listenerDescription",
             "listenerType", "listenerConfig", "folderID", $3, $4
           FROM "tblListeners" WHERE "tenantID" = $1 AND "listenerID" = $2
           RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("listener"))?;
    sqlx::query(
        r#"INSERT INTO "tblListenerActions" ("listenerID", "actionType", "actionConfig", "isEnabled", "orderIndex", "createdAt")
           SELECT $2, "actionType", "actionConfig", "isEnabled", "orderIndex", "createdAt"
           FROM "tblListenerActions" WHERE "listenerID" = $1"#,
    )
    .bind(id)
    .bind(copy.listener_id)
    .execute(&mut *conn)
    .await?;
    Ok(copy)
}

/// Turns a listener on (`active`, the last error cleared) or off (`inactive`).
pub async fn set_active(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    active: bool,
) -> Result<Listener> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblListeners"
           SET "status" = CASE WHEN $3 THEN 'active' ELSE 'inactive' END,
               "lastError" = CASE WHEN $3 THEN NULL ELSE "lastError" END,
               "updatedAt" = now()
           WHERE "tenantID" = $1 AND "listenerID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(active)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("listener"))
}

/// The `datasourceType` of a datasource of the tenant; `None` when it is not the tenant's.
pub async fn datasource_type(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    datasource_id: Uuid,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        r#"SELECT "datasourceType" FROM "tblDatasources" WHERE "tenantID" = $1 AND "datasourceID" = $2"#,
    )
    .bind(tenant_id)
    .bind(datasource_id)
    .fetch_optional(conn)
    .await?)
}

/// Marks a listener changed so the holders reload it and its actions (the table's trigger
/// fires on `updatedAt`).
async fn touch(conn: &mut PgConnection, listener_id: Uuid) -> Result<()> {
    sqlx::query(r#"UPDATE "tblListeners" SET "updatedAt" = now() WHERE "listenerID" = $1"#)
        .bind(listener_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds an action to a listener of the tenant.
pub async fn insert_action(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    listener_id: Uuid,
    fields: &ActionFields,
) -> Result<Action> {
    let action: Action = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblListenerActions" ("listenerID", "actionType", "actionConfig", "isEnabled", "orderIndex")
           SELECT "listenerID", $3, $4, $5, $6 FROM "tblListeners" WHERE "tenantID" = $1 AND "listenerID" = $2
           RETURNING {ACTION_COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(listener_id)
    .bind(&fields.action_type)
    .bind(&fields.config)
    .bind(fields.is_enabled)
    .bind(fields.order_index)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("listener"))?;
    touch(conn, listener_id).await?;
    Ok(action)
}

/// One action of a listener of the tenant.
pub async fn get_action(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    listener_id: Uuid,
    action_id: Uuid,
) -> Result<Action> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {ACTION_COLUMNS} FROM "tblListenerActions" a
           WHERE a."actionID" = $3 AND a."listenerID" = $2
             AND EXISTS (SELECT 1 FROM "tblListeners" l WHERE l."listenerID" = $2 AND l."tenantID" = $1)"#
    )))
    .bind(tenant_id)
    .bind(listener_id)
    .bind(action_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("listener action"))
}

/// Replaces an action's fields.
pub async fn update_action(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    listener_id: Uuid,
    action_id: Uuid,
    fields: &ActionFields,
) -> Result<Action> {
    let action: Action = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblListenerActions" a SET "actionType" = $4, "actionConfig" = $5, "isEnabled" = $6, "orderIndex" = $7
           FROM "tblListeners" l
           WHERE a."actionID" = $3 AND a."listenerID" = $2 AND l."listenerID" = a."listenerID" AND l."tenantID" = $1
           RETURNING {}"#,
        prefixed_action_columns()
    )))
    .bind(tenant_id)
    .bind(listener_id)
    .bind(action_id)
    .bind(&fields.action_type)
    .bind(&fields.config)
    .bind(fields.is_enabled)
    .bind(fields.order_index)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("listener action"))?;
    touch(conn, listener_id).await?;
    Ok(action)
}

/// Deletes an action.
pub async fn delete_action(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    listener_id: Uuid,
    action_id: Uuid,
) -> Result<()> {
    let deleted = sqlx::query(
        r#"DELETE FROM "tblListenerActions" a USING "tblListeners" l
           WHERE a."actionID" = $3 AND a."listenerID" = $2 AND l."listenerID" = a."listenerID" AND l."tenantID" = $1"#,
    )
    .bind(tenant_id)
    .bind(listener_id)
    .bind(action_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(Error::NotFound("listener action"));
    }
    touch(conn, listener_id).await
}

/// `ACTION_COLUMNS` qualified by the alias `a` (an UPDATE … FROM sees two tables).
fn prefixed_action_columns() -> String {
    ACTION_COLUMNS
        .split(',')
        .map(|c| format!("a.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of a ring buffer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BufferEvent {
    #[sqlx(rename = "eventID")]
    pub event_id: Uuid,
    #[sqlx(rename = "seqNo")]
    pub seq_no: i64,
    #[sqlx(rename = "eventData")]
    pub data: Value,
    #[sqlx(rename = "eventMeta")]
    pub meta: Option<Value>,
    #[sqlx(rename = "receivedAt")]
    pub received_at: DateTime<Utc>,
}

/// A read of one ring buffer.
#[derive(Debug, Clone)]
pub struct BufferRead {
    /// Events with `seqNo > after`, oldest first.
    pub events: Vec<BufferEvent>,
    /// The buffer's newest `seqNo` now (`None` while it is empty): a reader that has seen it
    /// is caught up.
    pub max_seq_no: Option<i64>,
}

/// Up to `limit` (at most [`MAX_BUFFER_READ`]) events of `(listener_id, buffer_name)` after
/// `after_seq_no`, oldest first. The listener must be the tenant's.
pub async fn read_buffer(
    pool: &PgPool,
    tenant_id: TenantId,
    listener_id: Uuid,
    buffer_name: &str,
    after_seq_no: i64,
    limit: i64,
) -> Result<BufferRead> {
    let limit = limit.clamp(1, MAX_BUFFER_READ);
    // One snapshot for both reads, so `max_seq_no` is never below the last event returned.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let events = sqlx::query_as(
        r#"SELECT "eventID", "seqNo", "eventData", "eventMeta", "receivedAt" FROM "tblListenerEvents"
           WHERE "listenerID" = $1 AND "tenantID" = $2 AND "bufferName" = $3 AND "seqNo" > $4
           ORDER BY "seqNo" LIMIT $5"#,
    )
    .bind(listener_id)
    .bind(tenant_id)
    .bind(buffer_name)
    .bind(after_seq_no)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let max_seq_no = sqlx::query_scalar(
        r#"SELECT max("seqNo") FROM "tblListenerEvents"
           WHERE "listenerID" = $1 AND "tenantID" = $2 AND "bufferName" = $3"#,
    )
    .bind(listener_id)
    .bind(tenant_id)
    .bind(buffer_name)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(BufferRead { events, max_seq_no })
}

/// A running (`active` or `error`) listener and who holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Connection {
    #[sqlx(rename = "listenerID")]
    pub listener_id: Uuid,
    #[sqlx(rename = "listenerTitle")]
    pub title: String,
    #[sqlx(rename = "listenerType")]
    pub listener_type: String,
    pub status: String,
    /// The holding worker; `None` while nobody holds it (starting, or a webhook listener,
    /// which needs no holder).
    #[sqlx(rename = "workerID")]
    pub worker_id: Option<String>,
    pub host: Option<String>,
    #[sqlx(rename = "heldSince")]
    pub held_since: Option<DateTime<Utc>>,
    #[sqlx(rename = "connectedAt")]
    pub connected_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "expiresAt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The hold's lease has run out: its worker is gone or stuck, and another takes over.
    #[sqlx(rename = "leaseExpired")]
    pub lease_expired: Option<bool>,
    #[sqlx(rename = "lastEventAt")]
    pub last_event_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "lastError")]
    pub last_error: Option<String>,
    #[sqlx(rename = "eventCount")]
    pub event_count: i64,
    #[sqlx(rename = "retainedWalBytes")]
    pub retained_wal_bytes: Option<i64>,
    #[sqlx(rename = "lagBytes")]
    pub lag_bytes: Option<i64>,
    #[sqlx(rename = "sampledAt")]
    pub sampled_at: Option<DateTime<Utc>>,
    /// CDC: the committed checkpoint (`lsn` text, e.g. `0/16B3748`).
    #[sqlx(rename = "checkpointLsn")]
    pub checkpoint_lsn: Option<String>,
}

/// Every `active` or `error` listener of the tenant with its holder, oldest first.
pub async fn connections(pool: &PgPool, tenant_id: TenantId) -> Result<Vec<Connection>> {
    Ok(sqlx::query_as(
        r#"SELECT l."listenerID", l."listenerTitle", l."listenerType", l."status",
                  h."workerID", w."host", h."heldSince", h."connectedAt", h."expiresAt",
                  h."expiresAt" <= now() AS "leaseExpired",
                  l."lastEventAt", l."lastError", l."eventCount",
                  h."retainedWalBytes", h."lagBytes", h."sampledAt", c."lsn"::text AS "checkpointLsn"
           FROM "tblListeners" l
           LEFT JOIN "tblListenerHolds" h ON h."listenerID" = l."listenerID"
           LEFT JOIN "tblWorkers" w ON w."workerID" = h."workerID"
           LEFT JOIN "tblListenerCheckpoints" c ON c."listenerID" = l."listenerID"
           WHERE l."tenantID" = $1 AND l."status" IN ('active', 'error')
           ORDER BY l."createdAt", l."listenerID""#,
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}
