//! App pages (`tblAppPages`): a title and the `appPageConfig` layout tree, plus the live
//! channel listener actions push to (`push`, received by the page's SSE stream).

use crate::api_key::Creator;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::tenant_table::TenantTable;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// The NOTIFY channel app-page events travel on; the payload names the page.
pub const CHANNEL: &str = "jet_app_page";

/// Largest event a push carries (PostgreSQL caps a NOTIFY payload just under 8000 bytes).
pub const MAX_EVENT_BYTES: usize = 7000;

/// A row of `tblAppPages`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppPage {
    #[sqlx(rename = "appPageID")]
    pub app_page_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "appPageTitle")]
    pub title: String,
    #[sqlx(rename = "appPageDescription")]
    pub description: Option<String>,
    #[sqlx(rename = "appPageConfig")]
    pub config: Option<Value>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "createdAt")]
    pub created_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = r#""appPageID", "tenantID", "appPageTitle", "appPageDescription", "appPageConfig",
    "creatorID", "createdByApiKeyID", "createdAt", "updatedAt""#;

const TABLE: TenantTable = TenantTable {
    table: "tblAppPages",
    id: "appPageID",
    columns: COLUMNS,
    noun: "app page",
};

/// Creates a page.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    title: &str,
    description: Option<&str>,
    config: &Value,
    creator: Creator,
) -> Result<AppPage> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblAppPages" ("tenantID", "appPageTitle", "appPageDescription", "appPageConfig", "creatorID", "createdByApiKeyID")
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(title)
    .bind(description)
    .bind(config)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(conn)
    .await?)
}

/// The tenant's pages, newest first.
pub async fn list(pool: &PgPool, tenant_id: TenantId, page: PageRequest) -> Result<Page<AppPage>> {
    TABLE.list(pool, tenant_id, page).await
}

/// One page of the tenant; `NotFound` for another tenant's.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<AppPage> {
    TABLE.get(conn, tenant_id, id).await
}

/// Applies the fields that are set.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    title: Option<&str>,
    description: Option<&str>,
    config: Option<&Value>,
) -> Result<AppPage> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblAppPages" SET "appPageTitle" = COALESCE($3, "appPageTitle"),
             "appPageDescription" = COALESCE($4, "appPageDescription"),
             "appPageConfig" = COALESCE($5, "appPageConfig"), "updatedAt" = now()
           WHERE "tenantID" = $1 AND "appPageID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(title)
    .bind(description)
    .bind(config)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("app page"))
}

/// Copies a page (`<title> (copy)`).
pub async fn clone(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    creator: Creator,
) -> Result<AppPage> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblAppPages" ("tenantID", "appPageTitle", "appPageDescription", "appPageConfig", "creatorID", "createdByApiKeyID")
           SELECT "tenantID", "appPageTitle" || ' (copy)', "appPageDescription", "appPageConfig", $3, $4
           FROM "tblAppPages" WHERE "tenantID" = $1 AND "appPageID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("app page"))
}

/// Deletes a page.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, id: Uuid) -> Result<()> {
    TABLE.delete(conn, tenant_id, id).await
}

/// Pushes `event` to everyone streaming the page, when the caller's transaction commits
/// (NOTIFY is transactional). Live only: a client that is not connected misses it.
pub async fn push(conn: &mut PgConnection, app_page_id: Uuid, event: &Value) -> Result<()> {
    let payload = json!({"appPageID": app_page_id, "event": event}).to_string();
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Error::Invalid(format!(
            "an app-page event is at most {MAX_EVENT_BYTES} bytes of JSON"
        )));
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}
