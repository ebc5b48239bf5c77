//! One cell's world: a fresh database on the private cluster, migrated and bootstrapped, the
//! ledger table the load's effects write to, and (once the API runs) the load's workflows.

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// The table every effect node inserts one row into: the run's key, the node, and when.
const LEDGER_TABLE: &str = "CREATE TABLE chaos_effects (
    key text NOT NULL, node text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// A cell's database, tenant, API and workflows.
pub struct Site {
    /// Direct URL of the cell's database.
    pub db_url: String,
    /// The harness's own pool on it (direct, never through the proxy).
    pub pool: PgPool,
    pub tenant: Uuid,
    pub auth: String,
    pub api: String,
    pub client: reqwest::Client,
    /// The load's workflows, run in turn.
    pub workflows: Vec<String>,
    /// start → end, run to measure recovery.
    pub probe: String,
    /// Ids of the effect nodes (for the ledger).
    pub effect_nodes: Vec<String>,
    /// The vault key the API and workers share (datasource options are encrypted).
    pub vault_key: String,
}

impl Site {
    /// Creates database `name` on the cluster at `server` (its `postgres` database URL),
    /// migrates and bootstraps it. The API is started by the caller; then [`Site::define`].
    pub async fn create(server: &str, name: &str, api_port: u16) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(server).await?;
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let (base, _) = server
            .rsplit_once('/')
            .context("a server URL ends in /postgres")?;
        let db_url = format!("{base}/{name}");
        let pool = jet_shared::db::connect(&db_url, 8).await?;
        jet_shared::db::migrate(&pool).await?;
        let boot = jet_shared::bootstrap::bootstrap(&pool, "chaos", None).await?;
        sqlx::query(LEDGER_TABLE).execute(&pool).await?;
        Ok(Self {
            db_url,
            pool,
            tenant: boot.tenant.tenant_id.0,
            auth: format!("api_key {}", boot.api_key.expose()),
            api: format!("http://127.0.0.1:{api_port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            workflows: vec![],
            probe: String::new(),
            effect_nodes: vec![],
            vault_key: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        })
    }

    /// `POST {api}/api/v1/tenants/{tenant}/{path}`; the status and body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .client
            .post(format!(
                "{}/api/v1/tenants/{}/{path}",
                self.api, self.tenant
            ))
            .header("Authorization", &self.auth)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn create_id(&self, path: &str, body: Value, id: &str) -> anyhow::Result<String> {
        let (status, body) = self.post(path, &body).await?;
        anyhow::ensure!(status == 201, "POST {path}: {status} {body}");
        body[id]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("POST {path}: no {id} in {body}"))
    }

    /// Waits until the API answers `/ready`.
    pub async fn wait_ready(&self, secs: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ready = self
                .client
                .get(format!("{}/ready", self.api))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the API is not ready after {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves the datasource, the effect query and the load's workflows through the API.
    pub async fn define(&mut self) -> anyhow::Result<()> {
        let datasource = self
            .create_id(
                "datasources",
                json!({"datasourceTitle": "ledger", "datasourceType": "postgresql",
                   "datasourceOptions": {"connectionOption": "connectionString", "connectionString": self.db_url}}),
                "datasourceID",
            )
            .await?;
        let query = self
            .create_id(
                "queries",
                json!({"dataQueryTitle": "effect", "datasourceID": datasource,
                   "dataQueryOptions": {
                       "query": "INSERT INTO chaos_effects (key, node) VALUES ({{inputs.key}}, {{inputs.node}}) RETURNING 1 AS written",
                       "inputDefinitions": [{"key": "key", "type": "string", "required": true},
                                            {"key": "node", "type": "string", "required": true}]}}),
                "dataQueryID",
            )
            .await?;
        let mut flows = super::flows::load_flows(&query);
        self.effect_nodes = flows.iter().flat_map(|f| f.effects.clone()).collect();
        let probe = super::flows::probe_flow();
        for flow in flows.drain(..) {
            let id = self.create_id("workflows", flow.body, "workflowID").await?;
            self.workflows.push(id);
        }
        self.probe = self
            .create_id("workflows", probe.body, "workflowID")
            .await?;
        Ok(())
    }

    /// Starts a run of `workflow` keyed `key`; its instance id, or why not.
    pub async fn execute(&self, workflow: &str, key: &str) -> anyhow::Result<Uuid> {
        let (status, body) = self
            .post(
                &format!("workflows/{workflow}/execute"),
                &json!({"inputValues": {"key": key}}),
            )
            .await?;
        anyhow::ensure!(status == 202, "execute: {status} {body}");
        body["instanceID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("no instanceID")
    }
}
