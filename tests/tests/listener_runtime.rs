//! The `listeners` role against real PostgreSQL: NOTIFY on a second database starts workflows,
//! the pipeline's transform/filter/abort and per-action parking, replays that never repeat an
//! action, exact ring-buffer retention under concurrency, status that follows the source, and
//! failover between two worker processes when the holder is killed.

use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::bins::Running;
use jet_tests::db::TestDb;
use jet_tests::flow::Flow;
use jet_tests::wait::eventually;
use jet_worker::Role;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn base(a: &Admin, what: &str) -> String {
    format!("/api/v1/tenants/{}/{what}", a.tenant_id)
}

/// A `postgresql` datasource pointing at `db` (any database URL on the test server).
async fn datasource_for(app: &TestApp, a: &Admin, url: &str) -> Uuid {
    let resp = app
        .post(
            &base(a, "datasources"),
            &a.auth,
            json!({"datasourceTitle": "source", "datasourceType": "postgresql",
                   "datasourceOptions": {"connectionOption": "connectionString", "connectionString": url}}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.str("datasourceID").parse().expect("uuid")
}

/// A listener inserted as the API would store it, with `actions` as (type, config) in order.
async fn listener(
    pool: &PgPool,
    a: &Admin,
    datasource: Uuid,
    config: Value,
    actions: &[(&str, Value)],
) -> Uuid {
    let id: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerType", "listenerConfig", "status")
           VALUES ($1, $2, 'l', 'postgresql', $3, 'active') RETURNING "listenerID""#,
    )
    .bind(a.tenant_id)
    .bind(datasource)
    .bind(config)
    .fetch_one(pool)
    .await
    .expect("listener");
    for (i, (kind, config)) in actions.iter().enumerate() {
        add_action(pool, id, kind, config.clone(), i as i32).await;
    }
    id
}

async fn add_action(pool: &PgPool, listener: Uuid, kind: &str, config: Value, order: i32) -> Uuid {
    sqlx::query_scalar(
        r#"INSERT INTO "tblListenerActions" ("listenerID", "actionType", "actionConfig", "orderIndex")
           VALUES ($1, $2, $3, $4) RETURNING "actionID""#,
    )
    .bind(listener)
    .bind(kind)
    .bind(config)
    .bind(order)
    .fetch_one(pool)
    .await
    .expect("action")
}

/// Commits an event to the inbox as a source would.
async fn deliver(
    pool: &PgPool,
    tenant: jet_shared::ids::TenantId,
    listener: Uuid,
    event: Value,
) -> Uuid {
    let mut conn = pool.acquire().await.expect("conn");
    let ingested = jet_shared::listener::inbox::ingest(
        &mut conn,
        listener,
        tenant,
        jet_shared::listener::inbox::Source::Notify,
        &[jet_shared::listener::inbox::NewEvent {
            dedupe_key: None,
            raw: event,
        }],
    )
    .await
    .expect("ingest");
    ingested[0].event_id
}

async fn event_status(pool: &PgPool, event: Uuid) -> Option<(String, Value)> {
    let row: (String, Option<Value>) =
        sqlx::query_as(r#"SELECT "status", "result" FROM "tblListenerInbox" WHERE "eventID" = $1"#)
            .bind(event)
            .fetch_one(pool)
            .await
            .expect("inbox row");
    (row.0 != "pending").then(|| (row.0, row.1.unwrap_or(Value::Null)))
}

async fn instances_of(pool: &PgPool, workflow: &str) -> Vec<Value> {
    sqlx::query_scalar(
        r#"SELECT jsonb_build_object('instanceID', i."instanceID", 'originType', i."originType",
                  'originID', i."originID", 'input', l."payload" -> 'input')
           FROM "tblWorkflowInstances" i
           JOIN "tblWorkflowInstanceLogs" l ON l."instanceID" = i."instanceID" AND l."eventType" = 'INPUT_SET'
           WHERE i."workflowID"::text = $1 ORDER BY i."createdAt""#,
    )
    .bind(workflow)
    .fetch_all(pool)
    .await
    .expect("instances")
}

fn simple_flow() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
}

async fn dlq_rows(pool: &PgPool, listener: Uuid) -> Vec<(Uuid, String, Value, String)> {
    sqlx::query_as(
        r#"SELECT "dlqID", "status", "payload", "error" FROM "tblEventDLQ"
           WHERE "source" = 'listener' AND "sourceID" = $1 ORDER BY "createdAt""#,
    )
    .bind(listener)
    .fetch_all(pool)
    .await
    .expect("dlq rows")
}

#[tokio::test]
async fn a_notify_on_the_source_starts_a_workflow_with_the_payload() {
    let app = TestApp::spawn().await;
    let a = app.admin("notify").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let workflow = app.save(&a, &simple_flow()).await;
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "orders, refunds"}),
        &[("trigger_workflow", json!({"workflowID": workflow, "inputValues": {"order": "{{event.payload}}", "channel": "{{event.channel}}"}}))],
    )
    .await;
    let _workers = app.start_roles("listener-a", &[Role::Listeners], |_| {});
    eventually(20, "the listener is held and connected", || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            r#"SELECT "connectedAt" FROM "tblListenerHolds" WHERE "listenerID" = $1 AND "workerID" = 'listener-a'"#,
        )
        .bind(id)
        .fetch_optional(&app.db.pool)
        .await
        .ok()
        .flatten()
        .flatten()
    })
    .await;
    sqlx::query(
        "SELECT pg_notify('refunds', '{\"id\": 42, \"total\": 9.5}'), pg_notify('other', 'x')",
    )
    .execute(&source.pool)
    .await
    .expect("notify");
    let runs = eventually(20, "the notification starts one instance", || async {
        let runs = instances_of(&app.db.pool, &workflow).await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["input"]["order"], json!({"id": 42, "total": 9.5}));
    assert_eq!(runs[0]["input"]["channel"], "refunds");
    assert_eq!(runs[0]["originType"], "listener");
    assert_eq!(runs[0]["originID"], json!(id));
    // A plain-text payload stays text; the listener counts the event.
    sqlx::query("SELECT pg_notify('orders', 'hello')")
        .execute(&source.pool)
        .await
        .expect("notify");
    let runs = eventually(20, "a second instance", || async {
        let runs = instances_of(&app.db.pool, &workflow).await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    assert_eq!(runs[1]["input"]["order"], "hello");
    let (count, status): (i64, String) = sqlx::query_as(
        r#"SELECT "eventCount", "status" FROM "tblListeners" WHERE "listenerID" = $1"#,
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("listener");
    assert_eq!((count, status.as_str()), (2, "active"));

    // Hot reload: a new channel list takes effect without a restart; the old channel stops.
    sqlx::query(r#"UPDATE "tblListeners" SET "listenerConfig" = '{"channels": "payments"}', "updatedAt" = now() WHERE "listenerID" = $1"#)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .expect("update");
    eventually(20, "the new channel delivers", || async {
        sqlx::query("SELECT pg_notify('payments', 'p')")
            .execute(&source.pool)
            .await
            .ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let runs = instances_of(&app.db.pool, &workflow).await;
        runs.iter()
            .any(|r| r["input"]["order"] == "p")
            .then_some(())
    })
    .await;
    let before = instances_of(&app.db.pool, &workflow).await.len();
    sqlx::query("SELECT pg_notify('orders', 'ignored')")
        .execute(&source.pool)
        .await
        .expect("notify");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = instances_of(&app.db.pool, &workflow).await;
    assert!(
        after.len() >= before && after.iter().all(|r| r["input"]["order"] != "ignored"),
        "the old channel must be unlistened: {after:?}"
    );

    // Deactivated: the hold is given back.
    sqlx::query(r#"UPDATE "tblListeners" SET "status" = 'inactive' WHERE "listenerID" = $1"#)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .expect("deactivate");
    eventually(20, "the hold is released", || async {
        let n: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblListenerHolds" WHERE "listenerID" = $1"#,
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .ok()?;
        (n == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn transforms_filter_and_abort_and_a_failed_action_is_parked_alone_then_replayed_once() {
    let app = TestApp::spawn().await;
    let a = app.admin("pipeline").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let workflow = app.save(&a, &simple_flow()).await;
    let id = listener(&app.db.pool, &a, ds, json!({"channels": "x"}), &[]).await;
    let transform = add_action(
        &app.db.pool,
        id,
        "transform",
        json!({"script": "if (event.skip) return null; if (event.boom) throw new Error('bad event ' + event.n); return {n: event.n * 10, tag: 'seen'};"}),
        0,
    )
    .await;
    let trigger = add_action(
        &app.db.pool,
        id,
        "trigger_workflow",
        json!({"workflowID": workflow, "inputValues": {"n": "{{event.n}}"}}),
        1,
    )
    .await;
    add_action(
        &app.db.pool,
        id,
        "save_to_buffer",
        json!({"bufferName": "seen", "maxEvents": 100}),
        2,
    )
    .await;
    sqlx::query(r#"UPDATE "tblWorkflows" SET "isDisabled" = true WHERE "workflowID"::text = $1"#)
        .bind(&workflow)
        .execute(&app.db.pool)
        .await
        .expect("disable");
    let _workers = app.start_roles("pipe", &[Role::Listeners], |_| {});

    let kept = deliver(&app.db.pool, a.tenant_id, id, json!({"n": 4})).await;
    let filtered = deliver(&app.db.pool, a.tenant_id, id, json!({"n": 5, "skip": true})).await;
    let aborted = deliver(&app.db.pool, a.tenant_id, id, json!({"n": 6, "boom": true})).await;
    let mut ends = Vec::new();
    for event in [kept, filtered, aborted] {
        ends.push(
            eventually(20, "the event is processed", || {
                event_status(&app.db.pool, event)
            })
            .await,
        );
    }
    assert_eq!(ends[0].0, "done");
    assert_eq!(ends[1].0, "filtered");
    assert_eq!(ends[2].0, "aborted");
    // The workflow is disabled: that action is parked; the buffer still got the event.
    let buffer: Vec<Value> = sqlx::query_scalar(
        r#"SELECT "eventData" FROM "tblListenerEvents" WHERE "listenerID" = $1 AND "bufferName" = 'seen'"#,
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .expect("buffer");
    assert_eq!(buffer, vec![json!({"n": 40, "tag": "seen"})]);
    let parked = dlq_rows(&app.db.pool, id).await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    let for_trigger = parked
        .iter()
        .find(|r| r.2["actionID"] == json!(trigger))
        .expect("trigger parked");
    assert_eq!(
        for_trigger.2["event"],
        json!({"n": 40, "tag": "seen"}),
        "the event as the action saw it"
    );
    assert!(for_trigger.3.contains("disabled"), "{}", for_trigger.3);
    let for_transform = parked
        .iter()
        .find(|r| r.2["actionID"] == json!(transform))
        .expect("transform parked");
    assert!(
        for_transform.3.contains("bad event 6"),
        "{}",
        for_transform.3
    );
    assert!(instances_of(&app.db.pool, &workflow).await.is_empty());

    // Fixed: the replay runs that one action; the buffer is not written twice.
    sqlx::query(r#"UPDATE "tblWorkflows" SET "isDisabled" = false WHERE "workflowID"::text = $1"#)
        .bind(&workflow)
        .execute(&app.db.pool)
        .await
        .expect("enable");
    let replay = app
        .post(
            &format!("{}/{}/replay", base(&a, "dlq"), for_trigger.0),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["status"], "REPLAYED", "{}", replay.body);
    let runs = instances_of(&app.db.pool, &workflow).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["input"]["n"], 40);
    let again = app
        .post(
            &format!("{}/{}/replay", base(&a, "dlq"), for_trigger.0),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    // Even a direct re-run of the action (a retry racing the replay) starts nothing new.
    let data = jet_shared::datasource::DataRuntime::new(
        None,
        jet_shared::datasource::network::DenyList::new(&[], None),
    );
    let rerun = jet_shared::listener::pipeline::run_parked(
        &app.db.pool,
        &data,
        id,
        kept,
        Some(trigger),
        &json!({"n": 40}),
    )
    .await
    .expect("rerun");
    assert_eq!(rerun, Ok(json!({"alreadyDone": true})));
    assert_eq!(instances_of(&app.db.pool, &workflow).await.len(), 1);
    let buffered: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblListenerEvents" WHERE "listenerID" = $1"#)
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(buffered, 1);

    // The aborted event, replayed with an edited event after the fix, runs the rest of the
    // pipeline from the transform on.
    let replay = app
        .post(
            &format!("{}/{}/replay", base(&a, "dlq"), for_transform.0),
            &a.auth,
            json!({"payload": {"listenerID": id, "eventID": aborted, "actionID": transform, "event": {"n": 7}}}),
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["status"], "REPLAYED", "{}", replay.body);
    let runs = instances_of(&app.db.pool, &workflow).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["input"]["n"], 70);
}

#[tokio::test]
async fn a_ring_buffer_keeps_exactly_the_newest_events_under_eight_writers() {
    let app = TestApp::spawn().await;
    let a = app.admin("ring").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "x"}),
        &[(
            "save_to_buffer",
            json!({"bufferName": "ring", "retentionPolicy": "count", "maxEvents": 100}),
        )],
    )
    .await;
    // Two pipeline workers, each running eight events at a time.
    let _one = app.start_roles("ring-1", &[Role::Listeners], |_| {});
    let _two = app.start_roles("ring-2", &[Role::Listeners], |_| {});
    let mut writers = Vec::new();
    for w in 0..8 {
        let (pool, tenant) = (app.db.pool.clone(), a.tenant_id);
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..40 {
                ids.push(deliver(&pool, tenant, id, json!({"writer": w, "n": n})).await);
            }
            ids
        }));
    }
    let mut events = Vec::new();
    for w in writers {
        events.extend(w.await.expect("writer"));
    }
    for event in &events {
        eventually(60, "every event is processed", || {
            event_status(&app.db.pool, *event)
        })
        .await;
    }
    let written: Vec<i64> = sqlx::query_scalar(
        r#"SELECT (r."result" ->> 'seqNo')::bigint FROM "tblListenerActionRuns" r
           JOIN "tblListenerInbox" i ON i."eventID" = r."eventID" WHERE i."listenerID" = $1"#,
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .expect("written");
    assert_eq!(written.len(), 320, "every event was written once");
    let mut newest = written.clone();
    newest.sort_unstable();
    let newest: Vec<i64> = newest.split_off(newest.len() - 100);
    let kept: Vec<i64> = sqlx::query_scalar(
        r#"SELECT "seqNo" FROM "tblListenerEvents" WHERE "listenerID" = $1 AND "bufferName" = 'ring' ORDER BY "seqNo""#,
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .expect("kept");
    assert_eq!(kept, newest, "exactly the newest 100 remain");
}

#[tokio::test]
async fn an_unreachable_source_shows_error_and_recovers_by_itself() {
    let app = TestApp::spawn().await;
    let a = app.admin("status").await;
    let name = format!("jet_test_missing_{}", Uuid::new_v4().simple());
    let url = jet_tests::db::url_for(&name);
    let ds = datasource_for(&app, &a, &url).await;
    let workflow = app.save(&a, &simple_flow()).await;
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "later"}),
        &[("trigger_workflow", json!({"workflowID": workflow}))],
    )
    .await;
    let _workers = app.start_roles("status-w", &[Role::Listeners], |_| {});
    let error: String = eventually(30, "status error with the reason", || async {
        let (status, error): (String, Option<String>) = sqlx::query_as(
            r#"SELECT "status", "lastError" FROM "tblListeners" WHERE "listenerID" = $1"#,
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .ok()?;
        (status == "error").then_some(error).flatten()
    })
    .await;
    assert!(
        error.contains(&name) || error.contains("does not exist") || error.contains("connect"),
        "{error}"
    );
    let mut admin = sqlx::PgConnection::connect(&jet_tests::db::server_url())
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create the missing database");
    eventually(90, "the listener returns to active", || async {
        let (status, error): (String, Option<String>) = sqlx::query_as(
            r#"SELECT "status", "lastError" FROM "tblListeners" WHERE "listenerID" = $1"#,
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .ok()?;
        (status == "active" && error.is_none()).then_some(())
    })
    .await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("SELECT pg_notify('later', 'now')")
        .execute(&mut conn)
        .await
        .expect("notify");
    eventually(20, "the recovered listener delivers", || async {
        (instances_of(&app.db.pool, &workflow).await.len() == 1).then_some(())
    })
    .await;
    drop(conn);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .ok();
}

use sqlx::Connection as _;

#[tokio::test]
async fn a_killed_holder_is_replaced_by_another_worker_process() {
    let app = TestApp::spawn().await;
    let a = app.admin("failover").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let workflow = app.save(&a, &simple_flow()).await;
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "jobs"}),
        &[(
            "trigger_workflow",
            json!({"workflowID": workflow, "inputValues": {"n": "{{event.payload}}"}}),
        )],
    )
    .await;
    let url = app.db.url();
    let start = |n: usize| {
        Running::start(
            "jet-worker",
            &["--roles", "listeners"],
            &std::env::temp_dir(),
            &[
                ("DATABASE_URL", url.as_str()),
                ("JET_WORKER_ID", &format!("holder-{n}")),
                ("VAULT_ENCRYPTION_KEY", jet_tests::app::TEST_VAULT_KEY),
                ("JET_DATASOURCE_DENY_HOSTS", "none"),
                ("JET_LOG", "warn"),
            ],
        )
    };
    let mut workers = [start(0), start(1)];
    let holder: String = eventually(30, "one worker holds the listener and is connected", || async {
        sqlx::query_scalar(
            r#"SELECT "workerID" FROM "tblListenerHolds" WHERE "listenerID" = $1 AND "connectedAt" IS NOT NULL"#,
        )
        .bind(id)
        .fetch_optional(&app.db.pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    sqlx::query("SELECT pg_notify('jobs', '1')")
        .execute(&source.pool)
        .await
        .expect("notify");
    eventually(20, "the first event is delivered", || async {
        (instances_of(&app.db.pool, &workflow).await.len() == 1).then_some(())
    })
    .await;
    let victim = if holder == "holder-0" { 0 } else { 1 };
    workers[victim].child.start_kill().expect("kill -9");
    workers[victim].child.wait().await.expect("reaped");
    let killed_at = std::time::Instant::now();
    let new_holder: String = eventually(40, "the other worker takes the listener over", || async {
        sqlx::query_scalar(
            r#"SELECT "workerID" FROM "tblListenerHolds" WHERE "listenerID" = $1 AND "connectedAt" IS NOT NULL AND "workerID" <> $2"#,
        )
        .bind(id)
        .bind(&holder)
        .fetch_optional(&app.db.pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    let took = killed_at.elapsed();
    assert_ne!(new_holder, holder);
    assert!(
        took < std::time::Duration::from_secs(30),
        "failover took {took:?}"
    );
    eprintln!("failover after kill -9 took {took:?}");
    sqlx::query("SELECT pg_notify('jobs', '2')")
        .execute(&source.pool)
        .await
        .expect("notify");
    let runs = eventually(20, "the new holder delivers", || async {
        let runs = instances_of(&app.db.pool, &workflow).await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    assert_eq!(
        runs[1]["input"]["n"], "2",
        "a payload that is not a JSON object stays text"
    );
    let survivor = &mut workers[1 - victim];
    survivor.terminate(30).await;
    let holds: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblListenerHolds""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("holds");
    assert_eq!(holds, 0, "a clean stop gives the listener back");
}

#[tokio::test]
async fn maintenance_purges_processed_events_but_keeps_what_a_parked_row_needs() {
    let app = TestApp::spawn().await;
    let a = app.admin("purge").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let id = listener(&app.db.pool, &a, ds, json!({"channels": "x"}), &[]).await;
    let (old_done, old_pending, new_done) = (
        deliver(&app.db.pool, a.tenant_id, id, json!({"n": 1})).await,
        deliver(&app.db.pool, a.tenant_id, id, json!({"n": 2})).await,
        deliver(&app.db.pool, a.tenant_id, id, json!({"n": 3})).await,
    );
    sqlx::query(
        r#"UPDATE "tblListenerInbox" SET "status" = 'done',
             "processedAt" = CASE WHEN "eventID" = $1 THEN now() - interval '48 hours' ELSE now() END
           WHERE "eventID" IN ($1, $2)"#,
    )
    .bind(old_done)
    .bind(new_done)
    .execute(&app.db.pool)
    .await
    .expect("processed");
    let (kept_action, purged_action) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        r#"INSERT INTO "tblListenerActionRuns" ("eventID", "actionID", "createdAt") VALUES
             ($1, $2, now() - interval '60 days'), ($3, $4, now() - interval '60 days')"#,
    )
    .bind(old_pending)
    .bind(kept_action)
    .bind(old_done)
    .bind(purged_action)
    .execute(&app.db.pool)
    .await
    .expect("records");
    sqlx::query(
        r#"INSERT INTO "tblEventDLQ" ("tenantID", "source", "sourceID", "payload", "error", "status")
           VALUES ($1, 'listener', $2, $3, 'failed', 'PARKED')"#,
    )
    .bind(a.tenant_id)
    .bind(id)
    .bind(json!({"listenerID": id, "eventID": old_pending, "actionID": Uuid::new_v4(), "event": {}}))
    .execute(&app.db.pool)
    .await
    .expect("dlq row");
    let settings = jet_worker::maintenance::Settings {
        audit_retention_days: 0,
        dlq_retention_days: 30,
        listener_inbox_retention_hours: 24,
        interval: std::time::Duration::from_secs(3600),
    };
    let report = jet_worker::maintenance::round(&app.db.pool, &settings)
        .await
        .expect("round");
    assert_eq!(report.listener_rows_purged, 2, "{report:?}");
    let events: Vec<Uuid> =
        sqlx::query_scalar(r#"SELECT "eventID" FROM "tblListenerInbox" ORDER BY "receivedAt""#)
            .fetch_all(&app.db.pool)
            .await
            .expect("events");
    assert_eq!(events, vec![old_pending, new_done]);
    let records: Vec<Uuid> =
        sqlx::query_scalar(r#"SELECT "actionID" FROM "tblListenerActionRuns""#)
            .fetch_all(&app.db.pool)
            .await
            .expect("records");
    assert_eq!(records, vec![kept_action]);
}

/// LISTEN sessions open on `database` (the holder's connection to a NOTIFY source).
async fn listening_sessions(pool: &PgPool, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(database)
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_renew_its_lease_stops_listening_until_the_database_is_back() {
    let platform = jet_tests::cluster::OwnCluster::start();
    let app = TestApp::spawn_on(TestDb::on_server(&platform.cluster.url("postgres")).await).await;
    let a = app.admin("fence").await;
    // The source stays up on the shared server; only the platform database goes away.
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let workflow = app.save(&a, &simple_flow()).await;
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "fenced"}),
        &[("trigger_workflow", json!({"workflowID": workflow}))],
    )
    .await;
    let _workers = app.start_roles("fence", &[Role::Listeners], |_| {});
    eventually(20, "the source is listened to", || async {
        (listening_sessions(&source.pool, &source.name).await == 1).then_some(())
    })
    .await;

    let mut platform = platform;
    platform.cluster.stop().expect("stop the platform database");
    let stopped_at = std::time::Instant::now();
    eventually(
        30,
        "the holder stops listening once its lease cannot be renewed",
        || async { (listening_sessions(&source.pool, &source.name).await == 0).then_some(()) },
    )
    .await;
    let gap = stopped_at.elapsed();
    assert!(
        gap < jet_shared::listener::holds::LEASE + std::time::Duration::from_secs(5),
        "stopped listening {gap:?} after the outage began; the lease is {:?}",
        jet_shared::listener::holds::LEASE
    );

    platform
        .cluster
        .start()
        .expect("start the platform database again");
    eventually(60, "the listener is held and listened to again", || async {
        (listening_sessions(&source.pool, &source.name).await == 1).then_some(())
    })
    .await;
    eventually(
        30,
        "a notification after the outage starts the workflow",
        || async {
            sqlx::query("SELECT pg_notify('fenced', 'after')")
                .execute(&source.pool)
                .await
                .ok()?;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let n: i64 = sqlx::query_scalar(
                r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "originID" = $1"#,
            )
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .ok()?;
            (n >= 1).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_query_action_against_a_missing_database_retries_with_backoff_parks_and_replays_once() {
    let app = TestApp::spawn().await;
    let a = app.admin("dlq-listener").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    // The query's datasource names a database that does not exist yet.
    let name = format!("jet_test_later_{}", Uuid::new_v4().simple());
    let target = datasource_for(&app, &a, &jet_tests::db::url_for(&name)).await;
    let query = app
        .post(
            &base(&a, "queries"),
            &a.auth,
            json!({"dataQueryTitle": "record", "datasourceID": target,
                   "dataQueryOptions": {"query": "INSERT INTO seen (n) VALUES ({{inputs.n}}::int)",
                                        "inputDefinitions": [{"key": "n", "type": "number", "required": true}]}}),
        )
        .await;
    assert_eq!(query.status, 201, "{}", query.body);
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "x"}),
        &[(
            "trigger_query",
            json!({"dataQueryID": query.str("dataQueryID"), "inputValues": {"n": "{{event.n}}"}}),
        )],
    )
    .await;
    let _workers = app.start_roles("dlq-l", &[Role::Listeners], |_| {});
    let event = deliver(&app.db.pool, a.tenant_id, id, json!({"n": 5})).await;
    eventually(20, "the event is processed", || {
        event_status(&app.db.pool, event)
    })
    .await;
    let rows = dlq_rows(&app.db.pool, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (dlq_id, status, payload, _) = rows[0].clone();
    assert_eq!(status, "PENDING");
    assert_eq!(payload["event"], json!({"n": 5}));
    let tenant: Option<Uuid> =
        sqlx::query_scalar(r#"SELECT "tenantID" FROM "tblEventDLQ" WHERE "dlqID" = $1"#)
            .bind(dlq_id)
            .fetch_one(&app.db.pool)
            .await
            .expect("tenant");
    assert_eq!(tenant, Some(a.tenant_id.0));

    // Automatic retries: each fails again, backs off further, and the fifth parks the row.
    let data = jet_shared::datasource::DataRuntime::new(
        Some(jet_shared::crypto::VaultKey::from_hex(jet_tests::app::TEST_VAULT_KEY).expect("key")),
        jet_shared::datasource::network::DenyList::new(&[], None),
    );
    let mut waits = Vec::new();
    for _ in 0..5 {
        sqlx::query(r#"UPDATE "tblEventDLQ" SET "nextRetryAt" = now() WHERE "dlqID" = $1"#)
            .bind(dlq_id)
            .execute(&app.db.pool)
            .await
            .expect("due");
        let report = jet_shared::dlq::retry_due(
            jet_shared::dlq::Rerun {
                pool: &app.db.pool,
                data: &data,
            },
            10,
            "maintenance",
        )
        .await
        .expect("retry");
        assert_eq!(report.failed, 1, "{report:?}");
        let wait: Option<f64> = sqlx::query_scalar(
            r#"SELECT EXTRACT(EPOCH FROM "nextRetryAt" - now())::float8 FROM "tblEventDLQ" WHERE "dlqID" = $1"#,
        )
        .bind(dlq_id)
        .fetch_one(&app.db.pool)
        .await
        .expect("wait");
        waits.push(wait);
    }
    assert!(
        waits[0].expect("backoff") < waits[1].expect("longer backoff"),
        "{waits:?}"
    );
    assert_eq!(waits[4], None, "parked rows are not retried");
    let (status, attempts, retries): (String, Value, i32) = sqlx::query_as(
        r#"SELECT "status", "attempts", "retryCount" FROM "tblEventDLQ" WHERE "dlqID" = $1"#,
    )
    .bind(dlq_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert_eq!((status.as_str(), retries), ("PARKED", 5));
    assert_eq!(
        attempts.as_array().map(Vec::len),
        Some(6),
        "the first failure and five retries: {attempts}"
    );

    // Fixed: the database exists now. A replay runs the query once; a second one is refused.
    let mut admin = sqlx::PgConnection::connect(&jet_tests::db::server_url())
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create");
    let mut target_db = sqlx::PgConnection::connect(&jet_tests::db::url_for(&name))
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE seen (n int)")
        .execute(&mut target_db)
        .await
        .expect("table");
    let replay = app
        .post(
            &format!("{}/{dlq_id}/replay", base(&a, "dlq")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["status"], "REPLAYED", "{}", replay.body);
    let again = app
        .post(
            &format!("{}/{dlq_id}/replay", base(&a, "dlq")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let seen: Vec<i32> = sqlx::query_scalar("SELECT n FROM seen")
        .fetch_all(&mut target_db)
        .await
        .expect("seen");
    assert_eq!(seen, vec![5], "the query ran exactly once");
    drop(target_db);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .ok();
}

#[tokio::test]
async fn listeners_spread_across_the_listener_workers() {
    let app = TestApp::spawn().await;
    let a = app.admin("spread").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    for n in 0..4 {
        listener(
            &app.db.pool,
            &a,
            ds,
            json!({"channels": format!("c{n}")}),
            &[],
        )
        .await;
    }
    let _one = app.start_roles("spread-a", &[Role::Listeners], |_| {});
    let _two = app.start_roles("spread-b", &[Role::Listeners], |_| {});
    let shares = eventually(40, "two listeners held by each worker", || async {
        let shares: Vec<(String, i64)> = sqlx::query_as(
            r#"SELECT "workerID"::text, count(*) FROM "tblListenerHolds" GROUP BY 1 ORDER BY 1"#,
        )
        .fetch_all(&app.db.pool)
        .await
        .ok()?;
        (shares.len() == 2 && shares.iter().all(|(_, n)| *n == 2)).then_some(shares)
    })
    .await;
    assert_eq!(shares[0].0, "spread-a");
    // Every listener is listened to exactly once.
    eventually(20, "four LISTEN sessions on the source", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
        )
        .bind(&source.name)
        .fetch_one(&source.pool)
        .await
        .ok()?;
        (n == 4).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_batch_of_events_runs_set_based_with_the_same_outcomes() {
    let app = TestApp::spawn().await;
    let a = app.admin("fast").await;
    let source = TestDb::empty().await;
    let ds = datasource_for(&app, &a, &source.url()).await;
    let workflow = app
        .save(
            &a,
            &simple_flow()
                .options(json!({"inputs": [{"name": "n", "type": "number", "required": true}]})),
        )
        .await;
    let id = listener(
        &app.db.pool,
        &a,
        ds,
        json!({"channels": "x"}),
        &[
            ("transform", json!({"script": "if (event.skip) return null; if (event.boom) throw new Error('boom'); return {n: event.n};"})),
            ("trigger_workflow", json!({"workflowID": workflow, "inputValues": {"n": "{{event.n}}"}})),
        ],
    )
    .await;
    // Queued before any worker runs, so the first claim takes them all in one batch.
    let mut kept = Vec::new();
    for n in 0..20 {
        kept.push(deliver(&app.db.pool, a.tenant_id, id, json!({"n": n})).await);
    }
    let skipped = deliver(
        &app.db.pool,
        a.tenant_id,
        id,
        json!({"n": 99, "skip": true}),
    )
    .await;
    let boom = deliver(
        &app.db.pool,
        a.tenant_id,
        id,
        json!({"n": 98, "boom": true}),
    )
    .await;
    let no_input = deliver(&app.db.pool, a.tenant_id, id, json!({"m": 1})).await;
    let _workers = app.start_roles("fast-w", &[Role::Listeners], |_| {});
    for event in kept.iter().chain([&skipped, &boom, &no_input]) {
        eventually(30, "every event is processed", || {
            event_status(&app.db.pool, *event)
        })
        .await;
    }
    let runs = instances_of(&app.db.pool, &workflow).await;
    assert_eq!(runs.len(), 20, "one instance per kept event");
    let mut ns: Vec<i64> = runs
        .iter()
        .map(|r| r["input"]["n"].as_i64().expect("n"))
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
    assert!(
        runs.iter()
            .all(|r| r["originID"] == json!(id) && r["originType"] == "listener")
    );
    for event in &kept {
        let (status, result) = event_status(&app.db.pool, *event).await.expect("done");
        assert_eq!(status, "done", "{result}");
        assert_eq!(result["actions"][1]["status"], "succeeded", "{result}");
    }
    assert_eq!(
        event_status(&app.db.pool, skipped).await.expect("end").0,
        "filtered"
    );
    assert_eq!(
        event_status(&app.db.pool, boom).await.expect("end").0,
        "aborted"
    );
    // The event whose inputs do not fit the workflow is parked on its own, like the transform error.
    let parked = dlq_rows(&app.db.pool, id).await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(
        parked.iter().any(|r| r.3.contains("input `n` is required")),
        "{parked:?}"
    );
    let records: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblListenerActionRuns" WHERE "result" ? 'instanceID'"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("records");
    assert_eq!(records, 20, "each start is recorded with its instance");
    let count: i64 =
        sqlx::query_scalar(r#"SELECT "eventCount" FROM "tblListeners" WHERE "listenerID" = $1"#)
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(count, 20);
}
