//! The context kept beside the log (`tblWorkflowInstanceContext`): it equals the fold of the
//! log whatever order concurrent transactions commit in, and it is built for instances that
//! ran before it existed. (A claim returning it: `engine_queue.rs`. Every test's database is
//! also checked for drift when it is dropped: `jet_tests::db::context_drift`.)

use jet_shared::workflow::instance;
use jet_tests::TestApp;
use jet_tests::db::{TestDb, context_drift};
use jet_tests::flow::Flow;
use serde_json::{Value, json};
use sqlx::migrate::Migrator;
use std::borrow::Cow;
use std::time::Duration;
use uuid::Uuid;

/// The migration that created the kept context.
const KEPT_CONTEXT_MIGRATION: i64 = 20261204100000;

/// start → pause (a delay long enough that it is still queued when the test looks).
fn paused() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("pause", "delay", json!({"delayMs": 3_600_000}))
        .edge("start", "pause")
}

async fn kept(pool: &sqlx::PgPool, instance_id: Uuid, key: &str) -> Option<(Value, i64)> {
    sqlx::query_as(
        r#"SELECT "value", "logID" FROM "tblWorkflowInstanceContext" WHERE "instanceID" = $1 AND "key" = $2"#,
    )
    .bind(instance_id)
    .bind(key)
    .fetch_optional(pool)
    .await
    .expect("read kept context")
}

/// A log row written earlier (lower `logID`) but committed later must not overwrite a later
/// row's value: the fold orders by `logID`, not by commit.
#[tokio::test]
async fn an_earlier_row_committed_later_does_not_win() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let workflow = app.save(&a, &paused()).await;
    let instance_id: Uuid = app
        .execute(&a, &workflow, json!({"n": 1}))
        .await
        .parse()
        .expect("uuid");
    let pool = app.db.pool.clone();

    // The slow statement takes its first logID, then sleeps before its second row and its
    // statement-level trigger; meanwhile a later row for the same key commits.
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move {
            sqlx::query(
                r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "payload")
                   SELECT $1, 'SYSTEM_SET', v.p
                   FROM (VALUES (1, '{"k": "early"}'::jsonb), (2, '{"other": true}'::jsonb)) AS v(n, p)
                   WHERE v.n = 1 OR pg_sleep(1.5) IS NOT NULL"#,
            )
            .bind(instance_id)
            .execute(&pool)
            .await
            .expect("slow insert");
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query(
        r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "payload")
           VALUES ($1, 'SYSTEM_SET', '{"k": "late"}')"#,
    )
    .bind(instance_id)
    .execute(&pool)
    .await
    .expect("fast insert");
    slow.await.expect("slow statement");

    let ids: Vec<(i64, Value)> = sqlx::query_as(
        r#"SELECT "logID", "payload" FROM "tblWorkflowInstanceLogs"
           WHERE "instanceID" = $1 AND "eventType" = 'SYSTEM_SET' AND "payload" ? 'k' ORDER BY "logID""#,
    )
    .bind(instance_id)
    .fetch_all(&pool)
    .await
    .expect("log");
    assert_eq!(
        ids.iter().map(|r| r.1["k"].clone()).collect::<Vec<_>>(),
        [json!("early"), json!("late")],
        "the early row has the lower logID although it committed last"
    );
    assert_eq!(
        kept(&pool, instance_id, "k").await,
        Some((json!("late"), ids[1].0))
    );
    assert_eq!(
        kept(&pool, instance_id, "other").await.map(|k| k.0),
        Some(json!(true))
    );
    let context = instance::load_context(&pool, instance_id)
        .await
        .expect("context");
    assert_eq!(context["k"], json!("late"));
    assert_eq!(context["input"], json!({"n": 1}));
    assert!(context_drift(&pool).await.is_empty());
}

/// Instances that ran before the kept context existed get it folded from their logs by the
/// migration that creates it.
#[tokio::test]
async fn the_migration_folds_the_logs_of_earlier_instances() {
    let db = TestDb::empty().await;
    let before = Migrator {
        migrations: Cow::Owned(
            jet_shared::db::MIGRATOR
                .iter()
                .filter(|m| m.version < KEPT_CONTEXT_MIGRATION)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    apalis_postgres::PostgresStorage::<()>::setup(&db.pool)
        .await
        .expect("apalis schema");
    before.run(&db.pool).await.expect("migrate to just before");
    let (tenant, instance_id) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(r#"INSERT INTO "tblTenants" ("tenantID", "tenantTitle") VALUES ($1, 'old')"#)
        .bind(tenant)
        .execute(&db.pool)
        .await
        .expect("tenant");
    sqlx::query(
        r#"INSERT INTO "tblWorkflowInstances" ("instanceID", "tenantID", "status", "isTest")
           VALUES ($1, $2, 'COMPLETED', true)"#,
    )
    .bind(instance_id)
    .bind(tenant)
    .execute(&db.pool)
    .await
    .expect("instance");
    for (event, payload) in [
        ("INPUT_SET", json!({"input": {"a": 1}})),
        (
            "NODE_COMPLETED",
            json!({"x": 1, "__node_n1": {"status": "success"}}),
        ),
        ("NODE_DISPATCHED", json!({"x": "not context"})),
        ("NODE_COMPLETED", json!({"x": 2})),
        ("SYSTEM_SET", json!({"__error": null})),
    ] {
        sqlx::query(
            r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "payload") VALUES ($1, $2, $3)"#,
        )
        .bind(instance_id)
        .bind(event)
        .bind(payload)
        .execute(&db.pool)
        .await
        .expect("log row");
    }

    jet_shared::db::migrate(&db.pool)
        .await
        .expect("migrate the rest");
    let context = instance::load_context(&db.pool, instance_id)
        .await
        .expect("context");
    assert_eq!(
        context,
        json!({"input": {"a": 1}, "x": 2, "__node_n1": {"status": "success"}, "__error": null})
    );
    assert!(context_drift(&db.pool).await.is_empty());
}
