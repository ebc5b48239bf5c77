//! API keys: shown once, stored as prefix + SHA-256, updated, cloned disabled, deleted.

use jet_tests::TestApp;
use jet_tests::app::api_key;
use serde_json::json;

#[tokio::test]
async fn the_raw_key_is_shown_once_and_stored_only_as_prefix_and_hash() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let keys = format!("/api/v1/tenants/{}/apikeys", a.tenant_id);
    let created = app.post(&keys, &a.auth, json!({"apiKeyTitle": "ci"})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let raw = created.str("apiKey");
    assert_eq!(raw.len(), 64);
    assert!(
        raw.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(created.body["apiKeyPrefix"], &raw[..8]);

    let id = created.str("apiKeyID");
    let fetched = app.get(&format!("{keys}/{id}"), &a.auth).await;
    assert!(
        fetched.body.get("apiKey").is_none(),
        "never shown again: {}",
        fetched.body
    );
    let listed = app.get(&keys, &a.auth).await;
    assert!(!listed.body.to_string().contains(&raw));

    let (hash, prefix): (String, String) = sqlx::query_as(
        r#"SELECT "apiKeyHash", "apiKeyPrefix" FROM "tblAPIKeys" WHERE "apiKeyID"::text = $1"#,
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    use sha2::Digest;
    assert_eq!(hash, hex::encode(sha2::Sha256::digest(raw.as_bytes())));
    assert_eq!(prefix, &raw[..8]);
    // The key works, and only as a key of its tenant.
    let me = app.get("/api/v1/auth", &api_key(&raw)).await;
    assert_eq!(me.body["apiKeyID"], id);
}

#[tokio::test]
async fn update_clone_and_delete() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let keys = format!("/api/v1/tenants/{}/apikeys", a.tenant_id);
    let role = app.role(&a, "lister", &["tenant:role:list"]).await;
    let (id, auth) = app.key_with_roles(&a, "svc", &[&role]).await;

    let renamed = app
        .patch(
            &format!("{keys}/{id}"),
            &a.auth,
            json!({"apiKeyTitle": "svc-2", "roleIDs": []}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["apiKeyTitle"], "svc-2");
    assert_eq!(renamed.body["roleIDs"], json!([]));
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{}/roles", a.tenant_id), &auth)
            .await
            .status,
        403
    );
    let restored = app
        .patch(&format!("{keys}/{id}"), &a.auth, json!({"roleIDs": [role]}))
        .await;
    assert_eq!(restored.body["roleIDs"], json!([role]));

    let clone = app
        .post(&format!("{keys}/{id}/clone"), &a.auth, json!({}))
        .await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    assert_eq!(clone.body["isDisabled"], true);
    assert_eq!(clone.body["roleIDs"], json!([role]));
    assert_eq!(clone.body["apiKeyTitle"], "svc-2 (copy)");
    let clone_auth = api_key(&clone.str("apiKey"));
    assert_eq!(
        app.get("/api/v1/auth", &clone_auth).await.code(),
        "api_key_disabled"
    );
    let enable = app
        .patch(
            &format!("{keys}/{}", clone.str("apiKeyID")),
            &a.auth,
            json!({"isDisabled": false}),
        )
        .await;
    assert_eq!(enable.status, 200);
    assert_eq!(
        app.get(
            &format!("/api/v1/tenants/{}/roles", a.tenant_id),
            &clone_auth
        )
        .await
        .status,
        200
    );

    let deleted = app.delete(&format!("{keys}/{id}"), &a.auth).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        app.get("/api/v1/auth", &auth).await.code(),
        "invalid_api_key"
    );
    assert_eq!(app.get(&format!("{keys}/{id}"), &a.auth).await.status, 404);
    assert_eq!(
        app.delete(&format!("{keys}/{id}"), &a.auth).await.status,
        404
    );
}
