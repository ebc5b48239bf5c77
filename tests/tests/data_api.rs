//! Datasources and data queries over HTTP, against a real second database and a real local
//! HTTP server: encryption at rest, masked secrets, bound parameters, limits and error codes.

use jet_shared::crypto::VaultKey;
use jet_shared::datasource::secrets::MASK;
use jet_tests::TestApp;
use jet_tests::app::{Admin, TEST_VAULT_KEY};
use jet_tests::db::TestDb;
use serde_json::{Value, json};

/// A second database with a `people` table, for datasources to point at.
async fn people_db() -> TestDb {
    let db = TestDb::empty().await;
    sqlx::query("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, tags text[])")
        .execute(&db.pool)
        .await
        .expect("table");
    sqlx::query("INSERT INTO people VALUES (1, 'ann', '{a}'), (2, 'bob', '{b}'), (3, 'cy', '{}')")
        .execute(&db.pool)
        .await
        .expect("rows");
    db
}

fn base(a: &Admin, what: &str) -> String {
    format!("/api/v1/tenants/{}/{what}", a.tenant_id)
}

/// Connection details (user, host, port, database) of a test database URL.
fn details(url: &str, password: &str) -> Value {
    let parsed = reqwest::Url::parse(url).expect("url");
    json!({
        "connectionOption": "connectionDetails",
        "connectionDetails": {
            "host": parsed.host_str().unwrap_or("127.0.0.1"),
            "port": parsed.port().unwrap_or(5432),
            "database": parsed.path().trim_start_matches('/'),
            "user": parsed.username(),
            "password": password,
            "sslMode": "disable"
        }
    })
}

async fn create_datasource(app: &TestApp, a: &Admin, kind: &str, options: Value) -> String {
    let resp = app
        .post(
            &base(a, "datasources"),
            &a.auth,
            json!({"datasourceTitle": "db", "datasourceType": kind, "datasourceOptions": options}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.str("datasourceID")
}

async fn create_query(app: &TestApp, a: &Admin, datasource: &str, options: Value) -> String {
    let resp = app
        .post(
            &base(a, "queries"),
            &a.auth,
            json!({"dataQueryTitle": "q", "datasourceID": datasource, "dataQueryOptions": options}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.str("dataQueryID")
}

async fn stored_options(app: &TestApp, id: &str) -> Value {
    sqlx::query_scalar(
        r#"SELECT "datasourceOptions" FROM "tblDatasources" WHERE "datasourceID"::text = $1"#,
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("row")
}

#[tokio::test]
async fn options_are_encrypted_at_rest_and_secrets_masked_and_kept() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let vault = VaultKey::from_hex(TEST_VAULT_KEY).expect("key");
    let people = people_db().await;
    let id = create_datasource(&app, &a, "postgresql", details(&people.url(), "pw-secret")).await;

    let stored = stored_options(&app, &id).await;
    assert_eq!(stored["__encrypted"], true);
    assert!(!stored.to_string().contains("pw-secret"), "{stored}");
    assert_eq!(
        vault.open(&stored).expect("opens")["connectionDetails"]["password"],
        "pw-secret"
    );

    let shown = app
        .get(&format!("{}/{id}", base(&a, "datasources")), &a.auth)
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.body["datasourceOptions"]["connectionDetails"]["password"],
        MASK
    );
    assert!(!shown.body.to_string().contains("pw-secret"));

    // Editing the masked form keeps the secret; a new value replaces it.
    let mut edited = shown.body["datasourceOptions"].clone();
    edited["connectionDetails"]["database"] = json!("renamed");
    let resp = app
        .patch(
            &format!("{}/{id}", base(&a, "datasources")),
            &a.auth,
            json!({"datasourceOptions": edited}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let opened = vault.open(&stored_options(&app, &id).await).expect("opens");
    assert_eq!(opened["connectionDetails"]["password"], "pw-secret");
    assert_eq!(opened["connectionDetails"]["database"], "renamed");
    edited["connectionDetails"]["password"] = json!("rotated");
    app.patch(
        &format!("{}/{id}", base(&a, "datasources")),
        &a.auth,
        json!({"datasourceOptions": edited}),
    )
    .await;
    let opened = vault.open(&stored_options(&app, &id).await).expect("opens");
    assert_eq!(opened["connectionDetails"]["password"], "rotated");

    // A plaintext row (no envelope) is still read; a tampered one is an error, not garbage.
    sqlx::query(
        r#"UPDATE "tblDatasources" SET "datasourceOptions" = $2 WHERE "datasourceID"::text = $1"#,
    )
    .bind(&id)
    .bind(json!({"connectionString": "postgres://u:plain@h/db"}))
    .execute(&app.db.pool)
    .await
    .expect("plaintext");
    let plain = app
        .get(&format!("{}/{id}", base(&a, "datasources")), &a.auth)
        .await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(plain.body["datasourceOptions"]["connectionString"], MASK);
    let mut tampered = vault.seal(&json!({"connectionString": "x"}));
    let data = tampered["data"].as_str().expect("hex").to_owned();
    tampered["data"] = json!(format!(
        "{}{}",
        if data.starts_with('0') { "1" } else { "0" },
        &data[1..]
    ));
    sqlx::query(
        r#"UPDATE "tblDatasources" SET "datasourceOptions" = $2 WHERE "datasourceID"::text = $1"#,
    )
    .bind(&id)
    .bind(&tampered)
    .execute(&app.db.pool)
    .await
    .expect("tamper");
    let broken = app
        .get(&format!("{}/{id}", base(&a, "datasources")), &a.auth)
        .await;
    assert_eq!(broken.status, 422, "{}", broken.body);
    assert!(
        broken.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("decrypted")
    );

    // Isolation, validation, list, clone, delete.
    assert_eq!(
        app.get(&format!("{}/{id}", base(&a, "datasources")), &b.auth)
            .await
            .status,
        404,
        "another tenant's datasource is not there"
    );
    let bad_type = app
        .post(
            &base(&a, "datasources"),
            &a.auth,
            json!({"datasourceTitle": "x", "datasourceType": "oracle", "datasourceOptions": {}}),
        )
        .await;
    assert_eq!((bad_type.status, bad_type.code()), (400, "invalid_type"));
    let no_host = app
        .post(&base(&a, "datasources"), &a.auth, json!({"datasourceTitle": "x", "datasourceType": "postgresql", "datasourceOptions": {"connectionDetails": {"port": 1}}}))
        .await;
    assert_eq!(no_host.status, 422);
    assert!(
        no_host.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("host")
    );
    let other = create_datasource(
        &app,
        &a,
        "restapi",
        json!({"baseUrl": "http://127.0.0.1:9", "auth": {"type": "bearer", "token": "tok"}}),
    )
    .await;
    let copy = app
        .post(
            &format!("{}/{other}/clone", base(&a, "datasources")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(copy.status, 201, "{}", copy.body);
    assert_eq!(copy.body["datasourceOptions"]["auth"]["token"], MASK);
    assert_eq!(
        vault
            .open(&stored_options(&app, &copy.str("datasourceID")).await)
            .expect("opens")["auth"]["token"],
        "tok",
        "the clone keeps the secret"
    );
    let list = app.get(&base(&a, "datasources"), &a.auth).await;
    assert_eq!(list.body["totalCount"], 3);
    assert_eq!(
        app.delete(&format!("{}/{other}", base(&a, "datasources")), &a.auth)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&base(&b, "datasources"), &b.auth).await.body["totalCount"],
        0
    );
}

#[tokio::test]
async fn connection_tests_report_success_or_the_reason() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let people = people_db().await;
    let test = |body: Value| {
        let (app, path, auth) = (
            &app,
            format!("{}/test", base(&a, "datasources")),
            a.auth.clone(),
        );
        async move { app.post(&path, &auth, body).await }
    };
    let ok = test(json!({"datasourceType": "postgresql", "datasourceOptions": {"connectionOption": "connectionString", "connectionString": people.url()}})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["ok"], true, "{}", ok.body);
    let refused = test(json!({"datasourceType": "postgresql", "datasourceOptions": {"connectionDetails": {"host": "127.0.0.1", "port": 1, "sslMode": "disable"}}})).await;
    assert_eq!(refused.body["ok"], false);
    assert_eq!(refused.body["code"], "datasource_unreachable");
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("refused"),
        "{}",
        refused.body
    );
    let no_db = test(json!({"datasourceType": "postgresql", "datasourceOptions": {"connectionString": format!("{}_missing", people.url())}})).await;
    assert_eq!(no_db.body["ok"], false);
    assert!(
        no_db.body["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{}",
        no_db.body
    );

    // A saved datasource: stored secrets fill in masks, and its status records the outcome.
    let id = create_datasource(&app, &a, "postgresql", details(&people.url(), "")).await;
    let saved = test(json!({"datasourceID": id})).await;
    assert_eq!(saved.body["ok"], true, "{}", saved.body);
    let status = app
        .get(&format!("{}/{id}", base(&a, "datasources")), &a.auth)
        .await;
    assert_eq!(status.body["connectionStatus"], "active");
}

#[tokio::test]
async fn queries_bind_inputs_as_parameters_and_report_failures_with_codes() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let people = people_db().await;
    let ds = create_datasource(&app, &a, "postgresql", details(&people.url(), "")).await;
    let by_name = create_query(
        &app,
        &a,
        &ds,
        json!({"query": "SELECT id, name, tags FROM people WHERE name = {{inputs.name}} ORDER BY id", "inputDefinitions": [{"key": "name", "type": "string", "required": true}]}),
    )
    .await;
    let run = |query: String, inputs: Value| {
        let (app, path, auth) = (
            &app,
            format!("{}/{query}/run", base(&a, "queries")),
            a.auth.clone(),
        );
        async move { app.post(&path, &auth, json!({"inputValues": inputs})).await }
    };
    let ann = run(by_name.clone(), json!({"name": "ann"})).await;
    assert_eq!(ann.status, 200, "{}", ann.body);
    assert_eq!(
        ann.body["data"],
        json!([{"id": 1, "name": "ann", "tags": ["a"]}])
    );
    assert_eq!(
        ann.body["columns"],
        json!([{"name": "id", "type": "INT4"}, {"name": "name", "type": "TEXT"}, {"name": "tags", "type": "TEXT[]"}])
    );
    assert_eq!(ann.body["rowCount"], 1);

    // Injection attempts are inert: they are values, compared as text.
    for attack in ["x' OR '1'='1", "ann'; DROP TABLE people; --"] {
        let resp = run(by_name.clone(), json!({"name": attack})).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.body["data"], json!([]), "{attack}");
    }
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM people")
        .fetch_one(&people.pool)
        .await
        .expect("table still there");
    assert_eq!(still, 3);

    let missing = run(by_name.clone(), json!({})).await;
    assert_eq!((missing.status, missing.code()), (422, "invalid_inputs"));

    let broken = create_query(&app, &a, &ds, json!({"query": "SELECT * FROM nowhere"})).await;
    let failed = run(broken, json!({})).await;
    assert_eq!(
        (failed.status, failed.code()),
        (422, "query_failed"),
        "{}",
        failed.body
    );
    assert!(
        failed.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"nowhere\" does not exist")
    );

    let slow = create_query(
        &app,
        &a,
        &ds,
        json!({"query": "SELECT pg_sleep(5)", "timeoutSeconds": 1}),
    )
    .await;
    let timed_out = run(slow, json!({})).await;
    assert_eq!(
        (timed_out.status, timed_out.code()),
        (422, "query_timeout"),
        "{}",
        timed_out.body
    );

    let capped = create_query(
        &app,
        &a,
        &ds,
        json!({"query": "SELECT generate_series(1, 50) AS n", "maxRows": 10}),
    )
    .await;
    let page = run(capped, json!({})).await;
    assert_eq!(page.body["data"].as_array().map(Vec::len), Some(10));
    assert_eq!(page.body["truncated"], true);

    // Writes: RETURNING rows come back; a plain UPDATE reports rows affected. Arrays bind for ANY.
    let insert = create_query(&app, &a, &ds, json!({"query": "INSERT INTO people VALUES ({{inputs.id}}, {{inputs.name}}) RETURNING id", "inputDefinitions": [{"key": "id", "type": "number"}, {"key": "name", "type": "string"}]})).await;
    let inserted = run(insert, json!({"id": "4", "name": "dee"})).await;
    assert_eq!(
        inserted.body["data"],
        json!([{"id": 4}]),
        "{}",
        inserted.body
    );
    let rename = create_query(
        &app,
        &a,
        &ds,
        json!({"query": "UPDATE people SET name = upper(name) WHERE id = ANY({{inputs.ids}})"}),
    )
    .await;
    let renamed = run(rename, json!({"ids": [1, 2]})).await;
    assert_eq!(renamed.body["rowCount"], 2, "{}", renamed.body);

    // Templates inside quotes are refused rather than silently not bound.
    let quoted = app
        .patch(
            &format!("{}/queryTest", base(&a, "queries")),
            &a.auth,
            json!({"dataQuery": {"datasourceID": ds, "dataQueryOptions": {"query": "SELECT '{{inputs.x}}'"}}, "inputValues": {"x": 1}}),
        )
        .await;
    assert_eq!(
        (quoted.status, quoted.code()),
        (422, "invalid_query_options"),
        "{}",
        quoted.body
    );
    let ad_hoc = app
        .patch(
            &format!("{}/queryTest", base(&a, "queries")),
            &a.auth,
            json!({"dataQuery": {"datasourceID": ds, "dataQueryOptions": {"query": "SELECT {{inputs.x}}::int + 1 AS y"}}, "inputValues": {"x": 41}}),
        )
        .await;
    assert_eq!(ad_hoc.body["data"], json!([{"y": 42}]), "{}", ad_hoc.body);
    let saved_test = app
        .post(
            &format!("{}/{by_name}/queryTest", base(&a, "queries")),
            &a.auth,
            json!({"inputValues": {"name": "cy"}}),
        )
        .await;
    assert_eq!(saved_test.body["data"][0]["id"], 3, "{}", saved_test.body);
}

#[tokio::test]
async fn query_routes_check_permissions_and_tenants() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let people = people_db().await;
    let ds = create_datasource(&app, &a, "postgresql", details(&people.url(), "")).await;
    let q = create_query(&app, &a, &ds, json!({"query": "SELECT 1 AS one"})).await;

    let reader = app
        .role(
            &a,
            "reader",
            &["tenant:dataquery:read", "tenant:dataquery:list"],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "reader", &[&reader]).await;
    assert_eq!(
        app.get(&format!("{}/{q}", base(&a, "queries")), &key)
            .await
            .status,
        200
    );
    let denied = app
        .post(&format!("{}/{q}/run", base(&a, "queries")), &key, json!({}))
        .await;
    assert_eq!((denied.status, denied.code()), (403, "permission_denied"));
    let runner = app
        .role_with_assets(&a, "runner", &[], &[("dataquery", &q, "execute")])
        .await;
    let (_, run_key) = app.key_with_roles(&a, "runner", &[&runner]).await;
    let ran = app
        .post(
            &format!("{}/{q}/run", base(&a, "queries")),
            &run_key,
            json!({}),
        )
        .await;
    assert_eq!(ran.status, 200, "{}", ran.body);
    assert_eq!(ran.body["data"], json!([{"one": 1}]));

    // Creating a query needs read access to its datasource; B cannot use A's datasource.
    let maker = app.role(&a, "maker", &["tenant:dataquery:create"]).await;
    let (_, make_key) = app.key_with_roles(&a, "maker", &[&maker]).await;
    let no_ds = app
        .post(
            &base(&a, "queries"),
            &make_key,
            json!({"datasourceID": ds, "dataQueryOptions": {"query": "SELECT 1"}}),
        )
        .await;
    assert_eq!(no_ds.status, 403, "{}", no_ds.body);
    let foreign = app
        .post(
            &base(&b, "queries"),
            &b.auth,
            json!({"datasourceID": ds, "dataQueryOptions": {"query": "SELECT 1"}}),
        )
        .await;
    assert_eq!(foreign.status, 422, "{}", foreign.body);
    assert_eq!(
        app.get(&format!("{}/{q}", base(&b, "queries")), &b.auth)
            .await
            .status,
        404
    );

    let copy = app
        .post(
            &format!("{}/{q}/clone", base(&a, "queries")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(copy.status, 201);
    assert_eq!(copy.body["dataQueryTitle"], "q (copy)");
    let renamed = app
        .patch(
            &format!("{}/{q}", base(&a, "queries")),
            &a.auth,
            json!({"dataQueryTitle": "renamed", "isDisabled": true}),
        )
        .await;
    assert_eq!(renamed.body["dataQueryTitle"], "renamed");
    let disabled = app
        .post(
            &format!("{}/{q}/run", base(&a, "queries")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (disabled.status, disabled.code()),
        (422, "query_not_runnable")
    );
    assert_eq!(
        app.get(&base(&a, "queries"), &a.auth).await.body["totalCount"],
        2
    );
    assert_eq!(
        app.delete(&format!("{}/{q}", base(&a, "queries")), &a.auth)
            .await
            .status,
        204
    );
    // Deleting a datasource takes its queries with it.
    assert_eq!(
        app.delete(&format!("{}/{ds}", base(&a, "datasources")), &a.auth)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&base(&a, "queries"), &a.auth).await.body["totalCount"],
        0
    );
}

/// A local HTTP API: echoes what it received; `/missing` is a 404.
async fn echo_server() -> String {
    use poem::{Request, Route, Server, handler, listener::TcpListener, web::Json};
    #[handler]
    fn echo(req: &Request, body: String) -> poem::Response {
        if req.uri().path().ends_with("/missing") {
            return poem::Response::builder()
                .status(poem::http::StatusCode::NOT_FOUND)
                .body("no such thing");
        }
        let reply = json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "authorization": req.header("authorization"),
            "x-tenant": req.header("x-tenant"),
            "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)),
        });
        poem::IntoResponse::into_response(Json(reply))
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let app = Route::new().at("/*path", echo);
    tokio::spawn(Server::new(TcpListener::bind(addr.to_string())).run(app));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    format!("http://{addr}/api")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_datasource_calls_a_real_http_server() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let url = echo_server().await;
    let ds = create_datasource(
        &app,
        &a,
        "restapi",
        json!({"baseUrl": url, "headers": [{"key": "X-Tenant", "value": "acme"}], "auth": {"type": "bearer", "token": "s3cret"}}),
    )
    .await;
    let shown = app
        .get(&format!("{}/{ds}", base(&a, "datasources")), &a.auth)
        .await;
    assert_eq!(shown.body["datasourceOptions"]["auth"]["token"], MASK);
    let q = create_query(
        &app,
        &a,
        &ds,
        json!({"apiEndpoint": "/users/{{inputs.id}}", "method": "POST", "queryParams": [{"key": "q", "value": "{{inputs.search}}"}], "body": {"n": "{{inputs.n}}"}}),
    )
    .await;
    let resp = app
        .post(
            &format!("{}/{q}/run", base(&a, "queries")),
            &a.auth,
            json!({"inputValues": {"id": "7/../admin", "search": "a b&c", "n": 5}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["status"], 200);
    let echoed = &resp.body["data"];
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/api/users/7%2F..%2Fadmin", "{echoed}");
    assert_eq!(echoed["query"], "q=a+b%26c");
    assert_eq!(echoed["authorization"], "Bearer s3cret");
    assert_eq!(echoed["x-tenant"], "acme");
    assert_eq!(
        echoed["body"],
        json!({"n": 5}),
        "type-preserving body template"
    );

    let missing = create_query(&app, &a, &ds, json!({"apiEndpoint": "/missing"})).await;
    let failed = app
        .post(
            &format!("{}/{missing}/run", base(&a, "queries")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!((failed.status, failed.code()), (422, "query_failed"));
    assert!(
        failed.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("404"),
        "{}",
        failed.body
    );
    let test = app
        .post(
            &format!("{}/test", base(&a, "datasources")),
            &a.auth,
            json!({"datasourceID": ds}),
        )
        .await;
    assert_eq!(test.body["ok"], true, "{}", test.body);
}

#[tokio::test]
async fn datasource_routes_check_permissions_and_creators_own_theirs() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let admins = create_datasource(
        &app,
        &a,
        "restapi",
        json!({"baseUrl": "http://127.0.0.1:9"}),
    )
    .await;
    let lister = app.role(&a, "lister", &["tenant:datasource:list"]).await;
    let (_, list_key) = app.key_with_roles(&a, "lister", &[&lister]).await;
    assert_eq!(
        app.get(&base(&a, "datasources"), &list_key).await.status,
        200
    );
    for denied in [
        app.get(&format!("{}/{admins}", base(&a, "datasources")), &list_key).await,
        app.post(&base(&a, "datasources"), &list_key, json!({"datasourceTitle": "x", "datasourceType": "restapi", "datasourceOptions": {"baseUrl": "http://h"}})).await,
        app.post(&format!("{}/test", base(&a, "datasources")), &list_key, json!({"datasourceID": admins})).await,
        app.delete(&format!("{}/{admins}", base(&a, "datasources")), &list_key).await,
    ] {
        assert_eq!((denied.status, denied.code()), (403, "permission_denied"), "{}", denied.body);
    }
    // A key that may only create datasources may do everything with its own, nothing else.
    let maker = app.role(&a, "maker", &["tenant:datasource:create"]).await;
    let (_, make_key) = app.key_with_roles(&a, "maker", &[&maker]).await;
    let mine = app
        .post(&base(&a, "datasources"), &make_key, json!({"datasourceTitle": "mine", "datasourceType": "restapi", "datasourceOptions": {"baseUrl": "http://h", "auth": {"type": "basic", "username": "u", "password": "p"}}}))
        .await;
    assert_eq!(mine.status, 201, "{}", mine.body);
    let mine = mine.str("datasourceID");
    let read = app
        .get(&format!("{}/{mine}", base(&a, "datasources")), &make_key)
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["datasourceOptions"]["auth"]["password"], MASK);
    assert_eq!(
        app.get(&format!("{}/{admins}", base(&a, "datasources")), &make_key)
            .await
            .status,
        403
    );
    assert_eq!(
        app.delete(&format!("{}/{mine}", base(&a, "datasources")), &make_key)
            .await
            .status,
        204
    );

    // A copy keeps the stored secrets and belongs to its maker, who could then point it
    // anywhere: copying needs what pointing the original elsewhere needs.
    let reader = app
        .role(
            &a,
            "reader",
            &["tenant:datasource:create", "tenant:datasource:read"],
        )
        .await;
    let (_, read_key) = app.key_with_roles(&a, "reader", &[&reader]).await;
    let clone = format!("{}/{admins}/clone", base(&a, "datasources"));
    let denied = app.post(&clone, &read_key, json!({})).await;
    assert_eq!(
        (denied.status, denied.code()),
        (403, "permission_denied"),
        "{}",
        denied.body
    );
    let updater = app
        .role(
            &a,
            "updater",
            &[
                "tenant:datasource:create",
                "tenant:datasource:read",
                "tenant:datasource:update",
            ],
        )
        .await;
    let (_, update_key) = app.key_with_roles(&a, "updater", &[&updater]).await;
    assert_eq!(app.post(&clone, &update_key, json!({})).await.status, 201);
}
