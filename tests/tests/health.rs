//! `/health` is liveness; `/ready` reports the database and the migration state.

use jet_tests::{TestApp, TestDb};

#[tokio::test]
async fn health_and_ready_on_a_migrated_database() {
    let app = TestApp::spawn().await;
    let health = app.call("GET", "/health", None, None).await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = app.call("GET", "/ready", None, None).await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (200, Some("ready"))
    );
}

#[tokio::test]
async fn ready_is_503_while_migrations_are_pending() {
    let app = TestApp::spawn_on(TestDb::empty().await).await;
    let ready = app.call("GET", "/ready", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["status"], "not_ready");
    assert!(
        ready.body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("jet migrate"),
        "{}",
        ready.body
    );
    assert_eq!(app.call("GET", "/health", None, None).await.status, 200);
}
