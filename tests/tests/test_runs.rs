//! `POST …/workflows/test`: an unsaved graph runs as a test instance, which can be deleted.

use jet_tests::TestApp;
use jet_tests::flow::Flow;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsaved_graph_runs_as_a_deletable_test_instance() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let base = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let graph = json!({
        "nodes": [
            {"id": "s", "type": "start", "data": {}},
            {"id": "js", "type": "javascript", "data": {"code": "return ctx.input.x + 1", "outputVariable": "y"}},
            {"id": "e", "type": "end", "data": {"outputParameters": [{"name": "y", "sourceVariable": "{{ctx.y}}"}]}}],
        "edges": [{"source": "s", "target": "js"}, {"source": "js", "target": "e", "sourceHandle": "success"}],
        "inputValues": {"x": 41}
    });
    let started = app.post(&format!("{base}/test"), &a.auth, graph).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let instance = started.str("instanceID");
    let done = app.finished(&a, &instance, 20).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["isTest"], true);
    assert!(done["workflowID"].is_null());
    assert_eq!(done["context"]["output"]["y"], 42);
    assert!(
        done["context"].get("__workflowDefinition").is_none(),
        "the carried graph stays internal"
    );
    let tests = app
        .get(&format!("{base}/instances?isTest=true"), &a.auth)
        .await;
    assert_eq!(tests.body["totalCount"], 1);

    let deleted = app
        .delete(&format!("{base}/instances/{instance}/stop"), &a.auth)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        app.get(&format!("{base}/instances/{instance}"), &a.auth)
            .await
            .status,
        404
    );

    let real_flow = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end");
    let real = app.run_flow(&a, &real_flow, json!({})).await;
    let refused = app
        .delete(
            &format!(
                "{base}/instances/{}/stop",
                real["instanceID"].as_str().unwrap_or_default()
            ),
            &a.auth,
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (409, "not_a_test_instance")
    );

    let human = json!({"nodes": [{"id": "s", "type": "start", "data": {}}, {"id": "f", "type": "dataCollection", "data": {}}],
                       "edges": [{"source": "s", "target": "f"}]});
    let resp = app.post(&format!("{base}/test"), &a.auth, human).await;
    assert_eq!(resp.status, 422);
    let invalid = app
        .post(
            &format!("{base}/test"),
            &a.auth,
            json!({"nodes": [{"id": "x", "type": "end", "data": {}}]}),
        )
        .await;
    assert_eq!(invalid.status, 422, "validated like a save");
}
