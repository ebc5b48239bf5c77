//! `/api/v1/tenants/{tenantID}/workflows/instances`: runs of workflows — list, progress
//! (folded context and log), why it is not running (explain), cancel.

use super::enums::{InstanceStatus, UnknownStored};
use super::{ApiTags, Page, authorize, page_request};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use jet_shared::commands::{self, Command};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{
    WORKFLOW_EXECUTE, WORKFLOW_LIST, WORKFLOW_READ, WORKFLOW_TEST,
};
use jet_shared::workflow::{context, instance};
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

/// A workflow run.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct InstanceOut {
    #[oai(rename = "instanceID")]
    pub instance_id: Uuid,
    #[oai(rename = "workflowID")]
    pub workflow_id: Option<Uuid>,
    pub status: InstanceStatus,
    pub is_test: bool,
    #[oai(rename = "parentInstanceID")]
    pub parent_instance_id: Option<Uuid>,
    /// The parent's `subWorkflow` node that started this run.
    #[oai(rename = "parentNodeID")]
    pub parent_node_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<instance::Instance> for InstanceOut {
    type Error = UnknownStored;

    fn try_from(i: instance::Instance) -> Result<Self, UnknownStored> {
        Ok(Self {
            instance_id: i.instance_id,
            workflow_id: i.workflow_id,
            status: InstanceStatus::from_stored(&i.status)?,
            is_test: i.is_test,
            parent_instance_id: i.parent_instance_id,
            parent_node_id: i.parent_node_id,
            started_at: i.started_at,
            completed_at: i.completed_at,
            created_at: i.created_at,
            updated_at: i.updated_at,
        })
    }
}

/// One row of an instance's log.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct LogOut {
    #[oai(rename = "logID")]
    pub log_id: i64,
    #[oai(rename = "nodeID")]
    pub node_id: Option<String>,
    /// `INPUT_SET`, `NODE_DISPATCHED`, `NODE_COMPLETED`, `NODE_FAILED`, `NODE_SUSPENDED`, `SYSTEM_SET`.
    pub event_type: String,
    pub node_status: Option<String>,
    pub node_attempt: Option<i32>,
    pub error_message: Option<String>,
    /// The row's context contribution, without internal (`__`) keys.
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

impl From<instance::LogRow> for LogOut {
    fn from(l: instance::LogRow) -> Self {
        Self {
            log_id: l.log_id,
            node_id: l.node_id,
            event_type: l.event_type,
            node_status: l.node_status,
            node_attempt: l.node_attempt,
            error_message: l.error_message,
            payload: context::public(&l.payload),
            created_at: l.created_at,
        }
    }
}

/// One Server-Sent Event of an instance: a log row (`event` = its eventType, `id` = its
/// logID), or, last, the final status (`event: status`).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct InstanceEvent {
    pub log: Option<LogOut>,
    /// The instance's final status, in the last event.
    pub status: Option<InstanceStatus>,
}

/// How soon the stream looks for new log rows after it found some.
const STREAM_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest pause between looks while nothing happens (the pause doubles up to this).
const STREAM_POLL_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

struct Cursor {
    /// This stream's place under the SSE bounds, freed when the stream ends or is dropped.
    _permit: crate::stream_limits::StreamPermit,
    pause: std::time::Duration,
    pool: sqlx::PgPool,
    tenant: TenantId,
    instance_id: Uuid,
    after: i64,
    buffered: std::collections::VecDeque<InstanceEvent>,
    finished: bool,
}

/// Polls the log after the cursor; once the instance has ended and its log is drained, emits
/// the status and ends.
async fn next_event(mut c: Cursor) -> Option<(InstanceEvent, Cursor)> {
    loop {
        if let Some(event) = c.buffered.pop_front() {
            return Some((event, c));
        }
        if c.finished {
            return None;
        }
        let status = instance::get(&c.pool, c.tenant, c.instance_id)
            .await
            .ok()?
            .status;
        // Read the log after the status: an ended instance wrote its last row before ending.
        let rows = instance::logs(&c.pool, c.instance_id, c.after).await.ok()?;
        if let Some(last) = rows.last() {
            c.after = last.log_id;
        }
        c.buffered.extend(rows.into_iter().map(|l| InstanceEvent {
            log: Some(l.into()),
            status: None,
        }));
        if instance::has_ended(&status) {
            // An unknown stored status is logged (as a 500 would be) and ends the stream.
            let status = InstanceStatus::from_stored(&status)
                .map_err(ApiError::from)
                .ok()?;
            c.buffered.push_back(InstanceEvent {
                log: None,
                status: Some(status),
            });
            c.finished = true;
        } else if c.buffered.is_empty() {
            tokio::time::sleep(c.pause).await;
            c.pause = (c.pause * 2).min(STREAM_POLL_IDLE);
        } else {
            c.pause = STREAM_POLL;
        }
    }
}

/// `streamInstanceEvents` answers.
#[derive(ApiResponse)]
pub enum EventsResponse {
    /// The run's events; the stream closes after the final `status` event.
    #[oai(status = 200)]
    Stream(EventStream<BoxStream<'static, InstanceEvent>>),
    /// Too many event streams are open in this process or for this tenant
    /// (`too_many_streams`); retry later.
    #[oai(status = 429)]
    TooMany(Json<crate::error::ErrorBody>),
}

/// An instance with its progress.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct InstanceDetail {
    #[oai(flatten)]
    pub instance: InstanceOut,
    /// The folded context without internal keys (`input`, node outputs, `output` of the end node).
    pub context: Value,
    pub logs: Vec<LogOut>,
    /// Human steps waiting for input.
    pub pending_requests: Vec<super::human::RequestOut>,
}

/// An instance's detail: its row with the folded context, the log and the pending requests.
pub async fn detail(pool: &sqlx::PgPool, row: instance::Instance) -> ApiResult<InstanceDetail> {
    let ctx = instance::load_context(pool, row.instance_id).await?;
    let logs = instance::logs(pool, row.instance_id, 0).await?;
    let pending = jet_shared::workflow::human::pending_of(pool, row.instance_id).await?;
    Ok(InstanceDetail {
        instance: row.try_into()?,
        context: context::public(&ctx),
        logs: logs.into_iter().map(LogOut::from).collect(),
        pending_requests: pending
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?,
    })
}

/// `cancelInstance` answers.
#[derive(ApiResponse)]
pub enum CancelResponse {
    /// The cancel command is queued; the instance ends as CANCELLED if it was still running.
    #[oai(status = 202)]
    Accepted(Json<InstanceOut>),
}

/// Instance routes.
pub struct InstancesApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Workflows")]
impl InstancesApi {
    /// List workflow runs
    #[oai(
        path = "/:tenantID/workflows/instances",
        method = "get",
        operation_id = "listInstances"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Query<Option<Uuid>>,
        status: Query<Option<InstanceStatus>>,
        #[oai(name = "isTest")] is_test: Query<Option<bool>>,
        #[oai(name = "parentInstanceID")] parent_instance_id: Query<Option<Uuid>>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<InstanceOut>>> {
        authorize(&self.state, &auth, tenant_id.0, WORKFLOW_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let filter = instance::InstanceFilter {
            workflow_id: workflow_id.0,
            status: status.0.map(|s| s.as_str().to_owned()),
            is_test: is_test.0,
            parent_instance_id: parent_instance_id.0,
        };
        let page =
            instance::list(&self.state.pool, TenantId(tenant_id.0), &filter, request).await?;
        Ok(Json(Page::try_from_domain(page, InstanceOut::try_from)?))
    }

    /// Get a run: status, folded context and log
    #[oai(
        path = "/:tenantID/workflows/instances/:instanceID",
        method = "get",
        operation_id = "getInstance"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "instanceID")] instance_id: Path<Uuid>,
    ) -> ApiResult<Json<InstanceDetail>> {
        let tenant = TenantId(tenant_id.0);
        let grants = jet_shared::rbac::load_grants(&self.state.pool, &auth.0, tenant).await?;
        let row = instance::get(&self.state.pool, tenant, instance_id.0).await?;
        grants.require(WORKFLOW_READ, row.workflow_id)?;
        Ok(Json(detail(&self.state.pool, row).await?))
    }

    /// Why isn't it running?
    ///
    /// For each node of a RUNNING run that has not finished, the one reason it is not running
    /// now (queued behind other ready work, no `nodes` worker alive, delayed, leased, retry
    /// backoff, waiting for a human, a child instance or join inputs), read from the queue,
    /// the worker registry and the log in one snapshot. An ended run has no entries.
    #[oai(
        path = "/:tenantID/workflows/instances/:instanceID/explain",
        method = "get",
        operation_id = "explainInstance"
    )]
    async fn explain(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "instanceID")] instance_id: Path<Uuid>,
    ) -> ApiResult<Json<super::instance_explain::ExplainOut>> {
        let tenant = TenantId(tenant_id.0);
        let grants = jet_shared::rbac::load_grants(&self.state.pool, &auth.0, tenant).await?;
        let row = instance::get(&self.state.pool, tenant, instance_id.0).await?;
        grants.require(WORKFLOW_READ, row.workflow_id)?;
        let explained =
            jet_shared::workflow::explain::explain(&self.state.pool, Some(tenant), instance_id.0)
                .await?;
        Ok(Json(explained.try_into()?))
    }

    /// Stream a run's log as Server-Sent Events
    ///
    /// One event per log row (`id` = logID, `event` = its eventType), then a final `status`
    /// event when the run has ended, after which the stream closes. Reconnect with
    /// `Last-Event-ID` to resume after that row. Open streams are bounded per API process
    /// (`JET_SSE_MAX_STREAMS`) and per tenant (`JET_SSE_MAX_STREAMS_PER_TENANT`): beyond
    /// either, 429 `too_many_streams`.
    #[oai(
        path = "/:tenantID/workflows/instances/:instanceID/events",
        method = "get",
        operation_id = "streamInstanceEvents"
    )]
    async fn events(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "instanceID")] instance_id: Path<Uuid>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<i64>>,
    ) -> ApiResult<EventsResponse> {
        let tenant = TenantId(tenant_id.0);
        let grants = jet_shared::rbac::load_grants(&self.state.pool, &auth.0, tenant).await?;
        let row = instance::get(&self.state.pool, tenant, instance_id.0).await?;
        grants.require(WORKFLOW_READ, row.workflow_id)?;
        let permit = match self.state.streams.try_open(tenant.0) {
            Ok(permit) => permit,
            Err(refused) => return Ok(EventsResponse::TooMany(Json(refused.body()))),
        };
        let cursor = Cursor {
            _permit: permit,
            pause: STREAM_POLL,
            pool: self.state.pool.clone(),
            tenant,
            instance_id: instance_id.0,
            after: last_event_id.0.unwrap_or(0).max(0),
            buffered: Default::default(),
            finished: false,
        };
        let stream = futures::stream::unfold(cursor, next_event).boxed();
        let stream = self.state.streams.until_closed(stream);
        Ok(EventsResponse::Stream(
            EventStream::new(stream)
                .keep_alive(std::time::Duration::from_secs(15))
                .to_event(|e| {
                    use poem_openapi::types::ToJSON;
                    let data = e.to_json_string();
                    match (&e.log, &e.status) {
                        (Some(log), _) => Event::message(data)
                            .id(log.log_id.to_string())
                            .event_type(log.event_type.clone()),
                        _ => Event::message(data).event_type("status"),
                    }
                }),
        ))
    }

    /// Delete a test instance and its log
    #[oai(
        path = "/:tenantID/workflows/instances/:instanceID/stop",
        method = "delete",
        operation_id = "deleteTestInstance"
    )]
    async fn delete_test(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "instanceID")] instance_id: Path<Uuid>,
    ) -> ApiResult<super::Deleted> {
        authorize(&self.state, &auth, tenant_id.0, WORKFLOW_TEST, None).await?;
        let mut tx = self.state.pool.begin().await?;
        instance::delete_test(&mut tx, TenantId(tenant_id.0), instance_id.0).await?;
        tx.commit().await?;
        Ok(super::Deleted::Deleted)
    }

    /// Cancel a run
    #[oai(
        path = "/:tenantID/workflows/instances/:instanceID/cancel",
        method = "post",
        operation_id = "cancelInstance"
    )]
    async fn cancel(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "instanceID")] instance_id: Path<Uuid>,
    ) -> ApiResult<CancelResponse> {
        let tenant = TenantId(tenant_id.0);
        let grants = jet_shared::rbac::load_grants(&self.state.pool, &auth.0, tenant).await?;
        let row = instance::get(&self.state.pool, tenant, instance_id.0).await?;
        grants.require(WORKFLOW_EXECUTE, row.workflow_id)?;
        let mut tx = self.state.pool.begin().await?;
        commands::push(
            &mut tx,
            &Command::CancelInstance {
                instance_id: instance_id.0,
            },
        )
        .await
        .map_err(|e| crate::error::ApiError::internal(e.as_ref()))?;
        tx.commit().await?;
        Ok(CancelResponse::Accepted(Json(row.try_into()?)))
    }
}
