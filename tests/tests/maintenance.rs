//! The maintenance role prunes the audit trail and resolved DLQ rows past their retention,
//! one replica per round.

use jet_tests::TestDb;
use jet_worker::maintenance::{Settings, round};
use std::time::Duration;

#[tokio::test]
async fn old_audit_rows_are_pruned_and_recent_ones_kept() {
    let db = TestDb::new().await;
    sqlx::query(
        r#"INSERT INTO "tblAuditLogs" ("type", "success", "createdAt")
           SELECT 'old', true, now() - interval '40 days' FROM generate_series(1, 2500)
           UNION ALL SELECT 'recent', true, now() - interval '1 day'"#,
    )
    .execute(&db.pool)
    .await
    .expect("seed");
    let settings = Settings {
        audit_retention_days: 30,
        dlq_retention_days: 30,
        listener_inbox_retention_hours: 24,
        interval: Duration::from_secs(3600),
    };
    let report = round(&db.pool, &settings).await.expect("round");
    assert!(report.ran);
    assert_eq!(report.audit_rows_pruned, 2500, "several batches of 1000");
    let left: Vec<String> = sqlx::query_scalar(r#"SELECT "type" FROM "tblAuditLogs""#)
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    assert_eq!(left, ["recent"]);
}

#[tokio::test]
async fn only_one_replica_runs_a_round_at_a_time() {
    let db = TestDb::new().await;
    let settings = Settings {
        audit_retention_days: 30,
        dlq_retention_days: 30,
        listener_inbox_retention_hours: 24,
        interval: Duration::from_secs(3600),
    };
    // Hold the round lock as another replica would, mid-round.
    let mut other = db.pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(0x6a65_746d_6169_6e74_i64)
        .execute(&mut *other)
        .await
        .expect("lock");
    let report = round(&db.pool, &settings).await.expect("round");
    assert!(
        !report.ran,
        "skipped while the other replica holds the round"
    );
    other.rollback().await.expect("release");
    assert!(round(&db.pool, &settings).await.expect("round").ran);
}

#[tokio::test]
async fn resolved_dlq_rows_are_purged_after_their_retention_and_open_ones_kept() {
    let db = TestDb::new().await;
    sqlx::query(
        r#"INSERT INTO "tblEventDLQ" ("source", "payload", "error", "status", "resolvedAt")
           VALUES ('cron', '{}', 'old discard', 'DISCARDED', now() - interval '40 days'),
                  ('cron', '{}', 'old replay', 'REPLAYED', now() - interval '40 days'),
                  ('cron', '{}', 'recent replay', 'REPLAYED', now() - interval '1 day'),
                  ('cron', '{}', 'old but parked', 'PARKED', NULL)"#,
    )
    .execute(&db.pool)
    .await
    .expect("seed");
    sqlx::query(
        r#"UPDATE "tblEventDLQ" SET "createdAt" = now() - interval '50 days', "updatedAt" = now() - interval '50 days'"#,
    )
    .execute(&db.pool)
    .await
    .expect("age");
    let settings = Settings {
        audit_retention_days: 30,
        dlq_retention_days: 30,
        listener_inbox_retention_hours: 24,
        interval: Duration::from_secs(3600),
    };
    let report = round(&db.pool, &settings).await.expect("round");
    assert_eq!(report.dlq_rows_purged, 2);
    let mut left: Vec<String> = sqlx::query_scalar(r#"SELECT "error" FROM "tblEventDLQ""#)
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    left.sort();
    assert_eq!(left, ["old but parked", "recent replay"]);
}
