//! A body field takes exactly the JSON type the spec gives it, `null` only where the spec says
//! `nullable`, and a disabled tenant is never a lock without a key.

use jet_tests::app::bearer;
use jet_tests::{TestApp, jwt};
use serde_json::{Value, json};

/// Across many operations, a wrong type is a 400 `invalid_type` naming the field, and nothing
/// was written.
#[tokio::test]
async fn a_wrong_type_is_400_naming_the_field_on_every_operation() {
    let app = TestApp::spawn().await;
    let a = app.admin("Strict").await;
    let t = format!("/api/v1/tenants/{}", a.tenant_id);
    let role = app.role(&a, "existing", &["tenant:role:list"]).await;
    let table: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            format!("{t}/roles"),
            json!({"roleTitle": true}),
            "roleTitle",
        ),
        (
            "POST",
            format!("{t}/roles"),
            json!({"roleTitle": 42}),
            "roleTitle",
        ),
        (
            "POST",
            format!("{t}/roles"),
            json!({"roleTitle": "r", "permissions": [1]}),
            "permissions[0]",
        ),
        (
            "POST",
            format!("{t}/roles"),
            json!({"roleTitle": "r", "assetPermissions": [{"resourceType": 1, "resourceID": "x", "action": "a"}]}),
            "assetPermissions[0].resourceType",
        ),
        (
            "PATCH",
            format!("{t}/roles/{role}"),
            json!({"roleTitle": false}),
            "roleTitle",
        ),
        (
            "PATCH",
            t.clone(),
            json!({"tenantTitle": 1.5}),
            "tenantTitle",
        ),
        (
            "PATCH",
            t.clone(),
            json!({"isDisabled": "true"}),
            "isDisabled",
        ),
        (
            "POST",
            format!("{t}/apikeys"),
            json!({"apiKeyTitle": 7}),
            "apiKeyTitle",
        ),
        (
            "POST",
            format!("{t}/workflows"),
            json!({"title": true, "nodes": [], "edges": []}),
            "title",
        ),
        (
            "POST",
            format!("{t}/app-pages"),
            json!({"appPageTitle": 3}),
            "appPageTitle",
        ),
        (
            "POST",
            format!("{t}/widgets"),
            json!({"widgetTitle": "w", "widgetType": false}),
            "widgetType",
        ),
        (
            "POST",
            format!("{t}/datasources"),
            json!({"datasourceTitle": 9, "datasourceType": "webhook"}),
            "datasourceTitle",
        ),
        (
            "POST",
            format!("{t}/cronjobs"),
            json!({"cronJobTitle": "c", "cronJobSchedule": 5}),
            "cronJobSchedule",
        ),
        (
            "PUT",
            format!("/api/v1/auth/config/{}", a.tenant_id),
            json!({"config": {}, "x": 1}),
            "",
        ),
    ];
    for (method, path, body, field) in table {
        let resp = app
            .call(method, &path, Some(&a.auth), Some(body.clone()))
            .await;
        if field.is_empty() {
            // An unknown field of any type is no type error (it is ignored).
            assert_ne!(resp.code(), "invalid_type", "{method} {path} {body}");
            continue;
        }
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_type"),
            "{method} {path} {body}: {}",
            resp.body
        );
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("`{field}`")),
            "{method} {path}: the message names {field}: {message}"
        );
    }
    let roles = app.get(&format!("{t}/roles?pageSize=200"), &a.auth).await;
    let titles: Vec<&str> = roles.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["roleTitle"].as_str())
        .collect();
    assert!(
        !titles.contains(&"true") && !titles.contains(&"42"),
        "{titles:?}"
    );
    // A required field left out is named too, and `createAppPage({})` is refused.
    let empty = app
        .post(&format!("{t}/app-pages"), &a.auth, json!({}))
        .await;
    assert_eq!(
        (empty.status, empty.code()),
        (400, "missing_field"),
        "{}",
        empty.body
    );
    assert!(
        empty.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`appPageTitle`")
    );
    // The refusal comes after authentication: without credentials it is still a 401.
    let anonymous = app
        .call(
            "POST",
            &format!("{t}/roles"),
            None,
            Some(json!({"roleTitle": true})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

/// `null` is refused where the spec does not declare it, and clears where it does.
#[tokio::test]
async fn null_is_accepted_only_where_the_spec_says_nullable() {
    let app = TestApp::spawn().await;
    let a = app.admin("Nulls").await;
    let t = format!("/api/v1/tenants/{}", a.tenant_id);
    for (path, body, field) in [
        (t.clone(), json!({"tenantTitle": null}), "tenantTitle"),
        (t.clone(), json!({"isDisabled": null}), "isDisabled"),
        (
            format!("{t}/roles"),
            json!({"roleTitle": "r", "roleDescription": null}),
            "roleDescription",
        ),
        (
            format!("{t}/roles"),
            json!({"roleTitle": "r", "permissions": null}),
            "permissions",
        ),
    ] {
        let method = if path == t { "PATCH" } else { "POST" };
        let resp = app
            .call(method, &path, Some(&a.auth), Some(body.clone()))
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_type"),
            "{body}: {}",
            resp.body
        );
        assert!(
            resp.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("`{field}` must not be null")),
            "{}",
            resp.body
        );
    }
    let set = app
        .patch(
            &t,
            &a.auth,
            json!({"tenantLogoURL": "https://x/l.png", "disableReason": "n/a"}),
        )
        .await;
    assert_eq!(set.body["tenantLogoURL"], "https://x/l.png");
    let cleared = app
        .patch(
            &t,
            &a.auth,
            json!({"tenantLogoURL": null, "disableReason": null}),
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert!(cleared.body["tenantLogoURL"].is_null() && cleared.body["disableReason"].is_null());
    let role = app.role(&a, "described", &[]).await;
    let described = app
        .patch(
            &format!("{t}/roles/{role}"),
            &a.auth,
            json!({"roleDescription": "d"}),
        )
        .await;
    assert_eq!(described.body["roleDescription"], "d");
    let undescribed = app
        .patch(
            &format!("{t}/roles/{role}"),
            &a.auth,
            json!({"roleDescription": null}),
        )
        .await;
    assert_eq!(undescribed.status, 200, "{}", undescribed.body);
    assert!(undescribed.body["roleDescription"].is_null());
}

/// The Jet Admin editor (React Flow) sends `sourceHandle: null` and `targetHandle: null` on
/// edges that use a node's default handle: the spec declares both nullable, and null means
/// absent. The edge's other fields still refuse null.
#[tokio::test]
async fn an_edge_handle_may_be_null_as_the_editor_sends_it() {
    let app = TestApp::spawn().await;
    let a = app.admin("Editor").await;
    let path = format!("/api/v1/tenants/{}/workflows", a.tenant_id);
    let (start, end) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let workflow = |edge: Value| {
        json!({"title": "from the editor",
               "nodes": [{"id": start, "type": "start", "data": {}}, {"id": end, "type": "end", "data": {}}],
               "edges": [edge]})
    };
    let saved = app
        .post(
            &path,
            &a.auth,
            workflow(
                json!({"source": start, "target": end, "sourceHandle": null, "targetHandle": null}),
            ),
        )
        .await;
    assert_eq!(saved.status, 201, "{}", saved.body);
    let edge = &saved.body["edges"][0];
    assert!(
        edge.get("sourceHandle").is_none_or(Value::is_null)
            && edge.get("targetHandle").is_none_or(Value::is_null),
        "a null handle is stored as absent: {edge}"
    );
    let refused = app
        .post(
            &path,
            &a.auth,
            workflow(json!({"source": start, "target": null})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (400, "invalid_type"),
        "{}",
        refused.body
    );
}

/// An API key that disables its own tenant locks itself out, but the tenant's ADMIN members
/// can enable it again with `{"isDisabled": false}`, and only that.
#[tokio::test]
async fn a_disabled_tenant_can_be_enabled_again_by_its_admins() {
    let app = TestApp::spawn().await;
    let a = app.admin("Lockout").await;
    let admin_user = app.user("fb-lock-admin", "lock-admin@example.com").await;
    app.member(a.tenant_id, admin_user, "ADMIN").await;
    let member_user = app.user("fb-lock-member", "lock-member@example.com").await;
    app.member(a.tenant_id, member_user, "MEMBER").await;
    let admin = bearer(&jwt::hs256("fb-lock-admin"));
    let member = bearer(&jwt::hs256("fb-lock-member"));
    let t = format!("/api/v1/tenants/{}", a.tenant_id);

    let disabled = app.patch(&t, &a.auth, json!({"isDisabled": true})).await;
    assert_eq!(
        (disabled.status, disabled.body["isDisabled"].as_bool()),
        (200, Some(true))
    );
    let locked = app.get(&format!("{t}/roles"), &a.auth).await;
    assert_eq!((locked.status, locked.code()), (403, "tenant_disabled"));
    let key_retry = app.patch(&t, &a.auth, json!({"isDisabled": false})).await;
    assert_eq!(
        (key_retry.status, key_retry.code()),
        (403, "tenant_disabled")
    );
    let by_member = app.patch(&t, &member, json!({"isDisabled": false})).await;
    assert_eq!(
        (by_member.status, by_member.code()),
        (403, "tenant_disabled")
    );
    let more_than_enable = app
        .patch(&t, &admin, json!({"isDisabled": false, "tenantTitle": "x"}))
        .await;
    assert_eq!(
        (more_than_enable.status, more_than_enable.code()),
        (403, "tenant_disabled")
    );

    let enabled = app
        .patch(
            &t,
            &admin,
            json!({"isDisabled": false, "disableReason": null}),
        )
        .await;
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    assert_eq!(enabled.body["isDisabled"], false);
    let back = app.get(&format!("{t}/roles"), &a.auth).await;
    assert_eq!(back.status, 200, "the key works again: {}", back.body);
}

/// A status or type field takes only the values its enum lists: anything else is a 400
/// `invalid_type` naming the field and the values it takes, before any handler runs (so
/// nothing is written), in bodies as in nested objects; an unknown value of an enum query
/// parameter is a 400 `invalid_parameter`.
#[tokio::test]
async fn an_unknown_enum_value_is_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let a = app.admin("Enums").await;
    let t = format!("/api/v1/tenants/{}", a.tenant_id);
    let id = uuid::Uuid::new_v4();
    let table: Vec<(&str, String, Value, &str, &str)> = vec![
        (
            "POST",
            format!("{t}/cronjobs"),
            json!({"cronJobTitle": "c", "cronJobSchedule": "* * * * *", "workflowID": id, "overlapPolicy": "sometimes"}),
            "overlapPolicy",
            r#""allow", "skip", "buffer_one""#,
        ),
        (
            "PATCH",
            format!("{t}/cronjobs/{id}"),
            json!({"catchupPolicy": "CATCH_UP"}),
            "catchupPolicy",
            r#""skip", "catch_up""#,
        ),
        (
            "POST",
            format!("{t}/listeners"),
            json!({"datasourceID": id, "listenerTitle": "l", "listenerType": "kafka"}),
            "listenerType",
            r#""postgresql", "webhook""#,
        ),
        (
            "POST",
            format!("{t}/listeners/{id}/actions"),
            json!({"actionType": "send_email"}),
            "actionType",
            r#""transform", "trigger_workflow""#,
        ),
        (
            "POST",
            format!("{t}/datasources"),
            json!({"datasourceTitle": "d", "datasourceType": "oracle", "datasourceOptions": {}}),
            "datasourceType",
            r#""postgresql", "restapi", "webhook""#,
        ),
        (
            "POST",
            format!("{t}/datasources/test"),
            json!({"datasourceType": "Postgresql"}),
            "datasourceType",
            r#""postgresql""#,
        ),
        (
            "POST",
            format!("{t}/users"),
            json!({"email": "x@example.com", "role": "OWNER"}),
            "role",
            r#""ADMIN", "MEMBER""#,
        ),
        (
            "POST",
            format!("{t}/workflows"),
            json!({"title": "w", "nodes": [{"id": id, "type": "email", "data": {}}], "edges": []}),
            "nodes[0].type",
            r#""start", "end""#,
        ),
        (
            "POST",
            format!("{t}/dlq/discard"),
            json!({"filters": {"status": "LOST"}, "dryRun": true}),
            "filters.status",
            r#""PENDING", "RETRYING", "PARKED", "REPLAYED", "DISCARDED""#,
        ),
    ];
    for (method, path, body, field, values) in table {
        let resp = app
            .call(method, &path, Some(&a.auth), Some(body.clone()))
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_type"),
            "{method} {path} {body}: {}",
            resp.body
        );
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("field `{field}` must be one of "))
                && message.contains(values),
            "{method} {path}: {message}"
        );
    }
    for table in [
        "tblCronJobs",
        "tblListeners",
        "tblDatasources",
        "tblWorkflows",
    ] {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM "{table}""#
        )))
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
        assert_eq!(rows, 0, "{table}: nothing was written");
    }
    // The same values are the only ones accepted (wire names as stored, case and all).
    let created = app
        .post(
            &format!("{t}/datasources"),
            &a.auth,
            json!({"datasourceTitle": "d", "datasourceType": "webhook", "datasourceOptions": {}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["datasourceType"], "webhook");
    let history = format!("cronjobs/{id}/history?status=DONE");
    for query in [
        history.as_str(),
        "workflows/instances?status=DONE",
        "listeners?status=running",
        "listeners?listenerType=kafka",
        "dlq?status=pending",
        "dlq?source=email",
    ] {
        let resp = app.get(&format!("{t}/{query}"), &a.auth).await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_parameter"),
            "{query}: {}",
            resp.body
        );
    }
    let filtered = app
        .get(
            &format!("{t}/workflows/instances?status=COMPLETED"),
            &a.auth,
        )
        .await;
    assert_eq!(filtered.status, 200, "{}", filtered.body);
}

/// A title must not be empty: `""` is the same 400 `invalid_request` (the spec's `minLength:
/// 1`) on every create and update that takes one; a title of spaces only is a 422
/// `validation_failed` (well-formed, but blank once trimmed).
#[tokio::test]
async fn an_empty_title_is_the_same_400_everywhere() {
    let app = TestApp::spawn().await;
    let a = app.admin("Titles").await;
    let t = format!("/api/v1/tenants/{}", a.tenant_id);
    let id = uuid::Uuid::new_v4();
    let table: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            "/api/v1/tenants".into(),
            json!({"tenantTitle": ""}),
            "tenantTitle",
        ),
        (
            "PATCH",
            t.clone(),
            json!({"tenantTitle": ""}),
            "tenantTitle",
        ),
        (
            "POST",
            format!("{t}/roles"),
            json!({"roleTitle": ""}),
            "roleTitle",
        ),
        (
            "PATCH",
            format!("{t}/roles/{id}"),
            json!({"roleTitle": ""}),
            "roleTitle",
        ),
        (
            "POST",
            format!("{t}/apikeys"),
            json!({"apiKeyTitle": ""}),
            "apiKeyTitle",
        ),
        (
            "PATCH",
            format!("{t}/apikeys/{id}"),
            json!({"apiKeyTitle": ""}),
            "apiKeyTitle",
        ),
        (
            "POST",
            format!("{t}/workflows"),
            json!({"title": "", "nodes": [], "edges": []}),
            "title",
        ),
        (
            "POST",
            format!("{t}/app-pages"),
            json!({"appPageTitle": ""}),
            "appPageTitle",
        ),
        (
            "POST",
            format!("{t}/widgets"),
            json!({"widgetTitle": "", "widgetType": "chart", "widgetConfig": {}}),
            "widgetTitle",
        ),
        (
            "POST",
            format!("{t}/datasources"),
            json!({"datasourceTitle": "", "datasourceType": "webhook", "datasourceOptions": {}}),
            "datasourceTitle",
        ),
        (
            "PATCH",
            format!("{t}/datasources/{id}"),
            json!({"datasourceTitle": ""}),
            "datasourceTitle",
        ),
        (
            "POST",
            format!("{t}/queries"),
            json!({"datasourceID": id, "dataQueryTitle": ""}),
            "dataQueryTitle",
        ),
        (
            "POST",
            format!("{t}/cronjobs"),
            json!({"cronJobTitle": "", "cronJobSchedule": "* * * * *", "workflowID": id}),
            "cronJobTitle",
        ),
        (
            "PATCH",
            format!("{t}/cronjobs/{id}"),
            json!({"cronJobTitle": ""}),
            "cronJobTitle",
        ),
        (
            "POST",
            format!("{t}/listeners"),
            json!({"datasourceID": id, "listenerTitle": "", "listenerType": "webhook", "endpointPath": "p"}),
            "listenerTitle",
        ),
        (
            "PUT",
            format!("{t}/listeners/{id}"),
            json!({"datasourceID": id, "listenerTitle": "", "listenerType": "webhook", "endpointPath": "p"}),
            "listenerTitle",
        ),
    ];
    for (method, path, body, field) in table {
        let resp = app
            .call(method, &path, Some(&a.auth), Some(body.clone()))
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_request"),
            "{method} {path} {body}: {}",
            resp.body
        );
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{method} {path}: {message}");
    }
    let blank = app
        .post(&format!("{t}/roles"), &a.auth, json!({"roleTitle": "  "}))
        .await;
    assert_eq!(
        (blank.status, blank.code()),
        (422, "validation_failed"),
        "{}",
        blank.body
    );
}
