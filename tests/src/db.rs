//! A fresh database per test, cloned from a template that is migrated once per schema.
//! When a test ends its database must hold no stuck instance (`jet_ops.stuck_instances`), and
//! every instance's kept context must equal the fold of its log: the checks run as the
//! database is dropped, so every test that runs workflows makes them.

use sqlx::{Connection, PgConnection, PgPool};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The server tests run against (`jet test` sets it).
#[allow(clippy::disallowed_methods)] // test harness configuration
pub fn server_url() -> String {
    std::env::var("JET_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("JET_TEST_DATABASE_URL is not set: run the tests with `cargo run -p jet -- test`")
    })
}

/// The test server's URL with its database name replaced.
pub fn url_for(database: &str) -> String {
    with_database(&server_url(), database)
}

/// `server` with its database name replaced.
fn with_database(server: &str, database: &str) -> String {
    let (base, _) = server.rsplit_once('/').expect("a database URL has a path");
    format!("{base}/{database}")
}

/// A database of its own, dropped when the test ends.
pub struct TestDb {
    /// Pool on the test database.
    pub pool: PgPool,
    /// Its name.
    pub name: String,
    /// The server's URL (any database on it); the shared test server unless given.
    server: String,
    /// Set by a test that builds a stuck instance on purpose.
    stuck_allowed: AtomicBool,
}

impl TestDb {
    /// A migrated database (our schema, apalis's, the permission catalogue).
    pub async fn new() -> Self {
        let template = template().await;
        Self::create(Some(&template)).await
    }

    /// A database with no schema at all.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    /// A database migrated from scratch on another server (a private cluster a test can
    /// restart), given by the URL of any database on it.
    pub async fn on_server(server: &str) -> Self {
        let db = Self::create_on(server.to_owned(), None).await;
        jet_shared::db::migrate(&db.pool)
            .await
            .expect("migrate the database");
        db
    }

    async fn create(template: Option<&str>) -> Self {
        Self::create_on(server_url(), template).await
    }

    async fn create_on(server: String, template: Option<&str>) -> Self {
        let name = format!("jet_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server)
            .await
            .expect("connect to the test server");
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let pool = jet_shared::db::connect(&with_database(&server, &name), 10)
            .await
            .expect("connect to test database");
        Self {
            pool,
            name,
            server,
            stuck_allowed: AtomicBool::new(false),
        }
    }

    /// Skips the stuck-instance check at the end of this test (for tests of the view itself,
    /// or of rows written without the engine).
    pub fn allow_stuck_instances(&self) {
        self.stuck_allowed.store(true, Ordering::Relaxed);
    }

    /// The ids of RUNNING instances with nothing runnable and nothing waiting.
    pub async fn stuck_instances(&self) -> Vec<String> {
        stuck_instances(&self.pool).await
    }

    /// The database's connection URL.
    pub fn url(&self) -> String {
        with_database(&self.server, &self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        // A test that failed already says why; the checks would only bury that.
        let healthy = !std::thread::panicking();
        let check_stuck = healthy && !self.stuck_allowed.load(Ordering::Relaxed);
        // Drop runs inside the test's runtime; do the async work on a thread of its own. The
        // stuck check reads committed state only, so workers still running cannot fool it:
        // every engine transaction leaves its instance with work, a wait, or ended.
        let (stuck, drifted) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let (mut stuck, mut drifted) = (Vec::new(), Vec::new());
                if healthy
                    && let Ok(pool) =
                        jet_shared::db::connect(&with_database(&server, &name), 1).await
                {
                    if check_stuck {
                        stuck = stuck_instances(&pool).await;
                    }
                    drifted = context_drift(&pool).await;
                    pool.close().await;
                }
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await;
                }
                (stuck, drifted)
            })
        })
        .join()
        .unwrap_or_default();
        assert!(
            stuck.is_empty(),
            "the test left RUNNING instances with nothing runnable and nothing waiting \
             (jet_ops.stuck_instances): {stuck:?}"
        );
        assert!(
            drifted.is_empty(),
            "the kept context of these instances differs from the fold of their log: {drifted:?}"
        );
    }
}

/// `jet_ops.stuck_instances` of a database; none when it cannot be read (a database without
/// our schema, `TestDb::empty`).
async fn stuck_instances(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT instance_id::text FROM jet_ops.stuck_instances ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

/// Instances whose kept context (`tblWorkflowInstanceContext`) is not the fold of their log,
/// each with the keys that differ; none when the tables cannot be read (no schema).
pub async fn context_drift(pool: &PgPool) -> Vec<String> {
    let rows: Vec<(uuid::Uuid, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        r#"SELECT i."instanceID",
                  COALESCE((SELECT jsonb_agg(l."payload" ORDER BY l."logID") FROM "tblWorkflowInstanceLogs" l
                            WHERE l."instanceID" = i."instanceID"
                              AND l."eventType" IN ('INPUT_SET', 'NODE_COMPLETED', 'SYSTEM_SET')), '[]'),
                  COALESCE((SELECT jsonb_object_agg(c."key", c."value") FROM "tblWorkflowInstanceContext" c
                            WHERE c."instanceID" = i."instanceID"), '{}')
           FROM "tblWorkflowInstances" i"#,
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .filter_map(|(id, payloads, kept)| {
            let folded = jet_shared::workflow::context::fold(payloads.as_array()?.iter());
            let (folded, kept) = (folded.as_object()?, kept.as_object()?);
            let mut keys: Vec<&String> = folded
                .keys()
                .chain(kept.keys())
                .filter(|k| folded.get(*k) != kept.get(*k))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            (!keys.is_empty()).then(|| format!("{id}: {keys:?}"))
        })
        .collect()
}

/// The template's name hashes the migrations, so a schema change gets a new template.
async fn template() -> String {
    static NAME: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    NAME.get_or_init(|| async {
        let name = format!("jet_template_{}", schema_fingerprint());
        let mut admin = PgConnection::connect(&server_url())
            .await
            .expect("connect to the test server");
        // Test binaries run in parallel: one migrates the template, the others wait here.
        sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
            .bind(&name)
            .execute(&mut admin)
            .await
            .expect("lock");
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .expect("query pg_database");
        if !exists {
            let building = format!("{name}_building");
            let drop = format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await
                .expect("drop stale template");
            let create = format!("CREATE DATABASE \"{building}\"");
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
                .expect("create template");
            let pool = jet_shared::db::connect(&url_for(&building), 2)
                .await
                .expect("connect to template");
            jet_shared::db::migrate(&pool)
                .await
                .expect("migrate template");
            pool.close().await;
            // Renamed only when complete, so a crash mid-migration never leaves a bad template.
            let rename = format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"");
            sqlx::query(sqlx::AssertSqlSafe(rename))
                .execute(&mut admin)
                .await
                .expect("publish template");
        }
        sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(&name)
            .execute(&mut admin)
            .await
            .expect("unlock");
        name
    })
    .await
    .clone()
}

fn schema_fingerprint() -> String {
    static FP: OnceLock<String> = OnceLock::new();
    FP.get_or_init(|| {
        let mut text = String::new();
        for m in jet_shared::db::MIGRATOR.iter() {
            text.push_str(&m.version.to_string());
            text.push_str(&hex::encode(&*m.checksum));
        }
        // The apalis schema is versioned by its crate; its migrations are fixed per version.
        let digest = jet_shared::crypto::sha256_hex(text.as_bytes());
        digest[..16].to_owned()
    })
    .clone()
}
