//! Roles (`tblRoles`) and the permission catalogue (`tblPermissions`).
//!
//! A role belongs to one tenant, or to none (`tenantID` NULL: a global role that applies in
//! every tenant and cannot be edited through a tenant's API).

use crate::ids::{PermissionId, RoleId, TenantId};
use crate::page::{Page, PageRequest};
use crate::rbac::asset_permission_title;
use crate::{Error, Result};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeSet;

/// A row of `tblPermissions`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Permission {
    #[sqlx(rename = "permissionID")]
    pub permission_id: PermissionId,
    #[sqlx(rename = "permissionTitle")]
    pub permission_title: String,
    #[sqlx(rename = "permissionDescription")]
    pub permission_description: Option<String>,
}

/// A row of `tblRoles`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Role {
    #[sqlx(rename = "roleID")]
    pub role_id: RoleId,
    #[sqlx(rename = "roleTitle")]
    pub role_title: String,
    #[sqlx(rename = "roleDescription")]
    pub role_description: Option<String>,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: Option<TenantId>,
}

/// A role with its permissions.
#[derive(Debug, Clone)]
pub struct RoleWithPermissions {
    pub role: Role,
    pub permissions: Vec<Permission>,
}

/// A permission on one asset: `tenant:asset:<resourceType>:<resourceID>:<action>`.
#[derive(Debug, Clone)]
pub struct AssetPermission {
    pub resource_type: String,
    pub resource_id: uuid::Uuid,
    pub action: String,
}

/// The permissions a role should hold, as the client named them.
#[derive(Debug, Clone, Default)]
pub struct PermissionSelection {
    pub permission_ids: Vec<PermissionId>,
    pub permission_titles: Vec<String>,
    pub asset_permissions: Vec<AssetPermission>,
}

/// The general permissions of the catalogue (asset permissions are not listed).
pub async fn list_catalogue(pool: &PgPool) -> Result<Vec<Permission>> {
    Ok(sqlx::query_as(
        r#"SELECT "permissionID", "permissionTitle", "permissionDescription" FROM "tblPermissions"
           WHERE "permissionTitle" NOT LIKE 'tenant:asset:%' ORDER BY "permissionTitle""#,
    )
    .fetch_all(pool)
    .await?)
}

/// Roles usable in a tenant: its own and the global ones, global first.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    page: PageRequest,
) -> Result<Page<RoleWithPermissions>> {
    let total: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblRoles" WHERE "tenantID" = $1 OR "tenantID" IS NULL"#,
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?;
    let roles: Vec<Role> = sqlx::query_as(
        r#"SELECT "roleID", "roleTitle", "roleDescription", "tenantID" FROM "tblRoles"
           WHERE "tenantID" = $1 OR "tenantID" IS NULL
           ORDER BY "tenantID" NULLS FIRST, "roleTitle", "roleID" LIMIT $2 OFFSET $3"#,
    )
    .bind(tenant_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let mut items = Vec::with_capacity(roles.len());
    let ids: Vec<RoleId> = roles.iter().map(|r| r.role_id).collect();
    let mut perms = permissions_of(pool, &ids).await?;
    for role in roles {
        let permissions = perms.remove(&role.role_id).unwrap_or_default();
        items.push(RoleWithPermissions { role, permissions });
    }
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}

async fn permissions_of(
    conn: impl sqlx::PgExecutor<'_>,
    role_ids: &[RoleId],
) -> Result<std::collections::HashMap<RoleId, Vec<Permission>>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(rename = "roleID")]
        role_id: RoleId,
        #[sqlx(flatten)]
        permission: Permission,
    }
    let rows: Vec<Row> = sqlx::query_as(
        r#"SELECT rp."roleID", p."permissionID", p."permissionTitle", p."permissionDescription"
           FROM "tblRolePermissionMappings" rp
           JOIN "tblPermissions" p ON p."permissionID" = rp."permissionID"
           WHERE rp."roleID" = ANY($1) ORDER BY p."permissionTitle""#,
    )
    .bind(role_ids)
    .fetch_all(conn)
    .await?;
    let mut map = std::collections::HashMap::<RoleId, Vec<Permission>>::new();
    for row in rows {
        map.entry(row.role_id).or_default().push(row.permission);
    }
    Ok(map)
}

/// A role visible in the tenant (its own or global); `NotFound` otherwise.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    role_id: RoleId,
) -> Result<RoleWithPermissions> {
    let role: Role = sqlx::query_as(
        r#"SELECT "roleID", "roleTitle", "roleDescription", "tenantID" FROM "tblRoles"
           WHERE "roleID" = $1 AND ("tenantID" = $2 OR "tenantID" IS NULL)"#,
    )
    .bind(role_id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("role"))?;
    let permissions = permissions_of(&mut *conn, &[role_id])
        .await?
        .remove(&role_id)
        .unwrap_or_default();
    Ok(RoleWithPermissions { role, permissions })
}

/// Resolves a selection to permission rows: ids and titles must name catalogue entries;
/// asset permissions are created on first use, as upstream does.
pub async fn resolve_selection(
    conn: &mut PgConnection,
    selection: &PermissionSelection,
) -> Result<Vec<Permission>> {
    let mut titles: BTreeSet<String> = selection.permission_titles.iter().cloned().collect();
    if !selection.permission_ids.is_empty() {
        let found: Vec<Permission> = sqlx::query_as(
            r#"SELECT "permissionID", "permissionTitle", "permissionDescription" FROM "tblPermissions"
               WHERE "permissionID" = ANY($1) AND "permissionTitle" NOT LIKE 'tenant:asset:%'"#,
        )
        .bind(&selection.permission_ids)
        .fetch_all(&mut *conn)
        .await?;
        if let Some(missing) = selection
            .permission_ids
            .iter()
            .find(|id| !found.iter().any(|p| p.permission_id == **id))
        {
            return Err(Error::Invalid(format!("unknown permissionID {missing}")));
        }
        titles.extend(found.into_iter().map(|p| p.permission_title));
    }
    let general: Vec<String> = titles.into_iter().collect();
    let known: Vec<Permission> = sqlx::query_as(
        r#"SELECT "permissionID", "permissionTitle", "permissionDescription" FROM "tblPermissions"
           WHERE "permissionTitle" = ANY($1) AND "permissionTitle" NOT LIKE 'tenant:asset:%'"#,
    )
    .bind(&general)
    .fetch_all(&mut *conn)
    .await?;
    if let Some(missing) = general
        .iter()
        .find(|t| !known.iter().any(|p| &p.permission_title == *t))
    {
        return Err(Error::Invalid(format!("unknown permission {missing}")));
    }
    let mut resolved = known;
    for asset in &selection.asset_permissions {
        let general = format!("tenant:{}:{}", asset.resource_type, asset.action);
        let valid: bool = sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM "tblPermissions" WHERE "permissionTitle" = $1)"#,
        )
        .bind(&general)
        .fetch_one(&mut *conn)
        .await?;
        if !valid {
            return Err(Error::Invalid(format!(
                "unknown asset permission: no action `{}` on resource type `{}`",
                asset.action, asset.resource_type
            )));
        }
        let title = asset_permission_title(
            &asset.resource_type,
            &asset.resource_id.to_string(),
            &asset.action,
        );
        let permission: Permission = sqlx::query_as(
            r#"WITH ins AS (
                 INSERT INTO "tblPermissions" ("permissionTitle", "permissionDescription")
                 VALUES ($1, $2) ON CONFLICT ("permissionTitle") DO NOTHING
                 RETURNING "permissionID", "permissionTitle", "permissionDescription")
               SELECT * FROM ins
               UNION ALL
               SELECT "permissionID", "permissionTitle", "permissionDescription"
               FROM "tblPermissions" WHERE "permissionTitle" = $1
               LIMIT 1"#,
        )
        .bind(&title)
        .bind(format!("{} on one {}", asset.action, asset.resource_type))
        .fetch_one(&mut *conn)
        .await?;
        resolved.push(permission);
    }
    resolved.sort_by(|a, b| a.permission_title.cmp(&b.permission_title));
    resolved.dedup_by(|a, b| a.permission_id == b.permission_id);
    Ok(resolved)
}

/// Creates a tenant role holding `permissions`.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    title: &str,
    description: Option<&str>,
    permissions: &[Permission],
) -> Result<RoleWithPermissions> {
    let role: Role = sqlx::query_as(
        r#"INSERT INTO "tblRoles" ("roleTitle", "roleDescription", "tenantID") VALUES ($1, $2, $3)
           RETURNING "roleID", "roleTitle", "roleDescription", "tenantID""#,
    )
    .bind(title)
    .bind(description)
    .bind(tenant_id)
    .fetch_one(&mut *conn)
    .await?;
    replace_permissions(conn, role.role_id, permissions).await?;
    Ok(RoleWithPermissions {
        role,
        permissions: permissions.to_vec(),
    })
}

async fn replace_permissions(
    conn: &mut PgConnection,
    role_id: RoleId,
    permissions: &[Permission],
) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblRolePermissionMappings" WHERE "roleID" = $1"#)
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    let ids: Vec<PermissionId> = permissions.iter().map(|p| p.permission_id).collect();
    sqlx::query(
        r#"INSERT INTO "tblRolePermissionMappings" ("roleID", "permissionID")
           SELECT $1, unnest($2::uuid[])"#,
    )
    .bind(role_id)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Loads a role of this tenant for change; global roles are read-only here.
pub async fn get_editable(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    role_id: RoleId,
) -> Result<RoleWithPermissions> {
    let role = get(conn, tenant_id, role_id).await?;
    if role.role.tenant_id.is_none() {
        return Err(Error::Forbidden {
            code: "global_role_read_only",
            message: "global roles apply to every tenant and cannot be changed from one".into(),
        });
    }
    Ok(role)
}

/// Updates title, description and (when given) the permission set of a tenant role.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    role_id: RoleId,
    title: Option<&str>,
    description: Option<Option<&str>>,
    permissions: Option<&[Permission]>,
) -> Result<RoleWithPermissions> {
    sqlx::query(
        r#"UPDATE "tblRoles" SET "roleTitle" = COALESCE($3, "roleTitle"),
             "roleDescription" = CASE WHEN $4 THEN $5 ELSE "roleDescription" END
           WHERE "roleID" = $1 AND "tenantID" = $2"#,
    )
    .bind(role_id)
    .bind(tenant_id)
    .bind(title)
    .bind(description.is_some())
    .bind(description.flatten())
    .execute(&mut *conn)
    .await?;
    if let Some(permissions) = permissions {
        replace_permissions(conn, role_id, permissions).await?;
    }
    get(conn, tenant_id, role_id).await
}

/// Deletes a tenant role and every assignment of it.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, role_id: RoleId) -> Result<()> {
    for statement in [
        r#"DELETE FROM "tblUserTenantRoleMappings" WHERE "roleID" = $1"#,
        r#"DELETE FROM "tblAPIKeyRoleMappings" WHERE "roleID" = $1"#,
        r#"DELETE FROM "tblRolePermissionMappings" WHERE "roleID" = $1"#,
    ] {
        sqlx::query(statement)
            .bind(role_id)
            .execute(&mut *conn)
            .await?;
    }
    let deleted = sqlx::query(r#"DELETE FROM "tblRoles" WHERE "roleID" = $1 AND "tenantID" = $2"#)
        .bind(role_id)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound("role"));
    }
    Ok(())
}

/// Checks that every role id is usable in the tenant and returns the permission titles those
/// roles carry (for the no-escalation check).
pub async fn titles_of_assignable(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    role_ids: &[RoleId],
) -> Result<Vec<String>> {
    let visible: Vec<RoleId> = sqlx::query_scalar(
        r#"SELECT "roleID" FROM "tblRoles" WHERE "roleID" = ANY($1) AND ("tenantID" = $2 OR "tenantID" IS NULL)"#,
    )
    .bind(role_ids)
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    if let Some(missing) = role_ids.iter().find(|id| !visible.contains(id)) {
        return Err(Error::Invalid(format!("unknown roleID {missing}")));
    }
    Ok(sqlx::query_scalar(
        r#"SELECT DISTINCT p."permissionTitle" FROM "tblRolePermissionMappings" rp
           JOIN "tblPermissions" p ON p."permissionID" = rp."permissionID"
           WHERE rp."roleID" = ANY($1)"#,
    )
    .bind(role_ids)
    .fetch_all(&mut *conn)
    .await?)
}
