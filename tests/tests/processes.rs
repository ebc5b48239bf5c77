//! The production binaries as processes: `jet migrate`, `jet bootstrap`, `jet-api`,
//! `jet-worker` and `jet openapi --check`.

use jet_tests::TestDb;
use jet_tests::bins::{Running, free_port, run};

#[tokio::test]
async fn migrate_then_bootstrap_an_admin_user_and_key() {
    let db = TestDb::empty().await;
    let url = db.url();
    let (ok, out) = run("jet", &["migrate"], &[("DATABASE_URL", &url)]);
    assert!(ok, "{out}");
    assert!(
        jet_shared::db::pending_migrations(&db.pool)
            .await
            .expect("pending")
            .is_empty()
    );
    let (ok, out) = run("jet", &["migrate"], &[("DATABASE_URL", &url)]);
    assert!(ok, "migrate is idempotent: {out}");

    let (ok, out) = run(
        "jet",
        &[
            "bootstrap",
            "--tenant",
            "Acme",
            "--admin-email",
            "root@acme.test",
            "--admin-firebase-id",
            "fb-root",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert!(ok, "{out}");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("Admin key:"))
        .map(str::trim)
        .expect("key line");
    let hash = jet_shared::crypto::sha256_hex(key.as_bytes());
    let (title, role): (String, String) = sqlx::query_as(
        r#"SELECT t."tenantTitle", m."role" FROM "tblAPIKeys" k JOIN "tblTenants" t USING ("tenantID")
           JOIN "tblUsersTenantsRelationship" m ON m."tenantID" = t."tenantID"
           JOIN "tblUsers" u ON u."userID" = m."userID" AND u."firebaseID" = 'fb-root'
           WHERE k."apiKeyHash" = $1"#,
    )
    .bind(&hash)
    .fetch_one(&db.pool)
    .await
    .expect("bootstrapped rows");
    assert_eq!((title.as_str(), role.as_str()), ("Acme", "ADMIN"));
    let (ok, out) = run(
        "jet",
        &["bootstrap", "--admin-email", "x@y.z"],
        &[("DATABASE_URL", &url)],
    );
    assert!(!ok && out.contains("go together"), "{out}");
}

#[tokio::test]
async fn jet_api_serves_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let url = db.url();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = std::env::temp_dir();
    let mut api = Running::start(
        "jet-api",
        &[],
        &dir,
        &[("DATABASE_URL", &url), ("JET_API_ADDR", &addr)],
    );
    api.wait_for("jet-api listening", 30).await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let denied = client
        .get(format!("http://{addr}/api/v1/tenants"))
        .send()
        .await
        .expect("tenants");
    assert_eq!(denied.status(), 401);
    assert!(api.terminate(30).await.success());
}

#[tokio::test]
async fn jet_worker_refuses_unknown_roles_and_unmigrated_databases() {
    let (ok, out) = run(
        "jet-worker",
        &["--roles", "maintenance,bogus"],
        &[("DATABASE_URL", "postgres://unused@127.0.0.1:1/x")],
    );
    assert!(
        !ok && out.contains("bogus") && out.contains("known roles"),
        "{out}"
    );
    let empty = TestDb::empty().await;
    let (ok, out) = run("jet-worker", &[], &[("DATABASE_URL", &empty.url())]);
    assert!(!ok && out.contains("migrations pending"), "{out}");
    let (ok, out) = run("jet-worker", &[], &[]);
    assert!(!ok && out.contains("DATABASE_URL"), "{out}");
}

#[tokio::test]
async fn jet_worker_runs_its_roles_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    sqlx::query(r#"INSERT INTO "tblAuditLogs" ("type", "success", "createdAt") VALUES ('old', true, now() - interval '400 days')"#)
        .execute(&db.pool)
        .await
        .expect("seed");
    let url = db.url();
    let mut worker = Running::start(
        "jet-worker",
        &["--roles", "maintenance"],
        &std::env::temp_dir(),
        &[("DATABASE_URL", &url)],
    );
    worker.wait_for("maintenance round done", 30).await;
    let left: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblAuditLogs""#)
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        left, 0,
        "the default 365-day retention pruned the 400-day-old row"
    );
    assert!(worker.terminate(30).await.success());
}

#[test]
fn jet_openapi_check_accepts_the_checked_in_spec() {
    let (ok, out) = run("jet", &["openapi", "--check"], &[]);
    assert!(ok, "{out}");
}

#[test]
fn jet_dev_without_postgres_binaries_says_what_to_install() {
    let empty = std::env::temp_dir().join(format!("jet-no-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&empty).expect("dir");
    let (ok, out) = run(
        "jet",
        &["dev"],
        &[("JET_PG_BIN_DIR", empty.to_str().expect("utf-8 path"))],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("apt-get install postgresql") && out.contains("DATABASE_URL"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&empty);
}
