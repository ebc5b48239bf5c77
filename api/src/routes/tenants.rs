//! `/api/v1/tenants`: the caller's tenants; create, read, update, delete one.

use super::enums::{MembershipRole, UnknownStored};
use super::nullable::Nullable;
use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{TENANT_DELETE, TENANT_READ, TENANT_UPDATE};
use jet_shared::tenant::{self, TenantPatch};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

/// A tenant.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct TenantOut {
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub tenant_title: String,
    #[oai(rename = "tenantLogoURL")]
    pub tenant_logo_url: Option<String>,
    pub is_disabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disable_reason: Option<String>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The caller's membership role; absent for API keys.
    pub role: Option<MembershipRole>,
}

impl TenantOut {
    fn new(t: tenant::Tenant, role: Option<String>) -> Result<Self, UnknownStored> {
        Ok(Self {
            tenant_id: t.tenant_id.0,
            tenant_title: t.tenant_title,
            tenant_logo_url: t.tenant_logo_url,
            is_disabled: t.is_disabled.unwrap_or(false),
            disabled_at: t.disabled_at,
            disable_reason: t.disable_reason,
            creator_id: t.creator_id.map(|id| id.0),
            created_by_api_key_id: t.created_by_api_key_id.map(|id| id.0),
            created_at: t.created_at,
            updated_at: t.updated_at,
            role: role
                .as_deref()
                .map(MembershipRole::from_stored)
                .transpose()?,
        })
    }
}

/// Asset counts of a tenant.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct TenantCountsOut {
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

/// A tenant with its asset counts.
#[derive(Debug, Object)]
pub struct TenantDetail {
    #[oai(flatten)]
    pub tenant: TenantOut,
    pub counts: TenantCountsOut,
}

/// Body of `createTenant`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct CreateTenant {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub tenant_title: String,
    #[oai(rename = "tenantLogoURL", validator(max_length = 2048))]
    pub tenant_logo_url: Option<String>,
}

/// Body of `updateTenant`; absent fields stay as they are, `null` clears a nullable field.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct UpdateTenant {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub tenant_title: Option<String>,
    /// `null` removes the logo.
    #[oai(rename = "tenantLogoURL", validator(max_length = 2048))]
    pub tenant_logo_url: Nullable<String>,
    pub is_disabled: Option<bool>,
    /// `null` clears the reason.
    #[oai(validator(max_length = 2000))]
    pub disable_reason: Nullable<String>,
}

impl UpdateTenant {
    /// `{"isDisabled": false}`, with a `disableReason` at most: the one change a disabled
    /// tenant's admins may still make.
    fn only_enables(&self) -> bool {
        self.is_disabled == Some(false)
            && self.tenant_title.is_none()
            && self.tenant_logo_url.0.is_undefined()
    }
}

fn is_tenant_disabled(err: &ApiError) -> bool {
    matches!(err, ApiError::Forbidden(body) if body.code == "tenant_disabled")
}

/// Tenant routes.
pub struct TenantsApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Tenants")]
impl TenantsApi {
    /// List the caller's tenants
    ///
    /// A user sees the enabled tenants they are a member of, with their membership role; an
    /// API key sees its own tenant.
    #[oai(path = "/", method = "get", operation_id = "listTenants")]
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<TenantOut>>> {
        let request = page_request(page.0, page_size.0)?;
        let page = tenant::list_visible(&self.state.pool, &auth.0, request).await?;
        Ok(Json(Page::try_from_domain(page, |m| {
            TenantOut::new(m.tenant, m.role)
        })?))
    }

    /// Create a tenant
    ///
    /// The calling user becomes its `ADMIN`. API keys belong to one tenant and cannot create
    /// tenants (403 `user_required`).
    #[oai(path = "/", method = "post", operation_id = "createTenant")]
    async fn create(
        &self,
        auth: JetAuth,
        body: Json<CreateTenant>,
    ) -> ApiResult<Created<TenantOut>> {
        let Some(user_id) = auth.0.user_id() else {
            return Err(ApiError::forbidden(
                "user_required",
                "only users can create tenants",
            ));
        };
        let title = required_title("tenantTitle", &body.tenant_title)?;
        let mut tx = self.state.pool.begin().await?;
        let created =
            tenant::insert_with_admin(&mut tx, &title, body.tenant_logo_url.as_deref(), user_id)
                .await?;
        tx.commit().await?;
        Ok(Created::Created(Json(TenantOut::new(
            created,
            Some(MembershipRole::Admin.as_str().into()),
        )?)))
    }

    /// Get a tenant with its asset counts
    #[oai(path = "/:tenantID", method = "get", operation_id = "getTenant")]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
    ) -> ApiResult<Json<TenantDetail>> {
        authorize(&self.state, &auth, tenant_id.0, TENANT_READ, None).await?;
        let id = TenantId(tenant_id.0);
        let row = tenant::get(&self.state.pool, id).await?;
        let c = tenant::counts(&self.state.pool, id).await?;
        let role = self.membership_role(&auth, id).await?;
        Ok(Json(TenantDetail {
            tenant: TenantOut::new(row, role)?,
            counts: TenantCountsOut {
                roles: c.roles,
                members: c.members,
                api_keys: c.api_keys,
                app_pages: c.app_pages,
                widgets: c.widgets,
                datasources: c.datasources,
                data_queries: c.data_queries,
                workflows: c.workflows,
                listeners: c.listeners,
                cron_jobs: c.cron_jobs,
            },
        }))
    }

    /// Update a tenant
    ///
    /// Disabling a tenant stamps `disabledAt` and locks every caller out of it (403
    /// `tenant_disabled`), API keys included, except for one request: a user who is an
    /// `ADMIN` member may still send `{"isDisabled": false}` (with `disableReason` at most)
    /// to enable it again.
    #[oai(path = "/:tenantID", method = "patch", operation_id = "updateTenant")]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<UpdateTenant>,
    ) -> ApiResult<Json<TenantOut>> {
        let body = body.0;
        match authorize(&self.state, &auth, tenant_id.0, TENANT_UPDATE, None).await {
            Ok(_) => {}
            Err(refused) if is_tenant_disabled(&refused) && body.only_enables() => {
                // A disabled tenant is not a lock with no key: its admins can open it.
                let role = self.membership_role(&auth, TenantId(tenant_id.0)).await?;
                if role.as_deref() != Some("ADMIN") {
                    return Err(refused);
                }
            }
            Err(refused) => return Err(refused),
        }
        let patch = TenantPatch {
            tenant_title: body
                .tenant_title
                .as_deref()
                .map(|t| required_title("tenantTitle", t))
                .transpose()?,
            tenant_logo_url: body.tenant_logo_url.into_patch(),
            is_disabled: body.is_disabled,
            disable_reason: body.disable_reason.into_patch(),
        };
        let id = TenantId(tenant_id.0);
        let row = tenant::update(&self.state.pool, id, &patch).await?;
        let role = self.membership_role(&auth, id).await?;
        Ok(Json(TenantOut::new(row, role)?))
    }

    /// Delete a tenant and everything it owns
    #[oai(path = "/:tenantID", method = "delete", operation_id = "deleteTenant")]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(&self.state, &auth, tenant_id.0, TENANT_DELETE, None).await?;
        let mut tx = self.state.pool.begin().await?;
        tenant::delete(&mut tx, TenantId(tenant_id.0)).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }
}

impl TenantsApi {
    async fn membership_role(
        &self,
        auth: &JetAuth,
        tenant_id: TenantId,
    ) -> ApiResult<Option<String>> {
        match auth.0.user_id() {
            Some(user_id) => {
                Ok(jet_shared::user::membership_role(&self.state.pool, tenant_id, user_id).await?)
            }
            None => Ok(None),
        }
    }
}
