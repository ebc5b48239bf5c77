//! Data queries (`tblDataQueries`): a datasource plus driver-specific `dataQueryOptions` with
//! `{{inputs.x}}` templates; running one checks the inputs against the query's definitions
//! and hands it to the datasource's driver under a timeout and size limits.

use crate::api_key::Creator;
use crate::datasource::{self, DataRuntime, DriverError, Limits, QueryOutput};
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::tenant_table::TenantTable;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// Where a `dataQuery` node puts its result when it names no `outputVariable` (upstream).
pub const NODE_OUTPUT_VARIABLE: &str = "queryResult";

/// Longest per-query timeout a query may ask for (`timeoutSeconds`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// A row of `tblDataQueries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DataQuery {
    #[sqlx(rename = "dataQueryID")]
    pub data_query_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "dataQueryTitle")]
    pub title: String,
    #[sqlx(rename = "dataQueryDescription")]
    pub description: Option<String>,
    #[sqlx(rename = "dataQueryOptions")]
    pub options: Option<Value>,
    #[sqlx(rename = "runOnLoad")]
    pub run_on_load: Option<bool>,
    #[sqlx(rename = "dataQueryResultSchema")]
    pub result_schema: Option<Value>,
    #[sqlx(rename = "datasourceID")]
    pub datasource_id: Option<Uuid>,
    #[sqlx(rename = "datasourceType")]
    pub datasource_type: String,
    #[sqlx(rename = "isDisabled")]
    pub is_disabled: Option<bool>,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = r#""dataQueryID", "tenantID", "dataQueryTitle", "dataQueryDescription", "dataQueryOptions",
    "runOnLoad", "dataQueryResultSchema", "datasourceID", "datasourceType", "isDisabled", "creatorID",
    "createdByApiKeyID", "createdAt", "updatedAt""#;

const TABLE: TenantTable = TenantTable {
    table: "tblDataQueries",
    id: "dataQueryID",
    columns: COLUMNS,
    noun: "data query",
};

/// The editable fields of a query.
#[derive(Debug, Clone, Default)]
pub struct QueryFields {
    pub title: Option<String>,
    pub description: Option<String>,
    pub datasource_id: Option<Uuid>,
    pub options: Option<Value>,
    pub run_on_load: Option<bool>,
    pub result_schema: Option<Value>,
    pub is_disabled: Option<bool>,
}

/// Checks `dataQueryOptions`: an object whose input definitions and timeout are well-formed.
pub fn validate_options(options: &Value) -> Result<()> {
    if !options.is_object() {
        return Err(Error::Invalid("dataQueryOptions must be an object".into()));
    }
    if let Some(defs) = options.get("inputDefinitions").filter(|d| !d.is_null()) {
        let defs = defs
            .as_array()
            .ok_or_else(|| Error::Invalid("inputDefinitions must be an array".into()))?;
        for d in defs {
            if definition_name(d).is_none() {
                return Err(Error::Invalid(
                    "every input definition needs a `key`".into(),
                ));
            }
        }
    }
    if let Some(t) = options.get("timeoutSeconds").filter(|t| !t.is_null()) {
        t.as_u64()
            .filter(|s| (1..=MAX_TIMEOUT.as_secs()).contains(s))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "timeoutSeconds must be 1..{}",
                    MAX_TIMEOUT.as_secs()
                ))
            })?;
    }
    Ok(())
}

fn definition_name(d: &Value) -> Option<&str> {
    d.get("key")
        .or_else(|| d.get("name"))
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
}

/// Checks and coerces `inputs` against the query's `inputDefinitions` (`[{key, type,
/// required, default}]`), the same rules as workflow inputs.
pub fn check_inputs(options: &Value, inputs: &Value) -> std::result::Result<Value, String> {
    let defs: Vec<Value> = options
        .get("inputDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let mut def = d.clone();
            def["name"] = json!(definition_name(d)?);
            Some(def)
        })
        .collect();
    crate::workflow::instance::check_inputs(&json!({ "inputs": defs }), inputs)
}

/// The limits a query runs under: its `timeoutSeconds` (default 60 s), `maxRows`.
pub fn limits(options: &Value) -> Limits {
    let mut limits = Limits::default();
    if let Some(secs) = options.get("timeoutSeconds").and_then(Value::as_u64) {
        limits.timeout = Duration::from_secs(secs).min(MAX_TIMEOUT);
    }
    if let Some(rows) = options.get("maxRows").and_then(Value::as_u64) {
        limits.max_rows = (rows as usize).clamp(1, limits.max_rows);
    }
    limits
}

/// Why a run failed, with the stable code the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Inputs missing or of the wrong type.
    #[error("{0}")]
    Inputs(String),
    /// The query cannot run as configured (no datasource, disabled, bad options).
    #[error("{0}")]
    NotRunnable(String),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Reading the query or datasource failed.
    #[error(transparent)]
    Domain(#[from] Error),
}

impl RunError {
    /// The stable code of this failure.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Inputs(_) => "invalid_inputs",
            RunError::NotRunnable(_) => "query_not_runnable",
            RunError::Driver(err) => err.code(),
            RunError::Domain(_) => "query_not_runnable",
        }
    }
}

/// Runs `options` (saved or ad hoc) against a datasource of the tenant with `inputs`.
pub async fn run_options(
    pool: &PgPool,
    rt: &DataRuntime,
    tenant_id: TenantId,
    datasource_id: Option<Uuid>,
    options: &Value,
    inputs: &Value,
) -> std::result::Result<QueryOutput, RunError> {
    Ready::load(pool, rt, tenant_id, datasource_id, options, inputs)
        .await?
        .execute(rt, options)
        .await
}

/// A query whose datasource is loaded and whose inputs are checked: all that is left is the
/// one call that reaches outside (see `run_node` for why the two are apart).
struct Ready {
    ds: datasource::Datasource,
    inputs: Value,
}

impl Ready {
    async fn load(
        pool: &PgPool,
        rt: &DataRuntime,
        tenant_id: TenantId,
        datasource_id: Option<Uuid>,
        options: &Value,
        inputs: &Value,
    ) -> std::result::Result<Self, RunError> {
        let datasource_id = datasource_id
            .ok_or_else(|| RunError::NotRunnable("the query names no datasource".into()))?;
        let ds = datasource::get(pool, rt, tenant_id, datasource_id).await?;
        if rt.drivers.get(&ds.datasource_type).is_none() {
            return Err(RunError::NotRunnable(datasource::no_driver(
                &ds.datasource_type,
            )));
        }
        let inputs = check_inputs(options, inputs).map_err(RunError::Inputs)?;
        Ok(Self { ds, inputs })
    }

    async fn execute(
        self,
        rt: &DataRuntime,
        options: &Value,
    ) -> std::result::Result<QueryOutput, RunError> {
        Ok(rt
            .execute(
                &self.ds.datasource_type,
                Some(self.ds.datasource_id),
                &self.ds.options,
                options,
                &self.inputs,
                limits(options),
            )
            .await?)
    }
}

/// Runs a saved query.
pub async fn run(
    pool: &PgPool,
    rt: &DataRuntime,
    query: &DataQuery,
    inputs: &Value,
) -> std::result::Result<QueryOutput, RunError> {
    if query.is_disabled == Some(true) {
        return Err(RunError::NotRunnable("the query is disabled".into()));
    }
    let options = query.options.clone().unwrap_or_else(|| json!({}));
    run_options(
        pool,
        rt,
        query.tenant_id,
        query.datasource_id,
        &options,
        inputs,
    )
    .await
}

/// A `dataQuery` node's output: upstream's `{[outputVariable]: rows, success: true}` plus the
/// result's metadata.
fn node_output(out: QueryOutput, output_variable: &str) -> Value {
    let mut v = json!({"success": true, "truncated": out.truncated});
    if let Some(columns) = &out.columns {
        v["columns"] = columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.type_name}))
            .collect();
    }
    if let Some(n) = out.row_count {
        v["rowCount"] = json!(n);
    }
    if let Some(s) = out.status {
        v["status"] = json!(s);
    }
    v[output_variable] = out.data;
    v
}

/// The datasource's type, checking it belongs to the tenant.
async fn datasource_type(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    datasource_id: Uuid,
) -> Result<String> {
    sqlx::query_scalar(
        r#"SELECT "datasourceType" FROM "tblDatasources" WHERE "tenantID" = $1 AND "datasourceID" = $2"#,
    )
    .bind(tenant_id)
    .bind(datasource_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::Invalid(format!("datasource {datasource_id} is not in this tenant")))
}

/// Creates a query; `datasourceType` is copied from its datasource.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    fields: QueryFields,
    creator: Creator,
) -> Result<DataQuery> {
    let options = fields.options.unwrap_or_else(|| json!({}));
    validate_options(&options)?;
    let kind = match fields.datasource_id {
        Some(id) => datasource_type(&mut *conn, tenant_id, id).await?,
        None => "postgresql".into(),
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblDataQueries"
             ("tenantID", "dataQueryTitle", "dataQueryDescription", "datasourceID", "datasourceType",
              "dataQueryOptions", "runOnLoad", "dataQueryResultSchema", "isDisabled", "creatorID", "createdByApiKeyID")
           VALUES ($1, COALESCE($2, 'Untitled'), $3, $4, $5, $6, $7, $8, COALESCE($9, false), $10, $11)
           RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(fields.title)
    .bind(fields.description)
    .bind(fields.datasource_id)
    .bind(kind)
    .bind(sqlx::types::Json(options))
    .bind(fields.run_on_load)
    .bind(fields.result_schema.map(sqlx::types::Json))
    .bind(fields.is_disabled)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(conn)
    .await?)
}

/// The tenant's queries, newest first.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    page: PageRequest,
) -> Result<Page<DataQuery>> {
    TABLE.list(pool, tenant_id, page).await
}

/// One query of the tenant; `NotFound` for another tenant's.
pub async fn get(conn: impl PgExecutor<'_>, tenant_id: TenantId, id: Uuid) -> Result<DataQuery> {
    TABLE.get(conn, tenant_id, id).await
}

/// Applies the fields that are set.
pub async fn update(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    fields: QueryFields,
) -> Result<DataQuery> {
    if let Some(options) = &fields.options {
        validate_options(options)?;
    }
    let kind = match fields.datasource_id {
        Some(ds) => Some(datasource_type(&mut *conn, tenant_id, ds).await?),
        None => None,
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblDataQueries" SET
             "dataQueryTitle" = COALESCE($3, "dataQueryTitle"),
             "dataQueryDescription" = COALESCE($4, "dataQueryDescription"),
             "datasourceID" = COALESCE($5, "datasourceID"),
             "datasourceType" = COALESCE($6, "datasourceType"),
             "dataQueryOptions" = COALESCE($7::json, "dataQueryOptions"),
             "runOnLoad" = COALESCE($8, "runOnLoad"),
             "dataQueryResultSchema" = COALESCE($9::json, "dataQueryResultSchema"),
             "isDisabled" = COALESCE($10, "isDisabled"),
             "disabledAt" = CASE WHEN $10 IS NULL THEN "disabledAt" WHEN $10 THEN now() ELSE NULL END,
             "updatedAt" = now()
           WHERE "tenantID" = $1 AND "dataQueryID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(fields.title)
    .bind(fields.description)
    .bind(fields.datasource_id)
    .bind(kind)
    .bind(fields.options.map(sqlx::types::Json))
    .bind(fields.run_on_load)
    .bind(fields.result_schema.map(sqlx::types::Json))
    .bind(fields.is_disabled)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("data query"))
}

/// Copies a query (`<title> (copy)`).
pub async fn clone(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    creator: Creator,
) -> Result<DataQuery> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblDataQueries"
             ("tenantID", "dataQueryTitle", "dataQueryDescription", "datasourceID", "datasourceType",
              "dataQueryOptions", "runOnLoad", "dataQueryResultSchema", "isDisabled", "creatorID", "createdByApiKeyID")
           SELECT "tenantID", "dataQueryTitle" || ' (copy)', "dataQueryDescription", "datasourceID", "datasourceType",
                  "dataQueryOptions", "runOnLoad", "dataQueryResultSchema", "isDisabled", $3, $4
           FROM "tblDataQueries" WHERE "tenantID" = $1 AND "dataQueryID" = $2
           RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("data query"))
}

/// Deletes a query.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, id: Uuid) -> Result<()> {
    TABLE.delete(conn, tenant_id, id).await
}

/// Runs the query a `dataQuery` node names, with its `inputValues` templates resolved against
/// the instance context. Completes on `success` with upstream's
/// `{[outputVariable]: rows, success: true}` (plus the result's metadata); a failure names
/// its code and the datasource's message.
pub async fn run_node<F>(
    pool: &PgPool,
    rt: &DataRuntime,
    tenant_id: TenantId,
    config: &Value,
    ctx: &Value,
    fence: F,
) -> std::result::Result<Option<crate::workflow::nodes::Outcome>, String>
where
    F: std::future::Future<Output = std::result::Result<bool, String>>,
{
    let id = config
        .get("dataQueryID")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or("dataQueryID must be a data query id")?;
    let inputs =
        crate::workflow::template::resolve(config.get("inputValues").unwrap_or(&Value::Null), ctx);
    let query = get(pool, tenant_id, id)
        .await
        .map_err(|e| format!("data query {id}: {e}"))?;
    if query.is_disabled == Some(true) {
        let err = RunError::NotRunnable("the query is disabled".into());
        return Err(format!("{}: {err}", err.code()));
    }
    let options = query.options.clone().unwrap_or_else(|| json!({}));
    let ready = Ready::load(
        pool,
        rt,
        query.tenant_id,
        query.datasource_id,
        &options,
        &inputs,
    )
    .await
    .map_err(|e| format!("{}: {e}", e.code()))?;
    // The query writes outside the engine, where no settle can fence it: whatever the node
    // still had to read from the platform is read, so the fence is the last step before the
    // call that reaches outside (a worker cut off while loading must not write once it is
    // back and its lease has moved on).
    if !fence.await? {
        return Ok(None);
    }
    let out = ready
        .execute(rt, &options)
        .await
        .map_err(|e| format!("{}: {e}", e.code()))?;
    let ov = config
        .get("outputVariable")
        .and_then(Value::as_str)
        .unwrap_or(NODE_OUTPUT_VARIABLE);
    Ok(Some(crate::workflow::nodes::Outcome::follow(
        node_output(out, ov),
        "success",
    )))
}
