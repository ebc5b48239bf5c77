//! Every run ends: the engine defects found by review, each as the scenario that broke it.
//! Saving a definition under a running instance, results the database cannot store, claims
//! that never settle, children that vanish, human answers racing other branches, runs that end
//! with open requests, joins inside loops, slow nodes in a batch, locked instances, and the
//! history of failed tries.

use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::{Flow, completed, events};
use jet_tests::wait::eventually;
use jet_worker::Role;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn pending_request(app: &TestApp, a: &Admin, instance: &str) -> Value {
    eventually(20, "a pending request", || async {
        let detail = app.instance(a, instance).await;
        detail["pendingRequests"]
            .as_array()
            .and_then(|r| r.first())
            .cloned()
    })
    .await
}

fn request_path(a: &Admin, request: &Value) -> String {
    format!(
        "/api/v1/tenants/{}/workflows/data-collection/{}",
        a.tenant_id,
        request["collectionRequestID"].as_str().expect("request id")
    )
}

fn approval_flow(answer: &str) -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("ask", "approval", json!({"title": "ok?"}))
        .node(
            "done",
            "end",
            json!({"outputParameters": [{"name": "answer", "sourceVariable": answer}]}),
        )
        .edge("start", "ask")
        .edge_on("ask", "approved", "done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_a_workflow_never_touches_a_running_instance() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let v1 = approval_flow("first");
    let workflow = app.save(&a, &v1).await;
    let waiting = app.execute(&a, &workflow, json!({})).await;
    let request = pending_request(&app, &a, &waiting).await;
    let path = format!("/api/v1/tenants/{}/workflows/{workflow}", a.tenant_id);

    // The same graph saved again, then a changed one: the waiting run keeps its request.
    let same = app.patch(&path, &a.auth, v1.body("same")).await;
    assert_eq!(same.status, 200, "{}", same.body);
    let mut v2 = v1.body("changed");
    v2["nodes"][2]["data"] =
        json!({"outputParameters": [{"name": "answer", "sourceVariable": "second"}]});
    let changed = app.patch(&path, &a.auth, v2).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        app.get(&request_path(&a, &request), &a.auth).await.body["status"],
        "PENDING"
    );

    let submit = app
        .post(
            &format!("{}/submit", request_path(&a, &request)),
            &a.auth,
            json!({"data": {"approved": true}}),
        )
        .await;
    assert_eq!(submit.status, 202, "{}", submit.body);
    let done = app.finished(&a, &waiting, 20).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["context"]["output"]["answer"], "first",
        "the run kept the definition it started with"
    );

    // A run started after the save executes the new definition.
    let later = app.execute(&a, &workflow, json!({})).await;
    let request = pending_request(&app, &a, &later).await;
    app.post(
        &format!("{}/submit", request_path(&a, &request)),
        &a.auth,
        json!({"data": {"approved": true}}),
    )
    .await;
    assert_eq!(
        app.finished(&a, &later, 20).await["context"]["output"]["answer"],
        "second"
    );
}

async fn dispatches(app: &TestApp, instance: &str) -> Vec<i32> {
    sqlx::query_scalar(
        r#"SELECT "nodeAttempt" FROM "tblWorkflowInstanceLogs" WHERE "instanceID" = $1 AND "eventType" = 'NODE_DISPATCHED'"#,
    )
    .bind(instance.parse::<Uuid>().expect("uuid"))
    .fetch_all(&app.db.pool)
    .await
    .expect("logs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_stored_fails_its_node_once() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let run = |code: &str| {
        Flow::new()
            .node("start", "start", json!({}))
            .node("js", "javascript", json!({"code": code}))
            .node("end", "end", json!({}))
            .edge("start", "js")
            .edge_on("js", "success", "end")
    };
    let cases = [
        ("return 'a' + String.fromCharCode(0)", "NUL"),
        (
            "throw new Error('bad' + String.fromCharCode(0) + 'byte')",
            "bad\\u0000byte",
        ),
        ("return {k: ['x', 'y' + String.fromCharCode(0)]}", "NUL"),
        (
            "return 'x'.repeat(2 * 1024 * 1024)",
            "JET_NODE_MAX_OUTPUT_BYTES",
        ),
    ];
    // A healthy run in the same batches settles as usual.
    let healthy = app.save(&a, &run("return 1")).await;
    for (code, expected) in cases {
        let flow = run(code);
        let workflow = app.save(&a, &flow).await;
        let bad = app.execute(&a, &workflow, json!({})).await;
        let good = app.execute(&a, &healthy, json!({})).await;
        let done = app.finished(&a, &bad, 30).await;
        assert_eq!(done["status"], "FAILED", "{code}: {done}");
        let failure = done["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .find(|l| l["eventType"] == "NODE_FAILED")
            .expect("a NODE_FAILED row")
            .clone();
        let message = failure["errorMessage"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{code}: {message}");
        assert_eq!(
            events(&flow, &done, "NODE_DISPATCHED")
                .iter()
                .filter(|n| *n == "js")
                .count(),
            1
        );
        assert_eq!(app.finished(&a, &good, 30).await["status"], "COMPLETED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claimed_too_often_without_a_result_fails_instead_of_looping() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end");
    let workflow = app.save(&a, &flow).await;
    let instance = app.execute(&a, &workflow, json!({})).await;
    // Five claims already ended without a result (dead workers, unstorable results).
    sqlx::query(r#"UPDATE "tblNodeExecutions" SET "claimCount" = 5 WHERE "instanceID" = $1"#)
        .bind(instance.parse::<Uuid>().expect("uuid"))
        .execute(&app.db.pool)
        .await
        .expect("update");
    let _workers = app.start_roles("w", &[Role::Nodes], |c| c.node_max_claims = 5);
    let done = app.finished(&a, &instance, 20).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let reason = done["logs"].to_string();
    assert!(
        reason.contains("claimed 6 times without a result"),
        "{reason}"
    );
    assert_eq!(
        dispatches(&app, &instance).await,
        [1],
        "dispatched once, never re-run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_whose_child_is_deleted_fails_its_node_with_a_reason() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let child = app.save(&a, &approval_flow("child")).await;
    let parent = Flow::new()
        .node("start", "start", json!({}))
        .node("call", "subWorkflow", json!({"childWorkflowID": child}))
        .node("end", "end", json!({}))
        .edge("start", "call")
        .edge("call", "end");
    let parent_workflow = app.save(&a, &parent).await;
    let running = app.execute(&a, &parent_workflow, json!({})).await;
    let child_instance: Uuid = eventually(20, "the child runs", || async {
        sqlx::query_scalar(
            r#"SELECT "instanceID" FROM "tblWorkflowInstances" WHERE "parentInstanceID" = $1"#,
        )
        .bind(running.parse::<Uuid>().expect("uuid"))
        .fetch_optional(&app.db.pool)
        .await
        .expect("child")
    })
    .await;
    // The child goes away for good (as with its workflow, or a deleted test run).
    sqlx::query(r#"DELETE FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#)
        .bind(child_instance)
        .execute(&app.db.pool)
        .await
        .expect("delete the child");
    let done = app.finished(&a, &running, 20).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(done.to_string().contains("no longer exists"), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_step_not_yet_resumed_keeps_its_run_alive() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    // Two branches from start: an approval, and a short delay that leads nowhere.
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("ask", "approval", json!({"title": "ok?"}))
        .node(
            "yes",
            "end",
            json!({"outputParameters": [{"name": "answer", "sourceVariable": "yes"}]}),
        )
        .node("other", "delay", json!({"delayMs": 300}))
        .edge("start", "ask")
        .edge("start", "other")
        .edge_on("ask", "approved", "yes");
    let workflow = app.save(&a, &flow).await;
    let instance = app.execute(&a, &workflow, json!({})).await;
    // Only nodes run: the answer's resume command waits in the queue.
    let nodes = app.start_roles("nodes-only", &[Role::Nodes], |_| {});
    let request = pending_request(&app, &a, &instance).await;
    let submit = app
        .post(
            &format!("{}/submit", request_path(&a, &request)),
            &a.auth,
            json!({"data": {"approved": true}}),
        )
        .await;
    assert_eq!(submit.status, 202, "{}", submit.body);
    let id: Uuid = instance.parse().expect("uuid");
    eventually(20, "the other branch settled", || async {
        let open: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblNodeExecutions" WHERE "instanceID" = $1"#,
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
        (open == 0).then_some(())
    })
    .await;
    assert_eq!(
        app.instance(&a, &instance).await["status"],
        "RUNNING",
        "the answer is still pending work"
    );
    let _commands = app.start_roles("commands", &[Role::Commands], |_| {});
    let done = app.finished(&a, &instance, 20).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["context"]["output"]["answer"], "yes",
        "the approval's branch ran"
    );
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_cancels_its_open_requests() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("ask", "approval", json!({"title": "ok?"}))
        .node("wait", "delay", json!({"delayMs": 500}))
        .node("end", "end", json!({}))
        .edge("start", "ask")
        .edge("start", "wait")
        .edge("wait", "end");
    let workflow = app.save(&a, &flow).await;
    let instance = app.execute(&a, &workflow, json!({})).await;
    let request = pending_request(&app, &a, &instance).await;
    assert_eq!(app.finished(&a, &instance, 20).await["status"], "COMPLETED");
    let after = app.get(&request_path(&a, &request), &a.auth).await;
    assert_eq!(after.body["status"], "CANCELLED", "{}", after.body);
    let submit = app
        .post(
            &format!("{}/submit", request_path(&a, &request)),
            &a.auth,
            json!({"data": {"approved": true}}),
        )
        .await;
    assert_eq!(
        (submit.status, submit.code()),
        (409, "request_not_pending"),
        "{}",
        submit.body
    );
}

fn loop_with_join(mode: &str) -> Flow {
    // start -> loop -(loop)-> fan -> a, b -> join -> loop ; loop -(completed)-> end
    Flow::new()
        .node("start", "start", json!({}))
        .node(
            "loop",
            "loop",
            json!({"sourceVariable": "{{ctx.input.items}}"}),
        )
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "a"}, {"id": "b"}]}),
        )
        .node("a", "delay", json!({"delayMs": 0}))
        .node("b", "delay", json!({"delayMs": 150}))
        .node("join", "join", json!({"joinMode": mode}))
        .node("end", "end", json!({}))
        .edge("start", "loop")
        .edge_on("loop", "loop", "fan")
        .edge_on("fan", "a", "a")
        .edge_on("fan", "b", "b")
        .edge("a", "join")
        .edge("b", "join")
        .edge("join", "loop")
        .edge_on("loop", "completed", "end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_inside_loops_count_only_the_current_pass() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    for mode in ["all", "any"] {
        let flow = loop_with_join(mode);
        let done = app.run_flow(&a, &flow, json!({"items": [1, 2, 3]})).await;
        assert_eq!(done["status"], "COMPLETED", "{mode}: {done}");
        let ran = completed(&flow, &done);
        let count = |n: &str| ran.iter().filter(|x| *x == n).count();
        assert_eq!(count("join"), 3, "{mode}: one join per pass: {ran:?}");
        assert_eq!(count("end"), 1, "{mode}: {ran:?}");
        if mode == "all" {
            // Every pass's join came after both of that pass's branches.
            let passes: Vec<&[String]> = ran.split(|n| n == "join").collect();
            for pass in &passes[..3] {
                assert!(
                    pass.contains(&"a".to_owned()) && pass.contains(&"b".to_owned()),
                    "{ran:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_does_not_hold_its_batch() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let script = |ms: u64| {
        Flow::new()
            .node("start", "start", json!({}))
            .node("js", "javascript", json!({"code": format!("const t = Date.now() + {ms}; while (Date.now() < t) {{}} return 1")}))
            .node("end", "end", json!({}))
            .edge("start", "js")
            .edge_on("js", "success", "end")
    };
    let slow = app.save(&a, &script(4000)).await;
    let fast = app.save(&a, &script(0)).await;
    let slow_run = app.execute(&a, &slow, json!({})).await;
    let mut fast_runs = Vec::new();
    for _ in 0..4 {
        fast_runs.push(app.execute(&a, &fast, json!({})).await);
    }
    // One claim loop: every start node lands in one batch, then every js node in the next.
    // Script slots set, not read off the machine: on one core the slow script would hold the
    // only slot and the test would measure the slot, not the batch.
    let _workers = app.start_roles("w", &[Role::Nodes], |c| {
        c.node_concurrency = 1;
        c.js_concurrency = 4;
    });
    let started = Instant::now();
    for run in &fast_runs {
        assert_eq!(app.finished(&a, run, 20).await["status"], "COMPLETED");
    }
    let fast_done = started.elapsed();
    assert_eq!(
        app.instance(&a, &slow_run).await["status"],
        "RUNNING",
        "the slow node still runs"
    );
    assert!(
        fast_done < Duration::from_secs(3),
        "fast runs waited for the slow node: {fast_done:?}"
    );
    assert_eq!(app.finished(&a, &slow_run, 20).await["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_instance_neither_stalls_the_batch_nor_runs_twice() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("js", "javascript", json!({"code": "return 1"}))
        .node("end", "end", json!({}))
        .edge("start", "js")
        .edge_on("js", "success", "end");
    let workflow = app.save(&a, &flow).await;
    let locked = app.execute(&a, &workflow, json!({})).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(app.execute(&a, &workflow, json!({})).await);
    }
    // Someone holds the instance row in an idle transaction for longer than a lease.
    let mut holder = app.db.pool.begin().await.expect("begin");
    sqlx::query(r#"SELECT 1 FROM "tblWorkflowInstances" WHERE "instanceID" = $1 FOR UPDATE"#)
        .bind(locked.parse::<Uuid>().expect("uuid"))
        .execute(&mut *holder)
        .await
        .expect("lock");
    let _workers = app.start_roles("w", &[Role::Nodes], |c| {
        c.node_lease_seconds = 2;
        c.node_concurrency = 1;
        c.db_max_connections = 3;
    });
    for run in &others {
        assert_eq!(app.finished(&a, run, 15).await["status"], "COMPLETED");
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // two leases long
    holder.rollback().await.expect("release the lock");
    let done = app.finished(&a, &locked, 30).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        dispatches(&app, &locked).await.len(),
        3,
        "start, js, end: each dispatched once"
    );
    let claims: Vec<i32> = sqlx::query_scalar(
        r#"SELECT "nodeAttempt" FROM "tblWorkflowInstanceLogs" WHERE "instanceID" = $1 AND "eventType" = 'NODE_COMPLETED'"#,
    )
    .bind(locked.parse::<Uuid>().expect("uuid"))
    .fetch_all(&app.db.pool)
    .await
    .expect("logs");
    assert_eq!(claims, [1, 1, 1], "no node ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_try_is_in_the_run_log() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("bad", "javascript", json!({"code": "throw new Error('try again')", "retryLimit": 2, "retryDelaySeconds": 0}))
        .node("end", "end", json!({}))
        .edge("start", "bad")
        .edge_on("bad", "success", "end");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "FAILED");
    let retries: Vec<&Value> = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["eventType"] == "NODE_RETRY")
        .collect();
    assert_eq!(retries.len(), 2, "{}", done["logs"]);
    for (n, row) in retries.iter().enumerate() {
        assert_eq!(row["nodeID"], flow.id("bad"));
        assert_eq!(row["payload"]["failedTry"], n + 1);
        assert!(row["payload"]["retryAt"].is_string(), "{row}");
        assert!(
            row["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("try again"),
            "{row}"
        );
    }
}

/// Bytes of log payload a run of a loop over `n` items stores.
async fn loop_storage(app: &TestApp, a: &Admin, n: usize) -> i64 {
    let items: Vec<String> = (0..n).map(|i| format!("item-number-{i:05}")).collect();
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "loop",
            "loop",
            json!({"sourceVariable": "{{ctx.input.items}}"}),
        )
        .node("body", "delay", json!({"delayMs": 0}))
        .node("end", "end", json!({}))
        .edge("start", "loop")
        .edge_on("loop", "loop", "body")
        .edge("body", "loop")
        .edge_on("loop", "completed", "end");
    let done = app.run_flow(a, &flow, json!({"items": items})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["context"]["loopResults"].as_array().map(Vec::len),
        Some(n)
    );
    sqlx::query_scalar(
        r#"SELECT sum(octet_length("payload"::text))::int8 FROM "tblWorkflowInstanceLogs" WHERE "instanceID" = $1"#,
    )
    .bind(done["instanceID"].as_str().expect("id").parse::<Uuid>().expect("uuid"))
    .fetch_one(&app.db.pool)
    .await
    .expect("size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_stores_linear_not_quadratic_state() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let (small, large) = (
        loop_storage(&app, &a, 100).await,
        loop_storage(&app, &a, 300).await,
    );
    // Three times the items: about three times the bytes (quadratic would be nine times).
    let ratio = large as f64 / small as f64;
    assert!(
        ratio < 3.6,
        "{small} bytes for 100 items, {large} for 300: ratio {ratio:.2}"
    );
}
