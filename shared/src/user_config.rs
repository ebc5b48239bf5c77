//! A user's UI preferences per tenant (`tblUserTenantConfigMap.config`).

use crate::Result;
use crate::ids::{TenantId, UserId};
use serde_json::Value;
use sqlx::PgPool;

/// The stored config, or `{}` when none was saved yet.
pub async fn get(pool: &PgPool, user_id: UserId, tenant_id: TenantId) -> Result<Value> {
    let config: Option<Option<Value>> = sqlx::query_scalar(
        r#"SELECT "config" FROM "tblUserTenantConfigMap" WHERE "userID" = $1 AND "tenantID" = $2"#,
    )
    .bind(user_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(config
        .flatten()
        .unwrap_or_else(|| Value::Object(Default::default())))
}

/// Replaces the stored config.
pub async fn put(
    pool: &PgPool,
    user_id: UserId,
    tenant_id: TenantId,
    config: &Value,
) -> Result<Value> {
    Ok(sqlx::query_scalar(
        r#"INSERT INTO "tblUserTenantConfigMap" ("userID", "tenantID", "config") VALUES ($1, $2, $3)
           ON CONFLICT ("userID", "tenantID") DO UPDATE SET "config" = EXCLUDED."config"
           RETURNING "config""#,
    )
    .bind(user_id)
    .bind(tenant_id)
    .bind(config)
    .fetch_one(pool)
    .await?)
}
