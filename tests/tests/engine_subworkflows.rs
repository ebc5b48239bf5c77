//! The `subWorkflow` node: the parent waits for a child instance of another workflow, gets its
//! output, fails or recovers with it, bounds the nesting, and takes its children down with it.

use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::{Flow, completed, events};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// start → javascript (doubles `input.n`) → end with `doubled`.
fn doubler() -> Flow {
    Flow::new()
        .options(json!({"inputs": [{"name": "n", "type": "number", "required": true}]}))
        .node("start", "start", json!({}))
        .node(
            "double",
            "javascript",
            json!({"code": "return ctx.input.n * 2", "outputVariable": "d"}),
        )
        .node(
            "end",
            "end",
            json!({"outputParameters": [{"name": "doubled", "sourceVariable": "{{ctx.d}}"}]}),
        )
        .edge("start", "double")
        .edge_on("double", "success", "end")
}

/// start → subWorkflow(child, `config`) → end echoing `{{ctx.result}}`; `error` → recover.
fn parent(child: &str, config: Value) -> Flow {
    let mut data = json!({"childWorkflowID": child, "outputVariable": "result"});
    data.as_object_mut()
        .expect("object")
        .extend(config.as_object().cloned().unwrap_or_default());
    Flow::new()
        .node("start", "start", json!({}))
        .node("call", "subWorkflow", data)
        .node(
            "end",
            "end",
            json!({"outputParameters": [{"name": "got", "sourceVariable": "{{ctx.result}}"}]}),
        )
        .edge("start", "call")
        .edge("call", "end")
}

async fn children(app: &TestApp, a: &Admin, parent: &str) -> Vec<Value> {
    let resp = app
        .get(
            &format!(
                "/api/v1/tenants/{}/workflows/instances?parentInstanceID={parent}",
                a.tenant_id
            ),
            &a.auth,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parent_waits_for_the_child_and_gets_its_output() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let child = app.save(&a, &doubler()).await;
    let flow = parent(&child, json!({"inputMapping": {"n": "{{ctx.input.base}}"}}));
    let done = app.run_flow(&a, &flow, json!({"base": 21})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let kids = children(&app, &a, done["instanceID"].as_str().expect("id")).await;
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(kids[0]["workflowID"], json!(child));
    assert_eq!(kids[0]["status"], "COMPLETED");
    assert_eq!(kids[0]["parentNodeID"], json!(flow.id("call")));
    let waits: Vec<&Value> = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["eventType"] == "NODE_SUSPENDED")
        .collect();
    assert_eq!(waits.len(), 1);
    assert_eq!(
        waits[0]["payload"]["childInstanceID"],
        kids[0]["instanceID"]
    );
    let child_detail = app
        .instance(&a, kids[0]["instanceID"].as_str().expect("id"))
        .await;
    assert_eq!(child_detail["context"]["input"], json!({"n": 21}));
    assert_eq!(
        child_detail["context"]["output"],
        json!({"doubled": 42}),
        "{child_detail}"
    );
    assert_eq!(
        done["context"]["output"]["got"],
        json!({"doubled": 42}),
        "{done}"
    );
    assert_eq!(completed(&flow, &done), ["start", "call", "end"]);
    let parked: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(parked, 0, "nothing stays parked once the parent is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_child_fails_the_node_which_retries_then_takes_its_error_edge() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let failing = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({"status": "error"}))
        .edge("start", "end");
    let child = app.save(&a, &failing).await;

    let strict = parent(&child, json!({}));
    let done = app.run_flow(&a, &strict, json!({})).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let failed = events(&strict, &done, "NODE_FAILED");
    assert_eq!(failed, ["call"]);

    let recovering = parent(&child, json!({"retryLimit": 1, "retryDelaySeconds": 0}))
        .node(
            "recover",
            "end",
            json!({"outputParameters": [{"name": "recovered", "sourceVariable": "yes"}]}),
        )
        .edge_on("call", "error", "recover");
    let done = app.run_flow(&a, &recovering, json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["context"]["output"]["recovered"], "yes");
    let kids = children(&app, &a, done["instanceID"].as_str().expect("id")).await;
    assert_eq!(kids.len(), 2, "the retry ran a fresh child: {kids:?}");
    assert!(kids.iter().all(|k| k["status"] == "FAILED"));
    let log = done["logs"].as_array().expect("logs");
    let message = log
        .iter()
        .find(|l| l["eventType"] == "NODE_FAILED")
        .and_then(|l| l["errorMessage"].as_str())
        .unwrap_or_default();
    assert!(
        message.contains("ended FAILED") && message.contains("end node reported an error"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursion_stops_at_max_depth() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let placeholder = Flow::new().node("start", "start", json!({}));
    let workflow = app.save(&a, &placeholder).await;
    // The workflow calls itself.
    let recursive = parent(&workflow, json!({"maxDepth": 2}));
    let resp = app
        .patch(
            &format!("/api/v1/tenants/{}/workflows/{workflow}", a.tenant_id),
            &a.auth,
            json!({"nodes": recursive.body("x")["nodes"], "edges": recursive.body("x")["edges"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let top = app.execute(&a, &workflow, json!({})).await;
    let done = app.finished(&a, &top, 30).await;
    assert_eq!(done["status"], "FAILED", "{done}");

    let level1 = children(&app, &a, &top).await;
    assert_eq!(level1.len(), 1);
    let level1_id = level1[0]["instanceID"].as_str().expect("id").to_owned();
    let level2 = children(&app, &a, &level1_id).await;
    assert_eq!(level2.len(), 1);
    let level2_id = level2[0]["instanceID"].as_str().expect("id").to_owned();
    assert!(
        children(&app, &a, &level2_id).await.is_empty(),
        "no third level"
    );
    let deepest = app.instance(&a, &level2_id).await;
    assert_eq!(deepest["status"], "FAILED");
    let message = deepest["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find_map(|l| l["errorMessage"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("maxDepth 2"), "{message}");
}

/// A child that waits `seconds` before ending.
fn sleeper(seconds: u64) -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delaySeconds": seconds}))
        .node("end", "end", json!({}))
        .edge("start", "wait")
        .edge("wait", "end")
}

async fn wait_for_child(app: &TestApp, a: &Admin, parent: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(kid) = children(app, a, parent).await.first() {
            return kid["instanceID"].as_str().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "no child was started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_the_child() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let child = app.save(&a, &sleeper(60)).await;
    let workflow = app.save(&a, &parent(&child, json!({}))).await;
    let top = app.execute(&a, &workflow, json!({})).await;
    let kid = wait_for_child(&app, &a, &top).await;
    let resp = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{top}/cancel",
                a.tenant_id
            ),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(app.finished(&a, &top, 10).await["status"], "CANCELLED");
    assert_eq!(app.finished(&a, &kid, 10).await["status"], "CANCELLED");
    let left: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "the child's queued delay went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_timeout_cancels_a_slow_child_and_fails_the_node() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let child = app.save(&a, &sleeper(60)).await;
    let flow = parent(&child, json!({"timeoutSeconds": 1}));
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let kids = children(&app, &a, done["instanceID"].as_str().expect("id")).await;
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0]["status"], "CANCELLED");
    let message = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find_map(|l| l["errorMessage"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("timed out"), "{message}");
}

#[tokio::test]
async fn the_child_must_be_a_workflow_of_the_tenant_the_saver_may_execute() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let theirs = app.save(&b, &doubler()).await;
    let base = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let foreign = parent(&theirs, json!({}));
    let resp = app.post(&base, &a.auth, foreign.body("foreign")).await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert!(
        resp.body["message"]
            .as_str()
            .unwrap_or("")
            .contains(&foreign.id("call")),
        "{}",
        resp.body
    );

    let ours = app.save(&a, &doubler()).await;
    let editor = app
        .role(
            &a,
            "editor",
            &["tenant:workflow:create", "tenant:workflow:read"],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "editor", &[&editor]).await;
    let resp = app
        .post(&base, &key, parent(&ours, json!({})).body("calls"))
        .await;
    assert_eq!(
        (resp.status, resp.code()),
        (403, "permission_denied"),
        "saving a call needs execute on the child: {}",
        resp.body
    );
    let test_run = app
        .post(
            &format!("{base}/test"),
            &a.auth,
            json!({"nodes": foreign.body("x")["nodes"], "edges": foreign.body("x")["edges"]}),
        )
        .await;
    assert_eq!(test_run.status, 422, "{}", test_run.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_children_beyond_the_tenant_bound_fails_the_node_that_would_exceed_it() {
    let app = TestApp::with_env(&[("JET_MAX_RUNNING_CHILDREN", "2")], true).await;
    let a = app.admin("A").await;
    let slow = Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delayMs": 5000}))
        .node("end", "end", json!({}))
        .edge("start", "wait")
        .edge("wait", "end");
    let child = app.save(&a, &slow).await;
    let call = json!({"childWorkflowID": child});
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}),
        )
        .node("c1", "subWorkflow", call.clone())
        .node("c2", "subWorkflow", call.clone())
        .node("c3", "subWorkflow", call)
        .edge("start", "fan")
        .edge_on("fan", "1", "c1")
        .edge_on("fan", "2", "c2")
        .edge_on("fan", "3", "c3");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let failure = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find(|l| l["eventType"] == "NODE_FAILED")
        .cloned()
        .expect("a failed node");
    assert!(
        failure["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("JET_MAX_RUNNING_CHILDREN = 2"),
        "{failure}"
    );
    let kids = children(&app, &a, done["instanceID"].as_str().expect("id")).await;
    assert_eq!(kids.len(), 2, "no child beyond the bound: {kids:?}");
}
