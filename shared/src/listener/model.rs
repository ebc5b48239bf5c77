//! Rows of `tblListeners` and `tblListenerActions`.

use crate::ids::TenantId;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A row of `tblListeners`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listener {
    #[sqlx(rename = "listenerID")]
    pub listener_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "datasourceID")]
    pub datasource_id: Uuid,
    #[sqlx(rename = "listenerTitle")]
    pub title: String,
    #[sqlx(rename = "listenerDescription")]
    pub description: Option<String>,
    #[sqlx(rename = "listenerType")]
    pub listener_type: String,
    #[sqlx(rename = "listenerConfig")]
    pub config: Value,
    /// `inactive`, `active` or `error` (active, but the source is failing: see `last_error`).
    pub status: String,
    #[sqlx(rename = "lastError")]
    pub last_error: Option<String>,
    #[sqlx(rename = "lastEventAt")]
    pub last_event_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "eventCount")]
    pub event_count: i64,
    #[sqlx(rename = "endpointPath")]
    pub endpoint_path: Option<String>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl Listener {
    /// Whether the listener should be running: activated by a user (an `error` listener is
    /// active and retrying its source).
    pub fn is_on(&self) -> bool {
        self.status != "inactive"
    }
}

pub const COLUMNS: &str = r#""listenerID", "tenantID", "datasourceID", "listenerTitle", "listenerDescription",
    "listenerType", "listenerConfig", "status", "lastError", "lastEventAt", "eventCount", "endpointPath",
    "creatorID", "createdByApiKeyID", "createdAt", "updatedAt""#;

/// A row of `tblListenerActions`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Action {
    #[sqlx(rename = "actionID")]
    pub action_id: Uuid,
    #[sqlx(rename = "listenerID")]
    pub listener_id: Uuid,
    #[sqlx(rename = "actionType")]
    pub action_type: String,
    #[sqlx(rename = "actionConfig")]
    pub config: Value,
    #[sqlx(rename = "isEnabled")]
    pub is_enabled: bool,
    #[sqlx(rename = "orderIndex")]
    pub order_index: i32,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
}

pub const ACTION_COLUMNS: &str = r#""actionID", "listenerID", "actionType", "actionConfig", "isEnabled", "orderIndex", "createdAt""#;

/// One listener of the tenant; `NotFound` for another tenant's.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<Listener> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblListeners" WHERE "listenerID" = $1 AND "tenantID" = $2"#
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("listener"))
}

/// One listener by id alone, for the workers (which act for every tenant).
pub async fn get_any(conn: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Listener>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblListeners" WHERE "listenerID" = $1"#
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The listener's actions in pipeline order (`orderIndex`, then creation), enabled or not.
pub async fn actions(conn: impl PgExecutor<'_>, listener_id: Uuid) -> Result<Vec<Action>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {ACTION_COLUMNS} FROM "tblListenerActions" WHERE "listenerID" = $1
           ORDER BY "orderIndex", "createdAt", "actionID""#
    )))
    .bind(listener_id)
    .fetch_all(conn)
    .await?)
}
