//! One audit row per mutating request: operation, principal, tenant, outcome; secrets redacted.

use jet_tests::app::bearer;
use jet_tests::{TestApp, jwt};
use serde_json::json;

#[tokio::test]
async fn mutations_are_audited_and_reads_are_not() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let roles = format!("/api/v1/tenants/{}/roles", a.tenant_id);
    app.get(&roles, &a.auth).await;
    let ok = app
        .post(&roles, &a.auth, json!({"roleTitle": "audited"}))
        .await;
    assert_eq!(ok.status, 201);
    let bad = app
        .post(
            &roles,
            &a.auth,
            json!({"roleTitle": "x", "permissions": ["tenant:nope:nope"]}),
        )
        .await;
    assert_eq!(bad.status, 422);

    let listed = app
        .get(&format!("/api/v1/tenants/{}/audit", a.tenant_id), &a.auth)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.body["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2, "two mutations, no reads: {items:?}");
    let (failed, created) = (&items[0], &items[1]);
    assert_eq!(created["type"], "createRole");
    assert_eq!(created["success"], true);
    assert_eq!(created["apiKeyID"], a.raw.api_key_id.to_string());
    assert_eq!(created["tenantID"], a.tenant_id.to_string());
    assert_eq!(created["subType"], format!("POST {roles}"));
    assert_eq!(created["metadata"]["status"], 201);
    assert_eq!(created["metadata"]["request"]["roleTitle"], "audited");
    assert_eq!(failed["success"], false);
    assert_eq!(failed["error"]["code"], "validation_failed");
}

#[tokio::test]
async fn secrets_in_request_bodies_are_filtered() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let user = app.user("fb-lena", "lena@example.com").await;
    app.member(a.tenant_id, user, "MEMBER").await;
    let auth = bearer(&jwt::hs256("fb-lena"));
    let put = app
        .put(
            &format!("/api/v1/auth/config/{}", a.tenant_id),
            &auth,
            json!({"config": {"theme": "dark", "dbPassword": "hunter2", "nested": {"accessToken": "t0k"}}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        put.body["config"]["dbPassword"], "hunter2",
        "the config itself is stored as sent"
    );
    let (metadata, user_id): (serde_json::Value, Option<uuid::Uuid>) = sqlx::query_as(
        r#"SELECT "metadata", "userID" FROM "tblAuditLogs" WHERE "type" = 'putUserTenantConfig'"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("audit row");
    assert_eq!(user_id, Some(user.0));
    let request = &metadata["request"]["config"];
    assert_eq!(request["theme"], "dark");
    assert_eq!(request["dbPassword"], "[FILTERED]");
    assert_eq!(request["nested"]["accessToken"], "[FILTERED]");
    assert!(!metadata.to_string().contains("hunter2"));
}

#[tokio::test]
async fn unauthenticated_requests_write_no_audit_rows() {
    let app = TestApp::spawn().await;
    let resp = app
        .call(
            "POST",
            "/api/v1/tenants",
            None,
            Some(json!({"tenantTitle": "x"})),
        )
        .await;
    assert_eq!(resp.status, 401);
    let count: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblAuditLogs""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn requests_into_a_foreign_tenant_are_audited_only_where_the_caller_belongs() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let user = app.user("fb-mara", "mara@example.com").await;
    app.member(a.tenant_id, user, "ADMIN").await;
    let b_roles = format!("/api/v1/tenants/{}/roles", b.tenant_id);
    let probe = json!({"roleTitle": "probe", "note": "written by a stranger"});

    let by_key = app.post(&b_roles, &a.auth, probe.clone()).await;
    assert_eq!(by_key.status, 404, "{}", by_key.body);
    let by_user = app
        .post(&b_roles, &bearer(&jwt::hs256("fb-mara")), probe)
        .await;
    assert_eq!(by_user.status, 404, "{}", by_user.body);

    let b_log = app
        .get(&format!("/api/v1/tenants/{}/audit", b.tenant_id), &b.auth)
        .await;
    assert_eq!(b_log.status, 200, "{}", b_log.body);
    assert_eq!(b_log.body["totalCount"], 0, "{}", b_log.body);
    let rows: Vec<(Option<uuid::Uuid>, Option<uuid::Uuid>, Option<uuid::Uuid>)> = sqlx::query_as(
        r#"SELECT "tenantID", "apiKeyID", "userID" FROM "tblAuditLogs" WHERE "type" = 'createRole'"#,
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("audit rows");
    assert!(
        rows.contains(&(Some(a.tenant_id.0), Some(a.raw.api_key_id.0), None)),
        "the key's probe is in its own tenant's log: {rows:?}"
    );
    assert!(
        rows.contains(&(None, None, Some(user.0))),
        "the user's probe is kept, in no tenant: {rows:?}"
    );
    assert_eq!(rows.len(), 2);
}
