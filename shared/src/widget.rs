//! Widgets (`tblWidgets`): a typed, configured UI element that app pages place.

use crate::api_key::Creator;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::tenant_table::TenantTable;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// A row of `tblWidgets`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Widget {
    #[sqlx(rename = "widgetID")]
    pub widget_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "widgetTitle")]
    pub title: String,
    #[sqlx(rename = "widgetDescription")]
    pub description: Option<String>,
    #[sqlx(rename = "widgetType")]
    pub widget_type: String,
    #[sqlx(rename = "widgetConfig")]
    pub config: Value,
    #[sqlx(rename = "refreshInterval")]
    pub refresh_interval: Option<i32>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "createdAt")]
    pub created_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = r#""widgetID", "tenantID", "widgetTitle", "widgetDescription", "widgetType", "widgetConfig",
    "refreshInterval", "creatorID", "createdByApiKeyID", "createdAt", "updatedAt""#;

const TABLE: TenantTable = TenantTable {
    table: "tblWidgets",
    id: "widgetID",
    columns: COLUMNS,
    noun: "widget",
};

/// The editable fields of a widget.
#[derive(Debug, Clone, Default)]
pub struct WidgetFields {
    pub title: Option<String>,
    pub description: Option<String>,
    pub widget_type: Option<String>,
    pub config: Option<Value>,
    pub refresh_interval: Option<i32>,
}

/// Creates a widget; title, type and config are required.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    fields: WidgetFields,
    creator: Creator,
) -> Result<Widget> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblWidgets" ("tenantID", "widgetTitle", "widgetDescription", "widgetType", "widgetConfig",
             "refreshInterval", "creatorID", "createdByApiKeyID")
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(fields.title)
    .bind(fields.description)
    .bind(fields.widget_type)
    .bind(fields.config)
    .bind(fields.refresh_interval)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(conn)
    .await?)
}

/// The tenant's widgets, newest first.
pub async fn list(pool: &PgPool, tenant_id: TenantId, page: PageRequest) -> Result<Page<Widget>> {
    TABLE.list(pool, tenant_id, page).await
}

/// One widget of the tenant; `NotFound` for another tenant's.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<Widget> {
    TABLE.get(conn, tenant_id, id).await
}

/// Applies the fields that are set.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    fields: WidgetFields,
) -> Result<Widget> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblWidgets" SET "widgetTitle" = COALESCE($3, "widgetTitle"),
             "widgetDescription" = COALESCE($4, "widgetDescription"),
             "widgetType" = COALESCE($5, "widgetType"),
             "widgetConfig" = COALESCE($6, "widgetConfig"),
             "refreshInterval" = COALESCE($7, "refreshInterval"), "updatedAt" = now()
           WHERE "tenantID" = $1 AND "widgetID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(fields.title)
    .bind(fields.description)
    .bind(fields.widget_type)
    .bind(fields.config)
    .bind(fields.refresh_interval)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("widget"))
}

/// Copies a widget (`<title> (copy)`).
pub async fn clone(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    creator: Creator,
) -> Result<Widget> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblWidgets" ("tenantID", "widgetTitle", "widgetDescription", "widgetType", "widgetConfig",
             "refreshInterval", "creatorID", "createdByApiKeyID")
           SELECT "tenantID", "widgetTitle" || ' (copy)', "widgetDescription", "widgetType", "widgetConfig",
                  "refreshInterval", $3, $4
           FROM "tblWidgets" WHERE "tenantID" = $1 AND "widgetID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("widget"))
}

/// Deletes a widget.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, id: Uuid) -> Result<()> {
    TABLE.delete(conn, tenant_id, id).await
}
