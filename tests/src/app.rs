//! The real HTTP service on a random local port, against a fresh database.

use crate::db::TestDb;
use crate::jwt;
use jet_shared::bootstrap::{Bootstrapped, bootstrap};
use jet_shared::config::Config;
use jet_shared::ids::{TenantId, UserId};
use jet_shared::lifecycle::{Shutdown, ShutdownTrigger};
use serde_json::Value;
use std::collections::HashMap;

/// Request body limit of the test service (small, so 413 is cheap to provoke).
pub const TEST_MAX_BODY_BYTES: usize = 64 * 1024;

/// A response: status and parsed JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    /// The error `code` of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// A string field of the body.
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {}", self.body))
            .to_owned()
    }
}

/// A running service.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    _stop: ShutdownTrigger,
    shutdown: Shutdown,
    config: Config,
}

/// In-process worker roles started by [`TestApp::start_workers`].
pub struct Workers {
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Workers {
    /// Stops the roles gracefully and waits for them.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.task
            .await
            .expect("worker task")
            .expect("workers stop cleanly");
    }
}

/// A tenant with an API key holding the global ADMIN role.
pub struct Admin {
    pub tenant_id: TenantId,
    /// `Authorization` header value.
    pub auth: String,
    pub raw: Bootstrapped,
}

/// The `Authorization` value for an API key.
pub fn api_key(raw: &str) -> String {
    format!("api_key {raw}")
}

/// The `Authorization` value for a bearer token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The vault key of test services (`VAULT_ENCRYPTION_KEY`), to inspect stored envelopes.
pub const TEST_VAULT_KEY: &str = "5c0e1a2b3d4f5061728394a5b6c7d8e9f0112233445566778899aabbccddeeff";

impl TestApp {
    /// Starts the service on a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDb::new().await).await
    }

    /// Starts the service on the given database.
    pub async fn spawn_on(db: TestDb) -> Self {
        Self::spawn_configured(db, |_| {}).await
    }

    /// Starts the service, and its workers if asked, with extra configuration variables
    /// (e.g. a small `JET_SSE_MAX_STREAMS`).
    pub async fn with_env(extra: &[(&'static str, &str)], workers: bool) -> Self {
        let app = Self::spawn_configured(TestDb::new().await, |vars| {
            vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        })
        .await;
        if workers {
            std::mem::forget(app.start_workers("test-worker"));
        }
        app
    }

    /// Starts the service on the given database with extra configuration variables.
    pub async fn spawn_with(db: TestDb, extra: &[(&'static str, &str)]) -> Self {
        Self::spawn_configured(db, |vars| {
            vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        })
        .await
    }

    /// Starts the service on a fresh database with its environment adjusted by `adjust`
    /// (e.g. removing `JET_DATASOURCE_DENY_HOSTS` to run with the production default).
    pub async fn spawn_adjusted(adjust: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        Self::spawn_configured(TestDb::new().await, adjust).await
    }

    async fn spawn_configured(
        db: TestDb,
        adjust: impl FnOnce(&mut HashMap<&'static str, String>),
    ) -> Self {
        let mut vars: HashMap<&'static str, String> = HashMap::from([
            ("DATABASE_URL", db.url()),
            ("JET_JWT_HS256_SECRET", jwt::HS256_SECRET.to_owned()),
            ("JET_JWT_RS256_PUBLIC_KEY", jwt::RS256_PUBLIC_PEM.to_owned()),
            ("JET_MAX_BODY_BYTES", TEST_MAX_BODY_BYTES.to_string()),
            ("JET_API_ADDR", "127.0.0.1:0".to_owned()),
            ("VAULT_ENCRYPTION_KEY", TEST_VAULT_KEY.to_owned()),
            // The tests' datasources are local databases and servers on 127.0.0.1, which the
            // default deny-list keeps datasources away from; the tests of the deny-list
            // itself put it back.
            ("JET_DATASOURCE_DENY_HOSTS", "none".to_owned()),
        ]);
        adjust(&mut vars);
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test config");
        let state = jet_api::AppState::new(db.pool.clone(), config.clone()).expect("state");
        let (addr, acceptor) = jet_api::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let (stop, shutdown) = Shutdown::new();
        let mut wait = shutdown.clone();
        tokio::spawn(jet_api::serve(
            acceptor,
            state,
            async move { wait.wait().await },
        ));
        Self {
            base: format!("http://{addr}"),
            db,
            client: reqwest::Client::new(),
            _stop: stop,
            shutdown,
            config,
        }
    }

    /// Starts the service and every worker role in this process, as `jet dev` does.
    pub async fn with_workers() -> Self {
        let app = Self::spawn().await;
        std::mem::forget(app.start_workers("test-worker"));
        app
    }

    /// Starts every worker role under `worker_id`; they stop when the returned handle is
    /// stopped (or with the app).
    pub fn start_workers(&self, worker_id: &str) -> Workers {
        self.start_roles(worker_id, jet_worker::Role::ALL, |_| {})
    }

    /// Starts `roles` under `worker_id`, with `tune` applied to the test configuration.
    pub fn start_roles(
        &self,
        worker_id: &str,
        roles: &[jet_worker::Role],
        tune: impl FnOnce(&mut Config),
    ) -> Workers {
        let mut config = self.config.clone();
        config.worker_id = Some(worker_id.to_owned());
        tune(&mut config);
        let roles = roles.to_vec();
        let (trigger, own) = Shutdown::new();
        let mut app_shutdown = self.shutdown.clone();
        let mut own_wait = own.clone();
        // Either the app's shutdown or this handle's stops the workers.
        let (merged_trigger, merged) = Shutdown::new();
        tokio::spawn(async move {
            tokio::select! {
                () = app_shutdown.wait() => {}
                () = own_wait.wait() => {}
            }
            merged_trigger.trigger();
        });
        let pool = self.db.pool.clone();
        let task = tokio::spawn(async move {
            jet_worker::run_roles(pool, &config, &roles, Default::default(), merged).await
        });
        Workers { trigger, task }
    }

    /// Bootstraps a tenant titled `title` with an admin API key.
    pub async fn admin(&self, title: &str) -> Admin {
        let raw = bootstrap(&self.db.pool, title, None)
            .await
            .expect("bootstrap");
        Admin {
            tenant_id: raw.tenant.tenant_id,
            auth: api_key(raw.api_key.expose()),
            raw,
        }
    }

    /// Sends a request with an optional `Authorization` value and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        Resp {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, auth: &str) -> Resp {
        self.call("GET", path, Some(auth), None).await
    }

    pub async fn post(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.call("POST", path, Some(auth), Some(body)).await
    }

    pub async fn patch(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.call("PATCH", path, Some(auth), Some(body)).await
    }

    pub async fn put(&self, path: &str, auth: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(auth), Some(body)).await
    }

    pub async fn delete(&self, path: &str, auth: &str) -> Resp {
        self.call("DELETE", path, Some(auth), None).await
    }

    /// A user row whose JWT subject is `firebase_id`.
    pub async fn user(&self, firebase_id: &str, email: &str) -> UserId {
        let mut conn = self.db.pool.acquire().await.expect("conn");
        jet_shared::user::insert(&mut conn, firebase_id, email, None, None)
            .await
            .expect("insert user")
            .user_id
    }

    /// Makes `user` a member of `tenant` with the membership role `role`.
    pub async fn member(&self, tenant: TenantId, user: UserId, role: &str) {
        sqlx::query(r#"INSERT INTO "tblUsersTenantsRelationship" ("tenantID", "userID", "role") VALUES ($1, $2, $3)"#)
            .bind(tenant)
            .bind(user)
            .bind(role)
            .execute(&self.db.pool)
            .await
            .expect("insert membership");
    }

    /// Creates a role via the API and returns its id.
    pub async fn role(&self, admin: &Admin, title: &str, permissions: &[&str]) -> String {
        self.role_with_assets(admin, title, permissions, &[]).await
    }

    /// Creates a role with general permissions and asset permissions given as
    /// `(resourceType, resourceID, action)`; returns its id.
    pub async fn role_with_assets(
        &self,
        admin: &Admin,
        title: &str,
        permissions: &[&str],
        assets: &[(&str, &str, &str)],
    ) -> String {
        let assets: Vec<serde_json::Value> = assets
            .iter()
            .map(|(kind, id, action)| serde_json::json!({"resourceType": kind, "resourceID": id, "action": action}))
            .collect();
        let resp = self
            .post(
                &format!("/api/v1/tenants/{}/roles", admin.tenant_id),
                &admin.auth,
                serde_json::json!({"roleTitle": title, "permissions": permissions, "assetPermissions": assets}),
            )
            .await;
        assert_eq!(resp.status, 201, "create role: {}", resp.body);
        resp.str("roleID")
    }

    /// Creates an API key with the given roles via the API; returns `(apiKeyID, auth value)`.
    pub async fn key_with_roles(
        &self,
        admin: &Admin,
        title: &str,
        role_ids: &[&str],
    ) -> (String, String) {
        let resp = self
            .post(
                &format!("/api/v1/tenants/{}/apikeys", admin.tenant_id),
                &admin.auth,
                serde_json::json!({"apiKeyTitle": title, "roleIDs": role_ids}),
            )
            .await;
        assert_eq!(resp.status, 201, "create key: {}", resp.body);
        (resp.str("apiKeyID"), api_key(&resp.str("apiKey")))
    }
}
