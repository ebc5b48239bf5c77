//! The scheduler's units of work against a real database, driven directly so each step is
//! deterministic: one fire per due time, overlap policies, missed runs, timeouts, retries then
//! DLQ, and history rows that follow their instance to its end.

use chrono::{DateTime, Utc};
use jet_shared::cron::schedule::MISFIRE_GRACE;
use jet_shared::cron::scheduler::{self, Round};
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::Flow;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// A job on a yearly schedule (it never comes due by itself during a test) with `extra`
/// fields; returns its id.
async fn job(app: &TestApp, a: &Admin, extra: Value) -> Uuid {
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "end",
            "end",
            json!({"outputParameters": [{"name": "done", "sourceVariable": "yes"}]}),
        )
        .edge("start", "end");
    let wf = app.save(a, &flow).await;
    let mut body = json!({"cronJobTitle": "t", "cronJobSchedule": "0 0 1 1 *", "workflowID": wf});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let resp = app
        .post(
            &format!("/api/v1/tenants/{}/cronjobs", a.tenant_id),
            &a.auth,
            body,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.str("cronJobID").parse().expect("uuid")
}

/// Makes the job due at `at` (seconds relative to the database's now, truncated to a second).
async fn due_at(pool: &PgPool, job: Uuid, seconds: i64) -> DateTime<Utc> {
    sqlx::query_scalar(
        r#"UPDATE "tblCronJobs" SET "nextRunAt" = date_trunc('second', now()) + make_interval(secs => $2)
           WHERE "cronJobID" = $1 RETURNING "nextRunAt""#,
    )
    .bind(job)
    .bind(seconds as f64)
    .fetch_one(pool)
    .await
    .expect("due")
}

async fn fire(pool: &PgPool) -> Round {
    scheduler::fire_due(pool, 64, MISFIRE_GRACE)
        .await
        .expect("fire_due")
}

/// `(status, triggerType, scheduledAt, instanceID)` of a job's fires, oldest due time first.
async fn history(pool: &PgPool, job: Uuid) -> Vec<(String, String, DateTime<Utc>, Option<Uuid>)> {
    sqlx::query_as(
        r#"SELECT "status", "triggerType", "scheduledAt", "instanceID" FROM "tblCronJobHistory"
           WHERE "cronJobID" = $1 ORDER BY "scheduledAt""#,
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .expect("history")
}

fn statuses(rows: &[(String, String, DateTime<Utc>, Option<Uuid>)]) -> Vec<&str> {
    rows.iter().map(|r| r.0.as_str()).collect()
}

async fn finish(pool: &PgPool, instance: Uuid, status: &str) {
    sqlx::query(r#"UPDATE "tblWorkflowInstances" SET "status" = $2, "completedAt" = now() WHERE "instanceID" = $1"#)
        .bind(instance)
        .bind(status)
        .execute(pool)
        .await
        .expect("finish");
}

#[tokio::test]
async fn a_due_time_fires_once_with_its_start_node_queued_and_next_run_advanced() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let id = job(&app, &a, json!({})).await;
    let due = due_at(&app.db.pool, id, -1).await;
    let round = fire(&app.db.pool).await;
    assert_eq!((round.claimed, round.started, round.per_job), (1, 1, 0));
    let rows = history(&app.db.pool, id).await;
    assert_eq!(rows.len(), 1);
    let (status, trigger, at, instance) = rows[0].clone();
    assert_eq!(
        (status.as_str(), trigger.as_str(), at),
        ("RUNNING", "SCHEDULED", due)
    );
    let instance = instance.expect("instance");
    let queued: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions" WHERE "instanceID" = $1"#)
            .bind(instance)
            .fetch_one(&app.db.pool)
            .await
            .expect("queued");
    assert_eq!(queued, 1, "the start node is queued with the instance");
    let (next, last): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        r#"SELECT "nextRunAt", "lastScheduledAt" FROM "tblCronJobs" WHERE "cronJobID" = $1"#,
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("job");
    assert_eq!(last, due);
    assert_eq!(next.format("%m-%d %H:%M:%S").to_string(), "01-01 00:00:00");
    assert!(next > due);
    assert_eq!(
        fire(&app.db.pool).await.claimed,
        0,
        "nothing is due any more"
    );

    // The unique key refuses a second row for the same due time outright.
    let dup = sqlx::query(
        r#"INSERT INTO "tblCronJobHistory" ("cronJobID", "status", "scheduledAt") VALUES ($1, 'RUNNING', $2)"#,
    )
    .bind(id)
    .bind(due)
    .execute(&app.db.pool)
    .await
    .expect_err("duplicate");
    let db = dup.as_database_error().expect("database error");
    assert_eq!(
        db.constraint(),
        Some("uq_tblCronJobHistory_cronJobID_scheduledAt")
    );

    // The history row follows the instance to its end.
    finish(&app.db.pool, instance, "COMPLETED").await;
    let (status, end, result): (String, Option<DateTime<Utc>>, String) = sqlx::query_as(
        r#"SELECT "status", "endTime", "result" FROM "tblCronJobHistory" WHERE "instanceID" = $1"#,
    )
    .bind(instance)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert_eq!(status, "SUCCESS");
    assert!(end.is_some());
    let result: Value = serde_json::from_str(&result).expect("json");
    assert_eq!(result["instanceID"], json!(instance));
}

#[tokio::test]
async fn overlap_policies_allow_skip_and_buffer_one() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let pool = &app.db.pool;
    let allow = job(&app, &a, json!({})).await;
    let skip = job(&app, &a, json!({"overlapPolicy": "skip"})).await;
    let buffer = job(&app, &a, json!({"overlapPolicy": "buffer_one"})).await;
    // No node workers run here, so every instance stays RUNNING until the test ends it.
    for offset in [-3, -2, -1] {
        for id in [allow, skip, buffer] {
            due_at(pool, id, offset).await;
        }
        fire(pool).await;
    }
    assert_eq!(
        statuses(&history(pool, allow).await),
        ["RUNNING", "RUNNING", "RUNNING"]
    );
    assert_eq!(
        statuses(&history(pool, skip).await),
        ["RUNNING", "SKIPPED", "SKIPPED"]
    );
    assert_eq!(
        statuses(&history(pool, buffer).await),
        ["RUNNING", "QUEUED", "SKIPPED"]
    );

    // Nothing starts the buffered fire while the first run is still running…
    assert_eq!(
        scheduler::start_waiting(pool, 64)
            .await
            .expect("start")
            .started,
        0
    );
    // …and it starts once that run ends.
    let first = history(pool, buffer).await[0].3.expect("instance");
    finish(pool, first, "FAILED").await;
    assert_eq!(
        scheduler::start_waiting(pool, 64)
            .await
            .expect("start")
            .started,
        1
    );
    let rows = history(pool, buffer).await;
    assert_eq!(statuses(&rows), ["FAILURE", "RUNNING", "SKIPPED"]);
    assert!(rows[1].3.is_some() && rows[1].3 != Some(first));

    // A manual run honours the policy too.
    let run = app
        .post(
            &format!("/api/v1/tenants/{}/cronjobs/{skip}/run", a.tenant_id),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(
        (run.status, run.body["status"].clone()),
        (202, json!("SKIPPED")),
        "{}",
        run.body
    );
}

#[tokio::test]
async fn missed_times_are_skipped_in_one_row_or_caught_up_to_the_cap() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let pool = &app.db.pool;
    let every_second = json!({"cronJobSchedule": "* * * * * *"});
    let skip = job(&app, &a, every_second.clone()).await;
    let mut catch = every_second.clone();
    catch["catchupPolicy"] = json!("catch_up");
    catch["maxCatchupRuns"] = json!(3);
    let catch_up = job(&app, &a, catch).await;
    // Both were last due 60 s ago: as if no scheduler had run for a minute.
    let since = due_at(pool, skip, -60).await;
    due_at(pool, catch_up, -60).await;
    let before: DateTime<Utc> = sqlx::query_scalar("SELECT date_trunc('second', now())")
        .fetch_one(pool)
        .await
        .expect("now");
    fire(pool).await;

    for (id, catchups) in [(skip, 0usize), (catch_up, 3)] {
        let rows = history(pool, id).await;
        let skipped: Vec<_> = rows.iter().filter(|r| r.0 == "SKIPPED").collect();
        assert_eq!(skipped.len(), 1, "one row for the missed times: {rows:?}");
        let result: String = sqlx::query_scalar(
            r#"SELECT "result" FROM "tblCronJobHistory" WHERE "cronJobID" = $1 AND "status" = 'SKIPPED'"#,
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("result");
        let result: Value = serde_json::from_str(&result).expect("json");
        let from = skipped[0].2;
        let to: DateTime<Utc> = serde_json::from_value(result["to"].clone()).expect("to");
        assert_eq!(from, since);
        assert_eq!(result["missed"], json!((to - from).num_seconds() + 1));
        let catchup: Vec<_> = rows.iter().filter(|r| r.1 == "CATCHUP").collect();
        assert_eq!(catchup.len(), catchups);
        // Every second from the outage's start to now is accounted for exactly once: in the
        // skipped range, or fired (late as CATCHUP, or on time within the grace).
        let last: DateTime<Utc> = sqlx::query_scalar(
            r#"SELECT "lastScheduledAt" FROM "tblCronJobs" WHERE "cronJobID" = $1"#,
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("last");
        assert!(last >= before, "handled every time due up to the fire");
        let fired: Vec<DateTime<Utc>> = rows
            .iter()
            .filter(|r| r.0 != "SKIPPED")
            .map(|r| r.2)
            .collect();
        let mut expected = Vec::new();
        let mut t = to + chrono::Duration::seconds(1);
        while t <= last {
            expected.push(t);
            t += chrono::Duration::seconds(1);
        }
        assert_eq!(fired, expected, "{id}");
        assert!(
            to < before - chrono::Duration::from_std(MISFIRE_GRACE).expect("grace")
                + chrono::Duration::seconds(1)
        );
    }
}

#[tokio::test]
async fn a_run_past_its_timeout_is_cancelled_and_says_timeout() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let pool = &app.db.pool;
    let id = job(&app, &a, json!({"timeoutSeconds": 60})).await;
    due_at(pool, id, -1).await;
    fire(pool).await;
    assert_eq!(
        scheduler::time_out(pool, 64).await.expect("timeout"),
        0,
        "not yet"
    );
    // The run started two minutes ago, as far as its row is concerned.
    sqlx::query(r#"UPDATE "tblCronJobHistory" SET "startTime" = now() - interval '2 minutes' WHERE "cronJobID" = $1"#)
        .bind(id)
        .execute(pool)
        .await
        .expect("age");
    assert_eq!(scheduler::time_out(pool, 64).await.expect("timeout"), 1);
    let rows = history(pool, id).await;
    assert_eq!(statuses(&rows), ["TIMEOUT"]);
    let status: String = sqlx::query_scalar(
        r#"SELECT "status" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
    )
    .bind(rows[0].3.expect("instance"))
    .fetch_one(pool)
    .await
    .expect("instance");
    assert_eq!(status, "CANCELLED");
}

#[tokio::test]
async fn a_fire_that_cannot_start_is_retried_then_failed_into_the_dlq() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let pool = &app.db.pool;
    let id = job(
        &app,
        &a,
        json!({"retryAttempts": 1, "retryDelaySeconds": 0}),
    )
    .await;
    sqlx::query(r#"UPDATE "tblWorkflows" SET "isDisabled" = true"#)
        .execute(pool)
        .await
        .expect("disable");
    due_at(pool, id, -1).await;
    assert_eq!(fire(pool).await.failed, 1);
    assert_eq!(statuses(&history(pool, id).await), ["RETRYING"]);
    let dlq: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblEventDLQ""#)
        .fetch_one(pool)
        .await
        .expect("dlq");
    assert_eq!(dlq, 0, "not parked while a retry is left");
    scheduler::start_waiting(pool, 64).await.expect("retry");
    let (status, attempt, result): (String, i32, String) = sqlx::query_as(
        r#"SELECT "status", "attempt", "result" FROM "tblCronJobHistory" WHERE "cronJobID" = $1"#,
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("row");
    assert_eq!((status.as_str(), attempt), ("FAILURE", 2));
    assert!(result.contains("disabled"), "{result}");
    let (source, source_id, payload, error): (String, Uuid, Value, String) =
        sqlx::query_as(r#"SELECT "source", "sourceID", "payload", "error" FROM "tblEventDLQ""#)
            .fetch_one(pool)
            .await
            .expect("one DLQ row");
    assert_eq!((source.as_str(), source_id), ("cron", id));
    assert_eq!(payload["cronJobID"], json!(id));
    assert!(error.contains("disabled"));

    // Once the workflow is enabled again, fires start.
    sqlx::query(r#"UPDATE "tblWorkflows" SET "isDisabled" = false"#)
        .execute(pool)
        .await
        .expect("enable");
    due_at(pool, id, 0).await;
    assert_eq!(fire(pool).await.started, 1);
}

#[tokio::test]
async fn the_cron_role_runs_jobs_to_success_and_stops_firing_a_disabled_job() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let jobs = format!("/api/v1/tenants/{}/cronjobs", a.tenant_id);
    let id = job(&app, &a, json!({"cronJobSchedule": "* * * * * *"})).await;
    let witness = job(&app, &a, json!({"cronJobSchedule": "* * * * * *"})).await;
    let workers = app.start_workers("cron-test");
    let pool = &app.db.pool;
    let succeeded = || async {
        sqlx::query_as::<_, (String,)>(
            r#"SELECT "result" FROM "tblCronJobHistory" WHERE "cronJobID" = $1 AND "status" = 'SUCCESS' LIMIT 1"#,
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("history")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let result = loop {
        if let Some((r,)) = succeeded().await {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no successful fire");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let result: Value = serde_json::from_str(&result).expect("json");
    assert_eq!(result["output"]["done"], "yes", "{result}");

    let off = app
        .patch(
            &format!("{jobs}/{id}"),
            &a.auth,
            json!({"isDisabled": true}),
        )
        .await;
    assert_eq!(off.status, 200);
    let disabled_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .expect("now");
    // The witness keeps firing: once it has fired twice more, the scheduler has surely run
    // past the disabled job's next second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let later: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblCronJobHistory" WHERE "cronJobID" = $1 AND "scheduledAt" > $2"#,
        )
        .bind(witness)
        .bind(disabled_at)
        .fetch_one(pool)
        .await
        .expect("witness");
        if later >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the witness stopped firing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblCronJobHistory" WHERE "cronJobID" = $1 AND "scheduledAt" > $2"#,
    )
    .bind(id)
    .bind(disabled_at)
    .fetch_one(pool)
    .await
    .expect("after");
    assert_eq!(after, 0, "a disabled job does not fire");
    workers.stop().await;
}

#[tokio::test]
async fn an_edit_wakes_a_sleeping_scheduler_without_a_restart() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let pool = &app.db.pool;
    let workers = app.start_workers("cron-wake");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>(r#"SELECT count(*) FROM "tblCronSchedulers""#)
        .fetch_one(pool)
        .await
        .expect("replicas")
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing is due for a year: the scheduler sleeps its longest (10 s, beyond the 5 s
    // grace). Only the NOTIFY of the edit can make it fire the new schedule on time.
    let id = job(&app, &a, json!({})).await;
    let edited = app
        .patch(
            &format!("/api/v1/tenants/{}/cronjobs/{id}", a.tenant_id),
            &a.auth,
            json!({"cronJobSchedule": "* * * * * *"}),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while history(pool, id).await.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the edited job never fired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rows = history(pool, id).await;
    assert!(
        rows.iter().all(|r| r.1 == "SCHEDULED" && r.0 != "SKIPPED"),
        "fired on time, nothing missed: {rows:?}"
    );
    workers.stop().await;
}

#[tokio::test]
async fn one_batch_fires_plain_jobs_together_and_the_rest_job_by_job() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    let pool = &app.db.pool;
    let every_second = json!({"cronJobSchedule": "* * * * * *", "catchupPolicy": "catch_up",
        "maxCatchupRuns": 3, "workflowConfig": {"inputValues": {"who": "cron"}}});
    // Plain: `allow` with missed, caught-up and on-time fires, all started set-based.
    let allow = job(&app, &a, every_second.clone()).await;
    // Not plain: `skip` with several fires at once; the first runs, the others are skipped.
    let mut skip = every_second.clone();
    skip["overlapPolicy"] = json!("skip");
    let skip = job(&app, &a, skip).await;
    // Cannot start (its workflow is disabled): retried by the per-job path.
    let broken = job(
        &app,
        &a,
        json!({"retryAttempts": 1, "retryDelaySeconds": 60}),
    )
    .await;
    // Its due time has a row already: nothing is started for it.
    let already = job(&app, &a, json!({})).await;
    sqlx::query(
        r#"UPDATE "tblWorkflows" SET "isDisabled" = true
           WHERE "workflowID" = (SELECT "workflowID" FROM "tblCronJobs" WHERE "cronJobID" = $1)"#,
    )
    .bind(broken)
    .execute(pool)
    .await
    .expect("disable");
    due_at(pool, allow, -20).await;
    due_at(pool, skip, -3).await;
    due_at(pool, broken, -1).await;
    let taken = due_at(pool, already, -1).await;
    sqlx::query(
        r#"INSERT INTO "tblCronJobHistory" ("cronJobID", "status", "triggerType", "scheduledAt") VALUES ($1, 'SUCCESS', 'MANUAL', $2)"#,
    )
    .bind(already)
    .bind(taken)
    .execute(pool)
    .await
    .expect("a row for the due time");

    let round = fire(pool).await;
    assert_eq!((round.claimed, round.failed), (4, 1), "{round:?}");
    assert_eq!(round.per_job, 2, "skip and broken only: {round:?}");

    let rows = history(pool, allow).await;
    assert_eq!(
        statuses(&rows[..1]),
        ["SKIPPED"],
        "the missed times: {rows:?}"
    );
    let fires = &rows[1..];
    assert_eq!(
        fires.iter().filter(|r| r.1 == "CATCHUP").count(),
        3,
        "{rows:?}"
    );
    assert!(fires.iter().all(|r| r.0 == "RUNNING" && r.3.is_some()));
    let instances: Vec<Uuid> = fires.iter().filter_map(|r| r.3).collect();
    // Each instance has the rows `instance::create` writes: INPUT_SET with the job's inputs,
    // then its start node dispatched and queued, on the workflow's current version.
    let shapes: Vec<(String, i32, Value, String, i64, bool)> = sqlx::query_as(
        r#"SELECT i."status", i."workflowVersion",
                  (SELECT l."payload" FROM "tblWorkflowInstanceLogs" l WHERE l."instanceID" = i."instanceID" ORDER BY l."logID" LIMIT 1),
                  (SELECT string_agg(l."eventType", ',' ORDER BY l."logID") FROM "tblWorkflowInstanceLogs" l WHERE l."instanceID" = i."instanceID"),
                  (SELECT count(*) FROM "tblNodeExecutions" e WHERE e."instanceID" = i."instanceID" AND e."nodeAttempt" = 1),
                  i."workflowVersion" = w."currentVersion" AND NOT i."isTest"
           FROM "tblWorkflowInstances" i JOIN "tblWorkflows" w ON w."workflowID" = i."workflowID"
           WHERE i."instanceID" = ANY($1)"#,
    )
    .bind(&instances)
    .fetch_all(pool)
    .await
    .expect("instances");
    assert_eq!(shapes.len(), fires.len());
    for (status, _, input, events, queued, current) in &shapes {
        assert_eq!(status, "RUNNING");
        assert_eq!(input, &json!({"input": {"who": "cron"}}));
        assert_eq!(events, "INPUT_SET,NODE_DISPATCHED");
        assert_eq!((*queued, *current), (1, true));
    }

    let rows = history(pool, skip).await;
    assert_eq!(statuses(&rows[..2]), ["RUNNING", "SKIPPED"], "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.0 == "SKIPPED"));
    assert_eq!(statuses(&history(pool, broken).await), ["RETRYING"]);
    let rows = history(pool, already).await;
    assert_eq!((rows.len(), rows[0].0.as_str()), (1, "SUCCESS"));
    let (total, started): (i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM "tblWorkflowInstances"),
                  (SELECT count(*) FROM "tblCronJobHistory" WHERE "instanceID" IS NOT NULL)"#,
    )
    .fetch_one(pool)
    .await
    .expect("instances");
    assert_eq!(total, started, "no instance without its fire");
    assert_eq!(round.started as i64, started);
    // Every job advanced past now, in the one UPDATE.
    let behind: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblCronJobs" WHERE "nextRunAt" <= now()"#)
            .fetch_one(pool)
            .await
            .expect("advanced");
    assert_eq!(behind, 0);
}
