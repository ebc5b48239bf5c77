//! Role-based access control with upstream's permission strings.
//!
//! A caller's grants in a tenant are the union of the permissions of its roles (tenant-scoped
//! roles of that tenant, and global roles with `tenantID` NULL). `ADMIN` membership grants
//! everything in its tenant. A permission is either general (`tenant:role:update`) or bound
//! to one asset (`tenant:asset:role:<id>:update`). A tenant the caller cannot see is
//! `NotFound`, never `Forbidden`, so ids of other tenants do not leak.

use crate::auth::Principal;
use crate::ids::TenantId;
use crate::{Error, Result};
use sqlx::PgPool;
use std::collections::HashSet;
use uuid::Uuid;

/// A general permission of the catalogue, by its upstream title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission(pub &'static str);

impl Permission {
    /// The upstream title, e.g. `tenant:role:update`.
    pub fn title(self) -> &'static str {
        self.0
    }

    /// The title of the same permission bound to one asset:
    /// `tenant:role:update` → `tenant:asset:role:<id>:update`.
    pub fn for_asset(self, id: Uuid) -> Option<String> {
        let rest = self.0.strip_prefix("tenant:")?;
        let (resource, action) = rest.split_once(':')?;
        Some(asset_permission_title(resource, &id.to_string(), action))
    }
}

/// `tenant:asset:<resourceType>:<resourceID>:<action>`.
pub fn asset_permission_title(resource: &str, id: &str, action: &str) -> String {
    format!("tenant:asset:{resource}:{id}:{action}")
}

/// The permissions the identity routes check.
pub mod permissions {
    use super::Permission;

    pub const TENANT_READ: Permission = Permission("tenant:read");
    pub const TENANT_UPDATE: Permission = Permission("tenant:update");
    pub const TENANT_DELETE: Permission = Permission("tenant:delete");
    pub const USER_LIST: Permission = Permission("tenant:user:list");
    pub const USER_CREATE: Permission = Permission("tenant:user:create");
    pub const USER_READ: Permission = Permission("tenant:user:read");
    pub const USER_UPDATE: Permission = Permission("tenant:user:update");
    pub const USER_DELETE: Permission = Permission("tenant:user:delete");
    pub const ROLE_LIST: Permission = Permission("tenant:role:list");
    pub const ROLE_CREATE: Permission = Permission("tenant:role:create");
    pub const ROLE_READ: Permission = Permission("tenant:role:read");
    pub const ROLE_UPDATE: Permission = Permission("tenant:role:update");
    pub const ROLE_DELETE: Permission = Permission("tenant:role:delete");
    pub const PERMISSION_LIST: Permission = Permission("tenant:permissions:list");
    pub const APIKEY_LIST: Permission = Permission("tenant:apikey:list");
    pub const APIKEY_CREATE: Permission = Permission("tenant:apikey:create");
    pub const APIKEY_READ: Permission = Permission("tenant:apikey:read");
    pub const APIKEY_UPDATE: Permission = Permission("tenant:apikey:update");
    pub const APIKEY_DELETE: Permission = Permission("tenant:apikey:delete");
    pub const AUDIT_LIST: Permission = Permission("tenant:audit:list");
    pub const WORKFLOW_LIST: Permission = Permission("tenant:workflow:list");
    pub const WORKFLOW_CREATE: Permission = Permission("tenant:workflow:create");
    pub const WORKFLOW_READ: Permission = Permission("tenant:workflow:read");
    pub const WORKFLOW_UPDATE: Permission = Permission("tenant:workflow:update");
    pub const WORKFLOW_DELETE: Permission = Permission("tenant:workflow:delete");
    pub const WORKFLOW_EXECUTE: Permission = Permission("tenant:workflow:execute");
    pub const WORKFLOW_EXPORT: Permission = Permission("tenant:workflow:export");
    pub const WORKFLOW_TEST: Permission = Permission("tenant:workflow:test");
    pub const DATASOURCE_LIST: Permission = Permission("tenant:datasource:list");
    pub const DATASOURCE_CREATE: Permission = Permission("tenant:datasource:create");
    pub const DATASOURCE_READ: Permission = Permission("tenant:datasource:read");
    pub const DATASOURCE_UPDATE: Permission = Permission("tenant:datasource:update");
    pub const DATASOURCE_DELETE: Permission = Permission("tenant:datasource:delete");
    pub const DATASOURCE_TEST: Permission = Permission("tenant:datasource:test");
    pub const DATAQUERY_LIST: Permission = Permission("tenant:dataquery:list");
    pub const DATAQUERY_CREATE: Permission = Permission("tenant:dataquery:create");
    pub const DATAQUERY_READ: Permission = Permission("tenant:dataquery:read");
    pub const DATAQUERY_UPDATE: Permission = Permission("tenant:dataquery:update");
    pub const DATAQUERY_DELETE: Permission = Permission("tenant:dataquery:delete");
    pub const DATAQUERY_TEST: Permission = Permission("tenant:dataquery:test");
    pub const DATAQUERY_EXECUTE: Permission = Permission("tenant:dataquery:execute");
    pub const APPPAGE_LIST: Permission = Permission("tenant:apppage:list");
    pub const APPPAGE_CREATE: Permission = Permission("tenant:apppage:create");
    pub const APPPAGE_READ: Permission = Permission("tenant:apppage:read");
    pub const APPPAGE_UPDATE: Permission = Permission("tenant:apppage:update");
    pub const APPPAGE_DELETE: Permission = Permission("tenant:apppage:delete");
    pub const WIDGET_LIST: Permission = Permission("tenant:widget:list");
    pub const WIDGET_CREATE: Permission = Permission("tenant:widget:create");
    pub const WIDGET_READ: Permission = Permission("tenant:widget:read");
    pub const WIDGET_UPDATE: Permission = Permission("tenant:widget:update");
    pub const WIDGET_DELETE: Permission = Permission("tenant:widget:delete");
    pub const WIDGET_EXECUTE: Permission = Permission("tenant:widget:execute");
    pub const LISTENER_LIST: Permission = Permission("tenant:listener:list");
    pub const LISTENER_CREATE: Permission = Permission("tenant:listener:create");
    pub const LISTENER_READ: Permission = Permission("tenant:listener:read");
    pub const LISTENER_UPDATE: Permission = Permission("tenant:listener:update");
    pub const LISTENER_DELETE: Permission = Permission("tenant:listener:delete");
    pub const LISTENER_EXECUTE: Permission = Permission("tenant:listener:execute");
    pub const CRONJOB_LIST: Permission = Permission("tenant:cronjob:list");
    pub const CRONJOB_CREATE: Permission = Permission("tenant:cronjob:create");
    pub const CRONJOB_READ: Permission = Permission("tenant:cronjob:read");
    pub const CRONJOB_UPDATE: Permission = Permission("tenant:cronjob:update");
    pub const CRONJOB_DELETE: Permission = Permission("tenant:cronjob:delete");
    pub const DLQ_LIST: Permission = Permission("tenant:dlq:list");
    pub const DLQ_READ: Permission = Permission("tenant:dlq:read");
    pub const DLQ_REPLAY: Permission = Permission("tenant:dlq:replay");
    pub const DLQ_DISCARD: Permission = Permission("tenant:dlq:discard");
}

/// What a principal may do in one tenant.
#[derive(Debug, Clone)]
pub struct Grants {
    /// The tenant these grants apply to.
    pub tenant_id: TenantId,
    /// `ADMIN` membership: everything is allowed.
    pub is_admin: bool,
    titles: HashSet<String>,
    /// Assets the principal created: upstream grants a creator every action on them.
    owned: HashSet<Uuid>,
}

impl Grants {
    /// Grants holding exactly `titles` (used by tests and by callers that computed them).
    pub fn new(tenant_id: TenantId, is_admin: bool, titles: HashSet<String>) -> Self {
        Self {
            tenant_id,
            is_admin,
            titles,
            owned: HashSet::new(),
        }
    }

    /// These grants plus every action on the assets in `owned` (the principal created them).
    pub fn with_owned(mut self, owned: impl IntoIterator<Item = Uuid>) -> Self {
        self.owned.extend(owned);
        self
    }

    /// Whether `permission` is held generally, or for the asset `resource_id` (by an asset
    /// permission, or because the principal created it).
    pub fn allows(&self, permission: Permission, resource_id: Option<Uuid>) -> bool {
        self.is_admin
            || self.titles.contains(permission.title())
            || resource_id.is_some_and(|id| self.owned.contains(&id))
            || resource_id
                .and_then(|id| permission.for_asset(id))
                .is_some_and(|asset| self.titles.contains(&asset))
    }

    /// `Ok` when allowed, else `Forbidden` naming the missing permission.
    pub fn require(&self, permission: Permission, resource_id: Option<Uuid>) -> Result<()> {
        if self.allows(permission, resource_id) {
            Ok(())
        } else {
            Err(Error::permission_denied(permission.title()))
        }
    }

    /// Whether the caller holds every one of `titles` itself. Granting a role or assigning
    /// one requires this, so nobody can hand out more than they have.
    pub fn covers<'a>(&self, titles: impl IntoIterator<Item = &'a str>) -> bool {
        self.is_admin || titles.into_iter().all(|t| self.holds_title(t))
    }

    fn holds_title(&self, title: &str) -> bool {
        if self.titles.contains(title) {
            return true;
        }
        // An asset permission is covered by the general permission for the same action.
        let Some(rest) = title.strip_prefix("tenant:asset:") else {
            return false;
        };
        let mut parts = rest.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(resource), Some(id), Some(action), None) => {
                self.titles.contains(&format!("tenant:{resource}:{action}"))
                    || Uuid::parse_str(id).is_ok_and(|id| self.owned.contains(&id))
            }
            _ => false,
        }
    }

    /// `Forbidden` unless the caller holds every one of `titles`.
    pub fn require_covers<'a>(&self, titles: impl IntoIterator<Item = &'a str>) -> Result<()> {
        if self.covers(titles) {
            Ok(())
        } else {
            Err(Error::Forbidden {
                code: "permission_escalation",
                message: "you cannot grant permissions you do not hold yourself".into(),
            })
        }
    }
}

/// Loads the principal's grants in `tenant_id`.
///
/// `NotFound` when the tenant does not exist or the principal has no access to it at all
/// (not a member, or an API key of another tenant); `Forbidden(tenant_disabled)` when the
/// tenant is disabled.
pub async fn load_grants(
    pool: &PgPool,
    principal: &Principal,
    tenant_id: TenantId,
) -> Result<Grants> {
    match principal {
        Principal::User { user_id } => {
            let membership: Option<(Option<bool>, String)> = sqlx::query_as(
                r#"SELECT t."isDisabled", m."role"
                   FROM "tblTenants" t
                   JOIN "tblUsersTenantsRelationship" m ON m."tenantID" = t."tenantID"
                   WHERE t."tenantID" = $1 AND m."userID" = $2"#,
            )
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
            let (disabled, role) = membership.ok_or(Error::NotFound("tenant"))?;
            ensure_enabled(disabled)?;
            if role == "ADMIN" {
                return Ok(Grants::new(tenant_id, true, HashSet::new()));
            }
            let titles: Vec<String> = sqlx::query_scalar(
                r#"SELECT DISTINCT p."permissionTitle"
                   FROM "tblUserTenantRoleMappings" m
                   JOIN "tblRoles" r ON r."roleID" = m."roleID"
                        AND (r."tenantID" = m."tenantID" OR r."tenantID" IS NULL)
                   JOIN "tblRolePermissionMappings" rp ON rp."roleID" = r."roleID"
                   JOIN "tblPermissions" p ON p."permissionID" = rp."permissionID"
                   WHERE m."userID" = $1 AND m."tenantID" = $2"#,
            )
            .bind(user_id)
            .bind(tenant_id)
            .fetch_all(pool)
            .await?;
            let owned = owned_assets(pool, tenant_id, Some(user_id.0), None).await?;
            Ok(Grants::new(tenant_id, false, titles.into_iter().collect()).with_owned(owned))
        }
        Principal::ApiKey {
            api_key_id,
            tenant_id: key_tenant,
            ..
        } => {
            if *key_tenant != tenant_id {
                return Err(Error::NotFound("tenant"));
            }
            let disabled: Option<Option<bool>> = sqlx::query_scalar(
                r#"SELECT "isDisabled" FROM "tblTenants" WHERE "tenantID" = $1"#,
            )
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?;
            ensure_enabled(disabled.ok_or(Error::NotFound("tenant"))?)?;
            let titles: Vec<String> = sqlx::query_scalar(
                r#"SELECT DISTINCT p."permissionTitle"
                   FROM "tblAPIKeyRoleMappings" m
                   JOIN "tblRoles" r ON r."roleID" = m."roleID"
                        AND (r."tenantID" = $2 OR r."tenantID" IS NULL)
                   JOIN "tblRolePermissionMappings" rp ON rp."roleID" = r."roleID"
                   JOIN "tblPermissions" p ON p."permissionID" = rp."permissionID"
                   WHERE m."apiKeyID" = $1"#,
            )
            .bind(api_key_id)
            .bind(tenant_id)
            .fetch_all(pool)
            .await?;
            let owned = owned_assets(pool, tenant_id, None, Some(api_key_id.0)).await?;
            Ok(Grants::new(tenant_id, false, titles.into_iter().collect()).with_owned(owned))
        }
    }
}

/// The tenant's assets created by this user or API key.
async fn owned_assets(
    pool: &PgPool,
    tenant_id: TenantId,
    user_id: Option<Uuid>,
    api_key_id: Option<Uuid>,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        r#"SELECT "workflowID" FROM "tblWorkflows"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)
           UNION ALL SELECT "dataQueryID" FROM "tblDataQueries"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)
           UNION ALL SELECT "datasourceID" FROM "tblDatasources"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)
           UNION ALL SELECT "appPageID" FROM "tblAppPages"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)
           UNION ALL SELECT "widgetID" FROM "tblWidgets"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)
           UNION ALL SELECT "cronJobID" FROM "tblCronJobs"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)
           UNION ALL SELECT "listenerID" FROM "tblListeners"
             WHERE "tenantID" = $1 AND ("creatorID" = $2 OR "createdByApiKeyID" = $3)"#,
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(api_key_id)
    .fetch_all(pool)
    .await?)
}

fn ensure_enabled(is_disabled: Option<bool>) -> Result<()> {
    if is_disabled == Some(true) {
        return Err(Error::Forbidden {
            code: "tenant_disabled",
            message: "this tenant is disabled".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(titles: &[&str]) -> Grants {
        Grants::new(
            TenantId(Uuid::nil()),
            false,
            titles.iter().map(|t| t.to_string()).collect(),
        )
    }

    #[test]
    fn general_permission_allows_every_asset() {
        let g = grants(&["tenant:role:update"]);
        assert!(g.allows(permissions::ROLE_UPDATE, None));
        assert!(g.allows(permissions::ROLE_UPDATE, Some(Uuid::new_v4())));
        assert!(!g.allows(permissions::ROLE_DELETE, None));
    }

    #[test]
    fn asset_permission_allows_only_that_asset() {
        let id = Uuid::new_v4();
        let g = grants(&[&format!("tenant:asset:role:{id}:update")]);
        assert!(g.allows(permissions::ROLE_UPDATE, Some(id)));
        assert!(!g.allows(permissions::ROLE_UPDATE, Some(Uuid::new_v4())));
        assert!(!g.allows(permissions::ROLE_UPDATE, None));
    }

    #[test]
    fn admin_allows_and_covers_everything() {
        let admin = Grants::new(TenantId(Uuid::nil()), true, HashSet::new());
        assert!(admin.allows(permissions::TENANT_DELETE, None));
        assert!(admin.covers(["tenant:workflow:execute"]));
    }

    #[test]
    fn covers_requires_every_title_and_accepts_asset_forms_of_held_permissions() {
        let g = grants(&["tenant:role:list", "tenant:workflow:execute"]);
        assert!(g.covers(["tenant:role:list"]));
        assert!(!g.covers(["tenant:role:list", "tenant:role:delete"]));
        assert!(g.covers(["tenant:asset:workflow:abc:execute"]));
        assert!(!g.covers(["tenant:asset:workflow:abc:delete"]));
    }

    #[test]
    fn for_asset_builds_upstream_titles() {
        let id = Uuid::nil();
        assert_eq!(
            permissions::ROLE_READ.for_asset(id).as_deref(),
            Some("tenant:asset:role:00000000-0000-0000-0000-000000000000:read")
        );
        assert_eq!(permissions::TENANT_READ.for_asset(id), None);
    }
}
