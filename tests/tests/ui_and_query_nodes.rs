//! The `dataQuery` workflow node against a real second database, and app pages and widgets:
//! CRUD, the permission checks on what they reference, and the app-page event stream.

use futures::StreamExt;
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::db::TestDb;
use jet_tests::flow::{Flow, completed};
use serde_json::{Value, json};
use std::time::Duration;

fn base(a: &Admin, what: &str) -> String {
    format!("/api/v1/tenants/{}/{what}", a.tenant_id)
}

/// A datasource on a fresh database holding `orders`, and a query by customer.
async fn orders_query(app: &TestApp, a: &Admin) -> (TestDb, String) {
    let db = TestDb::empty().await;
    sqlx::query("CREATE TABLE orders (id int, customer text, total numeric)")
        .execute(&db.pool)
        .await
        .expect("table");
    sqlx::query("INSERT INTO orders VALUES (1, 'acme', 10.5), (2, 'acme', 4), (3, 'other', 1)")
        .execute(&db.pool)
        .await
        .expect("rows");
    let ds = app
        .post(
            &base(a, "datasources"),
            &a.auth,
            json!({"datasourceTitle": "orders", "datasourceType": "postgresql",
                   "datasourceOptions": {"connectionOption": "connectionString", "connectionString": db.url()}}),
        )
        .await;
    assert_eq!(ds.status, 201, "{}", ds.body);
    let q = app
        .post(
            &base(a, "queries"),
            &a.auth,
            json!({"dataQueryTitle": "by customer", "datasourceID": ds.str("datasourceID"),
                   "dataQueryOptions": {"query": "SELECT id, total::float8 AS total FROM orders WHERE customer = {{inputs.customer}} ORDER BY id",
                                        "inputDefinitions": [{"key": "customer", "type": "string", "required": true}]}}),
        )
        .await;
    assert_eq!(q.status, 201, "{}", q.body);
    (db, q.str("dataQueryID"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_a_parameterised_query_and_routes_success_and_error() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let (_db, query) = orders_query(&app, &a).await;
    let flow = |inputs: Value| {
        Flow::new()
            .node("start", "start", json!({}))
            .node("q", "dataQuery", json!({"dataQueryID": query, "inputValues": inputs, "outputVariable": "orders"}))
            .node("ok", "end", json!({"outputParameters": [{"name": "orders", "sourceVariable": "{{ctx.orders}}"}]}))
            .node("bad", "end", json!({"outputParameters": [{"name": "error", "sourceVariable": "{{ctx.orders.error}}"}]}))
            .edge("start", "q")
            .edge_on("q", "success", "ok")
            .edge_on("q", "error", "bad")
    };
    let good = flow(json!({"customer": "{{ctx.input.who}}"}));
    let done = app.run_flow(&a, &good, json!({"who": "acme"})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["context"]["output"]["orders"],
        json!([{"id": 1, "total": 10.5}, {"id": 2, "total": 4}])
    );
    assert_eq!(completed(&good, &done), ["start", "q", "ok"]);

    // A missing required input fails the query; dataQuery nodes continue on `error`.
    let missing = flow(json!({}));
    let done = app.run_flow(&a, &missing, json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(completed(&missing, &done), ["start", "q", "bad"]);
    let error = done["context"]["output"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.starts_with("invalid_inputs") && error.contains("customer"),
        "{error}"
    );
}

#[tokio::test]
async fn saving_a_query_node_needs_execute_on_the_query() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let (_db, query) = orders_query(&app, &a).await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("q", "dataQuery", json!({"dataQueryID": query}))
        .edge("start", "q");
    let author = app.role(&a, "author", &["tenant:workflow:create"]).await;
    let (_, key) = app.key_with_roles(&a, "author", &[&author]).await;
    let denied = app
        .post(&base(&a, "workflows"), &key, flow.body("uses q"))
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (403, "permission_denied"),
        "{}",
        denied.body
    );
    let runner = app
        .role_with_assets(
            &a,
            "runner",
            &["tenant:workflow:create"],
            &[("dataquery", &query, "execute")],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "runner", &[&runner]).await;
    let allowed = app
        .post(&base(&a, "workflows"), &key, flow.body("uses q"))
        .await;
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    let foreign = app
        .post(&base(&b, "workflows"), &b.auth, flow.body("not ours"))
        .await;
    assert_eq!(foreign.status, 422, "{}", foreign.body);
    assert!(
        foreign.body["message"]
            .as_str()
            .unwrap_or("")
            .contains(&flow.id("q"))
    );
}

#[tokio::test]
async fn cloning_checks_what_creating_checks() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let (_db, query) = orders_query(&app, &a).await;
    let child = app
        .save(
            &a,
            &Flow::new()
                .node("start", "start", json!({}))
                .node("end", "end", json!({}))
                .edge("start", "end"),
        )
        .await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("q", "dataQuery", json!({"dataQueryID": query}))
        .node("sub", "subWorkflow", json!({"childWorkflowID": child}))
        .edge("start", "q")
        .edge("q", "sub");
    let parent = app.save(&a, &flow).await;
    let clone_of = |what: &str, id: &str| format!("{}/{id}/clone", base(&a, what));

    // Reading and creating workflows is not enough to own a copy that runs what the caller
    // may not run.
    let copier = app
        .role(
            &a,
            "copier",
            &["tenant:workflow:create", "tenant:workflow:read"],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "copier", &[&copier]).await;
    let denied = app
        .post(&clone_of("workflows", &parent), &key, json!({}))
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (403, "permission_denied"),
        "{}",
        denied.body
    );
    let runs_query = app
        .role_with_assets(
            &a,
            "copier+query",
            &["tenant:workflow:create", "tenant:workflow:read"],
            &[("dataquery", &query, "execute")],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "copier+query", &[&runs_query]).await;
    let still = app
        .post(&clone_of("workflows", &parent), &key, json!({}))
        .await;
    assert_eq!(
        (still.status, still.code()),
        (403, "permission_denied"),
        "the child workflow needs execute too: {}",
        still.body
    );
    let runs_both = app
        .role_with_assets(
            &a,
            "copier+both",
            &["tenant:workflow:create", "tenant:workflow:read"],
            &[
                ("dataquery", &query, "execute"),
                ("workflow", &child, "execute"),
            ],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "copier+both", &[&runs_both]).await;
    let copied = app
        .post(&clone_of("workflows", &parent), &key, json!({}))
        .await;
    assert_eq!(copied.status, 201, "{}", copied.body);

    // A query's copy needs read on its datasource, as creating one does.
    let query_copier = app
        .role(
            &a,
            "query copier",
            &["tenant:dataquery:create", "tenant:dataquery:read"],
        )
        .await;
    let (_, key) = app
        .key_with_roles(&a, "query copier", &[&query_copier])
        .await;
    let denied = app
        .post(&clone_of("queries", &query), &key, json!({}))
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (403, "permission_denied"),
        "{}",
        denied.body
    );
    let datasource = app
        .get(&format!("{}/{query}", base(&a, "queries")), &a.auth)
        .await
        .str("datasourceID");
    let with_source = app
        .role_with_assets(
            &a,
            "query copier+source",
            &["tenant:dataquery:create", "tenant:dataquery:read"],
            &[("datasource", &datasource, "read")],
        )
        .await;
    let (_, key) = app
        .key_with_roles(&a, "query copier+source", &[&with_source])
        .await;
    let copied = app
        .post(&clone_of("queries", &query), &key, json!({}))
        .await;
    assert_eq!(copied.status, 201, "{}", copied.body);
}

#[tokio::test]
async fn widgets_and_pages_check_what_they_reference() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let (_db, query) = orders_query(&app, &a).await;

    let widget = app
        .post(
            &base(&a, "widgets"),
            &a.auth,
            json!({"widgetTitle": "Orders", "widgetType": "table", "widgetConfig": {"dataQueryID": query}, "refreshInterval": 30}),
        )
        .await;
    assert_eq!(widget.status, 201, "{}", widget.body);
    let widget_id = widget.str("widgetID");
    assert_eq!(widget.body["refreshInterval"], 30);
    for (body, status) in [
        // The spec requires a title: its absence is a 400 `missing_field`.
        (json!({"widgetType": "table", "widgetConfig": {}}), 400),
        (
            json!({"widgetTitle": "x", "widgetType": "table", "widgetConfig": []}),
            422,
        ),
        (
            json!({"widgetTitle": "x", "widgetType": "table", "widgetConfig": {}, "refreshInterval": -1}),
            400,
        ),
    ] {
        let resp = app.post(&base(&a, "widgets"), &a.auth, body.clone()).await;
        assert_eq!(resp.status, status, "{body}: {}", resp.body);
    }

    let config =
        json!({"layout": [{"widgetID": widget_id, "props": {"onLoad": {"dataQueryID": query}}}]});
    let page = app
        .post(
            &base(&a, "app-pages"),
            &a.auth,
            json!({"appPageTitle": "Dashboard", "appPageConfig": config}),
        )
        .await;
    assert_eq!(page.status, 201, "{}", page.body);
    let page_id = page.str("appPageID");

    // A designer who may create pages but not execute the query or widget is refused.
    let designer = app
        .role(
            &a,
            "designer",
            &["tenant:apppage:create", "tenant:widget:create"],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "designer", &[&designer]).await;
    let denied = app
        .post(
            &base(&a, "app-pages"),
            &key,
            json!({"appPageTitle": "Mine", "appPageConfig": config}),
        )
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (403, "permission_denied"),
        "{}",
        denied.body
    );
    let denied_widget = app
        .post(&base(&a, "widgets"), &key, json!({"widgetTitle": "w", "widgetType": "table", "widgetConfig": {"dataQueryID": query}}))
        .await;
    assert_eq!(denied_widget.status, 403);
    let plain = app
        .post(
            &base(&a, "app-pages"),
            &key,
            json!({"appPageTitle": "Plain", "appPageConfig": {"layout": []}}),
        )
        .await;
    assert_eq!(plain.status, 201, "{}", plain.body);
    // The designer created it, so may change it, but not point it at what they cannot run.
    let sneaky = app
        .patch(
            &format!("{}/{}", base(&a, "app-pages"), plain.str("appPageID")),
            &key,
            json!({"appPageConfig": config}),
        )
        .await;
    assert_eq!(sneaky.status, 403, "{}", sneaky.body);

    // Another tenant's assets cannot be referenced, and its pages are not there.
    let foreign = app
        .post(
            &base(&b, "app-pages"),
            &b.auth,
            json!({"appPageTitle": "x", "appPageConfig": config}),
        )
        .await;
    assert_eq!(foreign.status, 422, "{}", foreign.body);
    assert_eq!(
        app.get(&format!("{}/{page_id}", base(&a, "app-pages")), &b.auth)
            .await
            .status,
        404
    );

    // Read, update, clone, list, delete.
    let renamed = app
        .patch(
            &format!("{}/{page_id}", base(&a, "app-pages")),
            &a.auth,
            json!({"appPageTitle": "Renamed"}),
        )
        .await;
    assert_eq!(renamed.body["appPageTitle"], "Renamed");
    assert_eq!(renamed.body["appPageConfig"], config, "absent fields stay");
    let copy = app
        .post(
            &format!("{}/{page_id}/clone", base(&a, "app-pages")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(copy.status, 201);
    assert_eq!(copy.body["appPageTitle"], "Renamed (copy)");
    assert_eq!(
        app.get(&base(&a, "app-pages"), &a.auth).await.body["totalCount"],
        3
    );
    let widget_copy = app
        .post(
            &format!("{}/{widget_id}/clone", base(&a, "widgets")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        widget_copy.body["widgetConfig"],
        json!({"dataQueryID": query})
    );
    let edited = app
        .patch(
            &format!("{}/{widget_id}", base(&a, "widgets")),
            &a.auth,
            json!({"widgetType": "chart"}),
        )
        .await;
    assert_eq!(edited.body["widgetType"], "chart");
    let fetched = app
        .get(&format!("{}/{widget_id}", base(&a, "widgets")), &a.auth)
        .await;
    assert_eq!(fetched.body["widgetType"], "chart");
    assert_eq!(
        fetched.body["widgetConfig"],
        json!({"dataQueryID": query}),
        "absent fields stay"
    );
    assert_eq!(
        app.get(&format!("{}/{widget_id}", base(&a, "widgets")), &b.auth)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&base(&a, "widgets"), &a.auth).await.body["totalCount"],
        2
    );
    assert_eq!(
        app.delete(&format!("{}/{page_id}", base(&a, "app-pages")), &a.auth)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("{}/{page_id}", base(&a, "app-pages")), &a.auth)
            .await
            .status,
        404
    );
    assert_eq!(
        app.delete(&format!("{}/{widget_id}", base(&a, "widgets")), &a.auth)
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_page_stream_delivers_pushed_events_to_that_page_only() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let mut pages = Vec::new();
    for title in ["one", "two"] {
        let resp = app
            .post(
                &base(&a, "app-pages"),
                &a.auth,
                json!({"appPageTitle": title}),
            )
            .await;
        pages.push(resp.str("appPageID"));
    }
    let url = format!("{}{}/{}/stream", app.base, base(&a, "app-pages"), pages[0]);
    let resp = reqwest::Client::new()
        .get(&url)
        .header("Authorization", &a.auth)
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let forbidden = reqwest::Client::new()
        .get(&url)
        .header("Authorization", &b.auth)
        .send()
        .await
        .expect("other tenant");
    assert_eq!(forbidden.status(), 404);

    let push = |page: &str, event: Value| {
        let (pool, page) = (app.db.pool.clone(), page.parse().expect("uuid"));
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            jet_shared::app_page::push(&mut conn, page, &event)
                .await
                .expect("push");
        }
    };
    push(&pages[1], json!({"for": "two"})).await;
    push(&pages[0], json!({"for": "one", "n": 1})).await;
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    assert_eq!(data, [json!({"for": "one", "n": 1})], "{text}");

    let too_big = {
        let mut conn = app.db.pool.acquire().await.expect("conn");
        jet_shared::app_page::push(
            &mut conn,
            pages[0].parse().expect("uuid"),
            &json!({"blob": "x".repeat(9000)}),
        )
        .await
    };
    assert!(
        too_big.is_err(),
        "oversized events are refused, not truncated"
    );
}
