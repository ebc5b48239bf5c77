//! `/api/v1/tenants/{tenantID}/datasources`: connection settings, stored encrypted and shown
//! with their secrets masked; a connection test for saved or unsaved settings.

use super::enums::{DatasourceType, UnknownStored};
use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::datasource::{self, Datasource, DatasourcePatch, NewDatasource, secrets, webhook};
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{
    DATASOURCE_CREATE, DATASOURCE_DELETE, DATASOURCE_LIST, DATASOURCE_READ, DATASOURCE_TEST,
    DATASOURCE_UPDATE,
};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a connection test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A datasource; secret option values read `********`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DatasourceOut {
    #[oai(rename = "datasourceID")]
    pub datasource_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub datasource_title: String,
    pub datasource_type: DatasourceType,
    pub datasource_description: Option<String>,
    pub datasource_tags: Vec<String>,
    /// The connection settings, secrets masked. Send a mask back unchanged to keep a secret.
    pub datasource_options: Value,
    /// `webhook` datasources: the token and secret senders prove themselves with, in full
    /// only in the response that issued them (create, clone), masked afterwards.
    pub webhook_credentials: Option<WebhookCredentialsOut>,
    pub connection_status: Option<String>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<Datasource> for DatasourceOut {
    type Error = UnknownStored;

    fn try_from(d: Datasource) -> Result<Self, UnknownStored> {
        let datasource_options = secrets::mask(&d.options, &d.datasource_type);
        let webhook_credentials =
            (d.datasource_type == webhook::TYPE).then(WebhookCredentialsOut::masked);
        Ok(Self {
            datasource_id: d.datasource_id,
            tenant_id: d.tenant_id.0,
            datasource_title: d.title,
            datasource_type: DatasourceType::from_stored(&d.datasource_type)?,
            datasource_description: d.description,
            datasource_tags: d.tags,
            datasource_options,
            webhook_credentials,
            connection_status: d.connection_status,
            creator_id: d.creator_id,
            created_by_api_key_id: d.created_by_api_key_id,
            created_at: d.created_at,
            updated_at: d.updated_at,
        })
    }
}

/// A webhook datasource's credentials (see `receiveWebhook` for how senders use them).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct WebhookCredentialsOut {
    /// For `X-Webhook-Token` (or `Authorization: Bearer`).
    pub webhook_token: String,
    /// The HMAC-SHA256 key of `X-Webhook-Signature`.
    pub webhook_secret: String,
}

impl WebhookCredentialsOut {
    fn masked() -> Self {
        Self {
            webhook_token: secrets::MASK.to_owned(),
            webhook_secret: secrets::MASK.to_owned(),
        }
    }

    fn issued(issued: webhook::Credentials) -> Self {
        Self {
            webhook_token: issued.token,
            webhook_secret: issued.secret,
        }
    }
}

/// Credentials just issued by `rotateWebhookCredentials`, shown this once.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct RotatedWebhookCredentials {
    #[oai(rename = "datasourceID")]
    pub datasource_id: Uuid,
    #[oai(flatten)]
    pub credentials: WebhookCredentialsOut,
}

/// The response for a datasource that may carry freshly issued webhook credentials.
fn with_issued(
    saved: Datasource,
    issued: Option<webhook::Credentials>,
) -> Result<DatasourceOut, UnknownStored> {
    let mut out = DatasourceOut::try_from(saved)?;
    if let Some(issued) = issued {
        out.webhook_credentials = Some(WebhookCredentialsOut::issued(issued));
    }
    Ok(out)
}

/// Fresh credentials when `saved` is a webhook datasource, in the caller's transaction.
async fn issue_if_webhook(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    saved: &Datasource,
) -> ApiResult<Option<webhook::Credentials>> {
    if saved.datasource_type != webhook::TYPE {
        return Ok(None);
    }
    let vault = state.data.vault()?;
    Ok(Some(
        webhook::issue(conn, vault, saved.tenant_id, saved.datasource_id).await?,
    ))
}

/// Body of `createDatasource`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreateDatasource {
    #[oai(validator(min_length = 1))]
    pub datasource_title: String,
    /// `webhook` (options `{}`) is a datasource that only receives webhook deliveries; its
    /// token and secret are in the response, this once.
    pub datasource_type: DatasourceType,
    pub datasource_description: Option<String>,
    #[oai(default)]
    pub datasource_tags: Vec<String>,
    /// Upstream's option shape for the type (connection details or string; base URL, headers
    /// and auth).
    pub datasource_options: Value,
}

/// Body of `updateDatasource`; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct UpdateDatasource {
    #[oai(validator(min_length = 1))]
    pub datasource_title: Option<String>,
    pub datasource_description: Option<String>,
    pub datasource_tags: Option<Vec<String>>,
    /// Replaces the options; masked values keep their stored secrets.
    pub datasource_options: Option<Value>,
}

/// Body of `testDatasource`: unsaved settings, or a saved datasource's (with edits).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct TestDatasource {
    pub datasource_type: Option<DatasourceType>,
    pub datasource_options: Option<Value>,
    /// A saved datasource: its stored secrets fill in masked values (when the edited options
    /// point somewhere else, only for a caller holding `update` on it), and its
    /// `connectionStatus` records the outcome.
    #[oai(rename = "datasourceID")]
    pub datasource_id: Option<Uuid>,
}

/// The outcome of a connection test.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct TestResult {
    pub ok: bool,
    /// `invalid_query_options`, `datasource_unreachable`, `datasource_denied`, `query_failed`
    /// or `query_timeout`.
    pub code: Option<String>,
    /// Why the test failed, in the datasource's own words where it said something.
    pub error: Option<String>,
    pub duration_ms: u64,
}

pub struct DatasourcesApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Data")]
impl DatasourcesApi {
    /// List a tenant's datasources
    #[oai(
        path = "/:tenantID/datasources",
        method = "get",
        operation_id = "listDatasources"
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
    ) -> ApiResult<Json<Page<DatasourceOut>>> {
        authorize(&self.state, &auth, tenant_id.0, DATASOURCE_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = datasource::list(
            &self.state.pool,
            &self.state.data,
            TenantId(tenant_id.0),
            request,
        )
        .await?;
        Ok(Json(Page::try_from_domain(page, DatasourceOut::try_from)?))
    }

    /// Create a datasource
    ///
    /// The options are checked against the type and stored encrypted (AES-256-GCM, upstream's
    /// envelope).
    #[oai(
        path = "/:tenantID/datasources",
        method = "post",
        operation_id = "createDatasource"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateDatasource>,
    ) -> ApiResult<Created<DatasourceOut>> {
        authorize(&self.state, &auth, tenant_id.0, DATASOURCE_CREATE, None).await?;
        let body = body.0;
        let new = NewDatasource {
            title: required_title("datasourceTitle", &body.datasource_title)?,
            datasource_type: body.datasource_type.as_str().to_owned(),
            description: body.datasource_description,
            tags: body.datasource_tags,
            options: body.datasource_options,
        };
        let mut tx = self.state.pool.begin().await?;
        let saved = datasource::insert(
            &mut tx,
            &self.state.data,
            TenantId(tenant_id.0),
            &new,
            auth.0.creator(),
        )
        .await?;
        let issued = issue_if_webhook(&mut tx, &self.state, &saved).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(with_issued(saved, issued)?)))
    }

    /// Test a connection
    ///
    /// Connects with the given settings (or a saved datasource's) and makes one round trip.
    /// A failure is reported in the body, with the reason.
    #[oai(
        path = "/:tenantID/datasources/test",
        method = "post",
        operation_id = "testDatasource"
    )]
    async fn test(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<TestDatasource>,
    ) -> ApiResult<Json<TestResult>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, DATASOURCE_TEST, None).await?;
        let body = body.0;
        let rt = &self.state.data;
        let (kind, options) = match body.datasource_id {
            Some(id) => {
                grants.require(DATASOURCE_READ, Some(id))?;
                let saved =
                    datasource::get(&self.state.pool, rt, TenantId(tenant_id.0), id).await?;
                let options = match body.datasource_options {
                    Some(edited) => {
                        let restored = secrets::restore(&edited, &saved.options);
                        // Stored secrets fill masks only where they were going anyway; sending
                        // them to a new target is what `update` (pointing the datasource
                        // elsewhere) allows, and no less.
                        let moved = !rt.same_target(
                            &saved.datasource_type,
                            &saved.options,
                            &restored.options,
                        );
                        if restored.filled > 0
                            && moved
                            && !grants.allows(DATASOURCE_UPDATE, Some(id))
                        {
                            return Err(ApiError::forbidden(
                                "permission_denied",
                                format!(
                                    "the edited options point somewhere else: send the secrets \
                                     themselves, or hold {} to test the stored ones there",
                                    DATASOURCE_UPDATE.title()
                                ),
                            ));
                        }
                        restored.options
                    }
                    None => saved.options,
                };
                (saved.datasource_type, options)
            }
            None => (
                body.datasource_type
                    .map(|t| t.as_str().to_owned())
                    .ok_or_else(|| {
                        ApiError::unprocessable("datasourceType is required without datasourceID")
                    })?,
                body.datasource_options.ok_or_else(|| {
                    ApiError::unprocessable("datasourceOptions is required without datasourceID")
                })?,
            ),
        };
        datasource::validate(rt, &kind, &options)?;
        let started = Instant::now();
        let outcome = rt
            .test(&kind, body.datasource_id, &options, TEST_TIMEOUT)
            .await;
        if let Some(id) = body.datasource_id {
            let status = if outcome.is_ok() { "active" } else { "error" };
            datasource::set_connection_status(&self.state.pool, id, status).await?;
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        Ok(Json(match outcome {
            Ok(()) => TestResult {
                ok: true,
                code: None,
                error: None,
                duration_ms,
            },
            Err(err) => TestResult {
                ok: false,
                code: Some(err.code().to_owned()),
                error: Some(err.to_string()),
                duration_ms,
            },
        }))
    }

    /// Get a datasource
    #[oai(
        path = "/:tenantID/datasources/:datasourceID",
        method = "get",
        operation_id = "getDatasource"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "datasourceID")] datasource_id: Path<Uuid>,
    ) -> ApiResult<Json<DatasourceOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATASOURCE_READ,
            Some(datasource_id.0),
        )
        .await?;
        let found = datasource::get(
            &self.state.pool,
            &self.state.data,
            TenantId(tenant_id.0),
            datasource_id.0,
        )
        .await?;
        Ok(Json(found.try_into()?))
    }

    /// Update a datasource
    ///
    /// Options sent with masked secrets keep the stored secrets.
    #[oai(
        path = "/:tenantID/datasources/:datasourceID",
        method = "patch",
        operation_id = "updateDatasource"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "datasourceID")] datasource_id: Path<Uuid>,
        body: Json<UpdateDatasource>,
    ) -> ApiResult<Json<DatasourceOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATASOURCE_UPDATE,
            Some(datasource_id.0),
        )
        .await?;
        let body = body.0;
        let patch = DatasourcePatch {
            title: body
                .datasource_title
                .as_deref()
                .map(|t| required_title("datasourceTitle", t))
                .transpose()?,
            description: body.datasource_description,
            tags: body.datasource_tags,
            options: body.datasource_options,
        };
        let mut tx = self.state.pool.begin().await?;
        let saved = datasource::update(
            &mut tx,
            &self.state.data,
            TenantId(tenant_id.0),
            datasource_id.0,
            patch,
        )
        .await?;
        tx.commit().await?;
        Ok(Json(saved.try_into()?))
    }

    /// Clone a datasource
    ///
    /// The copy keeps the stored secrets, so it needs `update` on the original as well as
    /// `create` and `read`. A copy of a webhook datasource gets its own token and secret,
    /// shown in this response once.
    #[oai(
        path = "/:tenantID/datasources/:datasourceID/clone",
        method = "post",
        operation_id = "cloneDatasource"
    )]
    async fn clone_datasource(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "datasourceID")] datasource_id: Path<Uuid>,
    ) -> ApiResult<Created<DatasourceOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, DATASOURCE_CREATE, None).await?;
        grants.require(DATASOURCE_READ, Some(datasource_id.0))?;
        // The copy carries the stored secrets and is the caller's, with every right on it,
        // pointing them anywhere included: only who may already do that to the original may
        // copy it.
        grants.require(DATASOURCE_UPDATE, Some(datasource_id.0))?;
        let mut tx = self.state.pool.begin().await?;
        let copy = datasource::clone(
            &mut tx,
            &self.state.data,
            TenantId(tenant_id.0),
            datasource_id.0,
            auth.0.creator(),
        )
        .await?;
        let issued = issue_if_webhook(&mut tx, &self.state, &copy).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(with_issued(copy, issued)?)))
    }

    /// Rotate a webhook datasource's credentials
    ///
    /// Issues a new token and secret, shown in this response once; the old ones stop working
    /// at once. 422 for a datasource of another type.
    #[oai(
        path = "/:tenantID/datasources/:datasourceID/webhook-credentials/rotate",
        method = "post",
        operation_id = "rotateWebhookCredentials"
    )]
    async fn rotate_webhook_credentials(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "datasourceID")] datasource_id: Path<Uuid>,
    ) -> ApiResult<Json<RotatedWebhookCredentials>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATASOURCE_UPDATE,
            Some(datasource_id.0),
        )
        .await?;
        let vault = self.state.data.vault()?;
        let mut tx = self.state.pool.begin().await?;
        let issued = webhook::issue(&mut tx, vault, TenantId(tenant_id.0), datasource_id.0).await?;
        tx.commit().await?;
        Ok(Json(RotatedWebhookCredentials {
            datasource_id: datasource_id.0,
            credentials: WebhookCredentialsOut::issued(issued),
        }))
    }

    /// Delete a datasource with its data queries
    #[oai(
        path = "/:tenantID/datasources/:datasourceID",
        method = "delete",
        operation_id = "deleteDatasource"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "datasourceID")] datasource_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATASOURCE_DELETE,
            Some(datasource_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        // Deleting cascades to the datasource's listeners; a provisioned CDC listener would
        // leave its replication slot on the source, retaining WAL with nobody to read it.
        let captured: bool = sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM "tblListeners" l
                              JOIN "tblListenerCheckpoints" c ON c."listenerID" = l."listenerID"
                              WHERE l."datasourceID" = $1 AND l."tenantID" = $2)"#,
        )
        .bind(datasource_id.0)
        .bind(tenant_id.0)
        .fetch_one(&mut *tx)
        .await?;
        if captured {
            return Err(jet_shared::Error::Conflict {
                constraint: "datasource_captured".into(),
            }
            .into());
        }
        datasource::delete(&mut tx, TenantId(tenant_id.0), datasource_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }
}
