//! Tenants (`tblTenants`): creation with its first admin, listing, update and deletion.

use crate::auth::Principal;
use crate::ids::{ApiKeyId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

/// A row of `tblTenants`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "tenantTitle")]
    pub tenant_title: String,
    #[sqlx(rename = "tenantLogoURL")]
    pub tenant_logo_url: Option<String>,
    #[sqlx(rename = "isDisabled")]
    pub is_disabled: Option<bool>,
    #[sqlx(rename = "disabledAt")]
    pub disabled_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "disableReason")]
    pub disable_reason: Option<String>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<UserId>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<ApiKeyId>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A tenant as seen by one member, with that member's membership role.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberTenant {
    #[sqlx(flatten)]
    pub tenant: Tenant,
    /// `ADMIN` or `MEMBER`; `None` when the caller is an API key.
    pub role: Option<String>,
}

/// How many assets a tenant holds, for the tenant detail view.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct TenantCounts {
    pub roles: i64,
    pub members: i64,
    pub api_keys: i64,
    pub app_pages: i64,
    pub widgets: i64,
    pub datasources: i64,
    pub data_queries: i64,
    pub workflows: i64,
    pub listeners: i64,
    pub cron_jobs: i64,
}

/// Fields a tenant update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub tenant_title: Option<String>,
    pub tenant_logo_url: Option<Option<String>>,
    pub is_disabled: Option<bool>,
    pub disable_reason: Option<Option<String>>,
}

const COLUMNS: &str = r#"t."tenantID", t."tenantTitle", t."tenantLogoURL", t."isDisabled", t."disabledAt",
    t."disableReason", t."creatorID", t."createdByApiKeyID", t."createdAt", t."updatedAt""#;

/// Creates a tenant whose creator becomes its `ADMIN` member with an empty UI config.
pub async fn insert_with_admin(
    conn: &mut PgConnection,
    title: &str,
    logo_url: Option<&str>,
    creator: UserId,
) -> Result<Tenant> {
    let tenant: Tenant = sqlx::query_as(AssertSqlSafe(format!(
        r#"INSERT INTO "tblTenants" AS t ("tenantTitle", "tenantLogoURL", "creatorID")
           VALUES ($1, $2, $3) RETURNING {COLUMNS}"#
    )))
    .bind(title)
    .bind(logo_url)
    .bind(creator)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblUsersTenantsRelationship" ("tenantID", "userID", "role")
           VALUES ($1, $2, 'ADMIN')"#,
    )
    .bind(tenant.tenant_id)
    .bind(creator)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblUserTenantConfigMap" ("userID", "tenantID", "config") VALUES ($1, $2, '{}')"#,
    )
    .bind(creator)
    .bind(tenant.tenant_id)
    .execute(&mut *conn)
    .await?;
    Ok(tenant)
}

/// Creates a tenant with no members (used by `jet bootstrap`, whose admin is an API key).
pub async fn insert_without_members(conn: &mut PgConnection, title: &str) -> Result<Tenant> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        r#"INSERT INTO "tblTenants" AS t ("tenantTitle") VALUES ($1) RETURNING {COLUMNS}"#
    )))
    .bind(title)
    .fetch_one(conn)
    .await?)
}

/// The tenants a principal can see: a user's memberships (enabled tenants only, as upstream),
/// or an API key's own tenant.
pub async fn list_visible(
    pool: &PgPool,
    principal: &Principal,
    page: PageRequest,
) -> Result<Page<MemberTenant>> {
    let (filter, id): (&str, uuid::Uuid) = match principal {
        Principal::User { user_id } => (r#"m."userID" = $1"#, user_id.0),
        Principal::ApiKey { tenant_id, .. } => (r#"t."tenantID" = $1"#, tenant_id.0),
    };
    let join = match principal {
        Principal::User { .. } => {
            r#"JOIN "tblUsersTenantsRelationship" m ON m."tenantID" = t."tenantID""#
        }
        Principal::ApiKey { .. } => r#"LEFT JOIN "tblUsersTenantsRelationship" m ON false"#,
    };
    let where_clause = format!(r#"{filter} AND t."isDisabled" IS NOT TRUE"#);
    let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        r#"SELECT count(*) FROM "tblTenants" t {join} WHERE {where_clause}"#
    )))
    .bind(id)
    .fetch_one(pool)
    .await?;
    let items: Vec<MemberTenant> = sqlx::query_as(AssertSqlSafe(format!(
        r#"SELECT {COLUMNS}, m."role" FROM "tblTenants" t {join} WHERE {where_clause}
           ORDER BY t."createdAt", t."tenantID" LIMIT $2 OFFSET $3"#
    )))
    .bind(id)
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

/// The tenant row; `NotFound` if it does not exist.
pub async fn get(pool: &PgPool, tenant_id: TenantId) -> Result<Tenant> {
    sqlx::query_as(AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblTenants" t WHERE t."tenantID" = $1"#
    )))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("tenant"))
}

/// Asset counts shown on the tenant detail view.
pub async fn counts(pool: &PgPool, tenant_id: TenantId) -> Result<TenantCounts> {
    Ok(sqlx::query_as(
        r#"SELECT
             (SELECT count(*) FROM "tblRoles" WHERE "tenantID" = $1) AS roles,
             (SELECT count(*) FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1) AS members,
             (SELECT count(*) FROM "tblAPIKeys" WHERE "tenantID" = $1) AS api_keys,
             (SELECT count(*) FROM "tblAppPages" WHERE "tenantID" = $1) AS app_pages,
             (SELECT count(*) FROM "tblWidgets" WHERE "tenantID" = $1) AS widgets,
             (SELECT count(*) FROM "tblDatasources" WHERE "tenantID" = $1) AS datasources,
             (SELECT count(*) FROM "tblDataQueries" WHERE "tenantID" = $1) AS data_queries,
             (SELECT count(*) FROM "tblWorkflows" WHERE "tenantID" = $1) AS workflows,
             (SELECT count(*) FROM "tblListeners" WHERE "tenantID" = $1) AS listeners,
             (SELECT count(*) FROM "tblCronJobs" WHERE "tenantID" = $1) AS cron_jobs"#,
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?)
}

/// Applies a patch; disabling stamps `disabledAt`, enabling clears it.
pub async fn update(pool: &PgPool, tenant_id: TenantId, patch: &TenantPatch) -> Result<Tenant> {
    sqlx::query_as(AssertSqlSafe(format!(
        r#"UPDATE "tblTenants" t SET
             "tenantTitle"   = COALESCE($2, t."tenantTitle"),
             "tenantLogoURL" = CASE WHEN $3 THEN $4 ELSE t."tenantLogoURL" END,
             "isDisabled"    = COALESCE($5, t."isDisabled"),
             "disabledAt"    = CASE WHEN $5 IS NULL THEN t."disabledAt"
                                    WHEN $5 THEN COALESCE(t."disabledAt", now()) ELSE NULL END,
             "disableReason" = CASE WHEN $6 THEN $7 ELSE t."disableReason" END,
             "updatedAt"     = now()
           WHERE t."tenantID" = $1 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(patch.tenant_title.as_deref())
    .bind(patch.tenant_logo_url.is_some())
    .bind(patch.tenant_logo_url.clone().flatten())
    .bind(patch.is_disabled)
    .bind(patch.disable_reason.is_some())
    .bind(patch.disable_reason.clone().flatten())
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("tenant"))
}

/// Deletes a tenant and everything it owns, children first (most upstream foreign keys are
/// NO ACTION). Audit rows are kept: they record that the tenant existed.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId) -> Result<()> {
    // Order matters: each statement removes rows that later ones' foreign keys point at.
    const STATEMENTS: &[&str] = &[
        r#"DELETE FROM "tblCronJobHistory" h USING "tblCronJobs" c
           WHERE h."cronJobID" = c."cronJobID" AND c."tenantID" = $1"#,
        r#"DELETE FROM "tblCronJobs" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblListeners" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblWorkflowInstances" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblWorkflows" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblDataQueries" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblDatasources" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblWidgets" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblAppPages" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblEventDLQ" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblUserTenantRoleMappings" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblAPIKeyRoleMappings" m USING "tblAPIKeys" k
           WHERE m."apiKeyID" = k."apiKeyID" AND k."tenantID" = $1"#,
        r#"DELETE FROM "tblRolePermissionMappings" rp USING "tblRoles" r
           WHERE rp."roleID" = r."roleID" AND r."tenantID" = $1"#,
        r#"DELETE FROM "tblRoles" WHERE "tenantID" = $1"#,
        r#"UPDATE "tblTenants" SET "createdByApiKeyID" = NULL WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblAPIKeys" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblUserTenantConfigMap" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1"#,
        r#"DELETE FROM "tblFolders" WHERE "tenantID" = $1"#,
    ];
    for statement in STATEMENTS {
        sqlx::query(*statement)
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?;
    }
    let deleted = sqlx::query(r#"DELETE FROM "tblTenants" WHERE "tenantID" = $1"#)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound("tenant"));
    }
    Ok(())
}
