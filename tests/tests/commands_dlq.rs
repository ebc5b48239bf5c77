//! A command the workers give up on is parked in `tblEventDLQ`, never dropped.

use apalis::prelude::TaskBuilder;
use jet_tests::TestApp;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_command_is_parked_in_the_dlq() {
    let app = TestApp::with_workers().await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let task = TaskBuilder::new(br#"{"type": "launch_rocket"}"#.to_vec())
        .max_attempts(2)
        .build();
    apalis_postgres::queries::push_tasks(&mut *conn, jet_shared::commands::QUEUE, vec![task])
        .await
        .expect("push");
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (source, payload, error, status): (String, serde_json::Value, String, String) = loop {
        let row =
            sqlx::query_as(r#"SELECT "source", "payload", "error", "status" FROM "tblEventDLQ""#)
                .fetch_optional(&app.db.pool)
                .await
                .expect("dlq");
        if let Some(row) = row {
            break row;
        }
        if Instant::now() >= deadline {
            let jobs: Vec<(String, i32, i32, Option<serde_json::Value>)> = sqlx::query_as(
                "SELECT status, attempts, max_attempts, last_result FROM apalis.jobs",
            )
            .fetch_all(&app.db.pool)
            .await
            .expect("jobs");
            panic!("the failed command never reached the DLQ; jobs: {jobs:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(source, "command");
    assert_eq!(
        status, "PENDING",
        "lands for automatic DLQ retries (tests/tests/dlq.rs follows it to PARKED)"
    );
    assert_eq!(payload["command"]["type"], "launch_rocket", "{payload}");
    assert!(!error.is_empty());
    let rows: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblEventDLQ""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 1, "parked once, not once per attempt");
}
