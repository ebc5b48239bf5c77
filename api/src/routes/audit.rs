//! `/api/v1/tenants/{tenantID}/audit`: the tenant's audit trail.

use super::{ApiTags, Page, authorize, page_request};
use crate::error::ApiResult;
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::audit;
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::AUDIT_LIST;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

/// One audited request.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct AuditLogOut {
    #[oai(rename = "auditLogID")]
    pub audit_log_id: Uuid,
    #[oai(rename = "userID")]
    pub user_id: Option<Uuid>,
    #[oai(rename = "apiKeyID")]
    pub api_key_id: Option<Uuid>,
    #[oai(rename = "tenantID")]
    pub tenant_id: Option<Uuid>,
    /// The operation id, e.g. `createRole`.
    #[oai(rename = "type")]
    pub kind: String,
    /// `METHOD /path`.
    pub sub_type: Option<String>,
    pub success: bool,
    pub created_at: DateTime<Utc>,
    /// The status and the request body with secrets replaced by `[FILTERED]`.
    pub metadata: Option<Value>,
    /// The error body of a failed request.
    pub error: Option<Value>,
}

impl From<audit::AuditLog> for AuditLogOut {
    fn from(a: audit::AuditLog) -> Self {
        Self {
            audit_log_id: a.audit_log_id,
            user_id: a.user_id.map(|u| u.0),
            api_key_id: a.api_key_id.map(|k| k.0),
            tenant_id: a.tenant_id.map(|t| t.0),
            kind: a.kind,
            sub_type: a.sub_type,
            success: a.success,
            created_at: a.created_at,
            metadata: a.metadata,
            error: a.error,
        }
    }
}

/// Audit routes.
pub struct AuditApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Audit")]
impl AuditApi {
    /// List a tenant's audit trail, newest first
    #[oai(
        path = "/:tenantID/audit",
        method = "get",
        operation_id = "listAuditLogs"
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
    ) -> ApiResult<Json<Page<AuditLogOut>>> {
        authorize(&self.state, &auth, tenant_id.0, AUDIT_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = audit::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::from_domain(page, AuditLogOut::from)))
    }
}
