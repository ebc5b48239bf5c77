//! Roles: CRUD with permissions named by id, title or asset; the catalogue; validation.

use jet_tests::TestApp;
use serde_json::json;

#[tokio::test]
async fn roles_are_created_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let roles = format!("/api/v1/tenants/{}/roles", a.tenant_id);
    let catalogue = app.get(&format!("{roles}/permissions"), &a.auth).await;
    assert_eq!(catalogue.status, 200);
    let role_read_id = catalogue
        .body
        .as_array()
        .expect("catalogue")
        .iter()
        .find(|p| p["permissionTitle"] == "tenant:role:read")
        .map(|p| p["permissionID"].clone())
        .expect("tenant:role:read in catalogue");

    let created = app
        .post(&roles, &a.auth, json!({"roleTitle": "auditor", "roleDescription": "reads", "permissionIDs": [role_read_id], "permissions": ["tenant:audit:list"]}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let titles = |body: &serde_json::Value| -> Vec<String> {
        body["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .filter_map(|p| p["permissionTitle"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        titles(&created.body),
        ["tenant:audit:list", "tenant:role:read"]
    );
    assert_eq!(created.body["isGlobal"], false);
    let id = created.str("roleID");

    let updated = app
        .patch(&format!("{roles}/{id}"), &a.auth, json!({"roleTitle": "auditor 2", "roleDescription": null, "permissions": ["tenant:user:list"]}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["roleTitle"], "auditor 2");
    assert!(updated.body["roleDescription"].is_null());
    assert_eq!(titles(&updated.body), ["tenant:user:list"]);
    let untouched = app
        .patch(
            &format!("{roles}/{id}"),
            &a.auth,
            json!({"roleTitle": "auditor 3"}),
        )
        .await;
    assert_eq!(
        titles(&untouched.body),
        ["tenant:user:list"],
        "permissions stay when none are sent"
    );

    let (key_id, key) = app.key_with_roles(&a, "uses role", &[&id]).await;
    let deleted = app.delete(&format!("{roles}/{id}"), &a.auth).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&format!("{roles}/{id}"), &a.auth).await.status, 404);
    let key_now = app
        .get(
            &format!("/api/v1/tenants/{}/apikeys/{key_id}", a.tenant_id),
            &a.auth,
        )
        .await;
    assert_eq!(
        key_now.body["roleIDs"],
        json!([]),
        "assignments go with the role"
    );
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{}/users", a.tenant_id), &key)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn unknown_permissions_are_422_and_write_nothing() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let roles = format!("/api/v1/tenants/{}/roles", a.tenant_id);
    let cases = [
        json!({"roleTitle": "x", "permissions": ["tenant:role:fly"]}),
        json!({"roleTitle": "x", "permissionIDs": [uuid::Uuid::new_v4()]}),
        json!({"roleTitle": "x", "assetPermissions": [{"resourceType": "rocket", "resourceID": uuid::Uuid::new_v4(), "action": "read"}]}),
        json!({"roleTitle": "   "}),
    ];
    for body in cases {
        let resp = app.post(&roles, &a.auth, body.clone()).await;
        assert_eq!(
            (resp.status, resp.code()),
            (422, "validation_failed"),
            "{body}: {}",
            resp.body
        );
    }
    let count: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblRoles" WHERE "tenantID" = $1"#)
        .bind(a.tenant_id)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
    let missing_title = app.post(&roles, &a.auth, json!({"permissions": []})).await;
    assert_eq!(missing_title.status, 400);
}
