//! Datasource secrets never leave: masked in every response and audit row for every shape a
//! driver reads, restored by identity, sent to a new target only with `update`, scrubbed
//! from error text; and datasources cannot reach what the deny-list keeps them off.

use jet_shared::crypto::VaultKey;
use jet_shared::datasource::secrets::MASK;
use jet_tests::TestApp;
use jet_tests::app::{Admin, TEST_VAULT_KEY};
use jet_tests::capture::Capture;
use jet_tests::db::TestDb;
use jet_tests::flow::Flow;
use serde_json::{Value, json};

fn base(a: &Admin, what: &str) -> String {
    format!("/api/v1/tenants/{}/{what}", a.tenant_id)
}

async fn create(app: &TestApp, a: &Admin, kind: &str, options: Value) -> (String, Value) {
    let resp = app
        .post(
            &base(a, "datasources"),
            &a.auth,
            json!({"datasourceTitle": "ds", "datasourceType": kind, "datasourceOptions": options}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    (resp.str("datasourceID"), resp.body)
}

async fn stored(app: &TestApp, id: &str) -> Value {
    let sealed: Value = sqlx::query_scalar(
        r#"SELECT "datasourceOptions" FROM "tblDatasources" WHERE "datasourceID"::text = $1"#,
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    VaultKey::from_hex(TEST_VAULT_KEY)
        .expect("key")
        .open(&sealed)
        .expect("opens")
}

/// Every audit row's metadata and error, as text.
async fn audit_text(app: &TestApp) -> String {
    let rows: Vec<(Option<Value>, Option<Value>)> =
        sqlx::query_as(r#"SELECT "metadata", "error" FROM "tblAuditLogs""#)
            .fetch_all(&app.db.pool)
            .await
            .expect("audit rows");
    format!("{rows:?}")
}

#[tokio::test]
async fn every_auth_shape_of_every_driver_is_masked_and_redacted() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let closed = "http://127.0.0.1:9";
    let shapes = [
        (
            "postgresql",
            json!({"connectionOption": "connectionDetails", "connectionDetails": {"host": "127.0.0.1", "port": 9, "user": "u", "password": "sec-pg-details"}}),
            "sec-pg-details",
        ),
        (
            "postgresql",
            json!({"connectionOption": "connectionString", "connectionString": "postgres://u:sec-pg-url@127.0.0.1:9/db"}),
            "sec-pg-url",
        ),
        (
            "restapi",
            json!({"baseUrl": closed, "auth": {"type": "basic", "username": "u", "password": "sec-basic"}}),
            "sec-basic",
        ),
        (
            "restapi",
            json!({"baseUrl": closed, "auth": {"type": "bearer", "token": "sec-bearer"}}),
            "sec-bearer",
        ),
        (
            "restapi",
            json!({"baseUrl": closed, "auth": {"type": "apiKey", "headerName": "X-API-Key", "value": "sec-key-header", "in": "header"}}),
            "sec-key-header",
        ),
        (
            "restapi",
            json!({"baseUrl": closed, "auth": {"type": "apiKey", "key": "api_key", "value": "sec-key-query", "in": "query"}}),
            "sec-key-query",
        ),
        (
            "restapi",
            json!({"baseUrl": "http://u:sec-userinfo@127.0.0.1:9/v1"}),
            "sec-userinfo",
        ),
        (
            "restapi",
            json!({"baseUrl": "http://127.0.0.1:9/v1?token=sec-url-param"}),
            "sec-url-param",
        ),
        (
            "restapi",
            json!({"baseUrl": closed, "headers": [{"key": "X-Auth-Token", "value": "sec-header-list"}]}),
            "sec-header-list",
        ),
        (
            "restapi",
            json!({"baseUrl": closed, "headers": {"Authorization": "Bearer sec-header-object"}}),
            "sec-header-object",
        ),
    ];
    for (kind, options, secret) in &shapes {
        let (id, created) = create(&app, &a, kind, options.clone()).await;
        assert!(
            stored(&app, &id).await.to_string().contains(secret),
            "{secret} is stored"
        );
        let got = app
            .get(&format!("{}/{id}", base(&a, "datasources")), &a.auth)
            .await;
        assert_eq!(got.status, 200);
        for shown in [&created, &got.body] {
            assert!(!shown.to_string().contains(secret), "{secret} in {shown}");
            assert!(shown.to_string().contains(MASK), "{shown}");
        }
        let test = app
            .post(
                &format!("{}/test", base(&a, "datasources")),
                &a.auth,
                json!({"datasourceType": kind, "datasourceOptions": options}),
            )
            .await;
        assert_eq!(test.body["ok"], false, "{}", test.body);
        assert!(!test.body.to_string().contains(secret), "{}", test.body);
    }
    let list = app.get(&base(&a, "datasources"), &a.auth).await;
    assert_eq!(list.body["totalCount"], shapes.len());
    let audit = audit_text(&app).await;
    for (_, _, secret) in &shapes {
        assert!(!list.body.to_string().contains(secret), "{secret} listed");
        assert!(!audit.contains(secret), "{secret} in the audit trail");
    }
}

#[tokio::test]
async fn a_mask_is_restored_by_header_name_never_by_position() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let options = json!({"baseUrl": "http://127.0.0.1:9", "headers": [
        {"key": "Authorization", "value": "Bearer sec-moved"},
        {"key": "X-Session", "value": "sec-second"}]});
    let (id, _) = create(&app, &a, "restapi", options).await;
    let path = format!("{}/{id}", base(&a, "datasources"));

    let moved = app
        .patch(
            &path,
            &a.auth,
            json!({"datasourceOptions": {"baseUrl": "http://127.0.0.1:9", "headers": [{"key": "X-Foo", "value": MASK}]}}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert!(
        !moved.body.to_string().contains("sec-moved"),
        "{}",
        moved.body
    );
    let shown = app.get(&path, &a.auth).await;
    assert!(
        !shown.body.to_string().contains("sec-moved"),
        "{}",
        shown.body
    );
    assert_eq!(
        stored(&app, &id).await["headers"],
        json!([{"key": "X-Foo", "value": null}]),
        "a mask under a new name has nothing to restore"
    );

    // Masks sent back in another order keep each header's own secret.
    app.patch(&path, &a.auth, json!({"datasourceOptions": {"baseUrl": "http://127.0.0.1:9", "headers": [
        {"key": "Authorization", "value": "Bearer sec-a"}, {"key": "X-Session", "value": "sec-b"}]}}))
        .await;
    let reordered = app
        .patch(
            &path,
            &a.auth,
            json!({"datasourceOptions": {"baseUrl": "http://127.0.0.1:9", "headers": [
            {"key": "x-session", "value": MASK}, {"key": "Authorization", "value": MASK}]}}),
        )
        .await;
    assert_eq!(reordered.status, 200, "{}", reordered.body);
    assert_eq!(
        stored(&app, &id).await["headers"],
        json!([{"key": "x-session", "value": "sec-b"}, {"key": "Authorization", "value": "Bearer sec-a"}])
    );
}

/// The four REST auth shapes, each with the secret as it travels (basic auth: base64 of
/// `u:sec-t-basic`).
fn rest_auth_shapes(base_url: &str) -> Vec<(Value, &'static str)> {
    [
        (
            json!({"type": "basic", "username": "u", "password": "sec-t-basic"}),
            "dTpzZWMtdC1iYXNpYw==",
        ),
        (json!({"type": "bearer", "token": "sec-t-bearer"}), "sec-t-bearer"),
        (
            json!({"type": "apiKey", "headerName": "X-API-Key", "value": "sec-t-header", "in": "header"}),
            "sec-t-header",
        ),
        (
            json!({"type": "apiKey", "key": "api_key", "value": "sec-t-query", "in": "query"}),
            "sec-t-query",
        ),
    ]
    .into_iter()
    .map(|(auth, secret)| (json!({"baseUrl": base_url, "auth": auth}), secret))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_secrets_are_tested_against_a_new_target_only_with_update() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let (home, elsewhere) = (
        Capture::start("127.0.0.1").await,
        Capture::start("127.0.0.1").await,
    );
    let tester = app
        .role(
            &a,
            "tester",
            &["tenant:datasource:read", "tenant:datasource:test"],
        )
        .await;
    let (_, tester) = app.key_with_roles(&a, "tester", &[&tester]).await;
    let maintainer = app
        .role(
            &a,
            "maintainer",
            &[
                "tenant:datasource:read",
                "tenant:datasource:test",
                "tenant:datasource:update",
            ],
        )
        .await;
    let (_, maintainer) = app.key_with_roles(&a, "maintainer", &[&maintainer]).await;
    let test_path = format!("{}/test", base(&a, "datasources"));

    for (options, secret) in rest_auth_shapes(&home.base) {
        let (id, shown) = create(&app, &a, "restapi", options).await;
        let masked = shown["datasourceOptions"].clone();
        let mut retargeted = masked.clone();
        retargeted["baseUrl"] = json!(elsewhere.base);

        let denied = app
            .post(
                &test_path,
                &tester,
                json!({"datasourceID": id, "datasourceOptions": retargeted}),
            )
            .await;
        assert_eq!(
            (denied.status, denied.code()),
            (403, "permission_denied"),
            "{}",
            denied.body
        );
        assert!(
            !elsewhere.received(secret),
            "{secret} reached the new target"
        );

        let same = app
            .post(
                &test_path,
                &tester,
                json!({"datasourceID": id, "datasourceOptions": masked}),
            )
            .await;
        assert_eq!(same.body["ok"], true, "{}", same.body);
        assert!(
            home.received(secret),
            "the saved target still gets {secret}"
        );

        let own_secret = app
            .post(
                &test_path,
                &tester,
                json!({"datasourceID": id, "datasourceOptions":
                {"baseUrl": elsewhere.base, "auth": {"type": "bearer", "token": "tester-own"}}}),
            )
            .await;
        assert_eq!(own_secret.body["ok"], true, "{}", own_secret.body);
        assert!(!elsewhere.received(secret));

        let allowed = app
            .post(
                &test_path,
                &maintainer,
                json!({"datasourceID": id, "datasourceOptions": retargeted}),
            )
            .await;
        assert_eq!(allowed.body["ok"], true, "{}", allowed.body);
        assert!(
            elsewhere.received(secret),
            "update may point {secret} elsewhere"
        );
    }

    // A PostgreSQL host edit is a new target too.
    let people = TestDb::empty().await;
    let url = reqwest::Url::parse(&people.url()).expect("url");
    let (id, shown) = create(
        &app,
        &a,
        "postgresql",
        json!({"connectionOption": "connectionDetails", "connectionDetails": {
        "host": "127.0.0.1", "port": url.port(), "database": url.path().trim_start_matches('/'),
        "user": url.username(), "password": "sec-pg", "sslMode": "disable"}}),
    )
    .await;
    let mut moved = shown["datasourceOptions"].clone();
    moved["connectionDetails"]["host"] = json!("127.0.0.2");
    let denied = app
        .post(
            &test_path,
            &tester,
            json!({"datasourceID": id, "datasourceOptions": moved}),
        )
        .await;
    assert_eq!((denied.status, denied.code()), (403, "permission_denied"));
}

#[tokio::test]
async fn error_text_carries_no_credentials() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let api = Capture::start("127.0.0.1").await;
    let query_key =
        json!({"type": "apiKey", "key": "api_key", "value": "sec-err-query", "in": "query"});
    let cases = [
        // Nothing listens on port 9: the client's error names the URL it called.
        json!({"baseUrl": "http://u:sec-err-user@127.0.0.1:9/v1", "auth": query_key}),
        // The API answers 401 and echoes what it was sent.
        json!({"baseUrl": api.base, "auth": query_key, "headers": [{"key": "Authorization", "value": "sec-err-header"}]}),
    ];
    for options in cases {
        let (ds, _) = create(&app, &a, "restapi", options.clone()).await;
        let query = app
            .post(
                &base(&a, "queries"),
                &a.auth,
                json!({"dataQueryTitle": "q", "datasourceID": ds, "dataQueryOptions": {"apiEndpoint": "/echo-401"}}),
            )
            .await;
        assert_eq!(query.status, 201, "{}", query.body);
        let run = app
            .post(
                &format!("{}/{}/run", base(&a, "queries"), query.str("dataQueryID")),
                &a.auth,
                json!({}),
            )
            .await;
        assert_eq!(run.status, 422, "{}", run.body);
        let test = app
            .post(
                &format!("{}/test", base(&a, "datasources")),
                &a.auth,
                json!({"datasourceType": "restapi", "datasourceOptions": options}),
            )
            .await;
        for body in [&run.body, &test.body] {
            let text = body.to_string();
            assert!(!text.contains("sec-err"), "{text}");
        }
    }
    assert!(
        api.received("sec-err-query"),
        "the key was sent to the API itself"
    );
    let audit = audit_text(&app).await;
    assert!(audit.contains("query_failed"), "the failures are audited");
    assert!(!audit.contains("sec-err"), "{audit}");
}

#[tokio::test]
async fn the_default_deny_list_keeps_datasources_off_loopback_by_address_and_by_name() {
    let app = TestApp::spawn_adjusted(|vars| {
        vars.remove("JET_DATASOURCE_DENY_HOSTS");
    })
    .await;
    let a = app.admin("A").await;
    let api = Capture::start("127.0.0.1").await;
    let port = reqwest::Url::parse(&api.base)
        .expect("url")
        .port()
        .expect("port");
    let platform = app.db.url();
    let cases = [
        (
            "restapi",
            json!({"baseUrl": api.base, "auth": {"type": "bearer", "token": "sec-deny"}}),
        ),
        (
            "restapi",
            json!({"baseUrl": format!("http://localhost:{port}"), "auth": {"type": "bearer", "token": "sec-deny"}}),
        ),
        (
            "restapi",
            json!({"baseUrl": "http://169.254.169.254/latest/meta-data/"}),
        ),
        (
            "postgresql",
            json!({"connectionOption": "connectionString", "connectionString": platform}),
        ),
        (
            "postgresql",
            json!({"connectionOption": "connectionString",
            "connectionString": platform.replace("127.0.0.1", "localhost")}),
        ),
    ];
    for (kind, options) in &cases {
        let test = app
            .post(
                &format!("{}/test", base(&a, "datasources")),
                &a.auth,
                json!({"datasourceType": kind, "datasourceOptions": options}),
            )
            .await;
        assert_eq!(test.status, 200, "{}", test.body);
        assert_eq!(
            (test.body["ok"].clone(), test.body["code"].clone()),
            (json!(false), json!("datasource_denied")),
            "{options}: {}",
            test.body
        );
    }
    let (ds, _) = create(&app, &a, "restapi", cases[1].1.clone()).await;
    let query = app
        .post(
            &base(&a, "queries"),
            &a.auth,
            json!({"dataQueryTitle": "q", "datasourceID": ds, "dataQueryOptions": {"apiEndpoint": "/"}}),
        )
        .await;
    let run = app
        .post(
            &format!("{}/{}/run", base(&a, "queries"), query.str("dataQueryID")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (run.status, run.code()),
        (422, "datasource_denied"),
        "{}",
        run.body
    );
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_checked_by_address_and_by_name() {
    // 127.0.0.2 stands for an allowed API; 127.0.0.1 for what must not be reached.
    let app = TestApp::spawn_adjusted(|vars| {
        vars.insert("JET_DATASOURCE_DENY_HOSTS", "127.0.0.1/32, ::1".into());
    })
    .await;
    let a = app.admin("A").await;
    let (allowed, inner) = (
        Capture::start("127.0.0.2").await,
        Capture::start("127.0.0.1").await,
    );
    let inner_port = reqwest::Url::parse(&inner.base)
        .expect("url")
        .port()
        .expect("port");
    let (ds, _) = create(
        &app,
        &a,
        "restapi",
        json!({"baseUrl": allowed.base, "auth": {"type": "bearer", "token": "sec-redirect"}}),
    )
    .await;
    let run_to = |to: String| {
        let (app, a, ds) = (&app, &a, ds.clone());
        async move {
            let query = app
                .post(&base(a, "queries"), &a.auth, json!({"dataQueryTitle": "q", "datasourceID": ds,
                    "dataQueryOptions": {"apiEndpoint": "/redirect", "queryParams": [{"key": "to", "value": to}]}}))
                .await;
            app.post(
                &format!("{}/{}/run", base(a, "queries"), query.str("dataQueryID")),
                &a.auth,
                json!({}),
            )
            .await
        }
    };
    let ok = run_to(format!("{}/fine", allowed.base)).await;
    assert_eq!(
        ok.status, 200,
        "an allowed redirect is followed: {}",
        ok.body
    );
    for to in [
        format!("{}/by-address", inner.base),
        format!("http://localhost:{inner_port}/by-name"),
    ] {
        let denied = run_to(to.clone()).await;
        assert_eq!(
            (denied.status, denied.code()),
            (422, "datasource_denied"),
            "{to}: {}",
            denied.body
        );
    }
    assert!(inner.requests().is_empty(), "{:?}", inner.requests());
}

#[tokio::test]
async fn the_platform_database_is_denied_by_its_own_entry() {
    let app = TestApp::spawn_adjusted(|vars| {
        vars.insert("JET_DATASOURCE_DENY_HOSTS", "platform-db".into());
    })
    .await;
    let a = app.admin("A").await;
    let elsewhere = Capture::start("127.0.0.2").await;
    let reachable = app
        .post(
            &format!("{}/test", base(&a, "datasources")),
            &a.auth,
            json!({"datasourceType": "restapi", "datasourceOptions": {"baseUrl": elsewhere.base}}),
        )
        .await;
    assert_eq!(reachable.body["ok"], true, "{}", reachable.body);
    let platform = app
        .post(
            &format!("{}/test", base(&a, "datasources")),
            &a.auth,
            json!({"datasourceType": "postgresql", "datasourceOptions":
                {"connectionOption": "connectionString", "connectionString": app.db.url()}}),
        )
        .await;
    assert_eq!(
        platform.body["code"], "datasource_denied",
        "{}",
        platform.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_node_keeps_no_credentials_in_instance_history() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let (ds, _) = create(
        &app,
        &a,
        "restapi",
        json!({"baseUrl": "http://127.0.0.1:9/v1",
               "auth": {"type": "apiKey", "key": "api_key", "value": "sec-node", "in": "query"}}),
    )
    .await;
    let query = app
        .post(
            &base(&a, "queries"),
            &a.auth,
            json!({"dataQueryTitle": "q", "datasourceID": ds, "dataQueryOptions": {"apiEndpoint": "/items"}}),
        )
        .await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("q", "dataQuery", json!({"dataQueryID": query.str("dataQueryID")}))
        .node("bad", "end", json!({"outputParameters": [{"name": "error", "sourceVariable": "{{ctx.queryResult.error}}"}]}))
        .edge("start", "q")
        .edge_on("q", "error", "bad");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let error = done["context"]["output"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.starts_with("datasource_unreachable"), "{done}");
    assert!(!done.to_string().contains("sec-node"), "{done}");
    let logged: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblWorkflowInstanceLogs" l WHERE row_to_json(l)::text LIKE '%sec-node%'"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("logs");
    assert_eq!(logged, 0, "a log row carries the key");
}
