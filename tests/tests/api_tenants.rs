//! Tenants: create (users only), list with pagination, read with counts, update, delete.

use jet_tests::app::bearer;
use jet_tests::{TestApp, jwt};
use serde_json::json;

#[tokio::test]
async fn a_user_creates_a_tenant_and_becomes_its_admin() {
    let app = TestApp::spawn().await;
    let user = app.user("fb-erin", "erin@example.com").await;
    let auth = bearer(&jwt::hs256("fb-erin"));
    let resp = app
        .post(
            "/api/v1/tenants",
            &auth,
            json!({"tenantTitle": "  Acme  ", "tenantLogoURL": "https://x/logo.png"}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["tenantTitle"], "Acme");
    assert_eq!(resp.body["role"], "ADMIN");
    assert_eq!(resp.body["creatorID"], user.to_string());
    let tenant = resp.str("tenantID");

    let detail = app.get(&format!("/api/v1/tenants/{tenant}"), &auth).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_eq!(detail.body["counts"]["members"], 1);
    assert_eq!(detail.body["counts"]["apiKeys"], 0);
    assert_eq!(detail.body["role"], "ADMIN");
    let config = app
        .get(&format!("/api/v1/auth/config/{tenant}"), &auth)
        .await;
    assert_eq!(config.body["config"], json!({}));
}

#[tokio::test]
async fn api_keys_cannot_create_tenants() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let resp = app
        .post("/api/v1/tenants", &a.auth, json!({"tenantTitle": "Other"}))
        .await;
    assert_eq!((resp.status, resp.code()), (403, "user_required"));
}

#[tokio::test]
async fn tenant_lists_are_paginated() {
    let app = TestApp::spawn().await;
    app.user("fb-frank", "frank@example.com").await;
    let auth = bearer(&jwt::hs256("fb-frank"));
    for i in 0..5 {
        let resp = app
            .post(
                "/api/v1/tenants",
                &auth,
                json!({"tenantTitle": format!("T{i}")}),
            )
            .await;
        assert_eq!(resp.status, 201);
    }
    let page = app.get("/api/v1/tenants?page=2&pageSize=2", &auth).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["totalCount"], 5);
    assert_eq!(page.body["totalPages"], 3);
    assert_eq!(page.body["page"], 2);
    let titles: Vec<&str> = page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["tenantTitle"].as_str())
        .collect();
    assert_eq!(titles, ["T2", "T3"]);
    for bad in ["page=0", "pageSize=0", "pageSize=201", "page=abc"] {
        let resp = app.get(&format!("/api/v1/tenants?{bad}"), &auth).await;
        assert_eq!(resp.status, 400, "{bad}: {}", resp.body);
    }
}

#[tokio::test]
async fn update_changes_only_given_fields_and_null_clears() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let path = format!("/api/v1/tenants/{}", a.tenant_id);
    let resp = app
        .patch(&path, &a.auth, json!({"tenantLogoURL": "https://x/l.png"}))
        .await;
    assert_eq!(resp.body["tenantLogoURL"], "https://x/l.png");
    assert_eq!(resp.body["tenantTitle"], "A");
    let resp = app
        .patch(
            &path,
            &a.auth,
            json!({"tenantTitle": "Renamed", "tenantLogoURL": null}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["tenantTitle"], "Renamed");
    assert!(resp.body["tenantLogoURL"].is_null());
    let blank = app
        .patch(&path, &a.auth, json!({"tenantTitle": "   "}))
        .await;
    assert_eq!((blank.status, blank.code()), (422, "validation_failed"));
}

#[tokio::test]
async fn deleting_a_tenant_removes_what_it_owns_and_keeps_its_audit_trail() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let user = app.user("fb-gail", "gail@example.com").await;
    app.member(a.tenant_id, user, "ADMIN").await;
    let role = app.role(&a, "r", &["tenant:role:list"]).await;
    app.key_with_roles(&a, "k", &[&role]).await;

    let del = app
        .delete(&format!("/api/v1/tenants/{}", a.tenant_id), &a.auth)
        .await;
    assert_eq!(del.status, 204, "{}", del.body);
    let remaining: (i64, i64, i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM "tblTenants" WHERE "tenantID" = $1),
                  (SELECT count(*) FROM "tblRoles" WHERE "tenantID" = $1),
                  (SELECT count(*) FROM "tblAPIKeys" WHERE "tenantID" = $1),
                  (SELECT count(*) FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1)"#,
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("counts");
    assert_eq!(remaining, (0, 0, 0, 0));
    let audit: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblAuditLogs" WHERE "tenantID" = $1 AND "type" = 'deleteTenant'"#,
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("audit");
    assert_eq!(audit, 1);
    // The user and the other tenant are untouched; the deleted tenant's key no longer works.
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{}", b.tenant_id), &b.auth)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/api/v1/auth", &bearer(&jwt::hs256("fb-gail")))
            .await
            .status,
        200
    );
    assert_eq!(app.get("/api/v1/tenants", &a.auth).await.status, 401);
}
