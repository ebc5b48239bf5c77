//! Authorization: permissions per route, ADMIN membership, global and tenant roles, asset
//! permissions, tenant isolation (404, never a leak) and no privilege escalation.

use jet_tests::app::bearer;
use jet_tests::{TestApp, jwt};
use serde_json::json;

#[tokio::test]
async fn a_key_lacking_one_permission_gets_403_for_that_route_only() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let reader = app
        .role(&a, "role reader", &["tenant:role:list", "tenant:role:read"])
        .await;
    let (_, key) = app.key_with_roles(&a, "restricted", &[&reader]).await;
    let roles = format!("/api/v1/tenants/{}/roles", a.tenant_id);

    let list = app.get(&roles, &key).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let create = app.post(&roles, &key, json!({"roleTitle": "x"})).await;
    assert_eq!((create.status, create.code()), (403, "permission_denied"));
    assert!(
        create.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("tenant:role:create")
    );
    let keys = app
        .get(&format!("/api/v1/tenants/{}/apikeys", a.tenant_id), &key)
        .await;
    assert_eq!((keys.status, keys.code()), (403, "permission_denied"));
    let tenant = app
        .get(&format!("/api/v1/tenants/{}", a.tenant_id), &key)
        .await;
    assert_eq!((tenant.status, tenant.code()), (403, "permission_denied"));
}

#[tokio::test]
async fn another_tenants_resources_are_404_never_403() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let b_role = app.role(&b, "b-only", &["tenant:role:list"]).await;

    // A's admin key on B's tenant: the tenant does not exist for it.
    for path in [
        format!("/api/v1/tenants/{}", b.tenant_id),
        format!("/api/v1/tenants/{}/roles", b.tenant_id),
        format!("/api/v1/tenants/{}/apikeys", b.tenant_id),
        format!("/api/v1/tenants/{}/users", b.tenant_id),
    ] {
        let resp = app.get(&path, &a.auth).await;
        assert_eq!(
            (resp.status, resp.code()),
            (404, "not_found"),
            "{path}: {}",
            resp.body
        );
    }
    // B's role id under A's tenant path: not found either.
    let resp = app
        .get(
            &format!("/api/v1/tenants/{}/roles/{b_role}", a.tenant_id),
            &a.auth,
        )
        .await;
    assert_eq!(resp.status, 404);
    let del = app
        .delete(
            &format!("/api/v1/tenants/{}/roles/{b_role}", a.tenant_id),
            &a.auth,
        )
        .await;
    assert_eq!(del.status, 404);
    // And B's role cannot be given to A's keys.
    let resp = app
        .post(
            &format!("/api/v1/tenants/{}/apikeys", a.tenant_id),
            &a.auth,
            json!({"apiKeyTitle": "x", "roleIDs": [b_role]}),
        )
        .await;
    assert_eq!((resp.status, resp.code()), (422, "validation_failed"));
    // B's role survived all of that.
    let still = app
        .get(
            &format!("/api/v1/tenants/{}/roles/{b_role}", b.tenant_id),
            &b.auth,
        )
        .await;
    assert_eq!(still.status, 200);
}

#[tokio::test]
async fn admin_membership_grants_everything_and_member_without_roles_nothing() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let admin = app.user("fb-admin", "admin@example.com").await;
    let member = app.user("fb-member", "member@example.com").await;
    app.member(a.tenant_id, admin, "ADMIN").await;
    app.member(a.tenant_id, member, "MEMBER").await;
    let admin_auth = bearer(&jwt::hs256("fb-admin"));
    let member_auth = bearer(&jwt::hs256("fb-member"));
    let roles = format!("/api/v1/tenants/{}/roles", a.tenant_id);

    let created = app
        .post(
            &roles,
            &admin_auth,
            json!({"roleTitle": "ops", "permissions": ["tenant:user:list"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let denied = app.get(&roles, &member_auth).await;
    assert_eq!((denied.status, denied.code()), (403, "permission_denied"));
    // A non-member user: the tenant does not exist for them.
    app.user("fb-stranger", "s@example.com").await;
    let stranger = app.get(&roles, &bearer(&jwt::hs256("fb-stranger"))).await;
    assert_eq!(stranger.status, 404);
}

#[tokio::test]
async fn a_members_roles_grant_their_permissions() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let lister = app.role(&a, "lister", &["tenant:user:list"]).await;
    let user = app.user("fb-dave", "dave@example.com").await;
    app.member(a.tenant_id, user, "MEMBER").await;
    let auth = bearer(&jwt::hs256("fb-dave"));
    let users = format!("/api/v1/tenants/{}/users", a.tenant_id);
    assert_eq!(app.get(&users, &auth).await.status, 403);
    let set = app
        .patch(
            &format!("{users}/{}/roles", user),
            &a.auth,
            json!({"roleIDs": [lister]}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["roleIDs"], json!([lister]));
    assert_eq!(app.get(&users, &auth).await.status, 200);
}

#[tokio::test]
async fn a_global_role_applies_in_every_tenant() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let b = app.admin("B").await;
    let global: uuid::Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblRoles" ("roleTitle", "tenantID") VALUES ('global lister', NULL) RETURNING "roleID""#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("global role");
    sqlx::query(
        r#"INSERT INTO "tblRolePermissionMappings" ("roleID", "permissionID")
           SELECT $1, "permissionID" FROM "tblPermissions" WHERE "permissionTitle" = 'tenant:role:list'"#,
    )
    .bind(global)
    .execute(&app.db.pool)
    .await
    .expect("map permission");
    for admin in [&a, &b] {
        let (_, key) = app
            .key_with_roles(admin, "global", &[&global.to_string()])
            .await;
        let resp = app
            .get(&format!("/api/v1/tenants/{}/roles", admin.tenant_id), &key)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        let listed: Vec<&str> = resp.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|r| r["roleTitle"].as_str())
            .collect();
        assert!(listed.contains(&"global lister"));
    }
    // Global roles are read-only through a tenant's API.
    let resp = app
        .patch(
            &format!("/api/v1/tenants/{}/roles/{global}", a.tenant_id),
            &a.auth,
            json!({"roleTitle": "mine"}),
        )
        .await;
    assert_eq!((resp.status, resp.code()), (403, "global_role_read_only"));
}

#[tokio::test]
async fn an_asset_permission_allows_only_that_asset() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let target = app.role(&a, "target", &[]).await;
    let other = app.role(&a, "other", &[]).await;
    let roles = format!("/api/v1/tenants/{}/roles", a.tenant_id);
    let scoped = app
        .post(
            &roles,
            &a.auth,
            json!({"roleTitle": "one role reader",
                   "assetPermissions": [{"resourceType": "role", "resourceID": target, "action": "read"}]}),
        )
        .await;
    assert_eq!(scoped.status, 201, "{}", scoped.body);
    let title = scoped.body["permissions"][0]["permissionTitle"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(title, format!("tenant:asset:role:{target}:read"));
    let (_, key) = app
        .key_with_roles(&a, "scoped", &[&scoped.str("roleID")])
        .await;
    assert_eq!(
        app.get(&format!("{roles}/{target}"), &key).await.status,
        200
    );
    assert_eq!(app.get(&format!("{roles}/{other}"), &key).await.status, 403);
    assert_eq!(app.get(&roles, &key).await.status, 403);
}

#[tokio::test]
async fn nobody_can_grant_permissions_they_do_not_hold() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let keymaker = app
        .role(
            &a,
            "keymaker",
            &[
                "tenant:apikey:create",
                "tenant:role:create",
                "tenant:role:list",
            ],
        )
        .await;
    let (_, key) = app.key_with_roles(&a, "keymaker", &[&keymaker]).await;
    let admin_role = jet_shared::bootstrap::GLOBAL_ADMIN_ROLE.to_string();

    let mint = app
        .post(
            &format!("/api/v1/tenants/{}/apikeys", a.tenant_id),
            &key,
            json!({"apiKeyTitle": "escalate", "roleIDs": [admin_role]}),
        )
        .await;
    assert_eq!(
        (mint.status, mint.code()),
        (403, "permission_escalation"),
        "{}",
        mint.body
    );
    let role = app
        .post(
            &format!("/api/v1/tenants/{}/roles", a.tenant_id),
            &key,
            json!({"roleTitle": "wider", "permissions": ["tenant:role:list", "tenant:delete"]}),
        )
        .await;
    assert_eq!((role.status, role.code()), (403, "permission_escalation"));
    // Within its own permissions it may act.
    let ok = app
        .post(
            &format!("/api/v1/tenants/{}/roles", a.tenant_id),
            &key,
            json!({"roleTitle": "narrower", "permissions": ["tenant:role:list"]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let count: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblAPIKeys" WHERE "apiKeyTitle" = 'escalate'"#)
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(count, 0, "the refused key was not written");
}

#[tokio::test]
async fn only_an_admin_member_can_make_another_admin() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let manager = app
        .role(&a, "manager", &["tenant:user:create", "tenant:user:update"])
        .await;
    let user = app.user("fb-mgr", "mgr@example.com").await;
    app.member(a.tenant_id, user, "MEMBER").await;
    let set = app
        .patch(
            &format!("/api/v1/tenants/{}/users/{user}/roles", a.tenant_id),
            &a.auth,
            json!({"roleIDs": [manager]}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let auth = bearer(&jwt::hs256("fb-mgr"));
    let resp = app
        .post(
            &format!("/api/v1/tenants/{}/users", a.tenant_id),
            &auth,
            json!({"email": "new@example.com", "firebaseID": "fb-new", "role": "ADMIN"}),
        )
        .await;
    assert_eq!((resp.status, resp.code()), (403, "permission_escalation"));
    let resp = app
        .post(
            &format!("/api/v1/tenants/{}/users", a.tenant_id),
            &auth,
            json!({"email": "new@example.com", "firebaseID": "fb-new"}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["role"], "MEMBER");
}
