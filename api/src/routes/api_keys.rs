//! `/api/v1/tenants/{tenantID}/apikeys`: API keys of a tenant. The raw key is returned once,
//! by create and clone; afterwards only its 8-char prefix is shown.

use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::ApiResult;
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::api_key;
use jet_shared::ids::{ApiKeyId, RoleId, TenantId};
use jet_shared::rbac::Grants;
use jet_shared::rbac::permissions::{
    APIKEY_CREATE, APIKEY_DELETE, APIKEY_LIST, APIKEY_READ, APIKEY_UPDATE,
};
use jet_shared::role;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use sqlx::PgConnection;
use uuid::Uuid;

/// An API key (never its secret value).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ApiKeyOut {
    #[oai(rename = "apiKeyID")]
    pub api_key_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub api_key_title: String,
    /// The first 8 characters of the key, to recognise it.
    pub api_key_prefix: Option<String>,
    pub is_disabled: bool,
    pub created_at: DateTime<Utc>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[oai(rename = "roleIDs")]
    pub role_ids: Vec<Uuid>,
}

impl From<api_key::ApiKey> for ApiKeyOut {
    fn from(k: api_key::ApiKey) -> Self {
        Self {
            api_key_id: k.api_key_id.0,
            tenant_id: k.tenant_id.0,
            api_key_title: k.api_key_title,
            api_key_prefix: k.api_key_prefix,
            is_disabled: k.is_disabled,
            created_at: k.created_at,
            creator_id: k.creator_id.map(|u| u.0),
            created_by_api_key_id: k.created_by_api_key_id.map(|k| k.0),
            role_ids: k.role_ids.into_iter().map(|r| r.0).collect(),
        }
    }
}

/// A newly created key with its secret value, shown this once.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct CreatedApiKey {
    /// The raw key (64 hex chars). Send it as `Authorization: api_key <key>`. It is not stored
    /// and cannot be shown again.
    pub api_key: String,
    #[oai(flatten)]
    pub details: ApiKeyOut,
}

/// Body of `createApiKey`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct CreateApiKey {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub api_key_title: String,
    /// The roles the key acts through (tenant or global roles).
    #[oai(rename = "roleIDs", default)]
    pub role_ids: Vec<Uuid>,
}

/// Body of `updateApiKey`; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct UpdateApiKey {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub api_key_title: Option<String>,
    /// Replaces the key's roles when given.
    #[oai(rename = "roleIDs")]
    pub role_ids: Option<Vec<Uuid>>,
    pub is_disabled: Option<bool>,
}

/// A key may only act through roles whose permissions the caller holds itself.
async fn check_assignable(
    conn: &mut PgConnection,
    grants: &Grants,
    tenant: TenantId,
    role_ids: &[RoleId],
) -> ApiResult<()> {
    let titles = role::titles_of_assignable(conn, tenant, role_ids).await?;
    grants.require_covers(titles.iter().map(String::as_str))?;
    Ok(())
}

/// API key routes.
pub struct ApiKeysApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// List a tenant's API keys
    #[oai(
        path = "/:tenantID/apikeys",
        method = "get",
        operation_id = "listApiKeys"
    )]
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
    ) -> ApiResult<Json<Page<ApiKeyOut>>> {
        authorize(&self.state, &auth, tenant_id.0, APIKEY_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = api_key::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::from_domain(page, ApiKeyOut::from)))
    }

    /// Create an API key
    ///
    /// Returns the raw key once. Its roles must be usable in the tenant (else 422) and the
    /// caller must hold their permissions (else 403 `permission_escalation`).
    #[oai(
        path = "/:tenantID/apikeys",
        method = "post",
        operation_id = "createApiKey"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateApiKey>,
    ) -> ApiResult<Created<CreatedApiKey>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, APIKEY_CREATE, None).await?;
        let title = required_title("apiKeyTitle", &body.api_key_title)?;
        let tenant = TenantId(tenant_id.0);
        let role_ids: Vec<RoleId> = body.role_ids.iter().copied().map(RoleId).collect();
        let mut tx = self.state.pool.begin().await?;
        check_assignable(&mut tx, &grants, tenant, &role_ids).await?;
        let (key, raw) =
            api_key::insert(&mut tx, tenant, &title, &role_ids, false, auth.0.creator()).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(CreatedApiKey {
            api_key: raw.expose().to_owned(),
            details: key.into(),
        })))
    }

    /// Get an API key
    #[oai(
        path = "/:tenantID/apikeys/:apiKeyID",
        method = "get",
        operation_id = "getApiKey"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "apiKeyID")] api_key_id: Path<Uuid>,
    ) -> ApiResult<Json<ApiKeyOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APIKEY_READ,
            Some(api_key_id.0),
        )
        .await?;
        let key = api_key::get(
            &self.state.pool,
            TenantId(tenant_id.0),
            ApiKeyId(api_key_id.0),
        )
        .await?;
        Ok(Json(key.into()))
    }

    /// Update an API key's title, roles or disabled flag
    #[oai(
        path = "/:tenantID/apikeys/:apiKeyID",
        method = "patch",
        operation_id = "updateApiKey"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "apiKeyID")] api_key_id: Path<Uuid>,
        body: Json<UpdateApiKey>,
    ) -> ApiResult<Json<ApiKeyOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APIKEY_UPDATE,
            Some(api_key_id.0),
        )
        .await?;
        let body = body.0;
        let tenant = TenantId(tenant_id.0);
        let title = body
            .api_key_title
            .as_deref()
            .map(|t| required_title("apiKeyTitle", t))
            .transpose()?;
        let role_ids: Option<Vec<RoleId>> = body
            .role_ids
            .map(|ids| ids.into_iter().map(RoleId).collect());
        let mut tx = self.state.pool.begin().await?;
        if let Some(role_ids) = &role_ids {
            check_assignable(&mut tx, &grants, tenant, role_ids).await?;
        }
        let key = api_key::update(
            &mut tx,
            tenant,
            ApiKeyId(api_key_id.0),
            title.as_deref(),
            body.is_disabled,
            role_ids.as_deref(),
        )
        .await?;
        tx.commit().await?;
        Ok(Json(key.into()))
    }

    /// Delete an API key
    #[oai(
        path = "/:tenantID/apikeys/:apiKeyID",
        method = "delete",
        operation_id = "deleteApiKey"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "apiKeyID")] api_key_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APIKEY_DELETE,
            Some(api_key_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        api_key::delete(&mut tx, TenantId(tenant_id.0), ApiKeyId(api_key_id.0)).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone an API key
    ///
    /// Creates a disabled copy with the same roles and a new raw key, returned once.
    #[oai(
        path = "/:tenantID/apikeys/:apiKeyID/clone",
        method = "post",
        operation_id = "cloneApiKey"
    )]
    async fn clone_key(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "apiKeyID")] api_key_id: Path<Uuid>,
    ) -> ApiResult<Created<CreatedApiKey>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, APIKEY_CREATE, None).await?;
        grants.require(APIKEY_READ, Some(api_key_id.0))?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        let source = api_key::get(&mut *tx, tenant, ApiKeyId(api_key_id.0)).await?;
        check_assignable(&mut tx, &grants, tenant, &source.role_ids).await?;
        let (key, raw) =
            api_key::clone_disabled(&mut tx, tenant, source.api_key_id, auth.0.creator()).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(CreatedApiKey {
            api_key: raw.expose().to_owned(),
            details: key.into(),
        })))
    }
}
