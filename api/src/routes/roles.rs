//! `/api/v1/tenants/{tenantID}/roles`: roles of a tenant (plus the global ones) and the
//! permission catalogue.

use super::nullable::Nullable;
use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::ApiResult;
use crate::security::JetAuth;
use crate::state::AppState;
use jet_shared::ids::{PermissionId, RoleId, TenantId};
use jet_shared::rbac::permissions::{
    PERMISSION_LIST, ROLE_CREATE, ROLE_DELETE, ROLE_LIST, ROLE_READ, ROLE_UPDATE,
};
use jet_shared::role::{self, AssetPermission, PermissionSelection};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

/// A permission of the catalogue.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct PermissionOut {
    #[oai(rename = "permissionID")]
    pub permission_id: Uuid,
    /// Upstream permission string, e.g. `tenant:workflow:execute`.
    pub permission_title: String,
    pub permission_description: Option<String>,
}

impl From<role::Permission> for PermissionOut {
    fn from(p: role::Permission) -> Self {
        Self {
            permission_id: p.permission_id.0,
            permission_title: p.permission_title,
            permission_description: p.permission_description,
        }
    }
}

/// A role with its permissions.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct RoleOut {
    #[oai(rename = "roleID")]
    pub role_id: Uuid,
    pub role_title: String,
    pub role_description: Option<String>,
    /// The owning tenant; `null` for a global role, which applies in every tenant.
    #[oai(rename = "tenantID")]
    pub tenant_id: Option<Uuid>,
    /// Global roles are read-only through a tenant's API.
    pub is_global: bool,
    pub permissions: Vec<PermissionOut>,
}

impl From<role::RoleWithPermissions> for RoleOut {
    fn from(r: role::RoleWithPermissions) -> Self {
        Self {
            role_id: r.role.role_id.0,
            role_title: r.role.role_title,
            role_description: r.role.role_description,
            tenant_id: r.role.tenant_id.map(|t| t.0),
            is_global: r.role.tenant_id.is_none(),
            permissions: r.permissions.into_iter().map(PermissionOut::from).collect(),
        }
    }
}

/// A permission on one asset: `tenant:asset:<resourceType>:<resourceID>:<action>`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct AssetPermissionIn {
    /// The resource type of a catalogue permission, e.g. `workflow`.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub resource_type: String,
    #[oai(rename = "resourceID")]
    pub resource_id: Uuid,
    /// The action of a catalogue permission, e.g. `execute`.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub action: String,
}

/// Body of `createRole`. Permissions may be named by id, by title, or both.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct CreateRole {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub role_title: String,
    #[oai(validator(max_length = 2000))]
    pub role_description: Option<String>,
    #[oai(rename = "permissionIDs", default)]
    pub permission_ids: Vec<Uuid>,
    /// Permission titles such as `tenant:role:list`.
    #[oai(default)]
    pub permissions: Vec<String>,
    #[oai(default)]
    pub asset_permissions: Vec<AssetPermissionIn>,
}

/// Body of `updateRole`. Sending any of the three permission fields replaces the whole set.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct UpdateRole {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub role_title: Option<String>,
    /// `null` clears the description.
    #[oai(validator(max_length = 2000))]
    pub role_description: Nullable<String>,
    #[oai(rename = "permissionIDs")]
    pub permission_ids: Option<Vec<Uuid>>,
    pub permissions: Option<Vec<String>>,
    pub asset_permissions: Option<Vec<AssetPermissionIn>>,
}

fn selection(
    ids: Vec<Uuid>,
    titles: Vec<String>,
    assets: Vec<AssetPermissionIn>,
) -> PermissionSelection {
    PermissionSelection {
        permission_ids: ids.into_iter().map(PermissionId).collect(),
        permission_titles: titles.into_iter().map(|t| t.trim().to_owned()).collect(),
        asset_permissions: assets
            .into_iter()
            .map(|a| AssetPermission {
                resource_type: a.resource_type,
                resource_id: a.resource_id,
                action: a.action,
            })
            .collect(),
    }
}

/// Role routes.
pub struct RolesApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Roles")]
impl RolesApi {
    /// List the roles usable in a tenant (its own and the global ones)
    #[oai(path = "/:tenantID/roles", method = "get", operation_id = "listRoles")]
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<RoleOut>>> {
        authorize(&self.state, &auth, tenant_id.0, ROLE_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = role::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::from_domain(page, RoleOut::from)))
    }

    /// List the permission catalogue
    #[oai(
        path = "/:tenantID/roles/permissions",
        method = "get",
        operation_id = "listPermissions"
    )]
    async fn permissions(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
    ) -> ApiResult<Json<Vec<PermissionOut>>> {
        authorize(&self.state, &auth, tenant_id.0, PERMISSION_LIST, None).await?;
        let catalogue = role::list_catalogue(&self.state.pool).await?;
        Ok(Json(
            catalogue.into_iter().map(PermissionOut::from).collect(),
        ))
    }

    /// Create a role
    ///
    /// Unknown permissions are a 422. The caller must hold every permission it grants (403
    /// `permission_escalation`).
    #[oai(
        path = "/:tenantID/roles",
        method = "post",
        operation_id = "createRole"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateRole>,
    ) -> ApiResult<Created<RoleOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, ROLE_CREATE, None).await?;
        let body = body.0;
        let title = required_title("roleTitle", &body.role_title)?;
        let wanted = selection(
            body.permission_ids,
            body.permissions,
            body.asset_permissions,
        );
        let mut tx = self.state.pool.begin().await?;
        let permissions = role::resolve_selection(&mut tx, &wanted).await?;
        grants.require_covers(permissions.iter().map(|p| p.permission_title.as_str()))?;
        let created = role::insert(
            &mut tx,
            TenantId(tenant_id.0),
            &title,
            body.role_description.as_deref(),
            &permissions,
        )
        .await?;
        tx.commit().await?;
        Ok(Created::Created(Json(created.into())))
    }

    /// Get a role with its permissions
    #[oai(
        path = "/:tenantID/roles/:roleID",
        method = "get",
        operation_id = "getRole"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "roleID")] role_id: Path<Uuid>,
    ) -> ApiResult<Json<RoleOut>> {
        authorize(&self.state, &auth, tenant_id.0, ROLE_READ, Some(role_id.0)).await?;
        let mut conn = self.state.pool.acquire().await?;
        let found = role::get(&mut conn, TenantId(tenant_id.0), RoleId(role_id.0)).await?;
        Ok(Json(found.into()))
    }

    /// Update a role
    ///
    /// Global roles are read-only here (403 `global_role_read_only`).
    #[oai(
        path = "/:tenantID/roles/:roleID",
        method = "patch",
        operation_id = "updateRole"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "roleID")] role_id: Path<Uuid>,
        body: Json<UpdateRole>,
    ) -> ApiResult<Json<RoleOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            ROLE_UPDATE,
            Some(role_id.0),
        )
        .await?;
        let body = body.0;
        let tenant = TenantId(tenant_id.0);
        let id = RoleId(role_id.0);
        let title = body
            .role_title
            .as_deref()
            .map(|t| required_title("roleTitle", t))
            .transpose()?;
        let mut tx = self.state.pool.begin().await?;
        role::get_editable(&mut tx, tenant, id).await?;
        let replace = body.permission_ids.is_some()
            || body.permissions.is_some()
            || body.asset_permissions.is_some();
        let permissions = if replace {
            let wanted = selection(
                body.permission_ids.unwrap_or_default(),
                body.permissions.unwrap_or_default(),
                body.asset_permissions.unwrap_or_default(),
            );
            let resolved = role::resolve_selection(&mut tx, &wanted).await?;
            grants.require_covers(resolved.iter().map(|p| p.permission_title.as_str()))?;
            Some(resolved)
        } else {
            None
        };
        let description = body.role_description.into_patch();
        let updated = role::update(
            &mut tx,
            tenant,
            id,
            title.as_deref(),
            description.as_ref().map(|d| d.as_deref()),
            permissions.as_deref(),
        )
        .await?;
        tx.commit().await?;
        Ok(Json(updated.into()))
    }

    /// Delete a role and all its assignments
    #[oai(
        path = "/:tenantID/roles/:roleID",
        method = "delete",
        operation_id = "deleteRole"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "roleID")] role_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            ROLE_DELETE,
            Some(role_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let id = RoleId(role_id.0);
        let mut tx = self.state.pool.begin().await?;
        role::get_editable(&mut tx, tenant, id).await?;
        role::delete(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }
}
