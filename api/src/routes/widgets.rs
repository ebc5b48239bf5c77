//! `/api/v1/tenants/{tenantID}/widgets`: widgets (`widgetType`, `widgetConfig`,
//! `refreshInterval`). Saving one checks the caller may execute what its configuration
//! references.

use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{
    WIDGET_CREATE, WIDGET_DELETE, WIDGET_LIST, WIDGET_READ, WIDGET_UPDATE,
};
use jet_shared::references;
use jet_shared::widget::{self, Widget, WidgetFields};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

/// A widget.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct WidgetOut {
    #[oai(rename = "widgetID")]
    pub widget_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub widget_title: String,
    pub widget_description: Option<String>,
    /// `chart`, `table`, `text`, …
    pub widget_type: String,
    pub widget_config: Value,
    /// Seconds between refreshes; absent or 0 = no refresh.
    pub refresh_interval: Option<i32>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<Widget> for WidgetOut {
    fn from(w: Widget) -> Self {
        Self {
            widget_id: w.widget_id,
            tenant_id: w.tenant_id.0,
            widget_title: w.title,
            widget_description: w.description,
            widget_type: w.widget_type,
            widget_config: w.config,
            refresh_interval: w.refresh_interval,
            creator_id: w.creator_id,
            created_by_api_key_id: w.created_by_api_key_id,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// Body of `createWidget`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreateWidget {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub widget_title: String,
    pub widget_description: Option<String>,
    /// `chart`, `table`, `text`, …
    #[oai(validator(min_length = 1, max_length = 100))]
    pub widget_type: String,
    /// The widget's settings (an object).
    pub widget_config: Value,
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub refresh_interval: Option<i32>,
}

/// Body of `updateWidget`; absent fields stay.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SaveWidget {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub widget_title: Option<String>,
    pub widget_description: Option<String>,
    #[oai(validator(min_length = 1, max_length = 100))]
    pub widget_type: Option<String>,
    /// The widget's settings (an object).
    pub widget_config: Option<Value>,
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub refresh_interval: Option<i32>,
}

impl From<CreateWidget> for SaveWidget {
    fn from(c: CreateWidget) -> Self {
        Self {
            widget_title: Some(c.widget_title),
            widget_description: c.widget_description,
            widget_type: Some(c.widget_type),
            widget_config: Some(c.widget_config),
            refresh_interval: c.refresh_interval,
        }
    }
}

/// Checks the fields that are set; `creating` requires title, type and config.
fn fields(body: SaveWidget, creating: bool) -> ApiResult<WidgetFields> {
    let title = match body.widget_title {
        Some(t) => Some(required_title("widgetTitle", &t)?),
        None if creating => return Err(ApiError::unprocessable("widgetTitle is required")),
        None => None,
    };
    let widget_type = match body.widget_type {
        Some(t) => Some(required_title("widgetType", &t)?),
        None if creating => return Err(ApiError::unprocessable("widgetType is required")),
        None => None,
    };
    let config = match body.widget_config {
        Some(c @ Value::Object(_)) => Some(c),
        Some(_) => return Err(ApiError::unprocessable("widgetConfig must be an object")),
        None if creating => return Err(ApiError::unprocessable("widgetConfig is required")),
        None => None,
    };
    Ok(WidgetFields {
        title,
        description: body.widget_description,
        widget_type,
        config,
        refresh_interval: body.refresh_interval,
    })
}

pub struct WidgetsApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Ui")]
impl WidgetsApi {
    /// List a tenant's widgets
    #[oai(
        path = "/:tenantID/widgets",
        method = "get",
        operation_id = "listWidgets"
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
    ) -> ApiResult<Json<Page<WidgetOut>>> {
        authorize(&self.state, &auth, tenant_id.0, WIDGET_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = widget::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::from_domain(page, WidgetOut::from)))
    }

    /// Create a widget
    ///
    /// Data queries, workflows and listeners named in `widgetConfig` must be in the tenant and
    /// executable by the caller.
    #[oai(
        path = "/:tenantID/widgets",
        method = "post",
        operation_id = "createWidget"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateWidget>,
    ) -> ApiResult<Created<WidgetOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, WIDGET_CREATE, None).await?;
        let fields = fields(SaveWidget::from(body.0), true)?;
        let mut tx = self.state.pool.begin().await?;
        if let Some(config) = &fields.config {
            references::check(&mut tx, &grants, config).await?;
        }
        let saved =
            widget::insert(&mut tx, TenantId(tenant_id.0), fields, auth.0.creator()).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(saved.into())))
    }

    /// Get a widget
    #[oai(
        path = "/:tenantID/widgets/:widgetID",
        method = "get",
        operation_id = "getWidget"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "widgetID")] widget_id: Path<Uuid>,
    ) -> ApiResult<Json<WidgetOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            WIDGET_READ,
            Some(widget_id.0),
        )
        .await?;
        let w = widget::get(&self.state.pool, TenantId(tenant_id.0), widget_id.0).await?;
        Ok(Json(w.into()))
    }

    /// Update a widget
    #[oai(
        path = "/:tenantID/widgets/:widgetID",
        method = "patch",
        operation_id = "updateWidget"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "widgetID")] widget_id: Path<Uuid>,
        body: Json<SaveWidget>,
    ) -> ApiResult<Json<WidgetOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            WIDGET_UPDATE,
            Some(widget_id.0),
        )
        .await?;
        let fields = fields(body.0, false)?;
        let mut tx = self.state.pool.begin().await?;
        if let Some(config) = &fields.config {
            references::check(&mut tx, &grants, config).await?;
        }
        let saved = widget::update(&mut tx, TenantId(tenant_id.0), widget_id.0, fields).await?;
        tx.commit().await?;
        Ok(Json(saved.into()))
    }

    /// Delete a widget
    #[oai(
        path = "/:tenantID/widgets/:widgetID",
        method = "delete",
        operation_id = "deleteWidget"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "widgetID")] widget_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            WIDGET_DELETE,
            Some(widget_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        widget::delete(&mut tx, TenantId(tenant_id.0), widget_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone a widget
    #[oai(
        path = "/:tenantID/widgets/:widgetID/clone",
        method = "post",
        operation_id = "cloneWidget"
    )]
    async fn clone_widget(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "widgetID")] widget_id: Path<Uuid>,
    ) -> ApiResult<Created<WidgetOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, WIDGET_CREATE, None).await?;
        grants.require(WIDGET_READ, Some(widget_id.0))?;
        let mut tx = self.state.pool.begin().await?;
        let source = widget::get(&mut *tx, TenantId(tenant_id.0), widget_id.0).await?;
        references::check(&mut tx, &grants, &source.config).await?;
        let copy = widget::clone(
            &mut tx,
            TenantId(tenant_id.0),
            widget_id.0,
            auth.0.creator(),
        )
        .await?;
        tx.commit().await?;
        Ok(Created::Created(Json(copy.into())))
    }
}
