//! `/api/v1/tenants/{tenantID}/workflows/data-collection`: human steps — read a request,
//! submit its data (validated against the request's JSON Schema) to resume the run.

use super::ApiTags;
use super::enums::{CollectionType, UnknownStored, wire_enum};
use crate::error::ApiResult;
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::ids::TenantId;
use jet_shared::rbac::load_grants;
use jet_shared::rbac::permissions::{WORKFLOW_EXECUTE, WORKFLOW_READ};
use jet_shared::workflow::human;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

/// A request for human input.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct RequestOut {
    #[oai(rename = "collectionRequestID")]
    pub collection_request_id: Uuid,
    #[oai(rename = "instanceID")]
    pub instance_id: Uuid,
    #[oai(rename = "nodeID")]
    pub node_id: Uuid,
    pub status: RequestStatus,
    pub collection_type: CollectionType,
    /// Title, description, `formSchema`, `formUischema`, … as the node configured them.
    pub collection_config: Value,
    pub submitted_data: Option<Value>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

wire_enum! {
    /// A human step's request: PENDING until answered (COMPLETED), past its deadline
    /// (EXPIRED), or its run was cancelled (CANCELLED).
    pub enum RequestStatus {
        Pending = "PENDING",
        Completed = "COMPLETED",
        Expired = "EXPIRED",
        Cancelled = "CANCELLED",
    }
}

impl TryFrom<human::Request> for RequestOut {
    type Error = UnknownStored;

    fn try_from(r: human::Request) -> Result<Self, UnknownStored> {
        Ok(Self {
            collection_request_id: r.collection_request_id,
            instance_id: r.instance_id,
            node_id: r.node_id,
            status: RequestStatus::from_stored(&r.status)?,
            collection_type: CollectionType::from_stored(&r.collection_type)?,
            collection_config: r.collection_config,
            submitted_data: r.submitted_data,
            expires_at: r.expires_at,
            created_at: r.created_at,
        })
    }
}

/// Body of `submitDataCollection`.
#[derive(Debug, Object)]
pub struct Submission {
    /// The form's data (checked against `formSchema`); for an approval `{approved, comment?}`.
    pub data: Value,
}

/// `submitDataCollection` answers.
#[derive(ApiResponse)]
pub enum SubmitResponse {
    /// Recorded; the run resumes shortly.
    #[oai(status = 202)]
    Accepted(Json<RequestOut>),
}

/// Human-step routes.
pub struct HumanApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Workflows")]
impl HumanApi {
    /// Get a human-step request
    #[oai(
        path = "/:tenantID/workflows/data-collection/:collectionRequestID",
        method = "get",
        operation_id = "getDataCollection"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "collectionRequestID")] request_id: Path<Uuid>,
    ) -> ApiResult<Json<RequestOut>> {
        let tenant = TenantId(tenant_id.0);
        let grants = load_grants(&self.state.pool, &auth.0, tenant).await?;
        let mut conn = self.state.pool.acquire().await?;
        let request = human::get(&mut conn, tenant, request_id.0).await?;
        grants.require(WORKFLOW_READ, request.workflow_id)?;
        Ok(Json(request.try_into()?))
    }

    /// Submit a human step's data and resume the run
    ///
    /// The data is validated against the request's JSON Schema (422 listing every problem by
    /// path). A request that is no longer pending is a 409 `request_not_pending`; an expired
    /// one a 409 `request_expired`.
    #[oai(
        path = "/:tenantID/workflows/data-collection/:collectionRequestID/submit",
        method = "post",
        operation_id = "submitDataCollection"
    )]
    async fn submit(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "collectionRequestID")] request_id: Path<Uuid>,
        body: Json<Submission>,
    ) -> ApiResult<SubmitResponse> {
        let tenant = TenantId(tenant_id.0);
        let grants = load_grants(&self.state.pool, &auth.0, tenant).await?;
        let mut tx = self.state.pool.begin().await?;
        let request = human::get(&mut tx, tenant, request_id.0).await?;
        grants.require(WORKFLOW_EXECUTE, request.workflow_id)?;
        let updated = human::submit(&mut tx, tenant, request_id.0, &body.data).await?;
        tx.commit().await?;
        Ok(SubmitResponse::Accepted(Json(updated.try_into()?)))
    }
}
