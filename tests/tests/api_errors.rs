//! Bad input gets a clear 4xx with a stable `{code, message}`; 5xx bodies carry no internals.

use jet_tests::TestApp;
use jet_tests::app::TEST_MAX_BODY_BYTES;
use serde_json::{Value, json};

#[tokio::test]
async fn malformed_bodies_and_parameters_are_400_with_codes() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let roles = format!("{}/api/v1/tenants/{}/roles", app.base, a.tenant_id);
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(&roles)
            .header("Authorization", &a.auth)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type) in [
        ("{\"roleTitle\":", "application/json"),
        // (poem-openapi coerces a JSON number into a string field, so 42 would pass as "42".)
        ("{\"roleTitle\": {\"a\": 1}}", "application/json"),
        ("[1,2,3]", "application/json"),
        ("roleTitle=x", "application/x-www-form-urlencoded"),
    ] {
        let resp = send(body, content_type).await.expect("request");
        assert_eq!(resp.status(), 400, "{body}");
        let json: Value = resp.json().await.expect("JSON error body");
        assert!(
            json["code"].is_string() && json["message"].is_string(),
            "{json}"
        );
    }
    let bad_id = app.get("/api/v1/tenants/not-a-uuid/roles", &a.auth).await;
    assert_eq!((bad_id.status, bad_id.code()), (400, "invalid_parameter"));
    assert!(
        !bad_id.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("param0")
    );
    let route = app.get("/api/v1/nothing-here", &a.auth).await;
    assert_eq!((route.status, route.code()), (404, "route_not_found"));
    let method = app
        .client
        .put(format!("{}/api/v1/tenants", app.base))
        .header("Authorization", &a.auth)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(method.status(), 405);
    let allow = method
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(
        allow.as_deref(),
        Some("GET, POST"),
        "the methods the path has"
    );
    let body: Value = method.json().await.expect("JSON error body");
    assert_eq!(body["code"], "method_not_allowed", "{body}");
}

/// A NUL character anywhere (a string, a key, an unknown field, a query parameter, a path
/// segment) is a 400 `invalid_character` at the boundary: nothing is stored, no audit row is
/// attempted, nothing answers 500.
#[tokio::test]
async fn nul_characters_are_refused_at_the_boundary() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let tenant = format!("/api/v1/tenants/{}", a.tenant_id);
    let audit_rows = || async {
        sqlx::query_scalar::<_, i64>(r#"SELECT count(*) FROM "tblAuditLogs""#)
            .fetch_one(&app.db.pool)
            .await
            .expect("count")
    };
    let before = audit_rows().await;
    for (method, path, body) in [
        ("PATCH", tenant.clone(), json!({"tenantTitle": "a\u{0}b"})),
        (
            "POST",
            format!("{tenant}/roles"),
            json!({"roleTitle": "x", "zz": "\u{0}"}),
        ),
        (
            "POST",
            format!("{tenant}/roles"),
            json!({"roleTitle": "x", "k\u{0}": 1}),
        ),
        (
            "POST",
            format!("{tenant}/roles"),
            json!({"roleTitle": "x", "permissions": [["\u{0}"]]}),
        ),
        ("GET", format!("{tenant}/roles?page=1%00"), json!(null)),
        ("GET", format!("{tenant}/roles/%00"), json!(null)),
    ] {
        let resp = app
            .call(method, &path, Some(&a.auth), Some(body.clone()))
            .await;
        assert_eq!(
            (resp.status, resp.code()),
            (400, "invalid_character"),
            "{method} {path} {body}: {}",
            resp.body
        );
    }
    let roles = app.get(&format!("{tenant}/roles"), &a.auth).await;
    assert!(
        !roles.body.to_string().contains("\"x\""),
        "no role was created: {}",
        roles.body
    );
    assert_eq!(audit_rows().await, before, "refused before any audit write");
    let title = app.get(&tenant, &a.auth).await.body["tenantTitle"].clone();
    assert_eq!(title, "A", "the tenant title is unchanged");
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let url = format!("{}/api/v1/tenants/{}/roles", app.base, a.tenant_id);
    let big =
        json!({"roleTitle": "x", "roleDescription": "a".repeat(TEST_MAX_BODY_BYTES)}).to_string();
    let sized = app
        .client
        .post(&url)
        .header("Authorization", &a.auth)
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(sized.status(), 413);
    let body: Value = sized.json().await.expect("json");
    assert_eq!(body["code"], "payload_too_large");
    // A streamed body has no Content-Length; the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = app
        .client
        .post(&url)
        .header("Authorization", &a.auth)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .expect("request");
    assert_eq!(streamed.status(), 413);
    let count: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblRoles" WHERE "tenantID" = $1"#)
        .bind(a.tenant_id)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_core_stream::iter(chunks)
}

mod futures_core_stream {
    pub use futures::stream::{Stream, iter};
}

#[tokio::test]
async fn a_server_error_says_nothing_internal() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    sqlx::query(r#"ALTER TABLE "tblAuditLogs" RENAME TO "tblAuditLogsGone""#)
        .execute(&app.db.pool)
        .await
        .expect("break the audit table");
    let resp = app
        .get(&format!("/api/v1/tenants/{}/audit", a.tenant_id), &a.auth)
        .await;
    assert_eq!(resp.status, 500);
    assert_eq!(
        resp.body,
        json!({"code": "internal_error", "message": "internal error"})
    );
}

/// Every operation of the spec, fed hostile input, answers below 500.
#[tokio::test]
async fn no_bad_input_reaches_a_5xx() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let spec: Value = serde_json::from_str(&jet_api::spec_json()).expect("spec");
    let tenant = a.tenant_id.to_string();
    let bodies = [
        json!({}),
        json!([]),
        json!("text"),
        json!(null),
        json!({"roleTitle": 1, "apiKeyTitle": [], "tenantTitle": {}, "email": 7, "config": "x"}),
        json!({"roleIDs": ["not-a-uuid"], "permissionIDs": [1], "permissions": [null]}),
        json!({"roleTitle": "t", "apiKeyTitle": "t", "tenantTitle": "t", "email": "@", "roleIDs": [uuid::Uuid::new_v4()], "config": []}),
        json!({"page": -1, "isDisabled": "yes", "role": "ROOT", "tenantLogoURL": 5}),
        json!({"roleTitle": "a\u{0}", "tenantTitle": "\u{0}", "email": "a\u{0}@b.c", "config": {"\u{0}": 1}}),
        // Datasource options carrying a secret in every place a driver reads one, with masks
        // where nothing is stored: it must never come back, nor reach the audit trail.
        json!({"datasourceTitle": "t", "datasourceType": "restapi", "datasourceOptions": {
            "baseUrl": "http://u:sweep-secret@127.0.0.1:9/?api_key=sweep-secret",
            "auth": {"type": "apiKey", "headerName": "X-API-Key", "value": "sweep-secret", "in": "query"},
            "headers": [{"key": "X-Foo", "value": "********"}, {"key": "Cookie", "value": "sweep-secret"}]},
            "dataQueryOptions": {"apiEndpoint": "/"}}),
    ];
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, _) in ops.as_object().expect("operations") {
            for id in [
                tenant.as_str(),
                "00000000-0000-0000-0000-000000000000",
                "zzz",
                "%00",
            ] {
                let concrete = path
                    .replace("{tenantID}", if id == "zzz" { &tenant } else { id })
                    .replace("{roleID}", id)
                    .replace("{apiKeyID}", id)
                    .replace("{tenantUserID}", id);
                // Deleting the real tenant is legitimate for an admin key; keep it alive so
                // every later request is judged on its input, not on a vanished tenant.
                if method == "delete" && concrete == format!("/api/v1/tenants/{tenant}") {
                    continue;
                }
                for body in &bodies {
                    let resp = app
                        .call(
                            &method.to_uppercase(),
                            &format!("{concrete}?page=0&pageSize=9999"),
                            Some(&a.auth),
                            Some(body.clone()),
                        )
                        .await;
                    assert!(
                        resp.status < 500,
                        "{method} {concrete} {body} -> {} {}",
                        resp.status,
                        resp.body
                    );
                    assert!(
                        !resp.body.to_string().contains("sweep-secret"),
                        "{method} {concrete} answered a secret: {}",
                        resp.body
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 500, "exercised {checked} requests");
    let audit: Vec<String> =
        sqlx::query_scalar(r#"SELECT concat("metadata"::text, "error"::text) FROM "tblAuditLogs""#)
            .fetch_all(&app.db.pool)
            .await
            .expect("audit rows");
    assert!(audit.len() > 100, "the barrage was audited");
    assert!(
        audit.iter().all(|row| !row.contains("sweep-secret")),
        "a secret reached the audit trail"
    );
    let ok = app.get("/api/v1/tenants", &a.auth).await;
    assert_eq!(
        ok.status, 200,
        "the admin key still works after the barrage: {}",
        ok.body
    );
}
