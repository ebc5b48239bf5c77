//! Authentication: API keys (`api_key <64 hex>`) and user JWTs (HS256 and RS256).

use jet_tests::app::{api_key, bearer};
use jet_tests::{TestApp, jwt};

#[tokio::test]
async fn a_request_without_credentials_is_401_missing_credentials() {
    let app = TestApp::spawn().await;
    let resp = app.call("GET", "/api/v1/tenants", None, None).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.code(), "missing_credentials");
}

#[tokio::test]
async fn malformed_and_unknown_api_keys_are_401_invalid_api_key() {
    let app = TestApp::spawn().await;
    app.admin("A").await;
    for value in [
        api_key("short"),
        api_key(&"z".repeat(64)),
        api_key(&"ab".repeat(32)),
    ] {
        let resp = app.get("/api/v1/tenants", &value).await;
        assert_eq!(resp.status, 401, "{value}");
        assert_eq!(resp.code(), "invalid_api_key", "{value}");
    }
    let resp = app.get("/api/v1/tenants", "Basic dXNlcjpwYXNz").await;
    assert_eq!((resp.status, resp.code()), (401, "unsupported_auth_scheme"));
}

#[tokio::test]
async fn a_valid_api_key_sees_exactly_its_own_tenant() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    app.admin("B").await;
    let resp = app.get("/api/v1/tenants", &a.auth).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["totalCount"], 1);
    assert_eq!(resp.body["items"][0]["tenantID"], a.tenant_id.to_string());
    let me = app.get("/api/v1/auth", &a.auth).await;
    assert_eq!(me.body["authType"], "API_KEY");
    assert_eq!(me.body["tenantID"], a.tenant_id.to_string());
}

#[tokio::test]
async fn a_disabled_api_key_is_401_api_key_disabled() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let (key_id, key) = app.key_with_roles(&a, "ci", &[]).await;
    let path = format!("/api/v1/tenants/{}/apikeys/{key_id}", a.tenant_id);
    let resp = app
        .patch(&path, &a.auth, serde_json::json!({"isDisabled": true}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = app.get("/api/v1/tenants", &key).await;
    assert_eq!((resp.status, resp.code()), (401, "api_key_disabled"));
}

#[tokio::test]
async fn hs256_and_rs256_tokens_of_known_users_authenticate() {
    let app = TestApp::spawn().await;
    app.user("firebase-alice", "alice@example.com").await;
    let started = jwt::hs256_not_before("firebase-alice", chrono::Utc::now().timestamp() - 60);
    for token in [
        jwt::hs256("firebase-alice"),
        jwt::rs256("firebase-alice"),
        started,
    ] {
        let resp = app.get("/api/v1/auth", &bearer(&token)).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.body["authType"], "USER");
        assert_eq!(resp.body["email"], "alice@example.com");
    }
}

#[tokio::test]
async fn bad_tokens_get_distinct_401_codes() {
    let app = TestApp::spawn().await;
    let user = app.user("firebase-bob", "bob@example.com").await;
    let cases = [
        (jwt::hs256("nobody"), "unknown_user"),
        (jwt::expired("firebase-bob"), "token_expired"),
        (
            jwt::hs256_with(
                "firebase-bob",
                chrono::Utc::now().timestamp() + 600,
                "wrong-secret",
            ),
            "invalid_token",
        ),
        ("not.a.jwt".to_owned(), "invalid_token"),
        (
            jwt::hs256_not_before("firebase-bob", chrono::Utc::now().timestamp() + 3600),
            "token_not_yet_valid",
        ),
    ];
    for (token, code) in cases {
        let resp = app.get("/api/v1/auth", &bearer(&token)).await;
        assert_eq!((resp.status, resp.code()), (401, code), "{}", resp.body);
    }
    sqlx::query(r#"UPDATE "tblUsers" SET "isDisabled" = true WHERE "userID" = $1"#)
        .bind(user)
        .execute(&app.db.pool)
        .await
        .expect("disable user");
    let resp = app
        .get("/api/v1/auth", &bearer(&jwt::hs256("firebase-bob")))
        .await;
    assert_eq!((resp.status, resp.code()), (401, "user_disabled"));
}

#[tokio::test]
async fn a_disabled_tenant_is_403_tenant_disabled_for_keys_and_members() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let user = app.user("firebase-carol", "carol@example.com").await;
    app.member(a.tenant_id, user, "ADMIN").await;
    let path = format!("/api/v1/tenants/{}", a.tenant_id);
    let resp = app
        .patch(
            &path,
            &a.auth,
            serde_json::json!({"isDisabled": true, "disableReason": "unpaid"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["disableReason"], "unpaid");
    assert!(resp.body["disabledAt"].is_string());
    for auth in [a.auth.clone(), bearer(&jwt::hs256("firebase-carol"))] {
        let resp = app.get(&format!("{path}/roles"), &auth).await;
        assert_eq!(
            (resp.status, resp.code()),
            (403, "tenant_disabled"),
            "{}",
            resp.body
        );
    }
    // Upstream lists only enabled tenants.
    let resp = app
        .get("/api/v1/tenants", &bearer(&jwt::hs256("firebase-carol")))
        .await;
    assert_eq!(resp.body["totalCount"], 0);
}
