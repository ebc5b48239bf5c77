//! Tenant members: add (link or create the user), read, set roles, remove; the last ADMIN stays.

use jet_tests::app::bearer;
use jet_tests::{TestApp, jwt};
use serde_json::json;

#[tokio::test]
async fn adding_a_member_creates_or_links_the_user() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let users = format!("/api/v1/tenants/{}/users", a.tenant_id);
    let created = app
        .post(
            &users,
            &a.auth,
            json!({"email": "hana@example.com", "firebaseID": "fb-hana", "firstName": "Hana"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["role"], "MEMBER");
    assert_eq!(created.body["firstName"], "Hana");

    let existing = app.user("fb-ivan", "Ivan@Example.com").await;
    let linked = app
        .post(&users, &a.auth, json!({"email": "ivan@example.com"}))
        .await;
    assert_eq!(linked.status, 201, "{}", linked.body);
    assert_eq!(linked.body["userID"], existing.to_string());

    let unknown = app
        .post(&users, &a.auth, json!({"email": "nobody@example.com"}))
        .await;
    assert_eq!((unknown.status, unknown.code()), (422, "validation_failed"));
    let again = app
        .post(
            &users,
            &a.auth,
            json!({"email": "hana@example.com", "firebaseID": "fb-hana"}),
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "already_member"));
    let bad_role = app
        .post(
            &users,
            &a.auth,
            json!({"email": "x@example.com", "firebaseID": "fb-x", "role": "OWNER"}),
        )
        .await;
    assert_eq!((bad_role.status, bad_role.code()), (400, "invalid_type"));

    let list = app.get(&users, &a.auth).await;
    assert_eq!(list.body["totalCount"], 2);
    let one = app.get(&format!("{users}/{existing}"), &a.auth).await;
    assert_eq!(one.body["email"], "Ivan@Example.com");
}

#[tokio::test]
async fn removing_a_member_keeps_the_user_and_the_last_admin_stays() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let users = format!("/api/v1/tenants/{}/users", a.tenant_id);
    let admin = app.user("fb-jo", "jo@example.com").await;
    app.member(a.tenant_id, admin, "ADMIN").await;
    let role = app.role(&a, "r", &["tenant:user:list"]).await;
    let kim = app
        .post(
            &users,
            &a.auth,
            json!({"email": "kim@example.com", "firebaseID": "fb-kim", "roleIDs": [role]}),
        )
        .await;
    assert_eq!(kim.body["roleIDs"], json!([role]));
    let kim_id = kim.str("userID");

    // Only an ADMIN changes an ADMIN's membership; even then the last one stays.
    let as_admin = bearer(&jwt::hs256("fb-jo"));
    let last = app.delete(&format!("{users}/{admin}"), &as_admin).await;
    assert_eq!((last.status, last.code()), (409, "last_admin"));
    let demote = app
        .patch(
            &format!("{users}/{admin}/roles"),
            &as_admin,
            json!({"roleIDs": [], "role": "MEMBER"}),
        )
        .await;
    assert_eq!((demote.status, demote.code()), (409, "last_admin"));

    let removed = app.delete(&format!("{users}/{kim_id}"), &a.auth).await;
    assert_eq!(removed.status, 204);
    assert_eq!(
        app.get(&format!("{users}/{kim_id}"), &a.auth).await.status,
        404
    );
    let (users_left, mappings): (i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM "tblUsers" WHERE "firebaseID" = 'fb-kim'),
                  (SELECT count(*) FROM "tblUserTenantRoleMappings" WHERE "userID"::text = $1)"#,
    )
    .bind(&kim_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("counts");
    assert_eq!((users_left, mappings), (1, 0));
}

#[tokio::test]
async fn concurrent_demotions_cannot_remove_every_admin() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let users = format!("/api/v1/tenants/{}/users", a.tenant_id);
    let one = app.user("fb-one", "one@example.com").await;
    let two = app.user("fb-two", "two@example.com").await;
    app.member(a.tenant_id, one, "ADMIN").await;
    app.member(a.tenant_id, two, "ADMIN").await;
    let body = json!({"roleIDs": [], "role": "MEMBER"});
    let path_one = format!("{users}/{one}/roles");
    let path_two = format!("{users}/{two}/roles");
    // Each ADMIN demotes the other at the same time: one wins; the other finds itself the
    // last ADMIN (409) or, if it authorizes after the first commit, no longer ADMIN (403).
    let (as_one, as_two) = (bearer(&jwt::hs256("fb-one")), bearer(&jwt::hs256("fb-two")));
    let (r1, r2) = tokio::join!(
        app.patch(&path_two, &as_one, body.clone()),
        app.patch(&path_one, &as_two, body.clone())
    );
    let mut statuses = [r1.status, r2.status];
    statuses.sort();
    assert!(
        statuses == [200, 409] || statuses == [200, 403],
        "{} / {}",
        r1.body,
        r2.body
    );
    let admins: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1 AND "role" = 'ADMIN'"#,
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn only_an_admin_changes_an_admins_membership() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let users = format!("/api/v1/tenants/{}/users", a.tenant_id);
    let (boss, deputy, manager, clerk) = (
        app.user("fb-boss", "boss@example.com").await,
        app.user("fb-deputy", "deputy@example.com").await,
        app.user("fb-manager", "manager@example.com").await,
        app.user("fb-clerk", "clerk@example.com").await,
    );
    app.member(a.tenant_id, boss, "ADMIN").await;
    app.member(a.tenant_id, deputy, "ADMIN").await;
    app.member(a.tenant_id, manager, "MEMBER").await;
    app.member(a.tenant_id, clerk, "MEMBER").await;
    let managing = app
        .role(
            &a,
            "member manager",
            &[
                "tenant:user:read",
                "tenant:user:update",
                "tenant:user:delete",
            ],
        )
        .await;
    let set = app
        .patch(
            &format!("{users}/{manager}/roles"),
            &a.auth,
            json!({"roleIDs": [managing]}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let as_manager = bearer(&jwt::hs256("fb-manager"));

    // A member with user:update/user:delete cannot demote, re-role or remove an ADMIN…
    let demote = app
        .patch(
            &format!("{users}/{boss}/roles"),
            &as_manager,
            json!({"roleIDs": [], "role": "MEMBER"}),
        )
        .await;
    assert_eq!(
        (demote.status, demote.code()),
        (403, "admin_required"),
        "{}",
        demote.body
    );
    let re_role = app
        .patch(
            &format!("{users}/{boss}/roles"),
            &as_manager,
            json!({"roleIDs": []}),
        )
        .await;
    assert_eq!((re_role.status, re_role.code()), (403, "admin_required"));
    let remove = app.delete(&format!("{users}/{deputy}"), &as_manager).await;
    assert_eq!((remove.status, remove.code()), (403, "admin_required"));
    let roles: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblUsersTenantsRelationship" WHERE "tenantID" = $1 AND "role" = 'ADMIN'"#,
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(roles, 2, "both ADMINs are still there");

    // …but still manages members, and an ADMIN manages ADMINs.
    let other_member = app.delete(&format!("{users}/{clerk}"), &as_manager).await;
    assert_eq!(other_member.status, 204, "{}", other_member.body);
    let as_boss = bearer(&jwt::hs256("fb-boss"));
    let demoted = app
        .patch(
            &format!("{users}/{deputy}/roles"),
            &as_boss,
            json!({"roleIDs": [], "role": "MEMBER"}),
        )
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.body);
    assert_eq!(demoted.body["role"], "MEMBER");
}
