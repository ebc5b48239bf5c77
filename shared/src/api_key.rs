//! API keys (`tblAPIKeys` + `tblAPIKeyRoleMappings`): 64 hex chars shown once, stored as an
//! 8-char prefix and a SHA-256 hash; a key acts in its tenant through its roles.

use crate::crypto::RawApiKey;
use crate::ids::{ApiKeyId, RoleId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

/// A key as shown to clients: never the hash, never the raw key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    #[sqlx(rename = "apiKeyID")]
    pub api_key_id: ApiKeyId,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "apiKeyTitle")]
    pub api_key_title: String,
    #[sqlx(rename = "apiKeyPrefix")]
    pub api_key_prefix: Option<String>,
    #[sqlx(rename = "isDisabled")]
    pub is_disabled: bool,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<UserId>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<ApiKeyId>,
    /// The roles the key acts through.
    #[sqlx(rename = "roleIDs")]
    pub role_ids: Vec<RoleId>,
}

/// Who creates a key: exactly one of the two is normally set, as upstream does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Creator {
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
}

const SELECT: &str = r#"SELECT k."apiKeyID", k."tenantID", k."apiKeyTitle", k."apiKeyPrefix", k."isDisabled",
      k."createdAt", k."creatorID", k."createdByApiKeyID",
      COALESCE(array_agg(m."roleID" ORDER BY m."roleID") FILTER (WHERE m."roleID" IS NOT NULL), '{}') AS "roleIDs"
    FROM "tblAPIKeys" k LEFT JOIN "tblAPIKeyRoleMappings" m ON m."apiKeyID" = k."apiKeyID""#;

/// Creates a key with the given roles and returns it with its raw value (shown once).
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    title: &str,
    role_ids: &[RoleId],
    is_disabled: bool,
    creator: Creator,
) -> Result<(ApiKey, RawApiKey)> {
    let raw = RawApiKey::generate();
    let api_key_id: ApiKeyId = sqlx::query_scalar(
        r#"INSERT INTO "tblAPIKeys"
             ("tenantID", "apiKeyHash", "apiKeyTitle", "isDisabled", "creatorID", "createdByApiKeyID", "apiKeyPrefix")
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING "apiKeyID""#,
    )
    .bind(tenant_id)
    .bind(raw.hash_hex())
    .bind(title)
    .bind(is_disabled)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .bind(raw.prefix())
    .fetch_one(&mut *conn)
    .await?;
    set_roles(conn, api_key_id, role_ids).await?;
    let key = get(conn, tenant_id, api_key_id).await?;
    Ok((key, raw))
}

async fn set_roles(
    conn: &mut PgConnection,
    api_key_id: ApiKeyId,
    role_ids: &[RoleId],
) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblAPIKeyRoleMappings" WHERE "apiKeyID" = $1"#)
        .bind(api_key_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        r#"INSERT INTO "tblAPIKeyRoleMappings" ("apiKeyID", "roleID")
           SELECT $1, r FROM unnest($2::uuid[]) AS r ON CONFLICT DO NOTHING"#,
    )
    .bind(api_key_id)
    .bind(role_ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The tenant's keys, newest first.
pub async fn list(pool: &PgPool, tenant_id: TenantId, page: PageRequest) -> Result<Page<ApiKey>> {
    let total: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblAPIKeys" WHERE "tenantID" = $1"#)
            .bind(tenant_id)
            .fetch_one(pool)
            .await?;
    let items = sqlx::query_as(AssertSqlSafe(format!(
        r#"{SELECT} WHERE k."tenantID" = $1 GROUP BY k."apiKeyID"
           ORDER BY k."createdAt" DESC, k."apiKeyID" LIMIT $2 OFFSET $3"#
    )))
    .bind(tenant_id)
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

/// One key of the tenant; `NotFound` for another tenant's key.
pub async fn get(
    conn: impl sqlx::PgExecutor<'_>,
    tenant_id: TenantId,
    api_key_id: ApiKeyId,
) -> Result<ApiKey> {
    sqlx::query_as(AssertSqlSafe(format!(
        r#"{SELECT} WHERE k."tenantID" = $1 AND k."apiKeyID" = $2 GROUP BY k."apiKeyID""#
    )))
    .bind(tenant_id)
    .bind(api_key_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("api key"))
}

/// Changes title, disabled flag and (when given) the roles of a key.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    api_key_id: ApiKeyId,
    title: Option<&str>,
    is_disabled: Option<bool>,
    role_ids: Option<&[RoleId]>,
) -> Result<ApiKey> {
    let updated = sqlx::query(
        r#"UPDATE "tblAPIKeys" SET "apiKeyTitle" = COALESCE($3, "apiKeyTitle"),
             "isDisabled" = COALESCE($4, "isDisabled")
           WHERE "tenantID" = $1 AND "apiKeyID" = $2"#,
    )
    .bind(tenant_id)
    .bind(api_key_id)
    .bind(title)
    .bind(is_disabled)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::NotFound("api key"));
    }
    if let Some(role_ids) = role_ids {
        set_roles(conn, api_key_id, role_ids).await?;
    }
    get(conn, tenant_id, api_key_id).await
}

/// Deletes a key; its role mappings go with it (ON DELETE CASCADE).
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    api_key_id: ApiKeyId,
) -> Result<()> {
    let deleted =
        sqlx::query(r#"DELETE FROM "tblAPIKeys" WHERE "tenantID" = $1 AND "apiKeyID" = $2"#)
            .bind(tenant_id)
            .bind(api_key_id)
            .execute(conn)
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound("api key"));
    }
    Ok(())
}

/// A disabled copy of a key with the same title suffix and roles, and a new raw value.
pub async fn clone_disabled(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    api_key_id: ApiKeyId,
    creator: Creator,
) -> Result<(ApiKey, RawApiKey)> {
    let source = get(&mut *conn, tenant_id, api_key_id).await?;
    let title = format!("{} (copy)", source.api_key_title);
    insert(conn, tenant_id, &title, &source.role_ids, true, creator).await
}
