//! `/api/v1/auth`: who is calling, and the calling user's UI settings per tenant.

use super::ApiTags;
use super::enums::wire_enum;
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use jet_shared::auth::Principal;
use jet_shared::ids::TenantId;
use jet_shared::rbac::load_grants;
use jet_shared::{user, user_config};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

/// The authenticated caller.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct Me {
    pub auth_type: AuthType,
    #[oai(rename = "userID")]
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[oai(rename = "apiKeyID")]
    pub api_key_id: Option<Uuid>,
    /// For an API key: the one tenant it acts in.
    #[oai(rename = "tenantID")]
    pub tenant_id: Option<Uuid>,
}

wire_enum! {
    /// What authenticated the caller: a `USER` login or an `API_KEY` (upstream's `authType`).
    pub enum AuthType {
        User = "USER",
        ApiKey = "API_KEY",
    }
}

/// A user's UI settings in one tenant.
#[derive(Debug, Object)]
pub struct UserTenantConfig {
    /// Any JSON object; the frontend owns its shape.
    pub config: Value,
}

/// Auth routes.
pub struct AuthApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Describe the caller
    #[oai(path = "/", method = "get", operation_id = "getCurrentUser")]
    async fn me(&self, auth: JetAuth) -> ApiResult<Json<Me>> {
        Ok(Json(match auth.0 {
            Principal::User { user_id } => {
                let u = user::get(&self.state.pool, user_id).await?;
                Me {
                    auth_type: AuthType::User,
                    user_id: Some(u.user_id.0),
                    email: Some(u.email),
                    first_name: u.first_name,
                    last_name: u.last_name,
                    api_key_id: None,
                    tenant_id: None,
                }
            }
            Principal::ApiKey {
                api_key_id,
                tenant_id,
                ..
            } => Me {
                auth_type: AuthType::ApiKey,
                user_id: None,
                email: None,
                first_name: None,
                last_name: None,
                api_key_id: Some(api_key_id.0),
                tenant_id: Some(tenant_id.0),
            },
        }))
    }

    /// Get the calling user's settings in a tenant
    #[oai(
        path = "/config/:tenantID",
        method = "get",
        operation_id = "getUserTenantConfig"
    )]
    async fn get_config(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
    ) -> ApiResult<Json<UserTenantConfig>> {
        let (user_id, tenant) = self.member(&auth, tenant_id.0).await?;
        let config = user_config::get(&self.state.pool, user_id, tenant).await?;
        Ok(Json(UserTenantConfig { config }))
    }

    /// Replace the calling user's settings in a tenant
    #[oai(
        path = "/config/:tenantID",
        method = "put",
        operation_id = "putUserTenantConfig"
    )]
    async fn put_config(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<UserTenantConfig>,
    ) -> ApiResult<Json<UserTenantConfig>> {
        if !body.config.is_object() {
            return Err(ApiError::unprocessable("config must be a JSON object"));
        }
        let (user_id, tenant) = self.member(&auth, tenant_id.0).await?;
        let config = user_config::put(&self.state.pool, user_id, tenant, &body.config).await?;
        Ok(Json(UserTenantConfig { config }))
    }
}

impl AuthApi {
    /// Settings belong to users; the caller must be a member of the tenant (else 404).
    async fn member(
        &self,
        auth: &JetAuth,
        tenant_id: Uuid,
    ) -> ApiResult<(jet_shared::ids::UserId, TenantId)> {
        let user_id = auth.0.user_id().ok_or_else(|| {
            ApiError::forbidden("user_required", "settings belong to users, not API keys")
        })?;
        let tenant = TenantId(tenant_id);
        load_grants(&self.state.pool, &auth.0, tenant).await?;
        Ok((user_id, tenant))
    }
}
