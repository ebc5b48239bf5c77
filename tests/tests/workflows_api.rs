//! Workflow definitions over HTTP: save validation (422 naming the node), CRUD, clone,
//! export, input checks on execute, permissions and tenant isolation.

use jet_tests::TestApp;
use jet_tests::flow::Flow;
use serde_json::{Value, json};

fn simple() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
}

#[tokio::test]
async fn invalid_graphs_are_422_and_name_the_node() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let path = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let two_starts = Flow::new()
        .node("s1", "start", json!({}))
        .node("s2", "start", json!({}));
    let bad_config = Flow::new()
        .node("s", "start", json!({}))
        .node("c", "condition", json!({"branches": []}))
        .edge("s", "c");
    let query_node = Flow::new()
        .node("s", "start", json!({}))
        .node("q", "dataQuery", json!({"dataQueryID": "x"}))
        .edge("s", "q");
    let deadlock = Flow::new()
        .node("s", "start", json!({}))
        .node("c", "condition", json!({"branches": [{"id": "yes", "conditions": [{"leftValue": 1, "operator": "equals", "rightValue": 1}]}]}))
        .node("a", "delay", json!({}))
        .node("b", "delay", json!({}))
        .node("j", "join", json!({"joinMode": "all"}))
        .edge("s", "c")
        .edge_on("c", "yes", "a")
        .edge_on("c", "default", "b")
        .edge("a", "j")
        .edge("b", "j");
    for (flow, nodes, fragment) in [
        (&two_starts, &["s1", "s2"][..], "exactly one start node"),
        (&bad_config, &["c"][..], "branches"),
        (&query_node, &["q"][..], "dataQuery"),
        (&deadlock, &["j"][..], "joinMode `any`"),
    ] {
        let resp = app.post(&path, &a.auth, flow.body("bad")).await;
        assert_eq!(
            (resp.status, resp.code()),
            (422, "validation_failed"),
            "{}",
            resp.body
        );
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(
            nodes.iter().any(|n| message.contains(&flow.id(n))),
            "names the node: {message}"
        );
        assert!(message.contains(fragment), "{message}");
    }
    let mut dangling = simple().body("dangling");
    dangling["edges"]
        .as_array_mut()
        .expect("edges")
        .push(json!({"source": uuid::Uuid::new_v4(), "target": uuid::Uuid::new_v4()}));
    assert_eq!(app.post(&path, &a.auth, dangling).await.status, 422);
    let not_uuid = json!({"title": "x", "nodes": [{"id": "start-1", "type": "start", "data": {}}], "edges": []});
    let resp = app.post(&path, &a.auth, not_uuid).await;
    assert_eq!(resp.status, 422);
    assert!(
        resp.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("start-1")
    );
    let count: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblWorkflows""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing invalid was saved");
}

#[tokio::test]
async fn workflows_are_saved_read_updated_cloned_exported_and_deleted() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let base = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let flow = simple().node("lost", "end", json!({}));
    let created = app.post(&base, &a.auth, flow.body("first")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["warnings"].as_array().map(Vec::len),
        Some(1),
        "the unreachable node is a warning"
    );
    let id = created.str("workflowID");
    let got = app.get(&format!("{base}/{id}"), &a.auth).await;
    assert_eq!(got.body["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(got.body["edges"][0]["source"], flow.id("start"));

    let replacement = simple();
    let updated = app
        .patch(&format!("{base}/{id}"), &a.auth, json!({"title": "second", "nodes": replacement.body("")["nodes"], "edges": replacement.body("")["edges"]}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["title"], "second");
    assert_eq!(
        updated.body["nodes"].as_array().map(Vec::len),
        Some(2),
        "the graph was replaced"
    );
    let edges_only = app
        .patch(&format!("{base}/{id}"), &a.auth, json!({"edges": []}))
        .await;
    assert_eq!(edges_only.status, 422);

    let clone = app
        .post(&format!("{base}/{id}/clone"), &a.auth, json!({}))
        .await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    assert_eq!(clone.body["title"], "second (copy)");
    let clone_ids: Vec<&str> = clone.body["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert!(
        !clone_ids.contains(&replacement.id("start").as_str()),
        "fresh node ids"
    );
    assert_eq!(clone.body["edges"].as_array().map(Vec::len), Some(1));

    let export = app.get(&format!("{base}/{id}/export"), &a.auth).await;
    let reimport = app
        .post(&base, &a.auth, json!({"title": "imported", "nodes": export.body["nodes"], "edges": export.body["edges"], "workflowOptions": export.body["workflowOptions"]}))
        .await;
    assert_eq!(
        (reimport.status, reimport.code()),
        (409, "node_id_taken"),
        "node ids are global: {}",
        reimport.body
    );

    let list = app.get(&base, &a.auth).await;
    assert_eq!(list.body["totalCount"], 2);
    assert_eq!(
        app.delete(&format!("{base}/{id}"), &a.auth).await.status,
        204
    );
    assert_eq!(app.get(&format!("{base}/{id}"), &a.auth).await.status, 404);
}

#[tokio::test]
async fn execute_checks_inputs_and_permissions() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let flow = simple().options(json!({"inputs": [{"name": "n", "type": "number", "required": true}, {"name": "tag", "type": "string", "default": "x"}]}));
    let workflow = app.save(&a, &flow).await;
    let run = |auth: String, inputs: Value| {
        let path = format!(
            "/api/v1/tenants/{}/workflows/{workflow}/execute",
            a.tenant_id
        );
        let app = &app;
        async move { app.post(&path, &auth, json!({"inputValues": inputs})).await }
    };
    assert_eq!(
        run(a.auth.clone(), json!({})).await.code(),
        "validation_failed"
    );
    assert_eq!(run(a.auth.clone(), json!({"n": "abc"})).await.status, 422);
    let ok = run(a.auth.clone(), json!({"n": "4"})).await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    let inputs: Value = sqlx::query_scalar(
        r#"SELECT "payload" FROM "tblWorkflowInstanceLogs" WHERE "instanceID"::text = $1 AND "eventType" = 'INPUT_SET'"#,
    )
    .bind(ok.str("instanceID"))
    .fetch_one(&app.db.pool)
    .await
    .expect("input row");
    assert_eq!(
        inputs,
        json!({"input": {"n": 4, "tag": "x"}}),
        "coerced and defaulted"
    );
    let queued: Vec<String> = sqlx::query_scalar(
        r#"SELECT e."nodeID" FROM "tblNodeExecutions" e WHERE e."instanceID"::text = $1"#,
    )
    .bind(ok.str("instanceID"))
    .fetch_all(&app.db.pool)
    .await
    .expect("executions");
    assert_eq!(
        queued,
        [flow.id("start")],
        "the start node was queued with the instance"
    );

    let reader = app
        .role(
            &a,
            "reader",
            &["tenant:workflow:read", "tenant:workflow:list"],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "reader", &[&reader]).await;
    assert_eq!(
        run(key.clone(), json!({"n": 1})).await.code(),
        "permission_denied"
    );
    assert_eq!(
        app.get(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{}",
                a.tenant_id,
                ok.str("instanceID")
            ),
            &key
        )
        .await
        .status,
        200
    );
    assert_eq!(
        run(b.auth.clone(), json!({"n": 1})).await.status,
        404,
        "another tenant's key"
    );
    let foreign = app
        .get(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{}",
                b.tenant_id,
                ok.str("instanceID")
            ),
            &b.auth,
        )
        .await;
    assert_eq!(
        foreign.status, 404,
        "another tenant's instance id under its own tenant"
    );
}

#[tokio::test]
async fn creators_may_do_everything_with_what_they_created_and_nothing_more() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let base = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let maker = app.role(&a, "maker", &["tenant:workflow:create"]).await;
    let (_, key) = app.key_with_roles(&a, "maker", &[&maker]).await;
    let mine = app.post(&base, &key, simple().body("mine")).await;
    assert_eq!(mine.status, 201, "{}", mine.body);
    let mine = mine.str("workflowID");
    let admins = app.save(&a, &simple()).await;

    assert_eq!(app.get(&format!("{base}/{mine}"), &key).await.status, 200);
    let run = app
        .post(
            &format!("{base}/{mine}/execute"),
            &key,
            json!({"inputValues": {}}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.body);
    let renamed = app
        .patch(&format!("{base}/{mine}"), &key, json!({"title": "renamed"}))
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);

    let theirs = app.get(&format!("{base}/{admins}"), &key).await;
    assert_eq!(
        (theirs.status, theirs.code()),
        (403, "permission_denied"),
        "creating grants nothing on others' workflows"
    );
    assert_eq!(
        app.get(&base, &key).await.status,
        403,
        "nor the tenant-wide list"
    );
    assert_eq!(
        app.delete(&format!("{base}/{mine}"), &key).await.status,
        204
    );
}

#[tokio::test]
async fn handle_less_edges_take_the_default_route_or_are_refused_naming_the_edge() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let path = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    // After an approval there is no default: approving and rejecting must be told apart.
    let approval = Flow::new()
        .node("s", "start", json!({}))
        .node("ask", "approval", json!({}))
        .node("e", "end", json!({}))
        .edge("s", "ask")
        .edge("ask", "e");
    let resp = app.post(&path, &a.auth, approval.body("ambiguous")).await;
    assert_eq!(
        (resp.status, resp.code()),
        (422, "validation_failed"),
        "{}",
        resp.body
    );
    let message = resp.body["message"].as_str().unwrap_or_default();
    let edge = format!("{} -> {}", approval.id("ask"), approval.id("e"));
    assert!(message.contains(&edge), "names the edge: {message}");
    assert!(message.contains("approved, rejected"), "{message}");

    // An edge on a handle its node never takes is saved, with a warning naming it.
    let dead = Flow::new()
        .node("s", "start", json!({}))
        .node("js", "javascript", json!({"code": "return 1"}))
        .node("e", "end", json!({}))
        .edge("s", "js")
        .edge_on("js", "output", "e");
    let resp = app.post(&path, &a.auth, dead.body("dead edge")).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let warnings = resp.body["warnings"].to_string();
    assert!(
        warnings.contains("never followed") && warnings.contains(&dead.id("js")),
        "{warnings}"
    );
}

/// start, then `groups` × (condition → two delays → `any` join), then an end: the shape
/// whose validation used to grow with the cube of its size.
fn branchy(groups: usize) -> Flow {
    let mut flow = Flow::new().node("start", "start", json!({}));
    let mut prev = "start".to_owned();
    for i in 0..groups {
        let (c, x, y, j) = (
            format!("c{i}"),
            format!("x{i}"),
            format!("y{i}"),
            format!("j{i}"),
        );
        flow = flow
            .node(
                &c,
                "condition",
                json!({"branches": [{"id": "t", "conditions": []}]}),
            )
            .node(&x, "delay", json!({}))
            .node(&y, "delay", json!({}))
            .node(&j, "join", json!({"joinMode": "any"}))
            .edge(&prev, &c)
            .edge_on(&c, "t", &x)
            .edge(&c, &y)
            .edge(&x, &j)
            .edge(&y, &j);
        prev = j;
    }
    flow.node("end", "end", json!({})).edge(&prev, "end")
}

#[tokio::test]
async fn graphs_up_to_the_node_bound_save_and_larger_ones_are_422() {
    let app = TestApp::with_env(&[("JET_MAX_GRAPH_NODES", "198")], false).await;
    let a = app.admin("A").await;
    let path = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let at_bound = branchy(49); // 1 + 49 × 4 + 1 = 198 nodes
    let resp = app.post(&path, &a.auth, at_bound.body("big")).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["nodes"].as_array().map(Vec::len), Some(198));
    let over = at_bound.clone().node("extra", "delay", json!({}));
    for target in [path.clone(), format!("{path}/test")] {
        let mut body = over.body("too big");
        body["inputValues"] = json!({});
        let resp = app.post(&target, &a.auth, body).await;
        assert_eq!(
            (resp.status, resp.code()),
            (422, "graph_too_large"),
            "{target}: {}",
            resp.body
        );
        assert!(
            resp.body["message"].as_str().unwrap_or("").contains("199"),
            "{}",
            resp.body
        );
    }
}
