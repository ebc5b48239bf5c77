//! `/api/v1/tenants/{tenantID}/queries`: data queries, and running them (saved, a saved one
//! under test, or ad hoc). SQL inputs are bound as parameters, never spliced into the text.

use super::enums::{DatasourceType, UnknownStored};
use super::{ApiTags, Created, Deleted, Page, authorize, page_request};
use crate::error::{ApiError, ApiResult};
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::dataquery::{self, DataQuery, QueryFields, RunError};
use jet_shared::datasource::QueryOutput;
use jet_shared::ids::TenantId;
use jet_shared::rbac::permissions::{
    DATAQUERY_CREATE, DATAQUERY_DELETE, DATAQUERY_EXECUTE, DATAQUERY_LIST, DATAQUERY_READ,
    DATAQUERY_TEST, DATAQUERY_UPDATE, DATASOURCE_READ,
};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use std::time::Instant;
use uuid::Uuid;

/// A data query.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DataQueryOut {
    #[oai(rename = "dataQueryID")]
    pub data_query_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub data_query_title: String,
    pub data_query_description: Option<String>,
    /// Driver-specific: `query` (SQL) or `apiEndpoint`/`method`/`headers`/`queryParams`/`body`
    /// (REST), with `inputDefinitions`, `timeoutSeconds` and `maxRows`.
    pub data_query_options: Option<Value>,
    pub run_on_load: Option<bool>,
    pub data_query_result_schema: Option<Value>,
    #[oai(rename = "datasourceID")]
    pub datasource_id: Option<Uuid>,
    pub datasource_type: DatasourceType,
    pub is_disabled: bool,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<DataQuery> for DataQueryOut {
    type Error = UnknownStored;

    fn try_from(q: DataQuery) -> Result<Self, UnknownStored> {
        Ok(Self {
            data_query_id: q.data_query_id,
            tenant_id: q.tenant_id.0,
            data_query_title: q.title,
            data_query_description: q.description,
            data_query_options: q.options,
            run_on_load: q.run_on_load,
            data_query_result_schema: q.result_schema,
            datasource_id: q.datasource_id,
            datasource_type: DatasourceType::from_stored(&q.datasource_type)?,
            is_disabled: q.is_disabled.unwrap_or(false),
            creator_id: q.creator_id,
            created_by_api_key_id: q.created_by_api_key_id,
            created_at: q.created_at,
            updated_at: q.updated_at,
        })
    }
}

/// Body of `createDataQuery`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreateDataQuery {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub data_query_title: Option<String>,
    pub data_query_description: Option<String>,
    #[oai(rename = "datasourceID")]
    pub datasource_id: Uuid,
    pub data_query_options: Option<Value>,
    pub run_on_load: Option<bool>,
    pub data_query_result_schema: Option<Value>,
    pub is_disabled: Option<bool>,
}

impl From<CreateDataQuery> for SaveDataQuery {
    fn from(c: CreateDataQuery) -> Self {
        Self {
            data_query_title: c.data_query_title,
            data_query_description: c.data_query_description,
            datasource_id: Some(c.datasource_id),
            data_query_options: c.data_query_options,
            run_on_load: c.run_on_load,
            data_query_result_schema: c.data_query_result_schema,
            is_disabled: c.is_disabled,
        }
    }
}

/// Body of `updateDataQuery`; absent fields stay.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SaveDataQuery {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub data_query_title: Option<String>,
    pub data_query_description: Option<String>,
    #[oai(rename = "datasourceID")]
    pub datasource_id: Option<Uuid>,
    pub data_query_options: Option<Value>,
    pub run_on_load: Option<bool>,
    pub data_query_result_schema: Option<Value>,
    pub is_disabled: Option<bool>,
}

impl From<SaveDataQuery> for QueryFields {
    fn from(b: SaveDataQuery) -> Self {
        QueryFields {
            title: b.data_query_title.map(|t| t.trim().to_owned()),
            description: b.data_query_description,
            datasource_id: b.datasource_id,
            options: b.data_query_options,
            run_on_load: b.run_on_load,
            result_schema: b.data_query_result_schema,
            is_disabled: b.is_disabled,
        }
    }
}

/// Body of `runDataQuery` and `testDataQuery`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct RunDataQuery {
    /// Checked and coerced against the query's `inputDefinitions`.
    pub input_values: Option<Value>,
    /// `testDataQuery` only: options to try instead of the saved ones.
    pub data_query_options: Option<Value>,
}

/// An unsaved query to try.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct AdHocQuery {
    #[oai(rename = "datasourceID")]
    pub datasource_id: Uuid,
    pub data_query_options: Value,
}

/// Body of `testAdHocDataQuery`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct AdHocQueryTest {
    pub data_query: AdHocQuery,
    pub input_values: Option<Value>,
}

/// A column of a SQL result.
#[derive(Debug, Object)]
pub struct ColumnOut {
    pub name: String,
    /// The database's type name (`int4`, `text`, …).
    #[oai(rename = "type")]
    pub type_name: String,
}

/// What a query returned.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct QueryResultOut {
    /// Rows as objects (SQL), or the response body (REST).
    pub data: Value,
    /// SQL: the columns in order.
    pub columns: Option<Vec<ColumnOut>>,
    /// SQL: rows returned, or rows affected by a statement without a result.
    pub row_count: Option<u64>,
    /// Rows beyond `maxRows` (default 10,000) or 16 MiB were dropped.
    pub truncated: bool,
    /// REST: the response status.
    pub status: Option<u16>,
    pub duration_ms: u64,
}

fn result(out: QueryOutput, started: Instant) -> QueryResultOut {
    QueryResultOut {
        data: out.data,
        columns: out.columns.map(|cols| {
            cols.into_iter()
                .map(|c| ColumnOut {
                    name: c.name,
                    type_name: c.type_name,
                })
                .collect()
        }),
        row_count: out.row_count,
        truncated: out.truncated,
        status: out.status,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// A failed run as a 422 with the failure's stable code and the datasource's own message.
fn run_error(err: RunError) -> ApiError {
    match err {
        RunError::Domain(domain) => domain.into(),
        other => ApiError::unprocessable_as(other.code(), other.to_string()),
    }
}

pub struct QueriesApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Data")]
impl QueriesApi {
    /// List a tenant's data queries
    #[oai(
        path = "/:tenantID/queries",
        method = "get",
        operation_id = "listDataQueries"
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
    ) -> ApiResult<Json<Page<DataQueryOut>>> {
        authorize(&self.state, &auth, tenant_id.0, DATAQUERY_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = dataquery::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::try_from_domain(page, DataQueryOut::try_from)?))
    }

    /// Create a data query
    ///
    /// Needs read access to the datasource it names.
    #[oai(
        path = "/:tenantID/queries",
        method = "post",
        operation_id = "createDataQuery"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<CreateDataQuery>,
    ) -> ApiResult<Created<DataQueryOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, DATAQUERY_CREATE, None).await?;
        let fields = QueryFields::from(SaveDataQuery::from(body.0));
        let datasource = fields
            .datasource_id
            .ok_or_else(|| ApiError::unprocessable("datasourceID is required"))?;
        grants.require(DATASOURCE_READ, Some(datasource))?;
        if fields.title.as_deref() == Some("") {
            return Err(ApiError::unprocessable("dataQueryTitle must not be blank"));
        }
        let creator = auth.0.creator();
        let mut tx = self.state.pool.begin().await?;
        let saved = dataquery::insert(&mut tx, TenantId(tenant_id.0), fields, creator).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(saved.try_into()?)))
    }

    /// Try an unsaved query
    ///
    /// Runs `dataQuery.dataQueryOptions` against `dataQuery.datasourceID` with `inputValues`.
    #[oai(
        path = "/:tenantID/queries/queryTest",
        method = "patch",
        operation_id = "testAdHocDataQuery"
    )]
    async fn test_ad_hoc(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<AdHocQueryTest>,
    ) -> ApiResult<Json<QueryResultOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, DATAQUERY_TEST, None).await?;
        let body = body.0;
        grants.require(DATASOURCE_READ, Some(body.data_query.datasource_id))?;
        dataquery::validate_options(&body.data_query.data_query_options)?;
        let started = Instant::now();
        let out = dataquery::run_options(
            &self.state.pool,
            &self.state.data,
            TenantId(tenant_id.0),
            Some(body.data_query.datasource_id),
            &body.data_query.data_query_options,
            body.input_values.as_ref().unwrap_or(&Value::Null),
        )
        .await
        .map_err(run_error)?;
        Ok(Json(result(out, started)))
    }

    /// Get a data query
    #[oai(
        path = "/:tenantID/queries/:dataQueryID",
        method = "get",
        operation_id = "getDataQuery"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dataQueryID")] data_query_id: Path<Uuid>,
    ) -> ApiResult<Json<DataQueryOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATAQUERY_READ,
            Some(data_query_id.0),
        )
        .await?;
        let q = dataquery::get(&self.state.pool, TenantId(tenant_id.0), data_query_id.0).await?;
        Ok(Json(q.try_into()?))
    }

    /// Update a data query
    #[oai(
        path = "/:tenantID/queries/:dataQueryID",
        method = "patch",
        operation_id = "updateDataQuery"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dataQueryID")] data_query_id: Path<Uuid>,
        body: Json<SaveDataQuery>,
    ) -> ApiResult<Json<DataQueryOut>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATAQUERY_UPDATE,
            Some(data_query_id.0),
        )
        .await?;
        let fields = QueryFields::from(body.0);
        if let Some(ds) = fields.datasource_id {
            grants.require(DATASOURCE_READ, Some(ds))?;
        }
        if fields.title.as_deref() == Some("") {
            return Err(ApiError::unprocessable("dataQueryTitle must not be blank"));
        }
        let mut tx = self.state.pool.begin().await?;
        let saved =
            dataquery::update(&mut tx, TenantId(tenant_id.0), data_query_id.0, fields).await?;
        tx.commit().await?;
        Ok(Json(saved.try_into()?))
    }

    /// Delete a data query
    #[oai(
        path = "/:tenantID/queries/:dataQueryID",
        method = "delete",
        operation_id = "deleteDataQuery"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dataQueryID")] data_query_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATAQUERY_DELETE,
            Some(data_query_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        dataquery::delete(&mut tx, TenantId(tenant_id.0), data_query_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone a data query
    ///
    /// Checks what create checks: read access to the query's datasource.
    #[oai(
        path = "/:tenantID/queries/:dataQueryID/clone",
        method = "post",
        operation_id = "cloneDataQuery"
    )]
    async fn clone_query(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dataQueryID")] data_query_id: Path<Uuid>,
    ) -> ApiResult<Created<DataQueryOut>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, DATAQUERY_CREATE, None).await?;
        grants.require(DATAQUERY_READ, Some(data_query_id.0))?;
        let creator = auth.0.creator();
        let mut tx = self.state.pool.begin().await?;
        // The copy is the caller's, with every right on it: as on create, its datasource must
        // be readable by the caller.
        let source = dataquery::get(&mut *tx, TenantId(tenant_id.0), data_query_id.0).await?;
        if let Some(datasource) = source.datasource_id {
            grants.require(DATASOURCE_READ, Some(datasource))?;
        }
        let copy =
            dataquery::clone(&mut tx, TenantId(tenant_id.0), data_query_id.0, creator).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(copy.try_into()?)))
    }

    /// Run a data query
    ///
    /// Inputs are checked against the query's `inputDefinitions`. A failing query answers
    /// 422 with `query_failed` (and the database's message), `query_timeout`,
    /// `datasource_unreachable`, `invalid_inputs`, `invalid_query_options` or
    /// `result_too_large`.
    #[oai(
        path = "/:tenantID/queries/:dataQueryID/run",
        method = "post",
        operation_id = "runDataQuery"
    )]
    async fn run(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dataQueryID")] data_query_id: Path<Uuid>,
        body: Json<RunDataQuery>,
    ) -> ApiResult<Json<QueryResultOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATAQUERY_EXECUTE,
            Some(data_query_id.0),
        )
        .await?;
        let query =
            dataquery::get(&self.state.pool, TenantId(tenant_id.0), data_query_id.0).await?;
        let started = Instant::now();
        let out = dataquery::run(
            &self.state.pool,
            &self.state.data,
            &query,
            body.0.input_values.as_ref().unwrap_or(&Value::Null),
        )
        .await
        .map_err(run_error)?;
        Ok(Json(result(out, started)))
    }

    /// Test a saved data query
    ///
    /// Like `runDataQuery`, under `tenant:dataquery:test`, optionally with edited options;
    /// runs even when the query is disabled.
    #[oai(
        path = "/:tenantID/queries/:dataQueryID/queryTest",
        method = "post",
        operation_id = "testDataQuery"
    )]
    async fn test(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "dataQueryID")] data_query_id: Path<Uuid>,
        body: Json<RunDataQuery>,
    ) -> ApiResult<Json<QueryResultOut>> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            DATAQUERY_TEST,
            Some(data_query_id.0),
        )
        .await?;
        let body = body.0;
        let query =
            dataquery::get(&self.state.pool, TenantId(tenant_id.0), data_query_id.0).await?;
        let options = match body.data_query_options {
            Some(edited) => {
                dataquery::validate_options(&edited)?;
                edited
            }
            None => query.options.clone().unwrap_or_default(),
        };
        let started = Instant::now();
        let out = dataquery::run_options(
            &self.state.pool,
            &self.state.data,
            query.tenant_id,
            query.datasource_id,
            &options,
            body.input_values.as_ref().unwrap_or(&Value::Null),
        )
        .await
        .map_err(run_error)?;
        Ok(Json(result(out, started)))
    }
}
