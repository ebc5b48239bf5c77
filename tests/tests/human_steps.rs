//! Human steps: a form validated against its JSON Schema, approvals, expiry.

use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::{Flow, completed};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Waits for the instance's pending request and returns it.
async fn pending(app: &TestApp, a: &Admin, instance: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let detail = app.instance(a, instance).await;
        if let Some(request) = detail["pendingRequests"].as_array().and_then(|r| r.first()) {
            assert_eq!(detail["status"], "RUNNING", "a waiting run stays RUNNING");
            return request.clone();
        }
        assert!(Instant::now() < deadline, "no pending request: {detail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn submit_path(a: &Admin, request: &Value) -> String {
    format!(
        "/api/v1/tenants/{}/workflows/data-collection/{}/submit",
        a.tenant_id,
        request["collectionRequestID"].as_str().unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_is_validated_then_resumes_the_run() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let schema = json!({"type": "object", "required": ["email"], "properties": {
        "email": {"type": "string", "format": "email"}, "age": {"type": "integer", "minimum": 18}}});
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("form", "dataCollection", json!({"title": "Hi {{ctx.input.name}}", "formSchema": schema}))
        .node("end", "end", json!({"outputParameters": [{"name": "email", "sourceVariable": "{{ctx.collectedData.email}}"}]}))
        .edge("start", "form")
        .edge("form", "end");
    let workflow = app.save(&a, &flow).await;
    let instance = app.execute(&a, &workflow, json!({"name": "Ada"})).await;
    let request = pending(&app, &a, &instance).await;
    assert_eq!(request["collectionConfig"]["title"], "Hi Ada", "templated");
    let fetched = app
        .get(
            &format!(
                "/api/v1/tenants/{}/workflows/data-collection/{}",
                a.tenant_id,
                request["collectionRequestID"].as_str().unwrap_or_default()
            ),
            &a.auth,
        )
        .await;
    assert_eq!(fetched.body["status"], "PENDING");

    let bad = app
        .post(
            &submit_path(&a, &request),
            &a.auth,
            json!({"data": {"email": "nope", "age": 12}}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (422, "validation_failed"),
        "{}",
        bad.body
    );
    let message = bad.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/email") && message.contains("/age"),
        "every problem by path: {message}"
    );

    let ok = app
        .post(
            &submit_path(&a, &request),
            &a.auth,
            json!({"data": {"email": "ada@example.com", "age": 36}}),
        )
        .await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    let done = app.finished(&a, &instance, 20).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["context"]["output"]["email"], "ada@example.com");
    assert_eq!(completed(&flow, &done), ["start", "form", "end"]);
    let again = app
        .post(
            &submit_path(&a, &request),
            &a.auth,
            json!({"data": {"email": "x@example.com"}}),
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "request_not_pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_routes_approved_and_rejected() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("ask", "approval", json!({"title": "Ship it?"}))
        .node(
            "yes",
            "end",
            json!({"outputParameters": [{"name": "verdict", "sourceVariable": "shipped"}]}),
        )
        .node(
            "no",
            "end",
            json!({"outputParameters": [{"name": "verdict", "sourceVariable": "held"}]}),
        )
        .edge("start", "ask")
        .edge_on("ask", "approved", "yes")
        .edge_on("ask", "rejected", "no");
    let workflow = app.save(&a, &flow).await;
    for (approved, verdict) in [(true, "shipped"), (false, "held")] {
        let instance = app.execute(&a, &workflow, json!({})).await;
        let request = pending(&app, &a, &instance).await;
        let missing = app
            .post(
                &submit_path(&a, &request),
                &a.auth,
                json!({"data": {"comment": "hmm"}}),
            )
            .await;
        assert_eq!(missing.status, 422, "an approval needs `approved`");
        let ok = app
            .post(
                &submit_path(&a, &request),
                &a.auth,
                json!({"data": {"approved": approved}}),
            )
            .await;
        assert_eq!(ok.status, 202);
        let done = app.finished(&a, &instance, 20).await;
        assert_eq!(done["context"]["output"]["verdict"], verdict);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_step_takes_its_expired_edge_or_fails_the_run() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let with_edge = Flow::new()
        .node("start", "start", json!({}))
        .node("form", "dataCollection", json!({"expiryMinutes": 5}))
        .node(
            "late",
            "end",
            json!({"outputParameters": [{"name": "path", "sourceVariable": "timed out"}]}),
        )
        .node("end", "end", json!({}))
        .edge("start", "form")
        .edge("form", "end")
        .edge_on("form", "expired", "late");
    let without_edge = Flow::new()
        .node("start", "start", json!({}))
        .node("form", "dataCollection", json!({"expiryMinutes": 5}))
        .node("end", "end", json!({}))
        .edge("start", "form")
        .edge("form", "end");
    for (flow, expect_status) in [(&with_edge, "COMPLETED"), (&without_edge, "FAILED")] {
        let workflow = app.save(&a, flow).await;
        let instance = app.execute(&a, &workflow, json!({})).await;
        let request = pending(&app, &a, &instance).await;
        // Time passes: the deadline is now behind us.
        sqlx::query(r#"UPDATE "tblWorkflowDataCollectionRequests" SET "expiresAt" = now() - interval '1 second' WHERE "collectionRequestID"::text = $1"#)
            .bind(request["collectionRequestID"].as_str().unwrap_or_default())
            .execute(&app.db.pool)
            .await
            .expect("age the request");
        let late = app
            .post(&submit_path(&a, &request), &a.auth, json!({"data": {}}))
            .await;
        assert_eq!(late.status, 409, "{}", late.body);
        let done = app.finished(&a, &instance, 20).await;
        assert_eq!(done["status"], expect_status, "{done}");
        if expect_status == "COMPLETED" {
            assert_eq!(done["context"]["output"]["path"], "timed out");
        }
        let status: String = sqlx::query_scalar(r#"SELECT "status" FROM "tblWorkflowDataCollectionRequests" WHERE "collectionRequestID"::text = $1"#)
            .bind(request["collectionRequestID"].as_str().unwrap_or_default())
            .fetch_one(&app.db.pool)
            .await
            .expect("status");
        assert_eq!(status, "EXPIRED");
    }
}
