//! `/api/v1/tenants/{tenantID}/app-pages`: app pages (layout in `appPageConfig`) and their live
//! event stream. Saving a page checks the caller may execute every data query, workflow,
//! widget and listener its configuration references, as upstream does.

use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use jet_shared::app_page::{self, AppPage};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{
    APPPAGE_CREATE, APPPAGE_DELETE, APPPAGE_LIST, APPPAGE_READ, APPPAGE_UPDATE,
};
use jet_shared::references;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{Value, json};
use uuid::Uuid;

/// An app page.
/// `streamAppPage` answers.
#[derive(ApiResponse)]
pub enum PageStreamResponse {
    /// The page's live events.
    #[oai(status = 200)]
    Stream(EventStream<BoxStream<'static, Value>>),
    /// Too many event streams are open in this process or for this tenant
    /// (`too_many_streams`); retry later.
    #[oai(status = 429)]
    TooMany(Json<crate::error::ErrorBody>),
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct AppPageOut {
    #[oai(rename = "appPageID")]
    pub app_page_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub app_page_title: String,
    pub app_page_description: Option<String>,
    /// The layout and widget tree.
    pub app_page_config: Option<Value>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<AppPage> for AppPageOut {
    fn from(p: AppPage) -> Self {
        Self {
            app_page_id: p.app_page_id,
            tenant_id: p.tenant_id.0,
            app_page_title: p.title,
            app_page_description: p.description,
            app_page_config: p.config,
            creator_id: p.creator_id,
            created_by_api_key_id: p.created_by_api_key_id,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// Body of `createAppPage`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreateAppPage {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub app_page_title: String,
    pub app_page_description: Option<String>,
    /// The layout and widget tree (an object). Default `{}`.
    pub app_page_config: Option<Value>,
}

/// Body of `updateAppPage`; absent fields stay.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SaveAppPage {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub app_page_title: Option<String>,
    pub app_page_description: Option<String>,
    /// The layout and widget tree (an object).
    pub app_page_config: Option<Value>,
}

impl From<CreateAppPage> for SaveAppPage {
    fn from(c: CreateAppPage) -> Self {
        Self {
            app_page_title: Some(c.app_page_title),
            app_page_description: c.app_page_description,
            app_page_config: c.app_page_config,
        }
    }
}

fn config(value: Option<Value>) -> ApiResult<Option<Value>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(ApiError::unprocessable("appPageConfig must be an object")),
    }
}

pub struct AppPagesApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Ui")]
impl AppPagesApi {
    /// List a tenant's app pages
    #[oai(
        path = "/:tenantID/app-pages",
        method = "get",
        operation_id = "listAppPages"
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
    ) -> ApiResult<Json<Page<AppPageOut>>> {
        authorize(&self.state, &auth, tenant_id.0, APPPAGE_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = app_page::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::from_domain(page, AppPageOut::from)))
    }

    /// Create an app page
    ///
    /// Every data query, workflow, widget and listener the configuration names (keys such as
    /// `dataQueryID` or `workflowIDs`, at any depth) must be in the tenant (422) and
    /// executable by the caller (403).
    #[oai(
        path = "/:tenantID/app-pages",
        method = "post",
        operation_id = "createAppPage"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateAppPage>,
    ) -> ApiResult<Created<AppPageOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, APPPAGE_CREATE, None).await?;
        let body = SaveAppPage::from(body.0);
        let title = required_title(
            "appPageTitle",
            body.app_page_title.as_deref().unwrap_or_default(),
        )?;
        let config = config(body.app_page_config)?.unwrap_or_else(|| json!({}));
        let creator = auth.0.creator();
        let mut tx = self.state.pool.begin().await?;
        references::check(&mut tx, &grants, &config).await?;
        let page = app_page::insert(
            &mut tx,
            TenantId(tenant_id.0),
            &title,
            body.app_page_description.as_deref(),
            &config,
            creator,
        )
        .await?;
        tx.commit().await?;
        Ok(Created::Created(Json(page.into())))
    }

    /// Get an app page
    #[oai(
        path = "/:tenantID/app-pages/:appPageID",
        method = "get",
        operation_id = "getAppPage"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "appPageID")] app_page_id: Path<Uuid>,
    ) -> ApiResult<Json<AppPageOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APPPAGE_READ,
            Some(app_page_id.0),
        )
        .await?;
        let page = app_page::get(&self.state.pool, TenantId(tenant_id.0), app_page_id.0).await?;
        Ok(Json(page.into()))
    }

    /// Update an app page
    ///
    /// A new configuration is checked like on create.
    #[oai(
        path = "/:tenantID/app-pages/:appPageID",
        method = "patch",
        operation_id = "updateAppPage"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "appPageID")] app_page_id: Path<Uuid>,
        body: Json<SaveAppPage>,
    ) -> ApiResult<Json<AppPageOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APPPAGE_UPDATE,
            Some(app_page_id.0),
        )
        .await?;
        let body = body.0;
        let title = body
            .app_page_title
            .as_deref()
            .map(|t| required_title("appPageTitle", t))
            .transpose()?;
        let config = config(body.app_page_config)?;
        let mut tx = self.state.pool.begin().await?;
        if let Some(config) = &config {
            references::check(&mut tx, &grants, config).await?;
        }
        let page = app_page::update(
            &mut tx,
            TenantId(tenant_id.0),
            app_page_id.0,
            title.as_deref(),
            body.app_page_description.as_deref(),
            config.as_ref(),
        )
        .await?;
        tx.commit().await?;
        Ok(Json(page.into()))
    }

    /// Delete an app page
    #[oai(
        path = "/:tenantID/app-pages/:appPageID",
        method = "delete",
        operation_id = "deleteAppPage"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "appPageID")] app_page_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APPPAGE_DELETE,
            Some(app_page_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        app_page::delete(&mut tx, TenantId(tenant_id.0), app_page_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone an app page
    #[oai(
        path = "/:tenantID/app-pages/:appPageID/clone",
        method = "post",
        operation_id = "cloneAppPage"
    )]
    async fn clone_page(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "appPageID")] app_page_id: Path<Uuid>,
    ) -> ApiResult<Created<AppPageOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, APPPAGE_CREATE, None).await?;
        grants.require(APPPAGE_READ, Some(app_page_id.0))?;
        let creator = auth.0.creator();
        let mut tx = self.state.pool.begin().await?;
        let source = app_page::get(&mut *tx, TenantId(tenant_id.0), app_page_id.0).await?;
        // The copy is a new save by this caller: its references are checked against them.
        references::check(
            &mut tx,
            &grants,
            source.config.as_ref().unwrap_or(&Value::Null),
        )
        .await?;
        let copy = app_page::clone(&mut tx, TenantId(tenant_id.0), app_page_id.0, creator).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(copy.into())))
    }

    /// Stream an app page's live events (Server-Sent Events)
    ///
    /// Listener actions (`push_to_app_page`) push events here; each arrives as one `message`
    /// whose data is the event's JSON. Live only: events pushed while disconnected are not
    /// replayed. A client that falls too far behind gets `{"lagged": <events missed>}`.
    /// Streams share the bounds of instance event streams (`JET_SSE_MAX_STREAMS`,
    /// `JET_SSE_MAX_STREAMS_PER_TENANT`): beyond either, 429 `too_many_streams`.
    #[oai(
        path = "/:tenantID/app-pages/:appPageID/stream",
        method = "get",
        operation_id = "streamAppPage"
    )]
    async fn stream(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "appPageID")] app_page_id: Path<Uuid>,
    ) -> ApiResult<PageStreamResponse> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            APPPAGE_READ,
            Some(app_page_id.0),
        )
        .await?;
        app_page::get(&self.state.pool, TenantId(tenant_id.0), app_page_id.0).await?;
        let permit = match self.state.streams.try_open(tenant_id.0) {
            Ok(permit) => permit,
            Err(refused) => return Ok(PageStreamResponse::TooMany(Json(refused.body()))),
        };
        let events = self
            .state
            .pages
            .events(app_page_id.0, permit)
            .await
            .map_err(|e| ApiError::internal(e.as_ref()))?;
        let events = self.state.streams.until_closed(events);
        Ok(PageStreamResponse::Stream(
            EventStream::new(events).keep_alive(std::time::Duration::from_secs(15)),
        ))
    }
}
