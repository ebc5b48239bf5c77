//! `jet dev` as a person runs it: a real process on a fresh folder creates its own PostgreSQL
//! cluster, bootstraps a tenant and admin key, serves the API, and stops everything on SIGTERM.
//! The README's curl walk-through runs against it. Its cluster requires a generated password.

use jet_tests::bins::{Running, free_port, run};
use serde_json::{Value, json};

fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", lines.join("\n")))
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, url)
        .header("Authorization", format!("api_key {key}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn jet_dev_runs_the_readme_walkthrough_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("jet-dev-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pg_port = free_port().to_string();
    let mut dev = Running::start(
        "jet",
        &["dev", "--api-addr", "127.0.0.1:0", "--pg-port", &pg_port],
        &dir,
        &[],
    );
    dev.wait_for("Press Ctrl-C", 120).await;
    let lines = dev.seen.clone();
    let base = field(&lines, "API:").to_owned();
    let database_url = field(&lines, "Database:").to_owned();
    let tenant = field(&lines, "Tenant:").to_owned();
    let admin_key = field(&lines, "Admin key:").to_owned();
    assert_eq!(admin_key.len(), 64);
    assert!(
        dir.join(".jet/dev-pg/data/PG_VERSION").exists(),
        "the cluster lives under ./.jet/"
    );
    let client = reqwest::Client::new();
    use reqwest::Method;

    // The cluster holds the platform's data: it wants the generated password, printed above.
    let mut anonymous = reqwest::Url::parse(&database_url).expect("database url");
    assert_eq!(
        anonymous.password().map(str::len),
        Some(32),
        "{database_url}"
    );
    anonymous.set_password(None).expect("url without password");
    use sqlx::Connection;
    let refused = sqlx::PgConnection::connect(anonymous.as_str()).await;
    assert!(refused.is_err(), "connected without the password");
    sqlx::PgConnection::connect(&database_url)
        .await
        .expect("the printed URL connects");
    // And by default a datasource cannot reach it (nor anything else on loopback).
    let (status, tested) = call(
        &client,
        Method::POST,
        format!("{base}/api/v1/tenants/{tenant}/datasources/test"),
        &admin_key,
        Some(json!({"datasourceType": "postgresql", "datasourceOptions":
            {"connectionOption": "connectionString", "connectionString": database_url}})),
    )
    .await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["code"], "datasource_denied", "{tested}");

    // The walk-through: a role that may only list roles, a key with that role.
    let (status, role) = call(
        &client,
        Method::POST,
        format!("{base}/api/v1/tenants/{tenant}/roles"),
        &admin_key,
        Some(json!({"roleTitle": "role reader", "permissions": ["tenant:role:list"]})),
    )
    .await;
    assert_eq!(status, 201, "{role}");
    let (status, key) = call(
        &client,
        Method::POST,
        format!("{base}/api/v1/tenants/{tenant}/apikeys"),
        &admin_key,
        Some(json!({"apiKeyTitle": "read-only", "roleIDs": [role["roleID"]]})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let restricted = key["apiKey"].as_str().expect("raw key").to_owned();

    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/api/v1/tenants/{tenant}/roles"),
        &restricted,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &client,
        Method::POST,
        format!("{base}/api/v1/tenants/{tenant}/roles"),
        &restricted,
        Some(json!({"roleTitle": "nope"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied"))
    );

    // A second tenant made with `jet bootstrap` is invisible to the first tenant's key.
    let (ok, out) = run(
        "jet",
        &["bootstrap", "--tenant", "Other"],
        &[("DATABASE_URL", &database_url)],
    );
    assert!(ok, "{out}");
    let other = out
        .lines()
        .find_map(|l| l.strip_prefix("Tenant:"))
        .and_then(|r| r.split_whitespace().next())
        .expect("tenant line");
    let (status, body) = call(
        &client,
        Method::GET,
        format!("{base}/api/v1/tenants/{other}/roles"),
        &restricted,
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let status = dev.terminate(60).await;
    assert!(
        status.success(),
        "jet dev exits 0 on SIGTERM; output:\n{}",
        dev.seen.join("\n")
    );
    assert!(dev.seen.iter().any(|l| l.contains("stopping PostgreSQL")));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg_port.parse::<u16>().expect("port"))).is_err(),
        "cluster stopped"
    );

    // A second run keeps the data and does not bootstrap again.
    let mut again = Running::start(
        "jet",
        &["dev", "--api-addr", "127.0.0.1:0", "--pg-port", &pg_port],
        &dir,
        &[],
    );
    again.wait_for("Press Ctrl-C", 120).await;
    assert!(
        again
            .seen
            .iter()
            .any(|l| l.contains("Tenants exist already"))
    );
    let base = field(&again.seen, "API:").to_owned();
    let (status, _) = call(
        &client,
        Method::GET,
        format!("{base}/api/v1/tenants/{tenant}/roles"),
        &restricted,
        None,
    )
    .await;
    assert_eq!(status, 200, "the restricted key survived the restart");
    assert!(again.terminate(60).await.success());
    let _ = std::fs::remove_dir_all(&dir);
}
