//! Datasources (`tblDatasources`): connection settings stored encrypted in upstream's
//! AES-256-GCM envelope, masked in responses, and the drivers that reach them.

pub mod driver;
pub mod network;
pub mod postgres;
pub mod restapi;
pub mod secrets;
pub mod webhook;

use crate::api_key::Creator;
use crate::crypto::VaultKey;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::tenant_table::TenantTable;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

pub use driver::{DriverError, Drivers, Limits, QueryOutput};

/// What reading and running datasources needs: the vault key and the drivers (with their
/// connection pools), shared by the API and the workers.
pub struct DataRuntime {
    vault: Option<VaultKey>,
    pub drivers: Drivers,
}

impl DataRuntime {
    /// The runtime whose drivers connect only where `deny` allows.
    pub fn new(vault: Option<VaultKey>, deny: network::DenyList) -> Self {
        Self {
            vault,
            drivers: Drivers::new(deny),
        }
    }

    /// The runtime a configuration describes: its vault key, and its deny-list with
    /// `platform-db` standing for the host of its `DATABASE_URL`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let deny = network::DenyList::new(&config.datasource_deny, config.database_url.as_deref());
        Self::new(config.vault_key.clone(), deny)
    }

    fn driver(
        &self,
        datasource_type: &str,
    ) -> std::result::Result<&dyn driver::Driver, DriverError> {
        self.drivers
            .get(datasource_type)
            .ok_or_else(|| DriverError::Options(no_driver(datasource_type)))
    }

    /// Connects with `options` and makes one round trip. The error's text carries none of the
    /// options' secrets: it is shown, logged and audited.
    pub async fn test(
        &self,
        datasource_type: &str,
        datasource_id: Option<Uuid>,
        options: &Value,
        timeout: std::time::Duration,
    ) -> std::result::Result<(), DriverError> {
        self.driver(datasource_type)?
            .test(datasource_id, options, timeout)
            .await
            .map_err(|e| e.scrubbed(&secrets::values(options, datasource_type)))
    }

    /// Runs `query` against a datasource's `options`. The error's text carries none of the
    /// datasource's secrets, nor the credential headers of the query: it is shown, logged,
    /// audited and kept in instance history.
    pub async fn execute(
        &self,
        datasource_type: &str,
        datasource_id: Option<Uuid>,
        options: &Value,
        query: &Value,
        inputs: &Value,
        limits: Limits,
    ) -> std::result::Result<QueryOutput, DriverError> {
        self.driver(datasource_type)?
            .execute(datasource_id, options, query, inputs, limits)
            .await
            .map_err(|e| {
                let mut secrets = secrets::values(options, datasource_type);
                secrets.extend(secrets::values(query, datasource_type));
                e.scrubbed(&secrets)
            })
    }

    /// Options and connect timeout for a dedicated connection to a `postgresql` datasource (a
    /// listener's LISTEN or replication connection), checked against the deny-list and pinned
    /// to the checked address. The error's text carries none of the options' secrets.
    pub async fn postgres_connect_options(
        &self,
        options: &Value,
    ) -> std::result::Result<(sqlx::postgres::PgConnectOptions, std::time::Duration), DriverError>
    {
        self.drivers
            .postgres()
            .checked_options(options)
            .await
            .map_err(|e| e.scrubbed(&secrets::values(options, "postgresql")))
    }

    /// Whether `edited` options reach the same place as `saved` ones (see
    /// [`driver::Driver::target`]).
    pub fn same_target(&self, datasource_type: &str, saved: &Value, edited: &Value) -> bool {
        self.drivers.get(datasource_type).is_some_and(|d| {
            let before = d.target(saved);
            before.is_some() && before == d.target(edited)
        })
    }

    /// The vault key; without one, datasources cannot be written or read.
    pub fn vault(&self) -> Result<&VaultKey> {
        self.vault.as_ref().ok_or_else(|| {
            Error::Invalid("VAULT_ENCRYPTION_KEY is not configured on this server".into())
        })
    }
}

/// Why a datasource of `datasource_type` cannot run a query or a connection test.
pub fn no_driver(datasource_type: &str) -> String {
    if datasource_type == webhook::TYPE {
        "a webhook datasource only receives events: it runs no queries and has no connection to test".into()
    } else {
        format!("datasource type `{datasource_type}` has no driver")
    }
}

/// A row of `tblDatasources` with its options decrypted.
#[derive(Debug, Clone)]
pub struct Datasource {
    pub datasource_id: Uuid,
    pub tenant_id: TenantId,
    pub title: String,
    pub datasource_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Decrypted; mask with [`secrets::mask`] before showing.
    pub options: Value,
    pub connection_status: Option<String>,
    pub creator_id: Option<Uuid>,
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(rename = "datasourceID")]
    datasource_id: Uuid,
    #[sqlx(rename = "tenantID")]
    tenant_id: TenantId,
    #[sqlx(rename = "datasourceTitle")]
    title: String,
    #[sqlx(rename = "datasourceType")]
    datasource_type: String,
    #[sqlx(rename = "datasourceDescription")]
    description: Option<String>,
    #[sqlx(rename = "datasourceTags")]
    tags: Vec<String>,
    #[sqlx(rename = "datasourceOptions")]
    options: Value,
    #[sqlx(rename = "connectionStatus")]
    connection_status: Option<String>,
    #[sqlx(rename = "creatorID")]
    creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "createdAt")]
    created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = r#""datasourceID", "tenantID", "datasourceTitle", "datasourceType", "datasourceDescription",
    "datasourceTags", "datasourceOptions", "connectionStatus", "creatorID", "createdByApiKeyID", "createdAt", "updatedAt""#;

const TABLE: TenantTable = TenantTable {
    table: "tblDatasources",
    id: "datasourceID",
    columns: COLUMNS,
    noun: "datasource",
};

impl Row {
    /// Decrypts the options. A plaintext row (no `__encrypted`) reads as it is; a tampered or
    /// foreign-key envelope is an error, never garbage.
    fn open(self, vault: &VaultKey) -> Result<Datasource> {
        let options = vault.open(&self.options).map_err(|e| {
            Error::Invalid(format!(
                "the options of datasource {} cannot be decrypted: {e}",
                self.datasource_id
            ))
        })?;
        Ok(self.with_options(options))
    }

    fn with_options(self, options: Value) -> Datasource {
        Datasource {
            datasource_id: self.datasource_id,
            tenant_id: self.tenant_id,
            title: self.title,
            datasource_type: self.datasource_type,
            description: self.description,
            tags: self.tags,
            options,
            connection_status: self.connection_status,
            creator_id: self.creator_id,
            created_by_api_key_id: self.created_by_api_key_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Fields of a new datasource.
#[derive(Debug, Clone)]
pub struct NewDatasource {
    pub title: String,
    pub datasource_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub options: Value,
}

/// Checks the type has a driver (or is [`webhook::TYPE`], which needs none) and the options
/// suit it.
pub fn validate(rt: &DataRuntime, datasource_type: &str, options: &Value) -> Result<()> {
    if datasource_type == webhook::TYPE {
        return webhook::validate_options(options)
            .map_err(|m| Error::Invalid(format!("datasourceOptions {m}")));
    }
    let driver = rt.drivers.get(datasource_type).ok_or_else(|| {
        Error::Invalid(format!(
            "datasourceType `{datasource_type}` is not supported; use one of {}, {}",
            Drivers::TYPES.join(", "),
            webhook::TYPE
        ))
    })?;
    if !options.is_object() {
        return Err(Error::Invalid("datasourceOptions must be an object".into()));
    }
    driver
        .validate_options(options)
        .map_err(|m| Error::Invalid(format!("datasourceOptions: {m}")))
}

/// Creates a datasource; its options are sealed with the vault key.
pub async fn insert(
    conn: &mut PgConnection,
    rt: &DataRuntime,
    tenant_id: TenantId,
    new: &NewDatasource,
    creator: Creator,
) -> Result<Datasource> {
    validate(rt, &new.datasource_type, &new.options)?;
    let vault = rt.vault()?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblDatasources"
             ("datasourceTitle", "datasourceType", "datasourceDescription", "datasourceTags", "datasourceOptions",
              "tenantID", "creatorID", "createdByApiKeyID")
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"#
    )))
    .bind(&new.title)
    .bind(&new.datasource_type)
    .bind(&new.description)
    .bind(&new.tags)
    .bind(vault.seal(&new.options))
    .bind(tenant_id)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(conn)
    .await?;
    row.open(vault)
}

/// The tenant's datasources, newest first.
pub async fn list(
    pool: &PgPool,
    rt: &DataRuntime,
    tenant_id: TenantId,
    page: PageRequest,
) -> Result<Page<Datasource>> {
    let vault = rt.vault()?;
    let rows: Page<Row> = TABLE.list(pool, tenant_id, page).await?;
    // One row that cannot be decrypted must not hide the others: it is listed with null
    // options (reading it alone reports the error).
    Ok(rows.map(|r| match vault.open(&r.options) {
        Ok(options) => r.with_options(options),
        Err(err) => {
            tracing::warn!(datasource = %r.datasource_id, error = %err, "options do not decrypt");
            r.with_options(Value::Null)
        }
    }))
}

/// One datasource of the tenant, decrypted; `NotFound` for another tenant's.
pub async fn get(
    conn: impl PgExecutor<'_>,
    rt: &DataRuntime,
    tenant_id: TenantId,
    datasource_id: Uuid,
) -> Result<Datasource> {
    let row: Row = TABLE.get(conn, tenant_id, datasource_id).await?;
    row.open(rt.vault()?)
}

/// Changes to a datasource; `None` leaves a field as it is. Masked secrets in `options` keep
/// their stored values.
#[derive(Debug, Clone, Default)]
pub struct DatasourcePatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub options: Option<Value>,
}

/// Applies a patch in the caller's transaction.
pub async fn update(
    conn: &mut PgConnection,
    rt: &DataRuntime,
    tenant_id: TenantId,
    datasource_id: Uuid,
    patch: DatasourcePatch,
) -> Result<Datasource> {
    let current = get(&mut *conn, rt, tenant_id, datasource_id).await?;
    let options = match patch.options {
        Some(incoming) => {
            let merged = secrets::restore(&incoming, &current.options).options;
            validate(rt, &current.datasource_type, &merged)?;
            merged
        }
        None => current.options.clone(),
    };
    let vault = rt.vault()?;
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblDatasources" SET "datasourceTitle" = COALESCE($3, "datasourceTitle"),
             "datasourceDescription" = COALESCE($4, "datasourceDescription"),
             "datasourceTags" = COALESCE($5, "datasourceTags"),
             "datasourceOptions" = $6, "updatedAt" = now()
           WHERE "tenantID" = $1 AND "datasourceID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(datasource_id)
    .bind(patch.title)
    .bind(patch.description)
    .bind(patch.tags)
    .bind(vault.seal(&options))
    .fetch_one(conn)
    .await?;
    row.open(vault)
}

/// Copies a datasource (`<title> (copy)`); the sealed options are copied as they are.
pub async fn clone(
    conn: &mut PgConnection,
    rt: &DataRuntime,
    tenant_id: TenantId,
    datasource_id: Uuid,
    creator: Creator,
) -> Result<Datasource> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblDatasources"
             ("datasourceTitle", "datasourceType", "datasourceDescription", "datasourceTags", "datasourceOptions",
              "tenantID", "creatorID", "createdByApiKeyID")
           SELECT "datasourceTitle" || ' (copy)', "datasourceType", "datasourceDescription", "datasourceTags",
                  "datasourceOptions", "tenantID", $3, $4
           FROM "tblDatasources" WHERE "tenantID" = $1 AND "datasourceID" = $2
           RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(datasource_id)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_optional(conn)
    .await?;
    row.ok_or(Error::NotFound("datasource"))?.open(rt.vault()?)
}

/// Deletes a datasource; its data queries go with it (upstream's cascade).
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    datasource_id: Uuid,
) -> Result<()> {
    TABLE.delete(conn, tenant_id, datasource_id).await
}

/// Records the outcome of a connection test on a saved datasource.
pub async fn set_connection_status(pool: &PgPool, datasource_id: Uuid, status: &str) -> Result<()> {
    sqlx::query(r#"UPDATE "tblDatasources" SET "connectionStatus" = $2 WHERE "datasourceID" = $1"#)
        .bind(datasource_id)
        .bind(status)
        .execute(pool)
        .await?;
    Ok(())
}
