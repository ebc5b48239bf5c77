//! `/api/v1/tenants/{tenantID}/dlq`: the event DLQ of a tenant — list, read, replay, discard,
//! one row or in bulk by filter. Rows without a tenant (a command whose tenant cannot be known)
//! are not reachable here, only through SQL (`jet_ops.dlq_summary`, `tblEventDLQ`).

mod wire;

use wire::{
    BulkPreviewOut, BulkRequest, BulkRunOut, DiscardRequest, DlqOut, ReplayOut, ReplayRequest,
};

use super::enums::{DlqSource, DlqStatus, stored};
use super::{ApiTags, Page, authorize, page_request};
use crate::error::ApiResult;
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::auth::Principal;
use jet_shared::dlq::{self, BulkAction, Filter};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{DLQ_DISCARD, DLQ_LIST, DLQ_READ, DLQ_REPLAY};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

/// What a bulk request answers.
#[derive(ApiResponse)]
pub enum BulkResponse {
    /// A dry run: the count and a sample; nothing written.
    #[oai(status = 200)]
    Preview(Json<BulkPreviewOut>),
    /// The run started; read its progress at `GET …/dlq/runs/{runID}`.
    #[oai(status = 202)]
    Started(Json<BulkRunOut>),
}

fn actor(auth: &JetAuth) -> String {
    match &auth.0 {
        Principal::User { user_id } => format!("user:{}", user_id.0),
        Principal::ApiKey { api_key_id, .. } => format!("apikey:{}", api_key_id.0),
    }
}

/// The DLQ routes.
pub struct DlqApi {
    /// Pool and configuration.
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Dlq")]
impl DlqApi {
    /// List a tenant's DLQ rows
    ///
    /// Newest first. Filters: `source`, `status`, `sourceID`, `error` (case-insensitive
    /// substring), `from`/`to` (creation time). An unknown source or status is a 400
    /// `invalid_parameter`.
    #[oai(path = "/:tenantID/dlq", method = "get", operation_id = "listDlq")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        source: Query<Option<DlqSource>>,
        status: Query<Option<DlqStatus>>,
        #[oai(name = "sourceID")] source_id: Query<Option<Uuid>>,
        #[oai(validator(max_length = 500))] error: Query<Option<String>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<DlqOut>>> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let filter = Filter {
            source: source.0.map(|s| s.as_str().to_owned()),
            status: status.0.map(|s| s.as_str().to_owned()),
            source_id: source_id.0,
            error: error.0,
            from: from.0,
            to: to.0,
        };
        let page = dlq::list(&self.state.pool, TenantId(tenant_id.0), &filter, request).await?;
        Ok(Json(Page::try_from_domain(page, DlqOut::try_from)?))
    }

    /// Get one DLQ row with its attempts
    #[oai(
        path = "/:tenantID/dlq/:dlqID",
        method = "get",
        operation_id = "getDlq"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dlqID")] dlq_id: Path<Uuid>,
    ) -> ApiResult<Json<DlqOut>> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_READ, None).await?;
        let row = dlq::get(&self.state.pool, TenantId(tenant_id.0), dlq_id.0).await?;
        Ok(Json(row.try_into()?))
    }

    /// Replay one DLQ row
    ///
    /// Re-runs only what failed: a command is queued again (status RETRYING, then REPLAYED
    /// when it runs, or back to PENDING/PARKED with one more attempt), a cron fire starts its
    /// workflow (REPLAYED, or back with one more attempt). Only PENDING and PARKED rows can be
    /// replayed (409 `dlq_not_replayable`); a source this version cannot re-run is a 409
    /// `dlq_source_not_replayable`; an edited payload that cannot run is a 422.
    #[oai(
        path = "/:tenantID/dlq/:dlqID/replay",
        method = "post",
        operation_id = "replayDlq"
    )]
    async fn replay(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dlqID")] dlq_id: Path<Uuid>,
        body: Json<ReplayRequest>,
    ) -> ApiResult<Json<ReplayOut>> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_REPLAY, None).await?;
        let dry_run = body.0.dry_run.unwrap_or(false);
        let replayed = dlq::replay(
            dlq::Rerun {
                pool: &self.state.pool,
                data: &self.state.data,
            },
            TenantId(tenant_id.0),
            dlq_id.0,
            body.0.payload,
            dry_run,
            &actor(&auth),
        )
        .await?;
        Ok(Json(ReplayOut {
            dlq_id: replayed.dlq_id,
            status: DlqStatus::from_stored(&replayed.status)?,
            plan: stored("plan", replayed.plan)?,
            attempt: replayed.attempt.map(|a| stored("attempt", a)).transpose()?,
            dry_run,
        }))
    }

    /// Discard one DLQ row
    ///
    /// The row is kept as DISCARDED with who and when; `reason` joins its history. Only PENDING and PARKED rows can be
    /// discarded (409 `dlq_not_discardable`).
    #[oai(
        path = "/:tenantID/dlq/:dlqID/discard",
        method = "post",
        operation_id = "discardDlq"
    )]
    async fn discard(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dlqID")] dlq_id: Path<Uuid>,
        body: Json<DiscardRequest>,
    ) -> ApiResult<Json<DlqOut>> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_DISCARD, None).await?;
        let row = dlq::discard(
            &self.state.pool,
            TenantId(tenant_id.0),
            dlq_id.0,
            body.0.reason.as_deref(),
            &actor(&auth),
        )
        .await?;
        Ok(Json(row.try_into()?))
    }

    /// Replay DLQ rows in bulk
    ///
    /// The PENDING and PARKED rows matching `filters`, oldest first. `dryRun` answers the count
    /// and a sample (200). Otherwise the answer is at once a run (202) that the maintenance role
    /// works through in the background, at most `perSecond` rows a second; read its progress
    /// at `GET …/dlq/runs/{runID}`. A row whose replay fails again is back in the DLQ with one
    /// more attempt and is not taken again by the same run.
    #[oai(
        path = "/:tenantID/dlq/replay",
        method = "post",
        operation_id = "replayDlqBulk"
    )]
    async fn replay_bulk(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<BulkRequest>,
    ) -> ApiResult<BulkResponse> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_REPLAY, None).await?;
        self.bulk(tenant_id.0, body.0, BulkAction::Replay, &auth)
            .await
    }

    /// Discard DLQ rows in bulk
    ///
    /// As bulk replay, discarding instead: the rows are kept as DISCARDED with who and when.
    #[oai(
        path = "/:tenantID/dlq/discard",
        method = "post",
        operation_id = "discardDlqBulk"
    )]
    async fn discard_bulk(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<BulkRequest>,
    ) -> ApiResult<BulkResponse> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_DISCARD, None).await?;
        self.bulk(tenant_id.0, body.0, BulkAction::Discard, &auth)
            .await
    }
    /// Read a bulk run's progress
    #[oai(
        path = "/:tenantID/dlq/runs/:runID",
        method = "get",
        operation_id = "getDlqBulkRun"
    )]
    async fn get_run(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "runID")] run_id: Path<Uuid>,
    ) -> ApiResult<Json<BulkRunOut>> {
        authorize(&self.state, &auth, tenant_id.0, DLQ_READ, None).await?;
        let run = dlq::runs::get(&self.state.pool, TenantId(tenant_id.0), run_id.0).await?;
        Ok(Json(run.try_into()?))
    }
}

impl DlqApi {
    async fn bulk(
        &self,
        tenant_id: Uuid,
        body: BulkRequest,
        action: BulkAction,
        auth: &JetAuth,
    ) -> ApiResult<BulkResponse> {
        let filter = Filter::from(body.filters.unwrap_or_default());
        if body.dry_run.unwrap_or(false) {
            let preview = dlq::preview(&self.state.pool, TenantId(tenant_id), &filter).await?;
            return Ok(BulkResponse::Preview(Json(BulkPreviewOut {
                matched: preview.matched,
                dry_run: true,
                sample: preview
                    .sample
                    .into_iter()
                    .map(DlqOut::try_from)
                    .collect::<Result<_, _>>()?,
            })));
        }
        let run = dlq::runs::start(
            &self.state.pool,
            TenantId(tenant_id),
            &filter,
            action,
            body.per_second,
            &actor(auth),
        )
        .await?;
        Ok(BulkResponse::Started(Json(run.try_into()?)))
    }
}
