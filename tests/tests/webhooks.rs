//! Webhook listeners' ingress over real HTTP: a delivery is stored in the listener's inbox
//! exactly once, and only when the sender proves itself with its datasource's token or a fresh
//! HMAC signature; the credentials are shown once, rotate, and never leak afterwards.

use jet_shared::crypto::{VaultKey, sha256_hex};
use jet_shared::datasource::secrets::MASK;
use jet_shared::datasource::webhook::open_secret;
use jet_shared::listener::webhook::sign;
use jet_tests::TestApp;
use jet_tests::app::{Admin, TEST_VAULT_KEY};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A webhook datasource with its credentials, and an active listener on it.
struct Hook {
    admin: Admin,
    datasource_id: String,
    listener_id: String,
    token: String,
    secret: String,
    /// `/webhooks/v1/inbound/{tenantID}/{endpointPath}`.
    url: String,
}

fn base(a: &Admin, what: &str) -> String {
    format!("/api/v1/tenants/{}/{what}", a.tenant_id)
}

async fn hook(app: &TestApp, tenant: &str, endpoint_path: &str) -> Hook {
    let admin = app.admin(tenant).await;
    let created = app
        .post(
            &base(&admin, "datasources"),
            &admin.auth,
            json!({"datasourceTitle": "inbound", "datasourceType": "webhook", "datasourceOptions": {}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let credentials = &created.body["webhookCredentials"];
    let datasource_id = created.str("datasourceID");
    let listener_id = listener(app, &admin, &datasource_id, endpoint_path, "active").await;
    Hook {
        url: format!("/webhooks/v1/inbound/{}/{endpoint_path}", admin.tenant_id),
        admin,
        datasource_id,
        listener_id,
        token: credentials["webhookToken"]
            .as_str()
            .expect("token")
            .to_owned(),
        secret: credentials["webhookSecret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    }
}

/// A webhook listener row (the listener API is not what is under test here).
async fn listener(
    app: &TestApp,
    admin: &Admin,
    datasource_id: &str,
    endpoint_path: &str,
    status: &str,
) -> String {
    let id: uuid::Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerType", "status", "endpointPath")
           VALUES ($1, $2::uuid, 'hook', 'webhook', $3, $4) RETURNING "listenerID""#,
    )
    .bind(admin.tenant_id)
    .bind(datasource_id)
    .bind(status)
    .bind(endpoint_path)
    .fetch_one(&app.db.pool)
    .await
    .expect("listener");
    id.to_string()
}

/// Sends `body` to `path` with `headers`; answers the status and JSON body.
async fn deliver(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: impl Into<reqwest::Body>,
) -> jet_tests::Resp {
    let mut req = app.client.post(format!("{}{path}", app.base)).body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    jet_tests::Resp {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn json_type() -> (&'static str, String) {
    ("Content-Type", "application/json".to_owned())
}

fn token(t: &str) -> (&'static str, String) {
    ("X-Webhook-Token", t.to_owned())
}

fn signed(secret: &str, at: i64, body: &[u8]) -> [(&'static str, String); 2] {
    [
        ("X-Webhook-Signature", sign(secret, at, body)),
        ("X-Webhook-Timestamp", at.to_string()),
    ]
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The raw events of a listener's inbox, oldest first.
async fn inbox(app: &TestApp, listener_id: &str) -> Vec<Value> {
    sqlx::query_scalar(
        r#"SELECT "rawEvent" FROM "tblListenerInbox" WHERE "listenerID"::text = $1 AND "source" = 'webhook'
           ORDER BY "receivedAt""#,
    )
    .bind(listener_id)
    .fetch_all(&app.db.pool)
    .await
    .expect("inbox")
}

async fn inbox_total(app: &TestApp) -> i64 {
    sqlx::query_scalar(r#"SELECT count(*) FROM "tblListenerInbox""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

fn assert_unauthorized(resp: &jet_tests::Resp, what: &str) {
    assert_eq!(
        (resp.status, resp.code()),
        (401, "webhook_unauthorized"),
        "{what}: {}",
        resp.body
    );
}

#[tokio::test]
async fn a_token_delivery_is_committed_once_with_its_body_and_safe_headers() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "orders").await;
    let resp = deliver(
        &app,
        &h.url,
        &[
            json_type(),
            token(&h.token),
            ("X-Event-Kind", "order.created".to_owned()),
            ("X-Api-Key", "sender-internal-key".to_owned()),
            ("User-Agent", "sender/1.0".to_owned()),
        ],
        r#"{"id": 7, "items": [1, 2]}"#,
    )
    .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(resp.body["duplicate"], false);
    let event_id = resp.str("eventID");

    let rows: Vec<(uuid::Uuid, Value, String)> = sqlx::query_as(
        r#"SELECT "eventID", "rawEvent", "status" FROM "tblListenerInbox" WHERE "listenerID"::text = $1"#,
    )
    .bind(&h.listener_id)
    .fetch_all(&app.db.pool)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 1, "exactly one inbox row");
    let (id, raw, status) = &rows[0];
    assert_eq!(id.to_string(), event_id);
    assert_eq!(status, "pending");
    assert_eq!(raw["body"], json!({"id": 7, "items": [1, 2]}));
    assert_eq!(raw["bodyEncoding"], "json");
    assert_eq!(raw["method"], "POST");
    assert_eq!(raw["path"], h.url);
    assert!(raw["receivedAt"].is_string());
    assert_eq!(raw["headers"]["x-event-kind"], "order.created");
    assert_eq!(raw["headers"]["user-agent"], "sender/1.0");
    assert_eq!(raw["headers"]["content-type"], "application/json");
    let text = raw.to_string();
    assert!(!text.contains(&h.token), "the token is not stored: {text}");
    assert!(
        !text.contains("sender-internal-key"),
        "nor other credentials: {text}"
    );

    let bearer = deliver(
        &app,
        &h.url,
        &[("Authorization", format!("Bearer {}", h.token))],
        "plain text",
    )
    .await;
    assert_eq!(bearer.status, 202, "{}", bearer.body);
    let events = inbox(&app, &h.listener_id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["body"], "plain text");
    assert_eq!(events[1]["bodyEncoding"], "text");
    assert!(
        events[1]["headers"].get("authorization").is_none(),
        "{}",
        events[1]
    );
}

#[tokio::test]
async fn a_signed_delivery_is_accepted_over_the_exact_raw_bytes() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "signed").await;
    // Whitespace and key order that a re-serialisation would change: the signature covers
    // the bytes as sent.
    let body = br#"{ "b" : 2,  "a" : [1 ,2] }"#;
    let at = now();
    let mut headers = vec![json_type()];
    headers.extend(signed(&h.secret, at, body));
    let resp = deliver(&app, &h.url, &headers, body.to_vec()).await;
    assert_eq!(resp.status, 202, "{}", resp.body);

    let binary = vec![0xffu8, 0x00, 0x01, 0xfe];
    let headers = signed(&h.secret, at, &binary);
    let resp = deliver(&app, &h.url, &headers, binary.clone()).await;
    assert_eq!(
        resp.status, 202,
        "a binary body is stored too: {}",
        resp.body
    );

    let events = inbox(&app, &h.listener_id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["body"], json!({"a": [1, 2], "b": 2}));
    assert_eq!(events[0]["headers"]["x-webhook-timestamp"], at.to_string());
    assert!(events[0]["headers"].get("x-webhook-signature").is_none());
    assert_eq!(events[1]["bodyEncoding"], "base64");
    assert_eq!(events[1]["body"], "/wAB/g==");
}

#[tokio::test]
async fn wrong_stale_future_or_missing_proofs_are_401_and_store_nothing() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "guarded").await;
    let body = br#"{"n":1}"#;
    let at = now();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no proof", vec![]),
        ("wrong token", vec![token(&"0".repeat(64))]),
        ("the secret as a token", vec![token(&h.secret)]),
        (
            "signed with another secret",
            signed(&"f".repeat(64), at, body).to_vec(),
        ),
        (
            "signature of another body",
            signed(&h.secret, at, br#"{"n":2}"#).to_vec(),
        ),
        ("6 minutes old", signed(&h.secret, at - 360, body).to_vec()),
        (
            "6 minutes ahead",
            signed(&h.secret, at + 360, body).to_vec(),
        ),
        (
            "timestamp changed after signing",
            vec![
                ("X-Webhook-Signature", sign(&h.secret, at, body)),
                ("X-Webhook-Timestamp", (at - 1).to_string()),
            ],
        ),
        (
            "signature without timestamp",
            vec![("X-Webhook-Signature", sign(&h.secret, at, body))],
        ),
        (
            "malformed signature",
            vec![
                ("X-Webhook-Signature", "md5=abc".to_owned()),
                ("X-Webhook-Timestamp", at.to_string()),
            ],
        ),
    ];
    for (what, headers) in cases {
        let mut headers = headers;
        headers.push(json_type());
        let resp = deliver(&app, &h.url, &headers, body.to_vec()).await;
        assert_unauthorized(&resp, what);
    }
    assert_eq!(inbox_total(&app).await, 0, "nothing stored");

    // A NUL inside JSON is refused, after the proof, and stores nothing either.
    let nul = br#"{"a":"x\u0000y"}"#;
    let mut headers = vec![json_type()];
    headers.extend(signed(&h.secret, at, nul));
    let resp = deliver(&app, &h.url, &headers, nul.to_vec()).await;
    assert_eq!(
        (resp.status, resp.code()),
        (400, "invalid_character"),
        "{}",
        resp.body
    );
    let resp = deliver(&app, &h.url, &[json_type(), token(&h.token)], "{oops").await;
    assert_eq!(
        (resp.status, resp.code()),
        (400, "invalid_json"),
        "{}",
        resp.body
    );
    assert_eq!(inbox_total(&app).await, 0);
}

#[tokio::test]
async fn another_tenants_credentials_do_not_open_this_tenants_listener() {
    let app = TestApp::spawn().await;
    let a = hook(&app, "A", "shared-name").await;
    let b = hook(&app, "B", "only-in-b").await;
    let resp = deliver(&app, &a.url, &[token(&b.token)], "x").await;
    assert_unauthorized(&resp, "B's token on A's path");
    let resp = deliver(&app, &a.url, &signed(&b.secret, now(), b"x"), "x").await;
    assert_unauthorized(&resp, "B's signature on A's path");
    // A's token at B's tenant with A's path: no such listener there.
    let crossed = format!("/webhooks/v1/inbound/{}/shared-name", b.admin.tenant_id);
    let resp = deliver(&app, &crossed, &[token(&a.token)], "x").await;
    assert_eq!(
        (resp.status, resp.code()),
        (404, "not_found"),
        "{}",
        resp.body
    );
    let resp = deliver(
        &app,
        &format!("/webhooks/v1/inbound/{}", a.listener_id),
        &[token(&b.token)],
        "x",
    )
    .await;
    assert_unauthorized(&resp, "B's token on A's listener id");
    assert_eq!(inbox_total(&app).await, 0);
}

#[tokio::test]
async fn an_oversized_delivery_is_413_before_it_is_read_and_stores_nothing() {
    let app = TestApp::spawn_adjusted(|vars| {
        vars.insert("JET_WEBHOOK_MAX_BODY_BYTES", "4096".to_owned());
    })
    .await;
    let h = hook(&app, "A", "small").await;
    let big = vec![b'a'; 5000];
    let resp = deliver(&app, &h.url, &[token(&h.token)], big.clone()).await;
    assert_eq!(
        (resp.status, resp.code()),
        (413, "payload_too_large"),
        "{}",
        resp.body
    );
    // Without Content-Length (chunked), the read stops at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'b'; 1000])).collect();
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let resp = deliver(&app, &h.url, &[token(&h.token)], stream).await;
    assert_eq!(resp.status, 413, "{}", resp.body);
    assert_eq!(inbox_total(&app).await, 0);
    let fits = deliver(&app, &h.url, &[token(&h.token)], vec![b'c'; 4000]).await;
    assert_eq!(fits.status, 202, "{}", fits.body);
}

#[tokio::test]
async fn webhook_bodies_have_their_own_limit_above_the_api_limit() {
    // The test service's API limit is 64 KiB; deliveries default to 1 MiB.
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "large").await;
    let body = json!({"blob": "x".repeat(200 * 1024)}).to_string();
    let resp = deliver(&app, &h.url, &[json_type(), token(&h.token)], body).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(inbox(&app, &h.listener_id).await.len(), 1);
}

#[tokio::test]
async fn a_retried_delivery_answers_the_first_event_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "retries").await;
    let send = |key: String, body: &'static str| {
        let (app, url, headers) = (
            &app,
            h.url.clone(),
            vec![json_type(), token(&h.token), ("Idempotency-Key", key)],
        );
        async move { deliver(app, &url, &headers, body).await }
    };
    let first = send("delivery-1".into(), r#"{"try":1}"#).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.body["duplicate"], false);
    let again = send("delivery-1".into(), r#"{"try":2}"#).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.str("eventID"), first.str("eventID"));
    assert_eq!(again.body["duplicate"], true);
    let events = inbox(&app, &h.listener_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["body"],
        json!({"try": 1}),
        "the first delivery is kept"
    );

    let other = send("delivery-2".into(), "{}").await;
    assert_ne!(other.str("eventID"), first.str("eventID"));
    let too_long = send("k".repeat(256), "{}").await;
    assert_eq!(
        (too_long.status, too_long.code()),
        (400, "invalid_idempotency_key"),
        "{}",
        too_long.body
    );
    assert_eq!(inbox(&app, &h.listener_id).await.len(), 2);
}

#[tokio::test]
async fn inactive_or_unknown_listeners_are_404_alike() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "live").await;
    let paused = listener(&app, &h.admin, &h.datasource_id, "paused", "inactive").await;
    let failing = listener(&app, &h.admin, &h.datasource_id, "failing", "error").await;
    let tenant = h.admin.tenant_id;
    for path in [
        format!("/webhooks/v1/inbound/{tenant}/paused"),
        format!("/webhooks/v1/inbound/{paused}"),
        format!("/webhooks/v1/inbound/{tenant}/nowhere"),
        format!("/webhooks/v1/inbound/{}", uuid::Uuid::new_v4()),
        "/webhooks/v1/inbound/not-a-uuid/live".to_owned(),
        "/webhooks/v1/inbound/not-a-uuid".to_owned(),
    ] {
        let resp = deliver(&app, &path, &[token(&h.token)], "x").await;
        assert_eq!(
            (resp.status, resp.code()),
            (404, "not_found"),
            "{path}: {}",
            resp.body
        );
        assert!(
            !resp.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("inactive")
        );
    }
    assert_eq!(inbox_total(&app).await, 0);
    // A listener in `error` is still on: deliveries are kept.
    let resp = deliver(
        &app,
        &format!("/webhooks/v1/inbound/{tenant}/failing"),
        &[token(&h.token)],
        "x",
    )
    .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(inbox(&app, &failing).await.len(), 1);
    // Deliveries are POSTs; other methods are 405 with Allow, not a login prompt.
    let get = app
        .client
        .get(format!("{}{}", app.base, h.url))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(get.headers()["allow"], "POST");
}

#[tokio::test]
async fn endpoint_paths_may_contain_slashes_and_listeners_answer_by_id() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "github/acme/repo").await;
    let tenant = h.admin.tenant_id;
    for path in [
        h.url.clone(),
        format!("/webhooks/v1/inbound/{tenant}/github%2Facme%2Frepo"),
        format!("/webhooks/v1/inbound/{}", h.listener_id),
    ] {
        let resp = deliver(&app, &path, &[token(&h.token)], "x").await;
        assert_eq!(resp.status, 202, "{path}: {}", resp.body);
    }
    let events = inbox(&app, &h.listener_id).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["path"], h.url);
    assert_eq!(events[1]["path"], h.url);
    assert_eq!(
        events[2]["path"],
        format!("/webhooks/v1/inbound/{}", h.listener_id)
    );
    let partial = deliver(
        &app,
        &format!("/webhooks/v1/inbound/{tenant}/github/acme"),
        &[token(&h.token)],
        "x",
    )
    .await;
    assert_eq!(partial.status, 404, "{}", partial.body);
}

#[tokio::test]
async fn credentials_are_shown_once_masked_after_and_rotation_retires_the_old_ones() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "rotating").await;
    for value in [&h.token, &h.secret] {
        assert_eq!(value.len(), 64);
        assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let ds_path = format!("{}/{}", base(&h.admin, "datasources"), h.datasource_id);
    let got = app.get(&ds_path, &h.admin.auth).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body["webhookCredentials"],
        json!({"webhookToken": MASK, "webhookSecret": MASK})
    );
    assert_eq!(got.body["datasourceType"], "webhook");

    let rotated = app
        .post(
            &format!("{ds_path}/webhook-credentials/rotate"),
            &h.admin.auth,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(rotated.str("datasourceID"), h.datasource_id);
    let new_token = rotated.str("webhookToken");
    let new_secret = rotated.str("webhookSecret");
    assert_ne!(new_token, h.token);
    assert_ne!(new_secret, h.secret);

    let old = deliver(&app, &h.url, &[token(&h.token)], "x").await;
    assert_unauthorized(&old, "the old token");
    let old = deliver(&app, &h.url, &signed(&h.secret, now(), b"x"), "x").await;
    assert_unauthorized(&old, "the old secret");
    let new = deliver(&app, &h.url, &[token(&new_token)], "x").await;
    assert_eq!(new.status, 202, "{}", new.body);
    let new = deliver(&app, &h.url, &signed(&new_secret, now(), b"x"), "x").await;
    assert_eq!(new.status, 202, "{}", new.body);

    // A copy gets credentials of its own, shown in the clone response once.
    let copy = app
        .post(&format!("{ds_path}/clone"), &h.admin.auth, json!({}))
        .await;
    assert_eq!(copy.status, 201, "{}", copy.body);
    let copied = &copy.body["webhookCredentials"];
    let copy_token = copied["webhookToken"].as_str().expect("token");
    assert_eq!(copy_token.len(), 64);
    assert!(copy_token != new_token && copy_token != h.token);
    assert_ne!(copied["webhookSecret"], json!(new_secret));

    // Only webhook datasources have credentials; another tenant's datasource is not found.
    let pg = app
        .post(
            &base(&h.admin, "datasources"),
            &h.admin.auth,
            json!({"datasourceTitle": "pg", "datasourceType": "postgresql", "datasourceOptions": {"connectionOption": "connectionString", "connectionString": "postgres://u:p@127.0.0.1:9/db"}}),
        )
        .await;
    assert_eq!(pg.status, 201, "{}", pg.body);
    assert!(pg.body.get("webhookCredentials").is_none());
    let wrong_type = app
        .post(
            &format!(
                "{}/{}/webhook-credentials/rotate",
                base(&h.admin, "datasources"),
                pg.str("datasourceID")
            ),
            &h.admin.auth,
            json!({}),
        )
        .await;
    assert_eq!(wrong_type.status, 422, "{}", wrong_type.body);
    let other = app.admin("B").await;
    let foreign = app
        .post(
            &format!(
                "{}/{}/webhook-credentials/rotate",
                base(&other, "datasources"),
                h.datasource_id
            ),
            &other.auth,
            json!({}),
        )
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);

    // A caller without `update` on datasources cannot rotate.
    let reader = app
        .role(
            &h.admin,
            "reader",
            &["tenant:datasource:read", "tenant:datasource:list"],
        )
        .await;
    let (_, reader_auth) = app.key_with_roles(&h.admin, "reader", &[&reader]).await;
    let denied = app
        .post(
            &format!("{ds_path}/webhook-credentials/rotate"),
            &reader_auth,
            json!({}),
        )
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
}

#[tokio::test]
async fn webhook_credentials_never_appear_after_creation_nor_in_the_audit_trail() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "quiet").await;
    let ds_path = format!("{}/{}", base(&h.admin, "datasources"), h.datasource_id);
    let rotated = app
        .post(
            &format!("{ds_path}/webhook-credentials/rotate"),
            &h.admin.auth,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200);
    let secrets = [
        h.token.clone(),
        h.secret.clone(),
        rotated.str("webhookToken"),
        rotated.str("webhookSecret"),
    ];
    let mut seen = vec![
        app.get(&ds_path, &h.admin.auth).await.body,
        app.get(&base(&h.admin, "datasources"), &h.admin.auth)
            .await
            .body,
        app.patch(
            &ds_path,
            &h.admin.auth,
            json!({"datasourceTitle": "renamed", "datasourceOptions": {}}),
        )
        .await
        .body,
    ];
    let test = app
        .post(
            &format!("{}/test", base(&h.admin, "datasources")),
            &h.admin.auth,
            json!({"datasourceID": h.datasource_id}),
        )
        .await;
    assert_eq!(test.status, 200, "{}", test.body);
    assert_eq!(
        test.body["ok"], false,
        "a webhook datasource has nothing to connect to"
    );
    seen.push(test.body);
    let audit: Vec<(Option<Value>, Option<Value>)> =
        sqlx::query_as(r#"SELECT "metadata", "error" FROM "tblAuditLogs""#)
            .fetch_all(&app.db.pool)
            .await
            .expect("audit");
    assert!(
        audit.len() >= 3,
        "the create, rotate and update are audited"
    );
    let text = format!("{seen:?} {audit:?}");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a credential leaked: {text}"
        );
    }
    assert_eq!(
        seen[1]["items"][0]["webhookCredentials"]["webhookToken"],
        MASK
    );

    // Stored: the token as its digest, the secret sealed with the vault key.
    let (digest, sealed): (String, String) = sqlx::query_as(
        r#"SELECT "webhookToken", "webhookSecret" FROM "tblDatasources" WHERE "datasourceID"::text = $1"#,
    )
    .bind(&h.datasource_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert_eq!(digest, sha256_hex(secrets[2].as_bytes()));
    assert!(!sealed.contains(&secrets[3]));
    let vault = VaultKey::from_hex(TEST_VAULT_KEY).expect("key");
    assert_eq!(open_secret(&vault, &sealed).expect("opens"), secrets[3]);
}

#[tokio::test]
async fn a_webhook_datasource_runs_no_queries() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "no-queries").await;
    let resp = app
        .patch(
            &format!("{}/queryTest", base(&h.admin, "queries")),
            &h.admin.auth,
            json!({"dataQuery": {"datasourceID": h.datasource_id, "dataQueryOptions": {"query": "SELECT 1"}}}),
        )
        .await;
    assert_eq!(
        (resp.status, resp.code()),
        (422, "query_not_runnable"),
        "{}",
        resp.body
    );
    assert!(
        resp.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("webhook")
    );
    let bad = app
        .post(
            &base(&h.admin, "datasources"),
            &h.admin.auth,
            json!({"datasourceTitle": "w", "datasourceType": "webhook", "datasourceOptions": "nope"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
}

/// Not a timed assertion: 16 concurrent senders for a few seconds, every 202 durable; the rate
/// is printed (run with `--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_ingest_throughput_with_16_senders() {
    let app = TestApp::spawn().await;
    let h = hook(&app, "A", "bench").await;
    let url = format!("{}{}", app.base, h.url);
    let run_for = Duration::from_secs(3);
    let started = Instant::now();
    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let (client, url, token) = (app.client.clone(), url.clone(), h.token.clone());
            tokio::spawn(async move {
                let mut accepted = 0u64;
                while started.elapsed() < run_for {
                    let resp = client
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("X-Webhook-Token", &token)
                        .body(format!(r#"{{"sender":{sender},"n":{accepted}}}"#))
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(resp.status().as_u16(), 202);
                    accepted += 1;
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for sender in senders {
        accepted += sender.await.expect("sender");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored = inbox(&app, &h.listener_id).await.len() as u64;
    assert_eq!(stored, accepted, "every 202 is a committed row");
    println!(
        "webhook ingest: {accepted} events in {elapsed:.2} s = {:.0} events/s (16 senders, durable 202)",
        accepted as f64 / elapsed
    );
}
