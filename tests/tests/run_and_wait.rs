//! `POST …/workflows/{id}/execute?waitSeconds=N`: one round trip answers with the ended run
//! (status and output), or with the still-running instance once the wait runs out; the bound
//! is checked before anything starts; waits share the event-stream bounds, and a client that
//! goes away frees its place.

use jet_tests::app::Admin;
use jet_tests::flow::Flow;
use jet_tests::wait::eventually;
use jet_tests::{Resp, TestApp};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn execute_path(admin: &Admin, workflow: &str, query: &str) -> String {
    format!(
        "/api/v1/tenants/{}/workflows/{workflow}/execute{query}",
        admin.tenant_id
    )
}

/// start -> condition on `n` -> one of two ends naming the branch.
fn size_check() -> Flow {
    Flow::new()
        .options(json!({"inputs": [{"name": "n", "type": "number", "required": true}]}))
        .node("start", "start", json!({}))
        .node(
            "check",
            "condition",
            json!({"branches": [{"id": "big", "conditions": [
                {"leftValue": "{{ctx.input.n}}", "operator": "greater_than", "rightValue": 10}]}]}),
        )
        .node(
            "big",
            "end",
            json!({"outputParameters": [{"name": "size", "sourceVariable": "big"}]}),
        )
        .node(
            "small",
            "end",
            json!({"outputParameters": [{"name": "size", "sourceVariable": "small"}]}),
        )
        .edge("start", "check")
        .edge_on("check", "big", "big")
        .edge_on("check", "default", "small")
}

/// start -> a ten-minute durable delay -> end: runs far longer than any wait.
fn slow() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node(
            "nap",
            "delay",
            json!({"delayType": "fixed", "delayMs": 600_000}),
        )
        .node("end", "end", json!({}))
        .edge("start", "nap")
        .edge("nap", "end")
}

async fn instance_count(app: &TestApp, admin: &Admin, workflow: &str) -> u64 {
    let list = app
        .get(
            &format!(
                "/api/v1/tenants/{}/workflows/instances?workflowID={workflow}",
                admin.tenant_id
            ),
            &admin.auth,
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.body["totalCount"].as_u64().expect("totalCount")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_in_time_answers_with_its_output_in_one_round_trip() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let workflow = app.save(&a, &size_check()).await;
    for (n, size) in [(42, "big"), (3, "small")] {
        let asked = Instant::now();
        let resp = app
            .post(
                &execute_path(&a, &workflow, "?waitSeconds=30"),
                &a.auth,
                json!({"inputValues": {"n": n}}),
            )
            .await;
        let took = asked.elapsed();
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.body["status"], "COMPLETED", "{}", resp.body);
        assert_eq!(resp.body["context"]["output"], json!({"size": size}));
        assert_eq!(resp.body["context"]["input"], json!({"n": n}));
        assert!(resp.body["instanceID"].is_string());
        assert!(resp.body["pendingRequests"].as_array().is_some());
        // The answer came when the run ended, woken by its end, not when the wait ran out.
        assert!(took < Duration::from_secs(15), "answered after {took:?}");
    }
    // Without waitSeconds the answer is unchanged: 202 and the id.
    let started = app
        .post(
            &execute_path(&a, &workflow, ""),
            &a.auth,
            json!({"inputValues": {"n": 1}}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    assert!(started.body["instanceID"].is_string());
    assert!(started.body.get("status").is_none(), "{}", started.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_run_ends_notifies_its_id_once() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .expect("listener");
    listener
        .listen(jet_shared::workflow::instance::ENDED_CHANNEL)
        .await
        .expect("listen");
    let quick = app.save(&a, &size_check()).await;
    let completed = app.execute(&a, &quick, json!({"n": 1})).await;
    let long = app.save(&a, &slow()).await;
    let cancelled = app.execute(&a, &long, json!({})).await;
    let cancel = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{cancelled}/cancel",
                a.tenant_id
            ),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let note = tokio::time::timeout(Duration::from_secs(20), listener.recv())
            .await
            .expect("a notification within 20 s")
            .expect("recv");
        ended.push(note.payload().to_owned());
    }
    ended.sort();
    let mut want = vec![completed, cancelled];
    want.sort();
    assert_eq!(ended, want);
    // Nothing more: a run that has ended does not notify again.
    let more = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(more.is_err(), "an extra notification: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_answers_failed_in_the_same_round_trip() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "boom",
            "javascript",
            json!({"code": "throw new Error('boom')"}),
        )
        .node("end", "end", json!({}))
        .edge("start", "boom")
        .edge("boom", "end");
    let workflow = app.save(&a, &flow).await;
    let resp = app
        .post(
            &execute_path(&a, &workflow, "?waitSeconds=30"),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["status"], "FAILED", "{}", resp.body);
    let failed: Vec<&Value> = resp.body["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["eventType"] == "NODE_FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "{}", resp.body);
    assert_eq!(failed[0]["nodeID"], flow.id("boom"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_answers_running_when_the_wait_runs_out() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let workflow = app.save(&a, &slow()).await;
    let asked = Instant::now();
    let resp = app
        .post(
            &execute_path(&a, &workflow, "?waitSeconds=2"),
            &a.auth,
            json!({}),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["status"], "RUNNING", "{}", resp.body);
    assert!(resp.body["context"]["output"].is_null(), "{}", resp.body);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "waited {took:?} for a 2 s wait"
    );
    // waitSeconds=0 answers at once with the instance as it stands.
    let now = app
        .post(
            &execute_path(&a, &workflow, "?waitSeconds=0"),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (now.status, now.body["status"].as_str()),
        (200, Some("RUNNING"))
    );
    // Cancelling wakes a waiter too: it ends as CANCELLED within its wait.
    let waiter = {
        let (app_base, auth, path) = (
            app.base.clone(),
            a.auth.clone(),
            execute_path(&a, &workflow, "?waitSeconds=30"),
        );
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{app_base}{path}"))
                .header("Authorization", auth)
                .json(&json!({}))
                .send()
                .await
                .expect("request");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("json"),
            )
        })
    };
    let running = eventually(10, "a third instance", || async {
        let list = app
            .get(
                &format!(
                    "/api/v1/tenants/{}/workflows/instances?workflowID={workflow}&status=RUNNING",
                    a.tenant_id
                ),
                &a.auth,
            )
            .await;
        (list.body["totalCount"] == 3).then_some(list)
    })
    .await;
    let started_last = running.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["instanceID"].as_str().expect("id").to_owned())
        .filter(|id| *id != resp.str("instanceID") && *id != now.str("instanceID"))
        .collect::<Vec<_>>();
    assert_eq!(started_last.len(), 1);
    let cancel = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{}/cancel",
                a.tenant_id, started_last[0]
            ),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter answers well within its 30 s")
        .expect("task");
    assert_eq!((status, body["status"].as_str()), (200, Some("CANCELLED")));
}

#[tokio::test]
async fn wait_bounds_are_checked_before_anything_starts() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let workflow = app.save(&a, &slow()).await;
    for bad in ["61", "-1", "3600", "soon", "1.5", ""] {
        let resp: Resp = app
            .post(
                &execute_path(&a, &workflow, &format!("?waitSeconds={bad}")),
                &a.auth,
                json!({}),
            )
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_parameter"),
            "waitSeconds={bad}: {}",
            resp.body
        );
        assert!(
            resp.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("waitSeconds"),
            "{}",
            resp.body
        );
    }
    assert_eq!(
        instance_count(&app, &a, &workflow).await,
        0,
        "a refused request starts nothing"
    );
    // Inputs are still checked first: a bad input is a 422 whatever the wait.
    let sized = app.save(&a, &size_check()).await;
    let resp = app
        .post(
            &execute_path(&a, &sized, "?waitSeconds=5"),
            &a.auth,
            json!({"inputValues": {}}),
        )
        .await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_eq!(instance_count(&app, &a, &sized).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_share_the_stream_bounds_and_a_client_that_leaves_frees_its_place() {
    let app = TestApp::with_env(&[("JET_SSE_MAX_STREAMS_PER_TENANT", "1")], true).await;
    let a = app.admin("A").await;
    let workflow = app.save(&a, &slow()).await;
    // A client that gives up after one second on a 60 s wait. The answer's head comes at
    // once (200); the instance follows as the body, which this client stops reading.
    let waiting = app
        .client
        .post(format!(
            "{}{}",
            app.base,
            execute_path(&a, &workflow, "?waitSeconds=60")
        ))
        .header("Authorization", &a.auth)
        .json(&json!({}))
        .send()
        .await
        .expect("answer head");
    assert_eq!(waiting.status(), 200);
    assert_eq!(instance_count(&app, &a, &workflow).await, 1);
    // While the first wait holds the tenant's only place, a second wait is refused before it
    // starts anything.
    let refused = app
        .post(
            &execute_path(&a, &workflow, "?waitSeconds=5"),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "too_many_streams"),
        "{}",
        refused.body
    );
    let gave_up = tokio::time::timeout(Duration::from_secs(1), waiting.bytes()).await;
    assert!(gave_up.is_err(), "the run is still waiting: {gave_up:?}");
    assert_eq!(instance_count(&app, &a, &workflow).await, 1);
    // Not waiting needs no place.
    let started = app
        .post(&execute_path(&a, &workflow, ""), &a.auth, json!({}))
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    // The client that left frees its place long before its 60 s would have run out.
    let left_at = Instant::now();
    let again = eventually(15, "the departed client's place to be free", || async {
        let resp = app
            .post(
                &execute_path(&a, &workflow, "?waitSeconds=0"),
                &a.auth,
                json!({}),
            )
            .await;
        (resp.status != 429).then_some(resp)
    })
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(left_at.elapsed() < Duration::from_secs(15));
    // The run whose client left was answered, so it is audited like any other start.
    let audited: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblAuditLogs"
           WHERE "type" = 'executeWorkflow' AND ("metadata"->>'status')::int = 200"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("audit rows");
    assert_eq!(audited, 2, "the departed client's run and the last one");
}
