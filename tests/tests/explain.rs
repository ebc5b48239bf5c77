//! "Why isn't it running?": every reason `explainInstance` (and `jet explain`) gives is
//! produced for real — by the engine where it gets there on its own, by the queue's and the
//! registry's own functions where the state needs a worker caught mid-flight — and read back.

use chrono::{DateTime, Utc};
use jet_shared::workers;
use jet_shared::workflow::queue;
use jet_tests::app::Admin;
use jet_tests::flow::Flow;
use jet_tests::{TestApp, bins};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// start → end: one ready execution per run until a `nodes` worker takes it.
fn one_step() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
}

fn explain_path(a: &Admin, instance: &str) -> String {
    format!(
        "/api/v1/tenants/{}/workflows/instances/{instance}/explain",
        a.tenant_id
    )
}

async fn explain(app: &TestApp, a: &Admin, instance: &str) -> Value {
    let resp = app.get(&explain_path(a, instance), &a.auth).await;
    assert_eq!(resp.status, 200, "explain: {}", resp.body);
    resp.body
}

/// The entry of `node` in an explanation.
fn entry<'a>(explained: &'a Value, node: &str) -> &'a Value {
    explained["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|e| e["nodeID"] == node))
        .unwrap_or_else(|| panic!("no entry for {node} in {explained}"))
}

/// Explains until `node` has reason `reason` (the engine gets there on its own); panics after 20 s.
async fn explain_until(
    app: &TestApp,
    a: &Admin,
    instance: &str,
    node: &str,
    reason: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let explained = explain(app, a, instance).await;
        let found = explained["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|e| e["nodeID"] == node && e["reason"] == reason)
        });
        if found {
            return explained;
        }
        assert!(
            Instant::now() < deadline,
            "{node} never {reason}: {explained}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("a timestamp, got {v}"))
        .with_timezone(&Utc)
}

/// Seconds from now to `v`.
fn seconds_ahead(v: &Value) -> i64 {
    (time(v) - Utc::now()).num_seconds()
}

#[tokio::test]
async fn ready_work_waits_for_a_nodes_worker_then_queues_behind_its_tenants_older_rows() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let flow = one_step();
    let workflow = app.save(&a, &flow).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(app.execute(&a, &workflow, json!({})).await);
    }
    // Another tenant's ready work is not ahead of A's: claims are fair across tenants.
    let other = app.save(&b, &one_step()).await;
    for _ in 0..4 {
        app.execute(&b, &other, json!({})).await;
    }
    let pool = &app.db.pool;

    // Only a commands worker lives: nothing will claim a node.
    workers::register(pool, "commands-only", &["commands".to_owned()])
        .await
        .expect("register");
    let explained = explain(&app, &a, &runs[2]).await;
    assert_eq!(explained["status"], "RUNNING");
    assert_eq!(explained["stuck"], false);
    assert_eq!(
        explained["nodes"].as_array().map(Vec::len),
        Some(1),
        "{explained}"
    );
    let start = entry(&explained, &flow.id("start"));
    assert_eq!(start["reason"], "noNodesWorker", "{start}");
    assert_eq!(start["nodeType"], "start");
    assert!(seconds_ahead(&start["readySince"]) <= 0, "{start}");

    // A live nodes worker (busy elsewhere): the runs queue in due order.
    workers::register(pool, "busy", &["nodes".to_owned()])
        .await
        .expect("register");
    for (ahead, run) in runs.iter().enumerate() {
        let explained = explain(&app, &a, run).await;
        let start = entry(&explained, &flow.id("start"));
        assert_eq!(start["reason"], "queued", "{start}");
        assert_eq!(start["readyAhead"], ahead, "{start}");
        assert_eq!(
            start["message"],
            format!("queued behind {ahead} ready executions of its tenant")
        );
    }

    // The operator's CLI gives the same answer from the database, as JSON and as text.
    let url = app.db.url();
    let (ok, out) = bins::run(
        "jet",
        &["explain", &runs[2], "--json"],
        &[("DATABASE_URL", &url)],
    );
    assert!(ok, "{out}");
    let cli: Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap_or_default())
            .unwrap_or_else(|e| panic!("json ({e}): {out}"));
    assert_eq!(cli["instanceID"], json!(runs[2]));
    assert_eq!(cli["status"], "RUNNING");
    let start = entry(&cli, &flow.id("start"));
    assert_eq!(
        (&start["reason"], &start["readyAhead"]),
        (&json!("queued"), &json!(2)),
        "{cli}"
    );
    let (ok, text) = bins::run("jet", &["explain", &runs[0]], &[("DATABASE_URL", &url)]);
    assert!(
        ok && text.contains(&format!("instance {} RUNNING", runs[0]))
            && text.contains(&format!(
                "start {}: queued behind 0 ready executions",
                flow.id("start")
            )),
        "{text}"
    );
    let missing = uuid::Uuid::new_v4().to_string();
    let (ok, text) = bins::run("jet", &["explain", &missing], &[("DATABASE_URL", &url)]);
    assert!(
        !ok && text.contains(&format!("no instance {missing}")),
        "{text}"
    );

    // Another tenant's instance is not found, as for reading it.
    let foreign = app.get(&explain_path(&b, &runs[0]), &b.auth).await;
    assert_eq!(
        (foreign.status, foreign.code()),
        (404, "not_found"),
        "{}",
        foreign.body
    );
}

#[tokio::test]
async fn a_leased_node_names_its_worker_alive_or_dead_and_a_failed_one_its_backoff_and_error() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let flow = one_step();
    let workflow = app.save(&a, &flow).await;
    let pool = &app.db.pool;
    let nodes = ["nodes".to_owned()];
    workers::register(pool, "w-live", &nodes)
        .await
        .expect("register");
    workers::register(pool, "w-dead", &nodes)
        .await
        .expect("register");
    sqlx::query(r#"UPDATE "tblWorkers" SET "heartbeatAt" = now() - interval '1 minute' WHERE "workerID" = 'w-dead'"#)
        .execute(pool)
        .await
        .expect("let w-dead's heartbeat lapse");
    let start = flow.id("start");

    let mut held = Vec::new();
    for owner in ["w-live-nodes-0", "w-dead-nodes-3", "w-live-nodes-1"] {
        let run = app.execute(&a, &workflow, json!({})).await;
        let claimed = queue::claim(pool, owner, Duration::from_secs(120), 1)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].instance_id.to_string(), run);
        held.push((run, claimed.into_iter().next().expect("one")));
    }

    let live = explain(&app, &a, &held[0].0).await;
    let leased = entry(&live, &start);
    assert_eq!(leased["reason"], "leased", "{leased}");
    assert_eq!(leased["workerID"], "w-live");
    assert_eq!(leased["leaseOwner"], "w-live-nodes-0");
    assert_eq!(
        (&leased["workerAlive"], &leased["leaseExpired"]),
        (&json!(true), &json!(false))
    );
    assert!(
        (100..=120).contains(&seconds_ahead(&leased["leaseExpiresAt"])),
        "{leased}"
    );

    // A dead holder whose lease has run out: the reaper's to requeue.
    sqlx::query(r#"UPDATE "tblNodeExecutions" SET "leaseExpiresAt" = now() - interval '1 second' WHERE "leaseOwner" = 'w-dead-nodes-3'"#)
        .execute(pool)
        .await
        .expect("expire the lease");
    let dead = explain(&app, &a, &held[1].0).await;
    let leased = entry(&dead, &start);
    assert_eq!(
        (&leased["reason"], &leased["workerID"]),
        (&json!("leased"), &json!("w-dead"))
    );
    assert_eq!(
        (&leased["workerAlive"], &leased["leaseExpired"]),
        (&json!(false), &json!(true))
    );
    assert!(
        leased["message"]
            .as_str()
            .is_some_and(|m| m.contains("(dead)")),
        "{leased}"
    );

    // A failed try goes back with a backoff and its error.
    let (run, claimed) = &held[2];
    let released = queue::release(
        pool,
        claimed,
        "w-live-nodes-1",
        Some((Duration::from_secs(600), "connection refused")),
    )
    .await
    .expect("release");
    assert!(released);
    let retrying = explain(&app, &a, run).await;
    let backoff = entry(&retrying, &start);
    assert_eq!(backoff["reason"], "retryBackoff", "{backoff}");
    assert_eq!(backoff["failedTries"], 1);
    assert_eq!(backoff["lastError"], "connection refused");
    assert!(
        (590..=600).contains(&seconds_ahead(&backoff["until"])),
        "{backoff}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_joins_and_children_say_what_they_wait_for() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let hour = json!({"delaySeconds": 3600});
    let now = json!({"delayMs": 0});
    // start → a → join; start → slowB (1 h) → b → join; start → slowC (1 h) → c → join.
    let joined = Flow::new()
        .node("start", "start", json!({}))
        .node("a", "delay", now.clone())
        .node("slowB", "delay", hour.clone())
        .node("b", "delay", now.clone())
        .node("slowC", "delay", hour.clone())
        .node("c", "delay", now.clone())
        .node("join", "join", json!({"joinMode": "all"}))
        .node("end", "end", json!({}))
        .edge("start", "a")
        .edge("start", "slowB")
        .edge("slowB", "b")
        .edge("start", "slowC")
        .edge("slowC", "c")
        .edge("a", "join")
        .edge("b", "join")
        .edge("c", "join")
        .edge("join", "end");
    let workflow = app.save(&a, &joined).await;
    let run = app.execute(&a, &workflow, json!({})).await;
    let explained = explain_until(&app, &a, &run, &joined.id("join"), "waitingOnJoin").await;
    let join = entry(&explained, &joined.id("join"));
    let mut waiting = vec![joined.id("b"), joined.id("c")];
    waiting.sort();
    assert_eq!(join["waitingFor"], json!(waiting), "{join}");
    assert_eq!(join["arrived"], json!([joined.id("a")]), "{join}");
    assert_eq!(join["nodeType"], "join");
    for node in ["b", "c"] {
        let delayed = entry(&explained, &joined.id(node));
        assert_eq!(delayed["reason"], "delayed", "{delayed}");
        assert!(
            (3500..=3600).contains(&seconds_ahead(&delayed["until"])),
            "{delayed}"
        );
    }
    assert_eq!(
        explained["nodes"].as_array().map(Vec::len),
        Some(3),
        "{explained}"
    );

    // A parent parked on its child names the child and its status.
    let child = app
        .save(
            &a,
            &Flow::new()
                .node("start", "start", json!({}))
                .node("wait", "delay", hour.clone())
                .node("end", "end", json!({}))
                .edge("start", "wait")
                .edge("wait", "end"),
        )
        .await;
    let parent = Flow::new()
        .node("start", "start", json!({}))
        .node("call", "subWorkflow", json!({"childWorkflowID": child}))
        .node("end", "end", json!({}))
        .edge("start", "call")
        .edge("call", "end");
    let parent_workflow = app.save(&a, &parent).await;
    let run = app.execute(&a, &parent_workflow, json!({})).await;
    let explained = explain_until(&app, &a, &run, &parent.id("call"), "waitingForChild").await;
    let call = entry(&explained, &parent.id("call"));
    let kids = app
        .get(
            &format!(
                "/api/v1/tenants/{}/workflows/instances?parentInstanceID={run}",
                a.tenant_id
            ),
            &a.auth,
        )
        .await;
    assert_eq!(
        call["childInstanceID"], kids.body["items"][0]["instanceID"],
        "{call}"
    );
    assert_eq!(call["childStatus"], "RUNNING");
    assert_eq!(call["nodeType"], "subWorkflow");
    assert!(
        call.get("timeoutAt").is_none(),
        "no timeout configured: {call}"
    );
    assert!(
        call["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("waiting for child instance")),
        "{call}"
    );

    // A run that ended has nothing to explain.
    let done = app.run_flow(&a, &one_step(), json!({})).await;
    let ended = explain(&app, &a, done["instanceID"].as_str().expect("id")).await;
    assert_eq!(ended["status"], "COMPLETED");
    assert_eq!(ended["nodes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_step_names_its_request_and_expiry_then_its_queued_resume() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let workers = app.start_workers("w-human");
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("form", "dataCollection", json!({"expiryMinutes": 5}))
        .node("end", "end", json!({}))
        .edge("start", "form")
        .edge("form", "end");
    let workflow = app.save(&a, &flow).await;
    let run = app.execute(&a, &workflow, json!({})).await;
    let explained = explain_until(&app, &a, &run, &flow.id("form"), "waitingForHuman").await;
    let form = entry(&explained, &flow.id("form"));
    let detail = app.instance(&a, &run).await;
    let request = &detail["pendingRequests"][0];
    assert_eq!(form["requestID"], request["collectionRequestID"], "{form}");
    assert_eq!(form["requestType"], "form");
    assert_eq!(form["nodeType"], "dataCollection");
    assert!(
        (290..=300).contains(&seconds_ahead(&form["expiresAt"])),
        "{form}"
    );

    // Answered while no commands worker runs: the answer waits for its resume.
    workers.stop().await;
    let submitted = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/data-collection/{}/submit",
                a.tenant_id,
                form["requestID"].as_str().expect("id")
            ),
            &a.auth,
            json!({"data": {"ok": true}}),
        )
        .await;
    assert_eq!(submitted.status, 202, "{}", submitted.body);
    let explained = explain(&app, &a, &run).await;
    let form = entry(&explained, &flow.id("form"));
    assert_eq!(form["reason"], "resumeQueued", "{form}");
    assert_eq!(form["requestStatus"], "COMPLETED");
    assert_eq!(explained["stuck"], false);
}

#[tokio::test]
async fn a_stuck_instance_is_called_stuck_and_the_test_fixture_would_fail_on_it() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let stuck: uuid::Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblWorkflowInstances" ("tenantID", "status", "startedAt", "isTest")
           VALUES ($1, 'RUNNING', now(), true) RETURNING "instanceID""#,
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("a bare RUNNING instance");
    let explained = explain(&app, &a, &stuck.to_string()).await;
    assert_eq!(
        (&explained["stuck"], &explained["nodes"]),
        (&json!(true), &json!([]))
    );
    // What the fixture checks when the database is dropped.
    assert_eq!(app.db.stuck_instances().await, [stuck.to_string()]);
    app.db.allow_stuck_instances();
}
