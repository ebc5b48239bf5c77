//! CDC listeners against a real `wal_level = logical` server: the source is a database of its
//! own, the platform a fresh test database. `provision` and `run` are driven directly, as the
//! API and a holder call them; aborting the task that runs `run` is a crash of its holder.
//!
//! Under `jet test` the test server is a logical cluster and is used as it is; on a server
//! with another `wal_level` (the machine's own, for a quick targeted run) each test starts a
//! private logical cluster instead.

use jet_shared::datasource::DataRuntime;
use jet_shared::datasource::network::DenyList;
use jet_shared::listener::cdc;
use jet_shared::listener::config::{CdcConfig, Kind};
use jet_shared::listener::model::{self, Listener};
use jet_shared::listener::source::{Reporter, SourceContext, SourceError};
use jet_tests::cluster::OwnCluster;
use jet_tests::db::{self, TestDb};
use jet_tests::wait::eventually;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// `server`'s URL with its database name replaced.
fn with_database(server: &str, database: &str) -> String {
    let (base, _) = server.rsplit_once('/').expect("a database URL has a path");
    format!("{base}/{database}")
}

/// Runs SQL on `url` from a short-lived connection.
async fn exec(url: &str, sql: &str) {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The CDC source: a database of its own on the logical server. Dropping it drops its slots
/// first (PostgreSQL refuses to drop a database that has one).
struct SourceDb {
    pool: PgPool,
    name: String,
    server: String,
}

impl SourceDb {
    async fn create(server: &str) -> Self {
        let name = format!("cdc_source_{}", Uuid::new_v4().simple());
        exec(server, &format!("CREATE DATABASE \"{name}\"")).await;
        // Sources commit durably, as in production: the test cluster defaults to
        // synchronous_commit = off, which would delay what logical decoding can see.
        exec(
            server,
            &format!("ALTER DATABASE \"{name}\" SET synchronous_commit = on"),
        )
        .await;
        let pool = PgPool::connect(&with_database(server, &name))
            .await
            .expect("connect to the source");
        Self {
            pool,
            name,
            server: server.to_owned(),
        }
    }

    fn url(&self) -> String {
        with_database(&self.server, &self.name)
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `confirmed_flush_lsn` of `slot` as a number, `None` when the slot does not exist.
    async fn confirmed(&self, slot: &str) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(&self.pool)
        .await
        .expect("read the slot")
    }

    async fn publication_exists(&self, publication: &str) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(publication)
            .fetch_one(&self.pool)
            .await
            .expect("read publications")
    }
}

impl Drop for SourceDb {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let Ok(mut admin) = PgConnection::connect(&server).await else {
                    return;
                };
                for _ in 0..50 {
                    let dropped = sqlx::query(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                         WHERE database = $1 AND active_pid IS NOT NULL",
                    )
                    .bind(&name)
                    .execute(&mut admin)
                    .await
                    .and(
                        sqlx::query(
                            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                             WHERE database = $1",
                        )
                        .bind(&name)
                        .execute(&mut admin)
                        .await,
                    );
                    if dropped.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await;
            });
        })
        .join();
    }
}

/// A logical server: the test server when it is one, otherwise a private cluster.
async fn logical_server() -> (String, Option<OwnCluster>) {
    let server = db::server_url();
    let mut conn = PgConnection::connect(&server)
        .await
        .expect("connect to the test server");
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&mut conn)
        .await
        .expect("wal_level");
    if wal_level == "logical" {
        return (server, None);
    }
    let own = OwnCluster::start();
    let url = own.cluster.url("postgres");
    (url, Some(own))
}

/// One CDC listener under test: platform and source databases, the listener's rows, and what
/// a holder would hand its source. Fields drop in order, the cluster last.
struct Cdc {
    platform: TestDb,
    source: SourceDb,
    data: Arc<DataRuntime>,
    options: Value,
    listener: Listener,
    config: CdcConfig,
    reporter: Reporter,
    slot: String,
    publication: String,
    _cluster: Option<OwnCluster>,
}

impl Cdc {
    /// The platform and source databases; `schema` runs on the source; the listener row holds
    /// `config`.
    async fn new(schema: &str, config: Value) -> Self {
        let (server, cluster) = logical_server().await;
        let platform = match cluster {
            Some(_) => TestDb::on_server(&server).await,
            None => TestDb::new().await,
        };
        let source = SourceDb::create(&server).await;
        source.exec(schema).await;
        let options = json!({"connectionString": source.url()});
        let tenant: Uuid = sqlx::query_scalar(
            r#"INSERT INTO "tblTenants" ("tenantTitle") VALUES ('CDC') RETURNING "tenantID""#,
        )
        .fetch_one(&platform.pool)
        .await
        .expect("tenant");
        let datasource: Uuid = sqlx::query_scalar(
            r#"INSERT INTO "tblDatasources" ("datasourceTitle", "datasourceType", "tenantID", "datasourceOptions", "datasourceTags")
               VALUES ('source', 'postgresql', $1, '{}', '{}') RETURNING "datasourceID""#,
        )
        .bind(tenant)
        .fetch_one(&platform.pool)
        .await
        .expect("datasource");
        let listener_id: Uuid = sqlx::query_scalar(
            r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerType", "listenerConfig", "status")
               VALUES ($1, $2, 'orders', 'postgresql', $3, 'active') RETURNING "listenerID""#,
        )
        .bind(tenant)
        .bind(datasource)
        .bind(&config)
        .fetch_one(&platform.pool)
        .await
        .expect("listener");
        let listener = model::get_any(&platform.pool, listener_id)
            .await
            .expect("read the listener")
            .expect("the listener exists");
        let Kind::Cdc(config) = Kind::parse("postgresql", &config).expect("a valid config") else {
            panic!("not a CDC config");
        };
        let (slot, publication) = jet_shared::listener::names(listener_id);
        Self {
            platform,
            source,
            data: Arc::new(DataRuntime::new(None, DenyList::allow_all())),
            options,
            listener,
            config,
            reporter: Reporter::default(),
            slot,
            publication,
            _cluster: cluster,
        }
    }

    async fn provision(&self) -> jet_shared::Result<()> {
        self.provision_with(&self.config).await
    }

    async fn provision_with(&self, config: &CdcConfig) -> jet_shared::Result<()> {
        let mut conn = self.platform.pool.acquire().await.expect("platform");
        cdc::provision(
            &mut conn,
            &self.data,
            &self.options,
            self.listener.listener_id,
            config,
        )
        .await
    }

    fn context(&self) -> SourceContext {
        SourceContext {
            platform: self.platform.pool.clone(),
            data: self.data.clone(),
            listener: self.listener.clone(),
            kind: Kind::Cdc(self.config.clone()),
            datasource_type: "postgresql".into(),
            datasource_options: self.options.clone(),
            reporter: self.reporter.clone(),
        }
    }

    /// Runs the source once in a task of its own, as a holder does.
    fn spawn(&self) -> JoinHandle<Result<Infallible, SourceError>> {
        let (ctx, config) = (self.context(), self.config.clone());
        tokio::spawn(async move { cdc::run(&ctx, &config).await })
    }

    /// Runs the source in a task and restarts it after a transient failure, as a holder does.
    fn supervise(&self) -> JoinHandle<SourceError> {
        let (ctx, config) = (self.context(), self.config.clone());
        tokio::spawn(async move {
            loop {
                match cdc::run(&ctx, &config).await {
                    Err(SourceError::Transient(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(fatal) => return fatal,
                    Ok(never) => match never {},
                }
            }
        })
    }

    /// Inbox rows in arrival order: `(dedupeKey, rawEvent)`.
    async fn inbox(&self) -> Vec<(String, Value)> {
        sqlx::query_as(
            r#"SELECT "dedupeKey", "rawEvent" FROM "tblListenerInbox" WHERE "listenerID" = $1
               ORDER BY "receivedAt", "eventID""#,
        )
        .bind(self.listener.listener_id)
        .fetch_all(&self.platform.pool)
        .await
        .expect("read the inbox")
    }

    async fn wait_for_events(&self, n: usize, secs: u64) -> Vec<(String, Value)> {
        eventually(secs, &format!("{n} inbox events"), || async {
            let rows = self.inbox().await;
            (rows.len() >= n).then_some(rows)
        })
        .await
    }

    async fn checkpoint(&self) -> String {
        sqlx::query_scalar(
            r#"SELECT "lsn"::text FROM "tblListenerCheckpoints" WHERE "listenerID" = $1"#,
        )
        .bind(self.listener.listener_id)
        .fetch_one(&self.platform.pool)
        .await
        .expect("checkpoint")
    }
}

const ORDERS: &str = "
    CREATE TABLE orders (id int PRIMARY KEY, qty bigint, paid boolean, doc jsonb, amount numeric,
                         note text, at timestamptz);
    ALTER TABLE orders REPLICA IDENTITY FULL;
    CREATE TABLE other (id int PRIMARY KEY);";

fn lsn_of(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_arrive_typed_with_old_rows_and_other_tables_stay_out() {
    let cdc = Cdc::new(ORDERS, json!({"mode": "cdc", "tables": ["public.orders"]})).await;
    cdc.provision().await.expect("provision");
    let task = cdc.spawn();
    cdc.source
        .exec(
            r#"INSERT INTO orders VALUES (1, 9007199254740993, true, '{"tags": ["a"], "n": 1.5}',
                                         12345678901234567890.123456789, NULL, '2026-12-01T10:00:00Z');
               INSERT INTO other VALUES (1);
               UPDATE orders SET paid = false, note = 'hi' WHERE id = 1;
               DELETE FROM orders WHERE id = 1;"#,
        )
        .await;
    let rows = cdc.wait_for_events(3, 20).await;
    assert_eq!(
        rows.len(),
        3,
        "one event per change, none for `other`: {rows:?}"
    );
    let events: Vec<&Value> = rows.iter().map(|(_, e)| e).collect();
    let inserted = json!({
        "id": 1, "qty": 9007199254740993_i64, "paid": true, "doc": {"tags": ["a"], "n": 1.5},
        "amount": "12345678901234567890.123456789", "note": null,
        "at": "2026-12-01 10:00:00+00"
    });
    assert_eq!(events[0]["op"], "INSERT");
    assert_eq!(
        (events[0]["schema"].as_str(), events[0]["table"].as_str()),
        (Some("public"), Some("orders"))
    );
    assert_eq!(events[0]["new"], inserted);
    assert_eq!(events[0]["old"], Value::Null);
    assert_eq!(events[1]["op"], "UPDATE");
    assert_eq!(
        events[1]["old"], inserted,
        "REPLICA IDENTITY FULL gives the whole old row"
    );
    assert_eq!(events[1]["new"]["paid"], false);
    assert_eq!(events[1]["new"]["note"], "hi");
    assert_eq!(events[2]["op"], "DELETE");
    assert_eq!(events[2]["new"], Value::Null);
    assert_eq!(events[2]["old"]["note"], "hi");
    // One source transaction (a multi-statement simple query): one commit LSN and xid, and
    // dedupe keys numbering its captured changes.
    let lsn = events[0]["lsn"].as_str().expect("lsn");
    for (index, (key, event)) in rows.iter().enumerate() {
        assert_eq!(event["lsn"], lsn);
        assert_eq!(event["xid"], events[0]["xid"]);
        assert!(event["xid"].as_u64().is_some(), "{event}");
        assert!(
            event["commitTime"]
                .as_str()
                .is_some_and(|t| t.starts_with("20")),
            "{event}"
        );
        assert_eq!(key, &format!("{lsn}/{index}"));
    }
    // The checkpoint is the last transaction's commit end LSN, and the slot follows it.
    let last = events[2]["lsn"].as_str().expect("lsn").to_owned();
    eventually(10, "the slot is advanced to the checkpoint", || async {
        let confirmed = cdc.source.confirmed(&cdc.slot).await?;
        (confirmed as u64 >= lsn_of(&last)).then_some(())
    })
    .await;
    assert_eq!(cdc.checkpoint().await, last);
    let report = cdc.reporter.get();
    assert!(report.connected);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_filter_and_reprovision_follows_the_config() {
    let cdc = Cdc::new(
        ORDERS,
        json!({"mode": "cdc", "tables": ["orders"], "operations": ["INSERT", "DELETE"]}),
    )
    .await;
    cdc.provision().await.expect("provision");
    let before = cdc.source.confirmed(&cdc.slot).await.expect("slot created");
    cdc.provision().await.expect("provision is idempotent");
    assert_eq!(
        cdc.source.confirmed(&cdc.slot).await,
        Some(before),
        "the slot is kept"
    );
    let task = cdc.spawn();
    cdc.source
        .exec(
            "INSERT INTO orders (id) VALUES (1); UPDATE orders SET qty = 2 WHERE id = 1;
             DELETE FROM orders WHERE id = 1; INSERT INTO orders (id) VALUES (2);",
        )
        .await;
    let rows = cdc.wait_for_events(3, 20).await;
    let ops: Vec<&str> = rows
        .iter()
        .map(|(_, e)| e["op"].as_str().expect("op"))
        .collect();
    assert_eq!(ops, ["INSERT", "DELETE", "INSERT"], "no UPDATE: {rows:?}");
    task.abort();

    // Re-provisioning with another config updates the publication in place.
    let Kind::Cdc(wider) = Kind::parse(
        "postgresql",
        &json!({"mode": "cdc", "tables": ["orders", "other"], "operations": ["UPDATE"]}),
    )
    .expect("config") else {
        panic!("not CDC");
    };
    cdc.provision_with(&wider).await.expect("re-provision");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
    )
    .bind(&cdc.publication)
    .fetch_all(&cdc.source.pool)
    .await
    .expect("publication tables");
    assert_eq!(tables, ["orders", "other"]);
    let (ins, upd): (bool, bool) =
        sqlx::query_as("SELECT pubinsert, pubupdate FROM pg_publication WHERE pubname = $1")
            .bind(&cdc.publication)
            .fetch_one(&cdc.source.pool)
            .await
            .expect("publication");
    assert_eq!((ins, upd), (false, true));
    assert!(
        cdc.source.confirmed(&cdc.slot).await.is_some(),
        "the slot is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_exactly_once_while_the_consumer_keeps_crashing() {
    const ROWS: i32 = 5000;
    let cdc = Cdc::new(
        "CREATE TABLE ledger (id int PRIMARY KEY, v text)",
        json!({"mode": "cdc", "tables": ["ledger"]}),
    )
    .await;
    cdc.provision().await.expect("provision");
    // The writer commits 1–5 rows per transaction, in id order.
    let pool = cdc.source.pool.clone();
    let writer = tokio::spawn(async move {
        let mut id = 1;
        while id <= ROWS {
            let n = (Uuid::new_v4().as_u128() % 5) as i32 + 1;
            let last = (id + n - 1).min(ROWS);
            sqlx::query(
                "INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series($1::int, $2::int) g",
            )
            .bind(id)
            .bind(last)
            .execute(&pool)
            .await
            .expect("write");
            id = last + 1;
            // Spread the writes over many consumer lifetimes.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut crashes = 0;
    while !writer.is_finished() {
        let consumer = cdc.supervise();
        let ms = 100 + (Uuid::new_v4().as_u128() % 200) as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        consumer.abort();
        let _ = consumer.await;
        crashes += 1;
    }
    writer.await.expect("writer");
    let during = cdc.inbox().await.len();
    assert!(during > 0, "the crashing consumers made progress");
    let consumer = cdc.supervise();
    let rows = cdc.wait_for_events(ROWS as usize, 120).await;
    consumer.abort();
    assert!(crashes >= 10, "the consumer crashed only {crashes} times");

    // The ledger: each primary key exactly once, each (LSN, index) exactly once, one
    // transaction per LSN, and LSNs in the order the writer committed.
    let mut by_id: BTreeMap<i64, usize> = BTreeMap::new();
    let mut keys = HashSet::new();
    let mut xid_of: HashMap<String, u64> = HashMap::new();
    let mut lsn_of_id: Vec<(i64, u64)> = Vec::new();
    for (key, event) in &rows {
        let id = event["new"]["id"].as_i64().expect("id");
        *by_id.entry(id).or_default() += 1;
        assert!(keys.insert(key.clone()), "duplicate dedupe key {key}");
        let lsn = event["lsn"].as_str().expect("lsn").to_owned();
        assert!(key.starts_with(&format!("{lsn}/")), "{key} vs {lsn}");
        let xid = event["xid"].as_u64().expect("xid");
        assert_eq!(
            *xid_of.entry(lsn.clone()).or_insert(xid),
            xid,
            "one xid per commit LSN"
        );
        assert_eq!(event["new"]["v"], format!("row {id}"));
        lsn_of_id.push((id, lsn_of(&lsn)));
    }
    let duplicates: Vec<_> = by_id.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        duplicates.is_empty(),
        "ids seen more than once: {duplicates:?}"
    );
    assert_eq!(by_id.len(), ROWS as usize);
    assert_eq!(by_id.keys().next(), Some(&1));
    assert_eq!(by_id.keys().last(), Some(&(ROWS as i64)));
    lsn_of_id.sort();
    assert!(
        lsn_of_id.windows(2).all(|w| w[0].1 <= w[1].1),
        "commit LSNs follow the writer's order"
    );
    let max_lsn = lsn_of_id.iter().map(|(_, l)| *l).max().expect("rows");
    assert_eq!(lsn_of(&cdc.checkpoint().await), max_lsn);
    println!(
        "exactly once over {crashes} consumer crashes ({during} events before the writer finished)"
    );
}

/// The state a crash between the platform commit and the slot advance leaves: the checkpoint
/// is past transactions the slot still has. They are skipped, and the slot catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_at_or_below_the_checkpoint_are_skipped_and_the_slot_catches_up() {
    let cdc = Cdc::new(ORDERS, json!({"mode": "cdc", "tables": ["orders"]})).await;
    cdc.provision().await.expect("provision");
    cdc.source.exec("INSERT INTO orders (id) VALUES (1)").await;
    let committed: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&cdc.source.pool)
        .await
        .expect("lsn");
    sqlx::query(
        r#"UPDATE "tblListenerCheckpoints" SET "lsn" = $2::pg_lsn WHERE "listenerID" = $1"#,
    )
    .bind(cdc.listener.listener_id)
    .bind(&committed)
    .execute(&cdc.platform.pool)
    .await
    .expect("move the checkpoint");
    assert!(cdc.source.confirmed(&cdc.slot).await.expect("slot") < lsn_of(&committed) as i64);

    let consumer = cdc.spawn();
    eventually(10, "the slot catches up with the checkpoint", || async {
        let confirmed = cdc.source.confirmed(&cdc.slot).await?;
        (confirmed as u64 >= lsn_of(&committed)).then_some(())
    })
    .await;
    cdc.source.exec("INSERT INTO orders (id) VALUES (2)").await;
    let rows = cdc.wait_for_events(1, 20).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].1["new"]["id"], 2,
        "row 1 was at or below the checkpoint"
    );
    consumer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_says_exactly_what_to_change() {
    let cdc = Cdc::new(ORDERS, json!({"mode": "cdc", "tables": ["orders"]})).await;
    let mut conn = cdc.platform.pool.acquire().await.expect("platform");

    // The machine's own server runs wal_level = replica.
    let system = "postgres://postgres@127.0.0.1:5432/postgres";
    let wal_level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&mut PgConnection::connect(system).await.expect("system server"))
        .await
        .expect("wal_level");
    assert_eq!(
        wal_level, "replica",
        "this test needs the machine's server at wal_level = replica"
    );
    let err = cdc::provision(
        &mut conn,
        &cdc.data,
        &json!({"connectionString": system}),
        cdc.listener.listener_id,
        &cdc.config,
    )
    .await
    .expect_err("replica is refused");
    let message = err.to_string();
    assert!(matches!(err, jet_shared::Error::Invalid(_)), "{err:?}");
    assert!(
        message.contains("wal_level = replica")
            && message.contains("set wal_level = logical in postgresql.conf and restart"),
        "{message}"
    );

    // A role without REPLICATION; its password never shows.
    let role = format!("cdc_plain_{}", &Uuid::new_v4().simple().to_string()[..8]);
    cdc.source
        .exec(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw-s3cret-xyz'"
        ))
        .await;
    let url = cdc
        .source
        .url()
        .replacen("postgres@", &format!("{role}:pw-s3cret-xyz@"), 1);
    let err = cdc::provision(
        &mut conn,
        &cdc.data,
        &json!({"connectionString": url}),
        cdc.listener.listener_id,
        &cdc.config,
    )
    .await
    .expect_err("a role without REPLICATION is refused");
    let message = err.to_string();
    cdc.source.exec(&format!("DROP ROLE {role}")).await;
    assert!(matches!(err, jet_shared::Error::Invalid(_)), "{err:?}");
    assert!(
        message.contains(&format!("ALTER ROLE \"{role}\" REPLICATION")),
        "{message}"
    );
    assert!(!message.contains("pw-s3cret-xyz"), "{message}");

    // A table that does not exist is named.
    let Kind::Cdc(missing) = Kind::parse(
        "postgresql",
        &json!({"mode": "cdc", "tables": ["orders", "public.nope"]}),
    )
    .expect("config") else {
        panic!("not CDC");
    };
    let err = cdc
        .provision_with(&missing)
        .await
        .expect_err("unknown table");
    let message = err.to_string();
    assert!(
        message.contains("table public.nope does not exist"),
        "{message}"
    );

    // None of these created anything.
    assert_eq!(cdc.source.confirmed(&cdc.slot).await, None);
    assert!(!cdc.source.publication_exists(&cdc.publication).await);
    let checkpoints: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblListenerCheckpoints""#)
        .fetch_one(&cdc.platform.pool)
        .await
        .expect("count");
    assert_eq!(checkpoints, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_drops_slot_and_publication_and_a_run_then_stops_for_good() {
    let cdc = Cdc::new(ORDERS, json!({"mode": "cdc", "tables": ["orders"]})).await;
    cdc.provision().await.expect("provision");
    let checkpoint: String = cdc.checkpoint().await;
    assert_ne!(
        checkpoint, "0/0",
        "a new slot sets the checkpoint to its consistent point"
    );
    let consumer = cdc.supervise();
    cdc.source.exec("INSERT INTO orders (id) VALUES (1)").await;
    cdc.wait_for_events(1, 20).await;

    cdc::deprovision(&cdc.data, &cdc.options, cdc.listener.listener_id)
        .await
        .expect("deprovision while the consumer polls");
    assert_eq!(cdc.source.confirmed(&cdc.slot).await, None);
    assert!(!cdc.source.publication_exists(&cdc.publication).await);
    cdc::deprovision(&cdc.data, &cdc.options, cdc.listener.listener_id)
        .await
        .expect("deprovision is idempotent");

    let fatal = tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer stops")
        .expect("the consumer task");
    let SourceError::Fatal(message) = fatal else {
        panic!("not fatal: {fatal:?}");
    };
    assert!(message.contains("activate the listener again"), "{message}");
    assert!(message.contains(&cdc.slot), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_wal_over_the_limit_drops_the_slot_and_stops_with_what_was_lost() {
    let cdc = Cdc::new(
        ORDERS,
        json!({"mode": "cdc", "tables": ["orders"], "maxRetainedWalMb": 1}),
    )
    .await;
    cdc.provision().await.expect("provision");
    let checkpoint = cdc.checkpoint().await;
    // Several MB of WAL while no consumer runs.
    cdc.source
        .exec(
            "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g",
        )
        .await;
    let outcome = tokio::time::timeout(Duration::from_secs(20), cdc.spawn())
        .await
        .expect("the source stops")
        .expect("the task");
    let Err(SourceError::Fatal(message)) = outcome else {
        panic!("not fatal: {outcome:?}");
    };
    assert!(message.contains("maxRetainedWalMb of 1"), "{message}");
    assert!(message.contains("the slot was dropped"), "{message}");
    assert!(
        message.contains(&format!("after LSN {checkpoint} were not captured")),
        "{message}"
    );
    assert!(
        message.contains("Activating the listener again creates a new slot"),
        "{message}"
    );
    assert_eq!(
        cdc.source.confirmed(&cdc.slot).await,
        None,
        "the slot is gone"
    );
    let report = cdc.reporter.get();
    assert!(
        report.retained_wal_bytes.is_some_and(|b| b > 1 << 20),
        "{report:?}"
    );

    // Activating again creates a new slot from now on.
    cdc.provision().await.expect("provision again");
    assert!(cdc.source.confirmed(&cdc.slot).await.is_some());
    assert!(lsn_of(&cdc.checkpoint().await) > lsn_of(&checkpoint));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_moves_the_slot_of_an_idle_source() {
    let cdc = Cdc::new(
        ORDERS,
        json!({"mode": "cdc", "tables": ["orders"], "heartbeatSeconds": 1}),
    )
    .await;
    cdc.provision().await.expect("provision");
    let start = cdc.source.confirmed(&cdc.slot).await.expect("slot");
    let consumer = cdc.spawn();
    let moved = eventually(15, "the idle slot's confirmed_flush_lsn moves", || async {
        let now = cdc.source.confirmed(&cdc.slot).await?;
        (now > start).then_some(now)
    })
    .await;
    // And keeps moving with no change on the source.
    eventually(15, "it moves again", || async {
        let now = cdc.source.confirmed(&cdc.slot).await?;
        (now > moved).then_some(())
    })
    .await;
    assert!(cdc.inbox().await.is_empty(), "heartbeats are not events");
    let report = cdc.reporter.get();
    assert!(
        report.connected && report.retained_wal_bytes.is_some() && report.lag_bytes.is_some(),
        "{report:?}"
    );
    consumer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_too_large_for_the_inbox_is_parked_and_the_stream_goes_on() {
    let cdc = Cdc::new(ORDERS, json!({"mode": "cdc", "tables": ["orders"]})).await;
    cdc.provision().await.expect("provision");
    let consumer = cdc.spawn();
    cdc.source
        .exec("INSERT INTO orders (id, note) VALUES (1, repeat('x', 1200000)); INSERT INTO orders (id) VALUES (2);")
        .await;
    let rows = cdc.wait_for_events(1, 20).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1["new"]["id"], 2, "the next change still arrives");
    let (source, source_id, status, max_retries, payload, error): (String, Uuid, String, i32, Value, String) =
        sqlx::query_as(
            r#"SELECT "source", "sourceID", "status", "maxRetries", "payload", "error" FROM "tblEventDLQ"
               WHERE "tenantID" = $1"#,
        )
        .bind(cdc.listener.tenant_id)
        .fetch_one(&cdc.platform.pool)
        .await
        .expect("one parked change");
    assert_eq!(
        (source.as_str(), source_id, status.as_str(), max_retries),
        ("cdc", cdc.listener.listener_id, "PARKED", 0)
    );
    assert_eq!(payload["new"]["id"], 1);
    assert!(
        payload["new"]["note"]["omittedBytes"]
            .as_u64()
            .is_some_and(|n| n > 1_200_000),
        "{payload}"
    );
    assert_eq!(payload["table"], "orders");
    assert_eq!(payload["op"], "INSERT");
    assert!(
        payload["lsn"].is_string() && payload["xid"].is_u64(),
        "{payload}"
    );
    assert!(error.contains("bytes of JSON"), "{error}");
    consumer.abort();
}

/// Not a benchmark: measures, once, how long a single-row commit on the source takes to be
/// committed in the inbox (source commit time → inbox `receivedAt`, one clock), and what an
/// idle listener costs the source. Prints the numbers; asserts only that every row arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_to_inbox_latency_is_measured() {
    const COMMITS: usize = 300;
    let cdc = Cdc::new(ORDERS, json!({"mode": "cdc", "tables": ["orders"]})).await;
    cdc.provision().await.expect("provision");
    let consumer = cdc.spawn();
    eventually(10, "the stream is up", || async {
        cdc.reporter.get().connected.then_some(())
    })
    .await;
    for id in 1..=COMMITS {
        cdc.source
            .exec(&format!("INSERT INTO orders (id) VALUES ({id})"))
            .await;
        let pause = (Uuid::new_v4().as_u128() % 20) as u64;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    cdc.wait_for_events(COMMITS, 30).await;
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        r#"SELECT EXTRACT(EPOCH FROM ("receivedAt" - ("rawEvent"->>'commitTime')::timestamptz))::float8 * 1000
           FROM "tblListenerInbox" WHERE "listenerID" = $1"#,
    )
    .bind(cdc.listener.listener_id)
    .fetch_all(&cdc.platform.pool)
    .await
    .expect("latencies");
    assert_eq!(latencies.len(), COMMITS);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];

    // Idle cost: CPU of the source backend serving the listener over a quiet period.
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND application_name = 'jet-fleet' LIMIT 1",
    )
    .fetch_one(&cdc.source.pool)
    .await
    .expect("the listener's backend");
    let cpu_ticks = |pid: i32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let (backend_before, self_before, t0) = (
        cpu_ticks(pid),
        cpu_ticks(std::process::id() as i32),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (backend_after, self_after) = (cpu_ticks(pid), cpu_ticks(std::process::id() as i32));
    let secs = t0.elapsed().as_secs_f64();
    let percent = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}%", (b - a) as f64 / 100.0 / secs * 100.0),
        _ => "n/a".into(),
    };
    println!(
        "CDC commit → inbox over {COMMITS} single-row commits: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         idle for {secs:.1} s: source backend CPU {}, test process CPU {}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1],
        percent(backend_before, backend_after),
        percent(self_before, self_after),
    );
    consumer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_listeners_slot_over_its_limit_is_dropped_and_the_listener_says_why() {
    let cdc = Cdc::new(
        ORDERS,
        json!({"mode": "cdc", "tables": ["orders"], "maxRetainedWalMb": 1}),
    )
    .await;
    cdc.provision().await.expect("provision");
    let pool = &cdc.platform.pool;
    sqlx::query(r#"UPDATE "tblListeners" SET "status" = 'inactive' WHERE "listenerID" = $1"#)
        .bind(cdc.listener.listener_id)
        .execute(pool)
        .await
        .expect("deactivate");
    sqlx::query(r#"UPDATE "tblDatasources" SET "datasourceOptions" = $1"#)
        .bind(&cdc.options)
        .execute(pool)
        .await
        .expect("options");
    let data = DataRuntime::new(
        Some(jet_shared::crypto::VaultKey::generate()),
        DenyList::allow_all(),
    );
    let found = cdc::guard_paused_slots(pool, &data).await.expect("check");
    assert!(
        matches!(found.as_slice(), [(id, cdc::Paused::Within(Some(_)))] if *id == cdc.listener.listener_id),
        "within the limit while little WAL is retained: {found:?}"
    );
    cdc.source
        .exec(
            "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g",
        )
        .await;
    let found = cdc::guard_paused_slots(pool, &data).await.expect("check");
    assert!(
        matches!(found.as_slice(), [(_, cdc::Paused::Dropped(bytes))] if *bytes > 1 << 20),
        "{found:?}"
    );
    assert_eq!(
        cdc.source.confirmed(&cdc.slot).await,
        None,
        "the slot is gone"
    );
    let (status, error): (String, Option<String>) = sqlx::query_as(
        r#"SELECT "status", "lastError" FROM "tblListeners" WHERE "listenerID" = $1"#,
    )
    .bind(cdc.listener.listener_id)
    .fetch_one(pool)
    .await
    .expect("listener");
    assert_eq!(status, "inactive");
    let error = error.expect("lastError");
    assert!(
        error.contains("while this listener was deactivated")
            && error.contains("maxRetainedWalMb of 1"),
        "{error}"
    );
    // Activating again creates a new slot.
    cdc.provision().await.expect("provision again");
    assert!(cdc.source.confirmed(&cdc.slot).await.is_some());
}

/// Inserts, updates and deletes on the source reach workflows through the whole system: the
/// listener is created and activated over HTTP and held by real `jet-worker` processes. Then
/// the holder is killed with SIGKILL again and again while a writer inserts 5,000 rows;
/// afterwards every row produced exactly one event (ledger by primary key and commit LSN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_start_one_workflow_each_while_holders_are_killed() {
    use jet_tests::TestApp;
    use jet_tests::bins::Running;
    use jet_tests::flow::Flow;

    let (server, _cluster) = logical_server().await;
    let app = match _cluster {
        Some(_) => TestApp::spawn_on(TestDb::on_server(&server).await).await,
        None => TestApp::spawn().await,
    };
    let a = app.admin("cdc-e2e").await;
    let source = SourceDb::create(&server).await;
    source
        .exec("CREATE TABLE orders (id int PRIMARY KEY, total numeric, paid boolean); ALTER TABLE orders REPLICA IDENTITY FULL; CREATE TABLE other (id int)")
        .await;
    let base = format!("/api/v1/tenants/{}", a.tenant_id);
    let ds = app
        .post(
            &format!("{base}/datasources"),
            &a.auth,
            json!({"datasourceTitle": "shop", "datasourceType": "postgresql",
                   "datasourceOptions": {"connectionOption": "connectionString", "connectionString": source.url()}}),
        )
        .await;
    assert_eq!(ds.status, 201, "{}", ds.body);
    let workflow = app
        .save(
            &a,
            &Flow::new()
                .node("start", "start", json!({}))
                .node("end", "end", json!({}))
                .edge("start", "end"),
        )
        .await;
    let listener = app
        .post(
            &format!("{base}/listeners"),
            &a.auth,
            json!({"listenerTitle": "orders", "listenerType": "postgresql", "datasourceID": ds.str("datasourceID"),
                   "listenerConfig": {"mode": "cdc", "tables": ["public.orders"]}}),
        )
        .await;
    assert_eq!(listener.status, 201, "{}", listener.body);
    let id = listener.str("listenerID");
    let action = app
        .post(
            &format!("{base}/listeners/{id}/actions"),
            &a.auth,
            json!({"actionType": "trigger_workflow", "orderIndex": 0,
                   "actionConfig": {"workflowID": workflow, "inputValues": {"op": "{{event.op}}", "new": "{{event.new}}", "old": "{{event.old}}"}}}),
        )
        .await;
    assert_eq!(action.status, 201, "{}", action.body);
    let activated = app
        .post(
            &format!("{base}/listeners/{id}/activate"),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(activated.status, 200, "{}", activated.body);

    let url = app.db.url();
    let start = |n: usize| {
        Running::start(
            "jet-worker",
            &["--roles", "listeners"],
            &std::env::temp_dir(),
            &[
                ("DATABASE_URL", url.as_str()),
                ("JET_WORKER_ID", &format!("cdc-holder-{n}")),
                ("VAULT_ENCRYPTION_KEY", jet_tests::app::TEST_VAULT_KEY),
                ("JET_DATASOURCE_DENY_HOSTS", "none"),
                ("JET_LOG", "warn"),
            ],
        )
    };
    let mut workers = [start(0), start(1)];
    let holder = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            r#"SELECT "workerID" FROM "tblListenerHolds" WHERE "connectedAt" IS NOT NULL"#,
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    };
    eventually(30, "a worker holds the CDC listener", || {
        holder(app.db.pool.clone())
    })
    .await;

    // One insert, update and delete, and a table the listener does not capture.
    source
        .exec("INSERT INTO orders VALUES (1, 10.50, false); UPDATE orders SET paid = true WHERE id = 1; DELETE FROM orders WHERE id = 1; INSERT INTO other VALUES (1)")
        .await;
    let inputs = |pool: PgPool, wf: String| async move {
        sqlx::query_scalar::<_, Value>(
            r#"SELECT l."payload" -> 'input' FROM "tblWorkflowInstances" i
               JOIN "tblWorkflowInstanceLogs" l ON l."instanceID" = i."instanceID" AND l."eventType" = 'INPUT_SET'
               WHERE i."workflowID"::text = $1 ORDER BY i."createdAt", i."instanceID""#,
        )
        .bind(wf)
        .fetch_all(&pool)
        .await
        .expect("inputs")
    };
    let first = eventually(30, "three instances", || async {
        let rows = inputs(app.db.pool.clone(), workflow.clone()).await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    // The pipeline runs a listener's events concurrently, so instances may be created in
    // another order than the changes were committed.
    let by_op = |op: &str| {
        let found: Vec<&Value> = first.iter().filter(|i| i["op"] == op).collect();
        assert_eq!(found.len(), 1, "one {op} in {first:?}");
        found[0].clone()
    };
    assert_eq!(
        by_op("INSERT")["new"],
        json!({"id": 1, "total": "10.50", "paid": false})
    );
    let update = by_op("UPDATE");
    assert_eq!(
        (&update["old"]["paid"], &update["new"]["paid"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(by_op("DELETE")["old"]["id"], 1);

    // From here on the ledger is the inbox: drop the action so 5,000 changes are cheap to run.
    let action_id = action.str("actionID");
    let removed = app
        .delete(
            &format!("{base}/listeners/{id}/actions/{action_id}"),
            &a.auth,
        )
        .await;
    assert!(removed.status < 300, "{}", removed.body);

    // A writer inserts 5,000 rows while the holder is killed (SIGKILL) and restarted, over and
    // over; in the last round the other worker must take over after the lease lapses.
    let writer_pool = source.pool.clone();
    let writer = tokio::spawn(async move {
        for n in 2..=5001 {
            sqlx::query("INSERT INTO orders VALUES ($1, 1, false)")
                .bind(n)
                .execute(&writer_pool)
                .await
                .expect("insert");
        }
    });
    let mut kills = 0;
    while !writer.is_finished() || kills < 6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let Some(held_by) = holder(app.db.pool.clone()).await else {
            continue;
        };
        let victim = usize::from(held_by.ends_with('1'));
        workers[victim].child.start_kill().expect("SIGKILL");
        workers[victim].child.wait().await.expect("reaped");
        kills += 1;
        if !writer.is_finished() || kills < 6 {
            workers[victim] = start(victim);
        }
    }
    writer.await.expect("writer");
    let ledger = |pool: PgPool, listener: String| async move {
        sqlx::query_as::<_, (String, Value)>(
            r#"SELECT "dedupeKey", "rawEvent" FROM "tblListenerInbox" WHERE "listenerID"::text = $1"#,
        )
        .bind(listener)
        .fetch_all(&pool)
        .await
        .expect("inbox")
    };
    let events = eventually(120, "every change is in the inbox", || async {
        let rows = ledger(app.db.pool.clone(), id.clone()).await;
        (rows.len() >= 5003).then_some(rows)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ledger(app.db.pool.clone(), id.clone()).await.len(),
        events.len(),
        "no late duplicates"
    );
    let keys: HashSet<&String> = events.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys.len(),
        events.len(),
        "one event per (commit LSN, index)"
    );
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for (_, event) in events
        .iter()
        .filter(|(_, e)| e["op"] == "INSERT" && e["new"]["id"] != 1)
    {
        *seen
            .entry(event["new"]["id"].as_i64().expect("id"))
            .or_default() += 1;
    }
    let missing: Vec<i64> = (2..=5001).filter(|n| !seen.contains_key(n)).collect();
    let doubled: Vec<(&i64, &usize)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "missing {missing:?}, doubled {doubled:?}"
    );
    eprintln!(
        "{kills} SIGKILLs of the holder during 5,000 inserts; {} events, none lost or doubled",
        events.len()
    );
    // The first three changes started their workflows; nothing else ran the removed action.
    assert_eq!(inputs(app.db.pool.clone(), workflow.clone()).await.len(), 3);

    // The datasource cannot be deleted from under the listener's slot; deleting the listener
    // drops the slot, then the datasource goes.
    let ds_path = format!("{base}/datasources/{}", ds.str("datasourceID"));
    let refused = app.delete(&ds_path, &a.auth).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.code(), "datasource_in_use");
    let slot = jet_shared::listener::names(id.parse().expect("uuid")).0;
    assert!(
        source.confirmed(&slot).await.is_some(),
        "the slot is still there"
    );
    let deleted = app.delete(&format!("{base}/listeners/{id}"), &a.auth).await;
    assert!(deleted.status < 300, "{}", deleted.body);
    assert_eq!(
        source.confirmed(&slot).await,
        None,
        "deleting the listener dropped its slot"
    );
    let gone = app.delete(&ds_path, &a.auth).await;
    assert!(gone.status < 300, "{}", gone.body);
}
