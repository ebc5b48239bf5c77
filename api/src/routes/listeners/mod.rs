//! `/api/v1/tenants/{tenantID}/listeners`: listeners and their actions (upstream's routes),
//! plus a dry run of the pipeline, a live tail, ring-buffer reads and who holds each running
//! listener. Saving needs read on the datasource and execute on every workflow and data query
//! an action names.

mod dry_run;
mod wire;

use super::enums::ListenerType;
use super::{ApiTags, Created, Deleted, Page, authorize, page_request};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::security::JetAuth;
use crate::state::AppState;
use futures::stream::BoxStream;
use jet_shared::ids::TenantId;
use jet_shared::listener::store::{self, ListFilter, ListenerSpec};
use jet_shared::listener::{Kind, Listener, cdc, inbox, model, pipeline};
use jet_shared::rbac::permissions::{
    LISTENER_CREATE, LISTENER_DELETE, LISTENER_EXECUTE, LISTENER_LIST, LISTENER_READ,
    LISTENER_UPDATE,
};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;
pub use wire::{
    ActionOut, BufferEventOut, BufferPage, ConnectionOut, ListenerOut, SaveAction, SaveListener,
    TestEvent,
};

/// `tailListener` answers.
#[derive(ApiResponse)]
pub enum TailResponse {
    /// The listener's processed events, live.
    #[oai(status = 200)]
    Stream(EventStream<BoxStream<'static, Value>>),
    /// Too many event streams are open in this process or for this tenant
    /// (`too_many_streams`); retry later.
    #[oai(status = 429)]
    TooMany(Json<ErrorBody>),
}

/// The running listeners of a tenant.
#[derive(Debug, Object)]
pub struct ConnectionsOut {
    /// Every `active` or `error` listener, oldest first.
    pub items: Vec<ConnectionOut>,
}

pub struct ListenersApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Listeners")]
impl ListenersApi {
    /// List a tenant's listeners
    #[oai(
        path = "/:tenantID/listeners",
        method = "get",
        operation_id = "listListeners"
    )]
    #[allow(clippy::too_many_arguments)] // one per query parameter of the operation
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        /// Only listeners with this status.
        status: Query<Option<wire::ListenerStatus>>,
        /// Only listeners of this type.
        #[oai(name = "listenerType")]
        listener_type: Query<Option<ListenerType>>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<ListenerOut>>> {
        authorize(&self.state, &auth, tenant_id.0, LISTENER_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let filter = ListFilter {
            status: status.0.map(|s| s.as_str().to_owned()),
            listener_type: listener_type.0.map(|t| t.as_str().to_owned()),
        };
        let page = store::list(&self.state.pool, TenantId(tenant_id.0), &filter, request).await?;
        Ok(Json(Page::try_from_domain(page, ListenerOut::try_from)?))
    }

    /// Create a listener
    ///
    /// Created `inactive`; activate it to start. Needs `tenant:datasource:read` on the
    /// datasource, which must be the tenant's (422 `invalid_datasource`) and of the listener's
    /// type. 422 codes: `invalid_config` and `invalid_endpoint_path` (the message starts with
    /// the field), `invalid_datasource`, `validation_failed`; 409 `endpoint_path_taken`.
    #[oai(
        path = "/:tenantID/listeners",
        method = "post",
        operation_id = "createListener"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<SaveListener>,
    ) -> ApiResult<Created<ListenerOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, LISTENER_CREATE, None).await?;
        let spec = body.0.into_spec();
        wire::check(&spec)?;
        let mut tx = self.state.pool.begin().await?;
        wire::check_datasource(&mut tx, &grants, &spec).await?;
        let saved = store::insert(&mut tx, TenantId(tenant_id.0), &spec, auth.0.creator())
            .await
            .map_err(wire::save_error)?;
        tx.commit().await?;
        Ok(Created::Created(Json(ListenerOut::with_actions(
            saved,
            Vec::new(),
        )?)))
    }

    /// Which worker holds each running listener, since when, its last event and error, and
    /// CDC lag
    #[oai(
        path = "/:tenantID/listeners/status/connections",
        method = "get",
        operation_id = "listListenerConnections"
    )]
    async fn connections(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
    ) -> ApiResult<Json<ConnectionsOut>> {
        authorize(&self.state, &auth, tenant_id.0, LISTENER_LIST, None).await?;
        let rows = store::connections(&self.state.pool, TenantId(tenant_id.0)).await?;
        Ok(Json(ConnectionsOut {
            items: rows
                .into_iter()
                .map(ConnectionOut::try_from)
                .collect::<Result<_, _>>()?,
        }))
    }

    /// Get a listener with its actions
    #[oai(
        path = "/:tenantID/listeners/:listenerID",
        method = "get",
        operation_id = "getListener"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
    ) -> ApiResult<Json<ListenerOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_READ,
            Some(listener_id.0),
        )
        .await?;
        let found = model::get(&self.state.pool, TenantId(tenant_id.0), listener_id.0).await?;
        let actions = model::actions(&self.state.pool, listener_id.0).await?;
        Ok(Json(ListenerOut::with_actions(found, actions)?))
    }

    /// Replace a listener
    ///
    /// Replaces every editable field, as upstream's PUT: an absent `listenerDescription`,
    /// `listenerConfig` or `endpointPath` is cleared. Status is not changed here (activate,
    /// deactivate). Checked like create. A running CDC listener cannot change its
    /// datasource, type or config (409 `listener_active`: deactivate first); an inactive CDC
    /// listener that moves to another datasource or stops being CDC has its slot and
    /// publication dropped first (409 `deprovision_failed` when the source cannot be reached).
    #[oai(
        path = "/:tenantID/listeners/:listenerID",
        method = "put",
        operation_id = "updateListener"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        body: Json<SaveListener>,
    ) -> ApiResult<Json<ListenerOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_UPDATE,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let spec = body.0.into_spec();
        let kind = wire::check(&spec)?;
        let mut tx = self.state.pool.begin().await?;
        let current = store::get_for_update(&mut tx, tenant, listener_id.0).await?;
        wire::check_datasource(&mut tx, &grants, &spec).await?;
        let before = ListenerSpec::of(&current);
        let was_cdc = matches!(
            Kind::parse(&before.listener_type, &before.config),
            Ok(Kind::Cdc(_))
        );
        let source_changes = before.datasource_id != spec.datasource_id
            || before.listener_type != spec.listener_type
            || before.config != spec.config;
        if current.is_on() && source_changes && (was_cdc || matches!(kind, Kind::Cdc(_))) {
            return Err(conflict(
                "listener_active",
                "deactivate the listener before changing the datasource, type or config of a CDC listener",
            ));
        }
        let leaves_slot =
            before.datasource_id != spec.datasource_id || !matches!(kind, Kind::Cdc(_));
        if was_cdc && leaves_slot {
            self.deprovision(&current, false).await?;
        }
        let saved = store::update(&mut tx, tenant, listener_id.0, &spec)
            .await
            .map_err(wire::save_error)?;
        tx.commit().await?;
        let actions = model::actions(&self.state.pool, listener_id.0).await?;
        Ok(Json(ListenerOut::with_actions(saved, actions)?))
    }

    /// Delete a listener with its actions, buffers and pending events
    ///
    /// A CDC listener's replication slot and publication are dropped on the source first. When
    /// that fails (the source is unreachable, the credentials changed) nothing is deleted and
    /// the answer is 409 `deprovision_failed`, because a forgotten slot keeps WAL on the
    /// source forever. `force=true` deletes anyway and leaves the slot `jet_slot_<id without
    /// dashes>` and publication `jet_pub_<…>` on the source to be dropped by hand.
    #[oai(
        path = "/:tenantID/listeners/:listenerID",
        method = "delete",
        operation_id = "deleteListener"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        /// Delete even when the source's slot cannot be dropped.
        force: Query<Option<bool>>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_DELETE,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let found = model::get(&self.state.pool, tenant, listener_id.0).await?;
        if matches!(
            Kind::parse(&found.listener_type, &found.config),
            Ok(Kind::Cdc(_))
        ) {
            self.deprovision(&found, force.0.unwrap_or(false)).await?;
        }
        let mut tx = self.state.pool.begin().await?;
        store::delete(&mut tx, tenant, listener_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone a listener: an inactive copy with its actions
    ///
    /// Titled "<title> (copy)", without `endpointPath` (set one before activating a webhook
    /// copy). Checked against the caller like a new save: read on the datasource, execute on
    /// what the actions name.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/clone",
        method = "post",
        operation_id = "cloneListener"
    )]
    async fn clone_listener(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
    ) -> ApiResult<Created<ListenerOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, LISTENER_CREATE, None).await?;
        grants.require(LISTENER_READ, Some(listener_id.0))?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        let source = model::get(&mut *tx, tenant, listener_id.0).await?;
        wire::check_datasource(&mut tx, &grants, &ListenerSpec::of(&source)).await?;
        for action in model::actions(&mut *tx, listener_id.0).await? {
            let fields = store::ActionFields {
                action_type: action.action_type,
                config: action.config,
                is_enabled: action.is_enabled,
                order_index: action.order_index,
            };
            wire::check_action(&mut tx, &grants, &fields).await?;
        }
        let copy = store::clone(&mut tx, tenant, listener_id.0, auth.0.creator()).await?;
        let actions = model::actions(&mut *tx, copy.listener_id).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(ListenerOut::with_actions(
            copy, actions,
        )?)))
    }

    /// Activate a listener
    ///
    /// Status `active`, last error cleared; a holder picks it up without a restart. A CDC
    /// listener's publication and replication slot are created on the source first: a source
    /// that cannot do CDC is a 422 saying what to change, and the listener stays as it was.
    /// A webhook listener needs an `endpointPath`.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/activate",
        method = "post",
        operation_id = "activateListener"
    )]
    async fn activate(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
    ) -> ApiResult<Json<ListenerOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_UPDATE,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let found = model::get(&self.state.pool, tenant, listener_id.0).await?;
        let kind = Kind::parse(&found.listener_type, &found.config).map_err(wire::config_error)?;
        match &kind {
            Kind::Webhook if found.endpoint_path.is_none() => {
                return Err(ApiError::unprocessable_as(
                    "invalid_endpoint_path",
                    "endpointPath: a webhook listener needs one before it is activated",
                ));
            }
            Kind::Cdc(config) => {
                let datasource = jet_shared::datasource::get(
                    &self.state.pool,
                    &self.state.data,
                    tenant,
                    found.datasource_id,
                )
                .await?;
                // Not inside a transaction: creating a logical slot waits for every running
                // transaction on the source to end, and the source may be this database.
                let mut conn = self.state.pool.acquire().await?;
                cdc::provision(
                    &mut conn,
                    &self.state.data,
                    &datasource.options,
                    found.listener_id,
                    config,
                )
                .await
                .map_err(|e| match e {
                    // The source cannot do CDC as configured; the message says what to change.
                    jet_shared::Error::Invalid(m) => {
                        ApiError::unprocessable_as("cdc_source_not_ready", m)
                    }
                    other => other.into(),
                })?;
            }
            _ => {}
        }
        let mut tx = self.state.pool.begin().await?;
        let saved = store::set_active(&mut tx, tenant, listener_id.0, true).await?;
        tx.commit().await?;
        Ok(Json(saved.try_into()?))
    }

    /// Deactivate a listener
    ///
    /// Status `inactive`; its holder lets go. A CDC listener keeps its slot, so changes made
    /// while it is off are delivered when it is activated again.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/deactivate",
        method = "post",
        operation_id = "deactivateListener"
    )]
    async fn deactivate(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
    ) -> ApiResult<Json<ListenerOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_UPDATE,
            Some(listener_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        let saved = store::set_active(&mut tx, TenantId(tenant_id.0), listener_id.0, false).await?;
        tx.commit().await?;
        Ok(Json(saved.try_into()?))
    }

    /// Add an action to a listener
    ///
    /// Needs update on the listener and execute on the workflow or data query the action
    /// names. 422 codes: `invalid_action` (the message starts with the field, e.g.
    /// `actionConfig.workflowID`), `invalid_reference` (not in this tenant).
    #[oai(
        path = "/:tenantID/listeners/:listenerID/actions",
        method = "post",
        operation_id = "createListenerAction"
    )]
    async fn create_action(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        body: Json<SaveAction>,
    ) -> ApiResult<Created<ActionOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_UPDATE,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let fields = body.0.into_fields();
        let mut tx = self.state.pool.begin().await?;
        store::get_for_update(&mut tx, tenant, listener_id.0).await?;
        wire::check_action(&mut tx, &grants, &fields).await?;
        let saved = store::insert_action(&mut tx, tenant, listener_id.0, &fields).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(saved.try_into()?)))
    }

    /// Replace an action
    ///
    /// Every field is replaced (absent `isEnabled` is true, absent `orderIndex` 0); checked
    /// like a new action.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/actions/:actionID",
        method = "put",
        operation_id = "updateListenerAction"
    )]
    async fn update_action(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        #[oai(name = "actionID")] action_id: Path<Uuid>,
        body: Json<SaveAction>,
    ) -> ApiResult<Json<ActionOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_UPDATE,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let fields = body.0.into_fields();
        let mut tx = self.state.pool.begin().await?;
        store::get_for_update(&mut tx, tenant, listener_id.0).await?;
        store::get_action(&mut *tx, tenant, listener_id.0, action_id.0).await?;
        wire::check_action(&mut tx, &grants, &fields).await?;
        let saved =
            store::update_action(&mut tx, tenant, listener_id.0, action_id.0, &fields).await?;
        tx.commit().await?;
        Ok(Json(saved.try_into()?))
    }

    /// Delete an action
    #[oai(
        path = "/:tenantID/listeners/:listenerID/actions/:actionID",
        method = "delete",
        operation_id = "deleteListenerAction"
    )]
    async fn delete_action(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        #[oai(name = "actionID")] action_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_UPDATE,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        store::get_for_update(&mut tx, tenant, listener_id.0).await?;
        store::delete_action(&mut tx, tenant, listener_id.0, action_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Dry-run the pipeline on a sample event
    ///
    /// Runs the listener's enabled actions in order on `event` without writing anything:
    /// transforms run in the sandbox (their output replaces the event; `null` filters it
    /// out, an error aborts), every other action reports what it would do with its templates
    /// resolved and the asset it names looked up. Needs `tenant:listener:execute`: it runs
    /// the listener's scripts.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/test",
        method = "post",
        operation_id = "testListener"
    )]
    async fn test(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        body: Json<TestEvent>,
    ) -> ApiResult<Json<dry_run::DryRunReport>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_EXECUTE,
            Some(listener_id.0),
        )
        .await?;
        let found = model::get(&self.state.pool, TenantId(tenant_id.0), listener_id.0).await?;
        let actions = model::actions(&self.state.pool, listener_id.0).await?;
        let event = body.0.event;
        if event.is_null() {
            return Err(ApiError::unprocessable(
                "event: is required: the sample event, as the source would deliver it",
            ));
        }
        inbox::check(&event).map_err(|e| ApiError::unprocessable(format!("event: {e}")))?;
        let report =
            pipeline::dry_run(&self.state.pool, &self.state.data, &found, &actions, event).await?;
        Ok(Json(report.try_into()?))
    }

    /// Live tail of a listener's events (Server-Sent Events)
    ///
    /// Each event the pipeline processes arrives as one `message` whose data is
    /// `{listenerID, eventID, rawEvent?, transformedEvent?, transformError?, filtered,
    /// truncated, timestamp}`; when an event is too large to publish, `truncated` is true and
    /// the events are left out (read the inbox row by `eventID`). Live only: nothing is
    /// replayed. A client that falls behind gets `{"lagged": <events missed>}`. Needs
    /// `tenant:listener:execute`, the right an app page needs to show a listener's events.
    /// Streams share the bounds of the other event streams (`JET_SSE_MAX_STREAMS`,
    /// `JET_SSE_MAX_STREAMS_PER_TENANT`): beyond either, 429 `too_many_streams`.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/tail",
        method = "get",
        operation_id = "tailListener"
    )]
    async fn tail(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
    ) -> ApiResult<TailResponse> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_EXECUTE,
            Some(listener_id.0),
        )
        .await?;
        model::get(&self.state.pool, TenantId(tenant_id.0), listener_id.0).await?;
        let permit = match self.state.streams.try_open(tenant_id.0) {
            Ok(permit) => permit,
            Err(refused) => return Ok(TailResponse::TooMany(Json(refused.body()))),
        };
        let events = self
            .state
            .tails
            .events(listener_id.0, permit)
            .await
            .map_err(|e| ApiError::internal(e.as_ref()))?;
        let events = self.state.streams.until_closed(events);
        Ok(TailResponse::Stream(
            EventStream::new(events).keep_alive(std::time::Duration::from_secs(15)),
        ))
    }

    /// Read a ring buffer
    ///
    /// Events of `(listener, bufferName)` with `seqNo > afterSeqNo` (default 0), oldest
    /// first, at most `limit` (default 100, at most 1000). Read on by passing
    /// `nextAfterSeqNo` back; `maxSeqNo` is the buffer's newest event now.
    #[oai(
        path = "/:tenantID/listeners/:listenerID/buffers/:bufferName/events",
        method = "get",
        operation_id = "readListenerBuffer"
    )]
    async fn read_buffer(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "listenerID")] listener_id: Path<Uuid>,
        #[oai(name = "bufferName", validator(max_length = 255))] buffer_name: Path<String>,
        #[oai(name = "afterSeqNo", validator(minimum(value = "0")))] after_seq_no: Query<
            Option<i64>,
        >,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] limit: Query<Option<i64>>,
    ) -> ApiResult<Json<BufferPage>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            LISTENER_READ,
            Some(listener_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        model::get(&self.state.pool, tenant, listener_id.0).await?;
        let after = after_seq_no.0.unwrap_or(0);
        let read = store::read_buffer(
            &self.state.pool,
            tenant,
            listener_id.0,
            &buffer_name.0,
            after,
            limit.0.unwrap_or(100),
        )
        .await?;
        let next_after_seq_no = read.events.last().map_or(after, |e| e.seq_no);
        Ok(Json(BufferPage {
            items: read.events.into_iter().map(BufferEventOut::from).collect(),
            max_seq_no: read.max_seq_no,
            next_after_seq_no,
        }))
    }
}

impl ListenersApi {
    /// Drops a CDC listener's slot and publication on its source. A failure is a 409
    /// `deprovision_failed` unless `force`, when it is logged and the caller goes on.
    async fn deprovision(&self, listener: &Listener, force: bool) -> ApiResult<()> {
        let result = async {
            let datasource = jet_shared::datasource::get(
                &self.state.pool,
                &self.state.data,
                listener.tenant_id,
                listener.datasource_id,
            )
            .await?;
            cdc::deprovision(&self.state.data, &datasource.options, listener.listener_id).await
        }
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(err) if force => {
                tracing::warn!(listener = %listener.listener_id, error = %err,
                    "CDC slot not dropped; deleting the listener anyway (force)");
                Ok(())
            }
            Err(err) => {
                let why = match &err {
                    jet_shared::Error::Invalid(m) => m.clone(),
                    _ => "the source could not be reached".into(),
                };
                Err(conflict(
                    "deprovision_failed",
                    &format!(
                        "the replication slot could not be dropped on the source: {why}; fix the source, or delete with force=true and drop the slot by hand"
                    ),
                ))
            }
        }
    }
}

fn conflict(code: &str, message: &str) -> ApiError {
    ApiError::Conflict(Json(ErrorBody {
        code: code.into(),
        message: message.into(),
    }))
}
