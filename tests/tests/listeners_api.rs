//! Listeners over HTTP: CRUD with PUT semantics, clone, activate/deactivate, actions, 422s
//! naming the field, endpoint-path conflicts, tenant isolation, permissions on referenced
//! workflows and queries, ring-buffer paging, the connections view, the live tail and the
//! pipeline dry run.

use futures::StreamExt;
use jet_shared::listener::inbox::TAIL_CHANNEL;
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::Flow;
use serde_json::{Value, json};
use uuid::Uuid;

fn listeners(a: &Admin) -> String {
    format!("/api/v1/tenants/{}/listeners", a.tenant_id)
}

fn flow() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
}

/// A `postgresql` datasource of `a` pointing at `port` on this machine.
async fn pg_datasource(app: &TestApp, a: &Admin, port: u16) -> String {
    let parsed = reqwest::Url::parse(&app.db.url()).expect("url");
    let resp = app
        .post(
            &format!("/api/v1/tenants/{}/datasources", a.tenant_id),
            &a.auth,
            json!({"datasourceTitle": "db", "datasourceType": "postgresql", "datasourceOptions": {
                "connectionOption": "connectionDetails",
                "connectionDetails": {
                    "host": "127.0.0.1", "port": port,
                    "database": parsed.path().trim_start_matches('/'),
                    "user": parsed.username(), "password": "pw", "sslMode": "disable"
                }
            }}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.str("datasourceID")
}

/// The test database's own port.
fn db_port(app: &TestApp) -> u16 {
    reqwest::Url::parse(&app.db.url())
        .expect("url")
        .port()
        .unwrap_or(5432)
}

/// A `webhook` datasource of `a`, written directly (its API is another change's).
async fn webhook_datasource(app: &TestApp, a: &Admin) -> String {
    let id: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblDatasources" ("datasourceTitle", "datasourceType", "tenantID", "datasourceOptions", "datasourceTags")
           VALUES ('hook', 'webhook', $1, '{}', '{}') RETURNING "datasourceID""#,
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("webhook datasource");
    id.to_string()
}

fn notify_body(datasource: &str) -> Value {
    json!({"datasourceID": datasource, "listenerTitle": "orders", "listenerType": "postgresql",
           "listenerDescription": "new orders", "listenerConfig": {"channels": "orders,payments"}})
}

fn webhook_body(datasource: &str, path: &str) -> Value {
    json!({"datasourceID": datasource, "listenerTitle": "hook", "listenerType": "webhook",
           "endpointPath": path})
}

async fn create(app: &TestApp, a: &Admin, body: Value) -> String {
    let resp = app.post(&listeners(a), &a.auth, body).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.str("listenerID")
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        r#"SELECT count(*) FROM "{table}""#
    )))
    .fetch_one(&app.db.pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn crud_put_clone_activate_and_actions_round_trip() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let ds = pg_datasource(&app, &a, db_port(&app)).await;
    let wf = app.save(&a, &flow()).await;

    let created = app.post(&listeners(&a), &a.auth, notify_body(&ds)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "inactive");
    assert_eq!(created.body["eventCount"], 0);
    assert_eq!(created.body["actions"], json!([]));
    let id = created.str("listenerID");
    let one = format!("{}/{id}", listeners(&a));

    // PUT replaces: the absent description is cleared, the config replaced, updatedAt moves.
    let put = app
        .put(
            &one,
            &a.auth,
            json!({"datasourceID": ds, "listenerTitle": " renamed ", "listenerType": "postgresql",
                   "listenerConfig": {"channels": ["audit"]}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["listenerTitle"], "renamed");
    assert!(
        put.body.get("listenerDescription").is_none(),
        "{}",
        put.body
    );
    assert_eq!(put.body["listenerConfig"], json!({"channels": ["audit"]}));
    assert!(put.str("updatedAt") > created.str("updatedAt"));

    // Actions: add, replace, listed in pipeline order on get.
    let actions = format!("{one}/actions");
    let buffer = app
        .post(
            &actions,
            &a.auth,
            json!({"actionType": "save_to_buffer", "actionConfig": {"bufferName": "b", "maxEvents": 10}, "orderIndex": 2}),
        )
        .await;
    assert_eq!(buffer.status, 201, "{}", buffer.body);
    assert_eq!(buffer.body["isEnabled"], true);
    let trigger = app
        .post(
            &actions,
            &a.auth,
            json!({"actionType": "trigger_workflow", "actionConfig": {"workflowID": wf}, "orderIndex": 1}),
        )
        .await;
    assert_eq!(trigger.status, 201, "{}", trigger.body);
    let trigger_id = trigger.str("actionID");
    let replaced = app
        .put(
            &format!("{actions}/{trigger_id}"),
            &a.auth,
            json!({"actionType": "trigger_workflow", "actionConfig": {"workflowID": wf, "inputValues": {"x": "{{event.x}}"}},
                   "isEnabled": false, "orderIndex": 3}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(
        (
            replaced.body["isEnabled"].clone(),
            replaced.body["orderIndex"].clone()
        ),
        (json!(false), json!(3))
    );
    let got = app.get(&one, &a.auth).await;
    assert_eq!(got.status, 200);
    let types: Vec<&str> = got.body["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["actionType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["save_to_buffer", "trigger_workflow"]);

    // Clone: inactive, "(copy)", actions copied.
    app.post(&format!("{one}/activate"), &a.auth, json!({}))
        .await;
    let clone = app.post(&format!("{one}/clone"), &a.auth, json!({})).await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    assert_eq!(clone.body["listenerTitle"], "renamed (copy)");
    assert_eq!(clone.body["status"], "inactive");
    assert_ne!(clone.body["listenerID"], json!(id));
    let copied = clone.body["actions"].as_array().expect("actions");
    assert_eq!(copied.len(), 2);
    assert_eq!(copied[1]["actionConfig"]["inputValues"]["x"], "{{event.x}}");
    assert_ne!(copied[0]["actionID"], buffer.body["actionID"]);

    // Activate clears the last error; deactivate turns it off.
    sqlx::query(
        r#"UPDATE "tblListeners" SET "status" = 'error', "lastError" = 'boom' WHERE "listenerID"::text = $1"#,
    )
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .expect("set error");
    let on = app
        .post(&format!("{one}/activate"), &a.auth, json!({}))
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(on.body["status"], "active");
    assert!(on.body.get("lastError").is_none(), "{}", on.body);
    let active = app
        .get(&format!("{}?status=active", listeners(&a)), &a.auth)
        .await;
    assert_eq!(active.body["totalCount"], 1, "{}", active.body);
    assert_eq!(active.body["items"][0]["listenerID"], json!(id));
    let by_type = app
        .get(&format!("{}?listenerType=webhook", listeners(&a)), &a.auth)
        .await;
    assert_eq!(by_type.body["totalCount"], 0);
    let all = app.get(&listeners(&a), &a.auth).await;
    assert_eq!(all.body["totalCount"], 2);
    let bad_filter = app
        .get(&format!("{}?status=running", listeners(&a)), &a.auth)
        .await;
    assert_eq!(
        (bad_filter.status, bad_filter.code()),
        (400, "invalid_parameter")
    );
    let off = app
        .post(&format!("{one}/deactivate"), &a.auth, json!({}))
        .await;
    assert_eq!(off.body["status"], "inactive");

    // Deletes.
    let gone = app
        .delete(&format!("{actions}/{trigger_id}"), &a.auth)
        .await;
    assert_eq!(gone.status, 204);
    assert_eq!(
        app.delete(&format!("{actions}/{trigger_id}"), &a.auth)
            .await
            .status,
        404
    );
    assert_eq!(app.delete(&one, &a.auth).await.status, 204);
    assert_eq!(app.get(&one, &a.auth).await.status, 404);
    assert_eq!(count(&app, "tblListeners").await, 1, "the clone remains");

    // Every mutation was audited under its operation.
    let audited: Vec<String> = sqlx::query_scalar(
        r#"SELECT DISTINCT "type" FROM "tblAuditLogs" WHERE "type" LIKE '%Listener%' ORDER BY 1"#,
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("audit");
    for op in [
        "activateListener",
        "cloneListener",
        "createListener",
        "createListenerAction",
        "deactivateListener",
        "deleteListener",
        "deleteListenerAction",
        "updateListener",
        "updateListenerAction",
    ] {
        assert!(audited.iter().any(|t| t == op), "{op} in {audited:?}");
    }
}

#[tokio::test]
async fn a_cdc_listener_whose_source_cannot_do_cdc_is_a_422_on_activate() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    // Nothing listens on this port: whatever provisioning needs, it cannot have it.
    let ds = pg_datasource(&app, &a, jet_tests::bins::free_port()).await;
    let id = create(
        &app,
        &a,
        json!({"datasourceID": ds, "listenerTitle": "cdc", "listenerType": "postgresql",
               "listenerConfig": {"mode": "cdc", "tables": ["public.orders"]}}),
    )
    .await;
    let one = format!("{}/{id}", listeners(&a));
    let on = app
        .post(&format!("{one}/activate"), &a.auth, json!({}))
        .await;
    assert_eq!(
        (on.status, on.code()),
        (422, "cdc_source_not_ready"),
        "{}",
        on.body
    );
    assert!(!on.body["message"].as_str().unwrap_or("").is_empty());
    assert_eq!(app.get(&one, &a.auth).await.body["status"], "inactive");

    // A running CDC listener keeps its source until it is deactivated; its title may change.
    sqlx::query(r#"UPDATE "tblListeners" SET "status" = 'active' WHERE "listenerID"::text = $1"#)
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .expect("mark active");
    let cdc = |tables: Value, title: &str| {
        json!({"datasourceID": ds, "listenerTitle": title, "listenerType": "postgresql",
               "listenerConfig": {"mode": "cdc", "tables": tables}})
    };
    let moved = app
        .put(&one, &a.auth, cdc(json!(["public.payments"]), "cdc"))
        .await;
    assert_eq!(
        (moved.status, moved.code()),
        (409, "listener_active"),
        "{}",
        moved.body
    );
    let renamed = app
        .put(&one, &a.auth, cdc(json!(["public.orders"]), "orders cdc"))
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["listenerTitle"], "orders cdc");
    let to_notify = app.put(&one, &a.auth, notify_body(&ds)).await;
    assert_eq!(
        (to_notify.status, to_notify.code()),
        (409, "listener_active")
    );
    app.post(&format!("{one}/deactivate"), &a.auth, json!({}))
        .await;
    let moved = app
        .put(&one, &a.auth, cdc(json!(["public.payments"]), "cdc"))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(
        moved.body["listenerConfig"]["tables"],
        json!(["public.payments"])
    );

    // An unreachable source is deleted with force (the slot, if any, is left behind).
    assert_eq!(
        app.delete(&format!("{one}?force=true"), &a.auth)
            .await
            .status,
        204
    );
    assert_eq!(count(&app, "tblListeners").await, 0);
}

#[tokio::test]
async fn every_validation_error_names_its_field() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let ds = pg_datasource(&app, &a, db_port(&app)).await;
    let hook = webhook_datasource(&app, &a).await;
    let with = |base: Value, patch: Value| {
        let mut b = base;
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                b.as_object_mut().expect("object").remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        (
            with(notify_body(&ds), json!({"listenerType": "kafka"})),
            400,
            "invalid_type",
            "field `listenerType`",
        ),
        (
            with(notify_body(&ds), json!({"listenerConfig": {}})),
            422,
            "invalid_config",
            "listenerConfig.channels",
        ),
        (
            with(notify_body(&ds), json!({"listenerConfig": "a,b"})),
            422,
            "invalid_config",
            "listenerConfig",
        ),
        (
            with(
                notify_body(&ds),
                json!({"listenerConfig": {"mode": "cdc", "tables": ["ok", 3]}}),
            ),
            422,
            "invalid_config",
            "listenerConfig.tables[1]",
        ),
        (
            with(
                notify_body(&ds),
                json!({"listenerConfig": {"mode": "cdc", "tables": ["t"], "maxRetainedWalMb": 0}}),
            ),
            422,
            "invalid_config",
            "listenerConfig.maxRetainedWalMb",
        ),
        (
            with(notify_body(&ds), json!({"endpointPath": "x"})),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            with(webhook_body(&hook, "x"), json!({"endpointPath": null})),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, "/leading"),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, "trailing/"),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, "a//b"),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, "a/../b"),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, "sp ace"),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, "q?x=1"),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&hook, ""),
            422,
            "invalid_endpoint_path",
            "endpointPath",
        ),
        (
            webhook_body(&ds, "ok"),
            422,
            "invalid_datasource",
            "datasourceID",
        ),
        (
            notify_body(&hook),
            422,
            "invalid_datasource",
            "datasourceID",
        ),
        (
            notify_body(&Uuid::new_v4().to_string()),
            422,
            "invalid_datasource",
            "datasourceID",
        ),
        (
            with(notify_body(&ds), json!({"listenerTitle": "  "})),
            422,
            "validation_failed",
            "listenerTitle",
        ),
        (
            with(notify_body(&ds), json!({"listenerTitle": "x".repeat(256)})),
            400,
            "invalid_request",
            "",
        ),
        (
            webhook_body(&hook, &"a".repeat(256)),
            400,
            "invalid_request",
            "",
        ),
        (
            with(notify_body(&ds), json!({"listenerTitle": ["x"]})),
            400,
            "invalid_type",
            "",
        ),
        (
            with(notify_body(&ds), json!({"datasourceID": "not-a-uuid"})),
            400,
            "invalid_request",
            "",
        ),
        (
            with(notify_body(&ds), json!({"listenerTitle": "a\u{0}b"})),
            400,
            "invalid_character",
            "",
        ),
        (
            with(
                notify_body(&ds),
                json!({"listenerConfig": {"channels": "a", "x": "\u{0}"}}),
            ),
            400,
            "invalid_character",
            "",
        ),
    ];
    for (body, status, code, field) in cases {
        let resp = app.post(&listeners(&a), &a.auth, body.clone()).await;
        assert_eq!(
            (resp.status, resp.code()),
            (status, code),
            "{body}: {}",
            resp.body
        );
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{field} in {message:?}");
    }
    let huge = app
        .post(
            &listeners(&a),
            &a.auth,
            with(
                notify_body(&ds),
                json!({"listenerConfig": {"channels": "a", "pad": "x".repeat(70_000)}}),
            ),
        )
        .await;
    assert_eq!(huge.status, 413);
    assert_eq!(
        count(&app, "tblListeners").await,
        0,
        "nothing invalid saved"
    );

    // Actions.
    let id = create(&app, &a, notify_body(&ds)).await;
    let one = format!("{}/{id}", listeners(&a));
    let action_cases = [
        (
            json!({"actionType": "send_email"}),
            400,
            "invalid_type",
            "field `actionType`",
        ),
        (
            json!({"actionType": "transform", "actionConfig": {}}),
            422,
            "invalid_action",
            "actionConfig.script",
        ),
        (
            json!({"actionType": "transform", "actionConfig": {"script": "return event", "timeoutMs": 60000}}),
            422,
            "invalid_action",
            "actionConfig.timeoutMs",
        ),
        (
            json!({"actionType": "trigger_workflow", "actionConfig": {"workflowID": 7}}),
            422,
            "invalid_action",
            "actionConfig.workflowID",
        ),
        (
            json!({"actionType": "trigger_query", "actionConfig": {}}),
            422,
            "invalid_action",
            "actionConfig.dataQueryID",
        ),
        (
            json!({"actionType": "save_to_buffer", "actionConfig": {"retentionPolicy": "both", "maxEvents": 5}}),
            422,
            "invalid_action",
            "actionConfig.maxAgeHours",
        ),
        (
            json!({"actionType": "push_to_app_page", "actionConfig": {"appPageID": Uuid::new_v4(), "mode": "merge"}}),
            422,
            "invalid_action",
            "actionConfig.mode",
        ),
        (
            json!({"actionType": "transform", "actionConfig": [1]}),
            422,
            "invalid_action",
            "actionConfig",
        ),
        (
            json!({"actionType": "trigger_workflow", "actionConfig": {"workflowID": Uuid::new_v4()}}),
            422,
            "invalid_reference",
            "actionConfig.workflowID",
        ),
        (
            json!({"actionType": "transform", "actionConfig": {"script": "return event"}, "orderIndex": -1}),
            400,
            "invalid_request",
            "",
        ),
        (
            json!({"actionType": "transform", "actionConfig": {"script": "return event"}, "isEnabled": "yes"}),
            400,
            "invalid_type",
            "",
        ),
        (
            json!({"actionType": "transform", "actionConfig": {"script": "return event"}, "orderIndex": 1.5}),
            400,
            "invalid_type",
            "",
        ),
    ];
    for (body, status, code, field) in action_cases {
        let resp = app
            .post(&format!("{one}/actions"), &a.auth, body.clone())
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (status, code),
            "{body}: {}",
            resp.body
        );
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{field} in {message:?}");
    }
    assert_eq!(count(&app, "tblListenerActions").await, 0);

    // A bad PUT leaves the listener as it was.
    let bad = app
        .put(
            &one,
            &a.auth,
            with(
                notify_body(&ds),
                json!({"listenerConfig": {"channels": ""}}),
            ),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_config"));
    let got = app.get(&one, &a.auth).await;
    assert_eq!(
        got.body["listenerConfig"],
        json!({"channels": "orders,payments"})
    );
}

#[tokio::test]
async fn endpoint_paths_are_unique_per_tenant() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let hook_a = webhook_datasource(&app, &a).await;
    let hook_b = webhook_datasource(&app, &b).await;
    let first = create(&app, &a, webhook_body(&hook_a, "orders/v1.2_x~y-z")).await;
    let taken = app
        .post(
            &listeners(&a),
            &a.auth,
            webhook_body(&hook_a, "orders/v1.2_x~y-z"),
        )
        .await;
    assert_eq!(
        (taken.status, taken.code()),
        (409, "endpoint_path_taken"),
        "{}",
        taken.body
    );
    // Another tenant may use the same path.
    create(&app, &b, webhook_body(&hook_b, "orders/v1.2_x~y-z")).await;
    let second = create(&app, &a, webhook_body(&hook_a, "payments")).await;
    let moved = app
        .put(
            &format!("{}/{second}", listeners(&a)),
            &a.auth,
            webhook_body(&hook_a, "orders/v1.2_x~y-z"),
        )
        .await;
    assert_eq!((moved.status, moved.code()), (409, "endpoint_path_taken"));

    // A clone has no path, and a webhook listener without one cannot be activated.
    let clone = app
        .post(
            &format!("{}/{first}/clone", listeners(&a)),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    assert!(clone.body.get("endpointPath").is_none(), "{}", clone.body);
    let on = app
        .post(
            &format!("{}/{}/activate", listeners(&a), clone.str("listenerID")),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!((on.status, on.code()), (422, "invalid_endpoint_path"));
    let on = app
        .post(
            &format!("{}/{first}/activate", listeners(&a)),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (on.status, on.body["status"].clone()),
        (200, json!("active"))
    );
}

#[tokio::test]
async fn another_tenants_listeners_and_ids_are_not_reachable() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let ds_a = pg_datasource(&app, &a, db_port(&app)).await;
    let ds_b = pg_datasource(&app, &b, db_port(&app)).await;
    let wf_b = app.save(&b, &flow()).await;
    let query_b = app
        .post(
            &format!("/api/v1/tenants/{}/queries", b.tenant_id),
            &b.auth,
            json!({"dataQueryTitle": "q", "datasourceID": ds_b, "dataQueryOptions": {"query": "SELECT 1"}}),
        )
        .await
        .str("dataQueryID");
    let listener_b = create(&app, &b, notify_body(&ds_b)).await;
    let action_b = app
        .post(
            &format!("{}/{listener_b}/actions", listeners(&b)),
            &b.auth,
            json!({"actionType": "transform", "actionConfig": {"script": "return event"}}),
        )
        .await
        .str("actionID");

    // B's listener through A's tenant: 404 everywhere.
    let theirs = format!("{}/{listener_b}", listeners(&a));
    for resp in [
        app.get(&theirs, &a.auth).await,
        app.put(&theirs, &a.auth, notify_body(&ds_a)).await,
        app.post(&format!("{theirs}/activate"), &a.auth, json!({}))
            .await,
        app.post(&format!("{theirs}/deactivate"), &a.auth, json!({}))
            .await,
        app.post(&format!("{theirs}/clone"), &a.auth, json!({}))
            .await,
        app.post(&format!("{theirs}/test"), &a.auth, json!({"event": {}}))
            .await,
        app.get(&format!("{theirs}/tail"), &a.auth).await,
        app.get(&format!("{theirs}/buffers/default/events"), &a.auth)
            .await,
        app.post(
            &format!("{theirs}/actions"),
            &a.auth,
            json!({"actionType": "transform", "actionConfig": {"script": "return event"}}),
        )
        .await,
        app.put(
            &format!("{theirs}/actions/{action_b}"),
            &a.auth,
            json!({"actionType": "transform", "actionConfig": {"script": "return 1"}}),
        )
        .await,
        app.delete(&format!("{theirs}/actions/{action_b}"), &a.auth)
            .await,
        app.delete(&theirs, &a.auth).await,
    ] {
        assert_eq!(resp.status, 404, "{}", resp.body);
    }
    // B's action under A's listener is not found either.
    let mine = create(&app, &a, notify_body(&ds_a)).await;
    let crossed = app
        .delete(
            &format!("{}/{mine}/actions/{action_b}", listeners(&a)),
            &a.auth,
        )
        .await;
    assert_eq!(crossed.status, 404);
    // B's tenant with A's key: the tenant itself is not A's.
    assert_eq!(app.get(&listeners(&b), &a.auth).await.status, 404);

    // B's ids inside A's bodies: 422 naming the field.
    let foreign_ds = app.post(&listeners(&a), &a.auth, notify_body(&ds_b)).await;
    assert_eq!(
        (foreign_ds.status, foreign_ds.code()),
        (422, "invalid_datasource")
    );
    for (action, field) in [
        (
            json!({"actionType": "trigger_workflow", "actionConfig": {"workflowID": wf_b}}),
            "actionConfig.workflowID",
        ),
        (
            json!({"actionType": "trigger_query", "actionConfig": {"dataQueryID": query_b}}),
            "actionConfig.dataQueryID",
        ),
    ] {
        let resp = app
            .post(
                &format!("{}/{mine}/actions", listeners(&a)),
                &a.auth,
                action,
            )
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (422, "invalid_reference"),
            "{}",
            resp.body
        );
        assert!(
            resp.body["message"]
                .as_str()
                .unwrap_or("")
                .starts_with(field)
        );
    }
    let still: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblListenerActions" WHERE "actionID"::text = $1"#,
    )
    .bind(&action_b)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(still, 1, "B's action survived");
}

#[tokio::test]
async fn saving_needs_datasource_read_and_execute_on_what_actions_name() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let ds = pg_datasource(&app, &a, db_port(&app)).await;
    let wf = app.save(&a, &flow()).await;
    let listener = create(&app, &a, notify_body(&ds)).await;
    let one = format!("{}/{listener}", listeners(&a));
    let trigger = json!({"actionType": "trigger_workflow", "actionConfig": {"workflowID": wf}});

    let editor = app
        .role(
            &a,
            "editor",
            &[
                "tenant:listener:list",
                "tenant:listener:create",
                "tenant:listener:read",
                "tenant:listener:update",
                "tenant:datasource:read",
            ],
        )
        .await;
    let (_, editor) = app.key_with_roles(&a, "editor", &[&editor]).await;
    let created = app.post(&listeners(&a), &editor, notify_body(&ds)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let denied = app
        .post(&format!("{one}/actions"), &editor, trigger.clone())
        .await;
    assert_eq!(
        (denied.status, denied.code()),
        (403, "permission_denied"),
        "{}",
        denied.body
    );
    assert!(
        denied.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tenant:workflow:execute")
    );
    // Replacing an allowed action with one naming the workflow is refused the same way.
    let harmless = app
        .post(
            &format!("{one}/actions"),
            &editor,
            json!({"actionType": "transform", "actionConfig": {"script": "return event"}}),
        )
        .await;
    assert_eq!(harmless.status, 201, "{}", harmless.body);
    let swap = app
        .put(
            &format!("{one}/actions/{}", harmless.str("actionID")),
            &editor,
            trigger.clone(),
        )
        .await;
    assert_eq!(swap.status, 403, "{}", swap.body);
    // Not executing: no dry run, no tail.
    let test = app
        .post(&format!("{one}/test"), &editor, json!({"event": {}}))
        .await;
    assert_eq!((test.status, test.code()), (403, "permission_denied"));
    assert_eq!(app.get(&format!("{one}/tail"), &editor).await.status, 403);

    // Execute on that one workflow is enough.
    let runner = app
        .role_with_assets(
            &a,
            "runner",
            &["tenant:listener:update", "tenant:listener:execute"],
            &[("workflow", &wf, "execute")],
        )
        .await;
    let (_, runner) = app.key_with_roles(&a, "runner", &[&runner]).await;
    let allowed = app
        .post(&format!("{one}/actions"), &runner, trigger.clone())
        .await;
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    let test = app
        .post(&format!("{one}/test"), &runner, json!({"event": {"x": 1}}))
        .await;
    assert_eq!(test.status, 200, "{}", test.body);

    // Without datasource read, a listener cannot be created on it.
    let blind = app.role(&a, "blind", &["tenant:listener:create"]).await;
    let (_, blind) = app.key_with_roles(&a, "blind", &[&blind]).await;
    let resp = app.post(&listeners(&a), &blind, notify_body(&ds)).await;
    assert_eq!((resp.status, resp.code()), (403, "permission_denied"));
    assert!(
        resp.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tenant:datasource:read")
    );
    // Readers read; they do not change.
    let reader = app
        .role(
            &a,
            "reader",
            &["tenant:listener:list", "tenant:listener:read"],
        )
        .await;
    let (_, reader) = app.key_with_roles(&a, "reader", &[&reader]).await;
    assert_eq!(app.get(&one, &reader).await.status, 200);
    for resp in [
        app.post(&format!("{one}/activate"), &reader, json!({}))
            .await,
        app.put(&one, &reader, notify_body(&ds)).await,
        app.delete(&one, &reader).await,
    ] {
        assert_eq!(resp.status, 403, "{}", resp.body);
    }
}

#[tokio::test]
async fn buffers_page_by_seq_no_and_connections_show_holders() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let ds = pg_datasource(&app, &a, db_port(&app)).await;
    let ds_b = pg_datasource(&app, &b, db_port(&app)).await;
    let id = create(&app, &a, notify_body(&ds)).await;
    let other = create(&app, &a, notify_body(&ds)).await;
    let theirs = create(&app, &b, notify_body(&ds_b)).await;
    for (listener, tenant, buffer, n) in [
        (&id, a.tenant_id, "b1", 5),
        (&id, a.tenant_id, "b2", 2),
        (&other, a.tenant_id, "b1", 3),
        (&theirs, b.tenant_id, "b1", 1),
    ] {
        for i in 0..n {
            sqlx::query(
                r#"INSERT INTO "tblListenerEvents" ("listenerID", "tenantID", "bufferName", "eventData", "eventMeta")
                   VALUES ($1::uuid, $2, $3, $4, $5)"#,
            )
            .bind(listener)
            .bind(tenant)
            .bind(buffer)
            .bind(json!({"i": i, "buffer": buffer}))
            .bind((i == 0).then(|| json!({"source": "test"})))
            .execute(&app.db.pool)
            .await
            .expect("event");
        }
    }
    let events = format!("{}/{id}/buffers/b1/events", listeners(&a));
    let first = app.get(&format!("{events}?limit=2"), &a.auth).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let items = first.body["items"].as_array().expect("items");
    assert_eq!(
        items
            .iter()
            .map(|e| e["eventData"]["i"].clone())
            .collect::<Vec<_>>(),
        [json!(0), json!(1)]
    );
    assert_eq!(items[0]["eventMeta"], json!({"source": "test"}));
    let max = first.body["maxSeqNo"].as_i64().expect("max");
    let mut after = first.body["nextAfterSeqNo"].as_i64().expect("next");
    let mut seen = 2;
    loop {
        let page = app
            .get(&format!("{events}?afterSeqNo={after}&limit=2"), &a.auth)
            .await;
        let items = page.body["items"].as_array().expect("items").clone();
        if items.is_empty() {
            assert_eq!(page.body["nextAfterSeqNo"], json!(after));
            break;
        }
        for item in &items {
            assert!(item["seqNo"].as_i64().expect("seq") > after);
            assert_eq!(item["eventData"]["buffer"], "b1");
        }
        seen += items.len();
        after = page.body["nextAfterSeqNo"].as_i64().expect("next");
    }
    assert_eq!((seen, after), (5, max), "only this listener's b1, in order");
    let empty = app
        .get(
            &format!("{}/{id}/buffers/none/events", listeners(&a)),
            &a.auth,
        )
        .await;
    assert_eq!(empty.body["items"], json!([]));
    assert!(empty.body.get("maxSeqNo").is_none(), "{}", empty.body);
    for bad in ["limit=1001", "limit=0", "afterSeqNo=-1", "limit=many"] {
        let resp = app.get(&format!("{events}?{bad}"), &a.auth).await;
        assert_eq!(resp.status, 400, "{bad}: {}", resp.body);
    }

    // Connections: running listeners only, each with its holder, lag and checkpoint.
    for listener in [&id, &other] {
        let on = app
            .post(
                &format!("{}/{listener}/activate", listeners(&a)),
                &a.auth,
                json!({}),
            )
            .await;
        assert_eq!(on.status, 200, "{}", on.body);
    }
    app.post(
        &format!("{}/{theirs}/activate", listeners(&b)),
        &b.auth,
        json!({}),
    )
    .await;
    sqlx::query(
        r#"INSERT INTO "tblWorkers" ("workerID", "host", "pid", "roles", "version")
           VALUES ('w-1', 'box-7', 42, '{listeners}', 'test')"#,
    )
    .execute(&app.db.pool)
    .await
    .expect("worker");
    sqlx::query(
        r#"INSERT INTO "tblListenerHolds" ("listenerID", "workerID", "expiresAt", "connectedAt", "retainedWalBytes", "lagBytes")
           VALUES ($1::uuid, 'w-1', now() + interval '30 seconds', now(), 4096, 128)"#,
    )
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .expect("hold");
    sqlx::query(
        r#"INSERT INTO "tblListenerCheckpoints" ("listenerID", "slotName", "publicationName", "lsn")
           VALUES ($1::uuid, 's', 'p', '0/16B3748')"#,
    )
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .expect("checkpoint");
    app.post(
        &format!("{}/{other}/deactivate", listeners(&a)),
        &a.auth,
        json!({}),
    )
    .await;
    let third = create(&app, &a, notify_body(&ds)).await;
    app.post(
        &format!("{}/{third}/activate", listeners(&a)),
        &a.auth,
        json!({}),
    )
    .await;
    let status = app
        .get(&format!("{}/status/connections", listeners(&a)), &a.auth)
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    let items = status.body["items"].as_array().expect("items");
    let ids: Vec<&str> = items
        .iter()
        .map(|c| c["listenerID"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, [id.as_str(), third.as_str()], "{}", status.body);
    let held = &items[0];
    assert_eq!(held["workerID"], "w-1");
    assert_eq!(held["host"], "box-7");
    assert_eq!(held["leaseExpired"], false);
    assert_eq!(
        (held["retainedWalBytes"].clone(), held["lagBytes"].clone()),
        (json!(4096), json!(128))
    );
    assert_eq!(held["checkpointLsn"], "0/16B3748");
    assert!(held["heldSince"].is_string() && held["connectedAt"].is_string());
    assert!(items[1].get("workerID").is_none(), "nobody holds the third");
}

/// Reads SSE `data:` payloads from `resp` until `want` arrived or 10 s passed.
async fn read_tail(resp: reqwest::Response, want: usize) -> Vec<Value> {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while events.len() < want {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    events.push(serde_json::from_str(v.trim()).unwrap_or(Value::Null));
                }
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_streams_this_listeners_events_only_within_the_stream_caps() {
    let app = TestApp::with_env(&[("JET_SSE_MAX_STREAMS_PER_TENANT", "1")], false).await;
    let a = app.admin("A").await;
    let ds = pg_datasource(&app, &a, db_port(&app)).await;
    let mine = create(&app, &a, notify_body(&ds)).await;
    let other = create(&app, &a, notify_body(&ds)).await;
    let tail = format!("{}{}/{mine}/tail", app.base, listeners(&a));
    let resp = app
        .client
        .get(&tail)
        .header("Authorization", &a.auth)
        .send()
        .await
        .expect("tail");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    // The tenant's one stream is taken.
    let second = app
        .get(&format!("{}/{other}/tail", listeners(&a)), &a.auth)
        .await;
    assert_eq!((second.status, second.code()), (429, "too_many_streams"));

    for (listener, n) in [(&other, 1), (&mine, 2), (&other, 3), (&mine, 4)] {
        let payload = json!({"listenerID": listener, "eventID": Uuid::new_v4(), "rawEvent": {"n": n},
                             "transformedEvent": {"n": n}, "filtered": false, "truncated": false,
                             "timestamp": "2026-12-02T00:00:00Z"});
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(TAIL_CHANNEL)
            .bind(payload.to_string())
            .execute(&app.db.pool)
            .await
            .expect("notify");
    }
    let events = read_tail(resp, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e["listenerID"].clone(), e["rawEvent"]["n"].clone()))
            .collect::<Vec<_>>(),
        [(json!(mine), json!(2)), (json!(mine), json!(4))]
    );
    // Closing the stream frees the tenant's place (the server notices at its next write).
    let mut reopened = 0;
    for _ in 0..50 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(TAIL_CHANNEL)
            .bind(json!({"listenerID": mine}).to_string())
            .execute(&app.db.pool)
            .await
            .expect("notify");
        let resp = app
            .client
            .get(format!("{}{}/{other}/tail", app.base, listeners(&a)))
            .header("Authorization", &a.auth)
            .send()
            .await
            .expect("tail");
        if resp.status() == 200 {
            reopened = 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(reopened, 200, "the closed stream's place was freed");
}

#[tokio::test]
async fn the_dry_run_shows_transform_output_filters_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let ds = pg_datasource(&app, &a, db_port(&app)).await;
    let wf = app.save(&a, &flow()).await;
    let id = create(&app, &a, notify_body(&ds)).await;
    let one = format!("{}/{id}", listeners(&a));
    for action in [
        json!({"actionType": "transform", "orderIndex": 0, "actionConfig": {"script":
            "if (event.n < 0) return null;\nif (event.n === 13) throw new Error('unlucky');\nreturn {...event, doubled: event.n * 2};"}}),
        json!({"actionType": "trigger_workflow", "orderIndex": 1,
               "actionConfig": {"workflowID": wf, "inputValues": {"value": "{{event.doubled}}"}}}),
        json!({"actionType": "save_to_buffer", "orderIndex": 2, "actionConfig": {"bufferName": "recent", "maxEvents": 5}}),
        json!({"actionType": "push_to_app_page", "orderIndex": 3, "isEnabled": false,
               "actionConfig": {"appPageID": Uuid::new_v4()}}),
    ] {
        let resp = app.post(&format!("{one}/actions"), &a.auth, action).await;
        assert_eq!(resp.status, 201, "{}", resp.body);
    }
    let run = |event: Value| {
        let app = &app;
        let one = one.clone();
        let auth = a.auth.clone();
        async move {
            let resp = app
                .post(&format!("{one}/test"), &auth, json!({ "event": event }))
                .await;
            assert_eq!(resp.status, 200, "{}", resp.body);
            resp.body
        }
    };

    let out = run(json!({"n": 2})).await;
    assert_eq!(out["rawEvent"], json!({"n": 2}));
    assert_eq!(out["transformedEvent"], json!({"n": 2, "doubled": 4}));
    assert_eq!(out["filtered"], false);
    // The typed `DryRunReport`: what did not happen is absent, not `null`.
    assert!(out.get("transformError").is_none(), "{out}");
    let actions = out["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 3, "the disabled action is left out: {out}");
    assert_eq!(actions[0]["status"], "transformed");
    assert_eq!(actions[0]["output"], json!({"n": 2, "doubled": 4}));
    assert_eq!(actions[1]["status"], "planned");
    let start = &actions[1]["effect"]["startWorkflow"];
    assert_eq!(start["workflowID"], json!(wf));
    assert_eq!(start["inputValues"], json!({"value": 4}));
    assert_eq!(start["workflowTitle"], "test flow");
    assert_eq!(actions[2]["effect"]["saveToBuffer"]["bufferName"], "recent");
    assert_eq!(actions[2]["actionType"], "save_to_buffer");
    let buffer = &actions[2]["effect"]["saveToBuffer"];
    assert_eq!(buffer["maxEvents"], 5);
    assert!(buffer.get("maxAgeHours").is_none(), "{out}");

    let filtered = run(json!({"n": -1})).await;
    assert_eq!(filtered["filtered"], true);
    assert!(filtered.get("transformedEvent").is_none(), "{filtered}");
    assert_eq!(
        filtered["actions"].as_array().map(Vec::len),
        Some(1),
        "nothing runs after the filter: {filtered}"
    );

    let aborted = run(json!({"n": 13})).await;
    assert!(
        aborted["transformError"]
            .as_str()
            .unwrap_or("")
            .contains("unlucky"),
        "{aborted}"
    );
    assert!(aborted["transformedEvent"].is_null());
    assert_eq!(aborted["actions"][0]["status"], "aborted");
    assert_eq!(aborted["actions"].as_array().map(Vec::len), Some(1));

    // Nothing was written by any of it.
    assert_eq!(count(&app, "tblListenerEvents").await, 0);
    assert_eq!(count(&app, "tblWorkflowInstances").await, 0);
    assert_eq!(count(&app, "tblListenerInbox").await, 0);

    let missing = app.post(&format!("{one}/test"), &a.auth, json!({})).await;
    // The spec requires `event`: its absence is refused before the handler.
    assert_eq!((missing.status, missing.code()), (400, "missing_field"));
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("`event`")
    );
}
