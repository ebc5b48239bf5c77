//! The `jet_ops` views against a known state built in SQL, and `jet status --json` (a real
//! process) reading them.

use jet_tests::TestApp;
use jet_tests::bins;
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

async fn rows(pool: &PgPool, query: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(json_agg(v), '[]'::json) FROM ({query}) v"
    )))
    .fetch_one(pool)
    .await
    .expect("view")
    .as_array()
    .cloned()
    .expect("rows")
}

async fn running_instance(pool: &PgPool, tenant: jet_shared::ids::TenantId) -> Uuid {
    sqlx::query_scalar(
        r#"INSERT INTO "tblWorkflowInstances" ("tenantID", "status", "startedAt", "isTest")
           VALUES ($1, 'RUNNING', now(), true) RETURNING "instanceID""#,
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("instance")
}

/// Interval text (`00:01:00.5`, `1 day 02:00:00`) in seconds, for "at least" checks.
fn seconds(v: &Value) -> f64 {
    let text = v.as_str().unwrap_or_else(|| panic!("an interval, got {v}"));
    let (days, clock) = match text.split_once(" day") {
        Some((d, rest)) => (
            d.trim().parse::<f64>().expect("days"),
            rest.trim_start_matches('s').trim(),
        ),
        None => (0.0, text),
    };
    let parts: Vec<f64> = clock
        .split(':')
        .map(|p| p.parse().expect("clock"))
        .collect();
    days * 86400.0 + parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[tokio::test]
async fn each_view_reports_a_known_state() {
    let app = TestApp::spawn().await;
    // This test builds a stuck instance to see it in the view.
    app.db.allow_stuck_instances();
    let pool = &app.db.pool;
    let a = app.admin("ops").await;
    let tenant = a.tenant_id;

    // Node queue: 3 ready (the oldest a minute old), 2 delayed, 1 leased, 1 expired lease.
    let busy = running_instance(pool, tenant).await;
    sqlx::query(
        r#"INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt", "availableAt", "leaseOwner", "leaseExpiresAt")
           VALUES ($1, $2, 'r1', 1, now() - interval '1 minute', NULL, NULL),
                  ($1, $2, 'r2', 1, now() - interval '5 seconds', NULL, NULL),
                  ($1, $2, 'r3', 1, now(), NULL, NULL),
                  ($1, $2, 'd1', 1, now() + interval '1 hour', NULL, NULL),
                  ($1, $2, 'd2', 1, 'infinity', NULL, NULL),
                  ($1, $2, 'l1', 1, now(), 'w-live-nodes-0', now() + interval '1 minute'),
                  ($1, $2, 'l2', 1, now(), 'w-live-nodes-1', now() - interval '1 minute')"#,
    )
    .bind(busy)
    .bind(tenant)
    .execute(pool)
    .await
    .expect("executions");
    // A RUNNING instance with nothing to run and nothing to wait for: stuck.
    let stuck = running_instance(pool, tenant).await;

    // Workers: one live, one whose heartbeat stopped a minute ago, one stopped cleanly.
    sqlx::query(
        r#"INSERT INTO "tblWorkers" ("workerID", "host", "pid", "roles", "version", "heartbeatAt", "stoppedAt") VALUES
             ('w-live', 'h', 1, '{nodes,listeners}', 'test', now(), NULL),
             ('w-dead', 'h', 2, '{nodes}', 'test', now() - interval '1 minute', NULL),
             ('w-gone', 'h', 3, '{cron}', 'test', now(), now())"#,
    )
    .execute(pool)
    .await
    .expect("workers");
    sqlx::query(r#"INSERT INTO "tblCronSchedulers" ("workerID") VALUES ('w-live')"#)
        .execute(pool)
        .await
        .expect("scheduler");

    // A listener held by the live worker, with two pending events (one claimed) and one done.
    let ds: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblDatasources" ("datasourceTitle", "datasourceType", "tenantID", "datasourceOptions", "datasourceTags")
           VALUES ('d', 'postgresql', $1, '{}', '{}') RETURNING "datasourceID""#,
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("datasource");
    let listener: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblListeners" ("tenantID", "datasourceID", "listenerTitle", "listenerType", "listenerConfig", "status")
           VALUES ($1, $2, 'orders', 'postgresql', '{"mode": "cdc", "tables": ["t"]}', 'active') RETURNING "listenerID""#,
    )
    .bind(tenant)
    .bind(ds)
    .fetch_one(pool)
    .await
    .expect("listener");
    sqlx::query(
        r#"INSERT INTO "tblListenerHolds" ("listenerID", "workerID", "expiresAt", "connectedAt", "lagBytes", "retainedWalBytes")
           VALUES ($1, 'w-live', now() + interval '10 seconds', now(), 128, 4096)"#,
    )
    .bind(listener)
    .execute(pool)
    .await
    .expect("hold");
    sqlx::query(
        r#"INSERT INTO "tblListenerInbox" ("listenerID", "tenantID", "source", "rawEvent", "status", "attempts", "availableAt", "receivedAt") VALUES
             ($1, $2, 'cdc', '{}', 'pending', 0, now(), now() - interval '30 seconds'),
             ($1, $2, 'cdc', '{}', 'pending', 1, now() + interval '1 minute', now()),
             ($1, $2, 'cdc', '{}', 'pending', 2, now() - interval '1 second', now()),
             ($1, $2, 'cdc', '{}', 'done', 1, now(), now())"#,
    )
    .bind(listener)
    .bind(tenant)
    .execute(pool)
    .await
    .expect("inbox");

    // A command waiting 10 s in the apalis queue.
    sqlx::query(
        r#"INSERT INTO apalis.jobs (job, id, job_type, status, run_at)
           VALUES ('\x7b7d', 'job-1', 'jet-commands', 'Pending', now() - interval '10 seconds')"#,
    )
    .execute(pool)
    .await
    .expect("job");

    // A cron job due 5 s ago, whose last two fires lagged 100 ms and 300 ms.
    let job: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblCronJobs" ("cronJobTitle", "cronJobSchedule", "tenantID", "nextRunAt")
           VALUES ('nightly', '* * * * *', $1, now() - interval '5 seconds') RETURNING "cronJobID""#,
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("cron job");
    sqlx::query(
        r#"INSERT INTO "tblCronJobHistory" ("cronJobID", "status", "triggerType", "scheduledAt", "startTime") VALUES
             ($1, 'SUCCESS', 'SCHEDULED', date_trunc('second', now()) - interval '2 minutes', date_trunc('second', now()) - interval '2 minutes' + interval '100 milliseconds'),
             ($1, 'SUCCESS', 'SCHEDULED', date_trunc('second', now()) - interval '1 minute', date_trunc('second', now()) - interval '1 minute' + interval '300 milliseconds')"#,
    )
    .bind(job)
    .execute(pool)
    .await
    .expect("history");

    // An open transaction holding a snapshot.
    let mut holder = sqlx::PgConnection::connect(&app.db.url())
        .await
        .expect("connect");
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT count(*) FROM \"tblWorkers\"")
        .execute(&mut holder)
        .await
        .expect("snapshot");
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .expect("pid");

    let queues = rows(pool, "SELECT * FROM jet_ops.queue_depth ORDER BY queue").await;
    let nodes = queues
        .iter()
        .find(|q| q["queue"] == "nodes")
        .expect("nodes queue");
    assert_eq!(
        (
            &nodes["ready"],
            &nodes["delayed"],
            &nodes["leased"],
            &nodes["expired_leases"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!(1)),
        "{nodes}"
    );
    assert!(seconds(&nodes["oldest_ready_age"]) >= 60.0, "{nodes}");
    let events = queues
        .iter()
        .find(|q| q["queue"] == "listener_events")
        .expect("listener queue");
    assert_eq!(
        (
            &events["ready"],
            &events["leased"],
            &events["expired_leases"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{events}"
    );
    assert!(seconds(&events["oldest_ready_age"]) >= 30.0, "{events}");

    let workers = rows(pool, "SELECT * FROM jet_ops.workers ORDER BY worker_id").await;
    let by_id = |id: &str| {
        workers
            .iter()
            .find(|w| w["worker_id"] == id)
            .cloned()
            .expect("worker")
    };
    let live = by_id("w-live");
    assert_eq!(
        (
            &live["alive"],
            &live["node_leases"],
            &live["listeners_held"],
            &live["cron_scheduler"]
        ),
        (&json!(true), &json!(2), &json!(1), &json!(true)),
        "{live}"
    );
    assert_eq!(by_id("w-dead")["alive"], false);
    assert_eq!(by_id("w-gone")["alive"], false);

    let stuck_rows = rows(pool, "SELECT * FROM jet_ops.stuck_instances").await;
    assert_eq!(stuck_rows.len(), 1, "{stuck_rows:?}");
    assert_eq!(stuck_rows[0]["instance_id"], json!(stuck));

    let commands = rows(pool, "SELECT * FROM jet_ops.commands").await;
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(
        (
            &commands[0]["queue"],
            &commands[0]["status"],
            &commands[0]["jobs"]
        ),
        (&json!("jet-commands"), &json!("Pending"), &json!(1))
    );
    assert!(seconds(&commands[0]["oldest_age"]) >= 10.0);

    let cron = rows(pool, "SELECT * FROM jet_ops.cron").await;
    assert_eq!(cron.len(), 1);
    assert!(seconds(&cron[0]["overdue"]) >= 5.0, "{}", cron[0]);
    assert_eq!(cron[0]["fires_last_hour"], 2);
    assert!(
        (seconds(&cron[0]["lag_p50"]) - 0.2).abs() < 1e-6,
        "{}",
        cron[0]
    );

    let listeners = rows(pool, "SELECT * FROM jet_ops.listeners").await;
    assert_eq!(listeners.len(), 1);
    assert_eq!(
        (
            &listeners[0]["held_by"],
            &listeners[0]["mode"],
            &listeners[0]["pending_events"],
            &listeners[0]["lag_bytes"]
        ),
        (&json!("w-live"), &json!("cdc"), &json!(3), &json!(128)),
        "{}",
        listeners[0]
    );

    let health = rows(pool, "SELECT * FROM jet_ops.table_health").await;
    for table in [
        "public.tblNodeExecutions",
        "public.tblWorkflowInstanceContext",
        "public.tblListenerInbox",
        "apalis.jobs",
    ] {
        assert!(
            health.iter().any(|t| t["table_name"] == table),
            "{table} in {health:?}"
        );
    }
    let horizon = rows(pool, "SELECT * FROM jet_ops.xmin_horizon").await;
    assert!(
        horizon.iter().any(|h| h["holder"] == "transaction"
            && h["name"].as_str() == Some(holder_pid.to_string().as_str())),
        "the open snapshot is named: {horizon:?}"
    );

    // `jet status --json` reads the same views in a real process.
    let (ok, out) = bins::run(
        "jet",
        &["status", "--json"],
        &[("DATABASE_URL", &app.db.url())],
    );
    assert!(ok, "{out}");
    let status: Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap_or_default())
            .expect("json");
    assert_eq!(status["stuck_instances"][0]["instance_id"], json!(stuck));
    assert!(
        status["workers"].as_array().is_some_and(|w| w.len() == 3),
        "{status}"
    );
    let (ok, text) = bins::run("jet", &["status"], &[("DATABASE_URL", &app.db.url())]);
    assert!(
        ok && text.contains("w-live alive") && text.contains("w-dead DEAD"),
        "{text}"
    );
    drop(holder);
}
