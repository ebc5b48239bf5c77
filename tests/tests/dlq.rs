//! The event DLQ as a product: rows land with their tenant and history, retry automatically
//! with backoff and park; operators replay (once), discard, act in bulk; replicas never retry
//! one row twice; permissions and tenant isolation hold.

use apalis::prelude::TaskBuilder;
use jet_shared::ids::TenantId;
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::flow::Flow;
use jet_tests::wait::eventually;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn flow() -> Flow {
    Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end")
}

fn dlq(a: &Admin) -> String {
    format!("/api/v1/tenants/{}/dlq", a.tenant_id)
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `secs`.
async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A DLQ row inserted as a source would park it.
async fn park(
    app: &TestApp,
    tenant: Option<TenantId>,
    source: &str,
    payload: Value,
    status: &str,
) -> Uuid {
    sqlx::query_scalar(
        r#"INSERT INTO "tblEventDLQ" ("tenantID", "source", "payload", "error", "retryCount", "maxRetries", "status", "nextRetryAt")
           VALUES ($1, $2, $3, 'it failed', 0, 3, $4, CASE WHEN $4 = 'PENDING' THEN now() - interval '1 second' END)
           RETURNING "dlqID""#,
    )
    .bind(tenant)
    .bind(source)
    .bind(payload)
    .bind(status)
    .fetch_one(&app.db.pool)
    .await
    .expect("park")
}

async fn row(app: &TestApp, id: Uuid) -> (String, i32, Value, Option<f64>) {
    sqlx::query_as(
        r#"SELECT "status", "retryCount", "attempts",
                  EXTRACT(EPOCH FROM "nextRetryAt" - "updatedAt")::float8
           FROM "tblEventDLQ" WHERE "dlqID" = $1"#,
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_lands_with_its_tenant_retries_with_backoff_parks_and_replays_once_edited()
{
    let app = TestApp::with_workers().await;
    let a = app.admin("acme").await;
    let b = app.admin("other").await;
    let wf = app.save(&a, &flow()).await;
    let instance = app.execute(&a, &wf, json!({})).await;
    app.finished(&a, &instance, 20).await;
    let wf_b = app.save(&b, &flow()).await;
    let instance_b = app.execute(&b, &wf_b, json!({})).await;

    // A command the workers cannot decode, naming an instance of tenant a.
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let task = TaskBuilder::new(
        serde_json::to_vec(&json!({"type": "launch_rocket", "instanceID": instance}))
            .expect("json"),
    )
    .max_attempts(1)
    .build();
    apalis_postgres::queries::push_tasks(&mut *conn, jet_shared::commands::QUEUE, vec![task])
        .await
        .expect("push");
    drop(conn);
    let (id, tenant, source_id): (Uuid, Option<Uuid>, Option<Uuid>) =
        until(30, "the command in the DLQ", || async {
            sqlx::query_as(r#"SELECT "dlqID", "tenantID", "sourceID" FROM "tblEventDLQ""#)
                .fetch_optional(&app.db.pool)
                .await
                .expect("dlq")
        })
        .await;
    assert_eq!(
        tenant,
        Some(a.tenant_id.0),
        "the tenant comes from the instance"
    );
    assert_eq!(source_id.map(|u| u.to_string()), Some(instance.clone()));
    let (status, count, attempts, backoff) = row(&app, id).await;
    assert_eq!((status.as_str(), count), ("PENDING", 0));
    assert_eq!(attempts.as_array().expect("array").len(), 1, "{attempts}");
    assert!(
        backoff.expect("backoff") >= 22.0,
        "first retry in ~30 s: {backoff:?}"
    );

    // Each retry made due by hand runs again (the maintenance role picks it up), fails again,
    // and backs off longer, until maxRetries parks it.
    let mut backoffs = Vec::new();
    for expected in 1..=3 {
        sqlx::query(r#"UPDATE "tblEventDLQ" SET "nextRetryAt" = now() WHERE "dlqID" = $1"#)
            .bind(id)
            .execute(&app.db.pool)
            .await
            .expect("due");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (status, _, _, backoff) = loop {
            let r = row(&app, id).await;
            if r.1 == expected {
                break r;
            }
            if Instant::now() >= deadline {
                let jobs: Vec<(String, String, i32, i32, Option<Value>)> = sqlx::query_as(
                    "SELECT id, status, attempts, max_attempts, last_result FROM apalis.jobs",
                )
                .fetch_all(&app.db.pool)
                .await
                .expect("jobs");
                panic!("retry {expected} never failed again: row {r:?}, jobs {jobs:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        backoffs.push(backoff);
        if expected < 3 {
            assert_eq!(status, "PENDING");
        } else {
            assert_eq!(status, "PARKED", "retries ran out");
        }
    }
    assert!(
        backoffs[0].expect("backoff") >= 45.0,
        "second retry ~60 s: {backoffs:?}"
    );
    assert!(
        backoffs[1].expect("backoff") >= 90.0,
        "third retry ~120 s: {backoffs:?}"
    );
    assert_eq!(backoffs[2], None, "a parked row is not retried");
    let got = app.get(&format!("{}/{id}", dlq(&a)), &a.auth).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["status"], "PARKED");
    assert_eq!(got.body["retryCount"], 3);
    let attempts = got.body["attempts"].as_array().expect("array");
    assert_eq!(
        attempts.len(),
        7,
        "landing + 3 × (pushed, failed): {attempts:?}"
    );
    assert_eq!(attempts[6]["by"], "command");
    // Typed `DlqAttempt`s: each says when and who, and carries no null members.
    for attempt in attempts {
        let fields = attempt.as_object().expect("an object");
        assert!(
            fields["at"].is_string() && fields["by"].is_string(),
            "{attempt}"
        );
        assert!(fields.values().all(|v| !v.is_null()), "{attempt}");
    }
    assert!(attempts[0].get("outcome").is_none(), "the landing entry");
    assert_eq!(attempts[6]["outcome"], "failed");
    assert_eq!(attempts[5]["by"], "maintenance");

    // An edited payload naming tenant b's instance is refused; nothing is written.
    let foreign = app
        .post(
            &format!("{}/{id}/replay", dlq(&a)),
            &a.auth,
            json!({"payload": {"command": {"type": "cancel_instance", "instanceID": instance_b}}}),
        )
        .await;
    assert_eq!(foreign.status, 422, "{}", foreign.body);
    // Fixed: the command becomes one the workers know. It runs once and the row is REPLAYED.
    let fixed = json!({"command": {"type": "cancel_instance", "instanceID": instance}});
    let dry = app
        .post(
            &format!("{}/{id}/replay", dlq(&a)),
            &a.auth,
            json!({"payload": fixed, "dryRun": true}),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["plan"]["action"], "push_command");
    assert_eq!(
        dry.body["plan"]["command"], fixed["command"],
        "{}",
        dry.body
    );
    assert!(dry.body["plan"]["maxAttempts"].is_u64(), "{}", dry.body);
    assert_eq!(row(&app, id).await.0, "PARKED", "a dry run writes nothing");
    let replay = app
        .post(
            &format!("{}/{id}/replay", dlq(&a)),
            &a.auth,
            json!({"payload": fixed}),
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["status"], "RETRYING");
    until(30, "the replayed command to run", || async {
        (row(&app, id).await.0 == "REPLAYED").then_some(())
    })
    .await;
    let got = app.get(&format!("{}/{id}", dlq(&a)), &a.auth).await;
    assert_eq!(
        got.body["originalPayload"]["command"]["type"],
        "launch_rocket"
    );
    assert_eq!(got.body["payload"]["command"]["type"], "cancel_instance");
    assert_eq!(
        got.body["attempts"]
            .as_array()
            .expect("array")
            .last()
            .expect("last")["outcome"],
        "succeeded"
    );
    let again = app
        .post(&format!("{}/{id}/replay", dlq(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.code(), "dlq_not_replayable");
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE convert_from(job, 'UTF8') LIKE '%cancel_instance%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("jobs");
    assert_eq!(jobs, 1, "the fixed command ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_replay_that_fails_again_comes_back_with_history_then_runs_once_when_fixed() {
    let app = TestApp::spawn().await;
    let a = app.admin("acme").await;
    let wf = app.save(&a, &flow()).await;
    let job = app
        .post(
            &format!("/api/v1/tenants/{}/cronjobs", a.tenant_id),
            &a.auth,
            json!({"cronJobTitle": "nightly", "cronJobSchedule": "0 12 * * *", "timezone": "UTC",
                   "workflowID": wf, "retryAttempts": 0}),
        )
        .await;
    assert_eq!(job.status, 201, "{}", job.body);
    let job_id = job.str("cronJobID");
    let set_disabled = |disabled: bool| {
        let pool = app.db.pool.clone();
        let wf = wf.clone();
        async move {
            sqlx::query(
                r#"UPDATE "tblWorkflows" SET "isDisabled" = $2 WHERE "workflowID" = $1::uuid"#,
            )
            .bind(wf)
            .bind(disabled)
            .execute(&pool)
            .await
            .expect("toggle workflow");
        }
    };
    set_disabled(true).await;
    let run = app
        .post(
            &format!("/api/v1/tenants/{}/cronjobs/{job_id}/run", a.tenant_id),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.body);
    assert_eq!(run.body["status"], "FAILURE");
    let list = app.get(&format!("{}?source=cron", dlq(&a)), &a.auth).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["totalCount"], 1);
    let id = list.body["items"][0]["dlqID"]
        .as_str()
        .expect("string")
        .to_owned();
    assert_eq!(list.body["items"][0]["status"], "PARKED");
    assert_eq!(list.body["items"][0]["sourceID"], job_id.as_str());
    assert_eq!(
        list.body["items"][0]["attempts"]
            .as_array()
            .expect("array")
            .len(),
        1
    );

    // Replayed while the cause remains: it comes back, PARKED, one more attempt and count.
    let failed = app
        .post(&format!("{}/{id}/replay", dlq(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.body["status"], "PARKED");
    assert_eq!(failed.body["attempt"]["error"], "the workflow is disabled");
    let got = app.get(&format!("{}/{id}", dlq(&a)), &a.auth).await;
    assert_eq!(got.body["retryCount"], 1);
    assert_eq!(got.body["attempts"].as_array().expect("array").len(), 2);
    let summary: (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT rows, oldest_parked_at FROM jet_ops.dlq_summary WHERE tenant_id = $1 AND source = 'cron' AND status = 'PARKED'",
    )
    .bind(a.tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("summary view");
    assert_eq!(summary.0, 1);
    assert!(summary.1.is_some());

    // Fixed: the replay starts the workflow once.
    set_disabled(false).await;
    let instances = || async {
        sqlx::query_scalar::<_, i64>(
            r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "workflowID" = $1::uuid"#,
        )
        .bind(&wf)
        .fetch_one(&app.db.pool)
        .await
        .expect("instances")
    };
    assert_eq!(instances().await, 0);
    let ok = app
        .post(&format!("{}/{id}/replay", dlq(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["status"], "REPLAYED");
    assert!(ok.body["attempt"]["instanceID"].is_string(), "{}", ok.body);
    let again = app
        .post(&format!("{}/{id}/replay", dlq(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(instances().await, 1, "the fire ran exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_retry_passes_never_claim_the_same_row() {
    let app = TestApp::spawn().await;
    let a = app.admin("acme").await;
    let mut ids = HashSet::new();
    // One without a tenant (bytes that are not even JSON): re-run all the same.
    ids.insert(
        park(
            &app,
            None,
            "command",
            json!({"maxAttempts": 1, "command": {"raw": hex::encode(b"\xff not json")}}),
            "PENDING",
        )
        .await,
    );
    for _ in 0..39 {
        ids.insert(
            park(
                &app,
                Some(a.tenant_id),
                "command",
                json!({"maxAttempts": 1, "command": {"type": "launch_rocket"}}),
                "PENDING",
            )
            .await,
        );
    }
    let data = data_runtime();
    let (one, two) = tokio::join!(
        jet_shared::dlq::retry_due(rerun(&app.db.pool, &data), 100, "replica-1"),
        jet_shared::dlq::retry_due(rerun(&app.db.pool, &data), 100, "replica-2"),
    );
    let (one, two) = (one.expect("pass 1"), two.expect("pass 2"));
    let claimed: Vec<Uuid> = one.claimed.iter().chain(&two.claimed).copied().collect();
    assert_eq!(
        claimed.len(),
        40,
        "every due row claimed once: {one:?} {two:?}"
    );
    assert_eq!(claimed.iter().copied().collect::<HashSet<_>>(), ids);
    let pushed: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.db.pool)
        .await
        .expect("jobs");
    assert_eq!(pushed, 40, "one re-run per row");
    let raw: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job = $1")
        .bind(b"\xff not json".to_vec())
        .fetch_one(&app.db.pool)
        .await
        .expect("raw job");
    assert_eq!(raw, 1, "undecodable bytes are pushed again as they were");
    let retrying: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblEventDLQ" WHERE "status" = 'RETRYING' AND jsonb_array_length("attempts") = 2"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("rows");
    assert_eq!(retrying, 40);
    let third = jet_shared::dlq::retry_due(rerun(&app.db.pool, &data), 100, "replica-3")
        .await
        .expect("pass 3");
    assert!(third.claimed.is_empty(), "in-flight rows are not due");
}

#[tokio::test]
async fn permissions_tenant_isolation_and_bad_input() {
    let app = TestApp::spawn().await;
    let a = app.admin("acme").await;
    let b = app.admin("other").await;
    let id = park(&app, Some(a.tenant_id), "cron", json!({}), "PARKED").await;
    let orphan = park(&app, None, "command", json!({}), "PARKED").await;

    // Another tenant's row is 404, through that tenant's own path.
    let foreign = app.get(&format!("{}/{id}", dlq(&b)), &b.auth).await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    for action in ["replay", "discard"] {
        let r = app
            .post(&format!("{}/{id}/{action}", dlq(&b)), &b.auth, json!({}))
            .await;
        assert_eq!(r.status, 404, "{action}: {}", r.body);
    }
    assert_eq!(app.get(&dlq(&b), &b.auth).await.body["totalCount"], 0);
    // A row without a tenant is reachable from no tenant.
    let list = app.get(&dlq(&a), &a.auth).await;
    assert_eq!(list.body["totalCount"], 1);
    assert_eq!(
        app.get(&format!("{}/{orphan}", dlq(&a)), &a.auth)
            .await
            .status,
        404
    );

    // A key that may only list.
    let role = app.role(&a, "dlq-viewer", &["tenant:dlq:list"]).await;
    let (_, key) = app.key_with_roles(&a, "viewer", &[role.as_str()]).await;
    assert_eq!(app.get(&dlq(&a), &key).await.status, 200);
    let read = app.get(&format!("{}/{id}", dlq(&a)), &key).await;
    assert_eq!(read.status, 403);
    assert_eq!(read.code(), "permission_denied");
    for path in [
        format!("{}/{id}/replay", dlq(&a)),
        format!("{}/{id}/discard", dlq(&a)),
        format!("{}/replay", dlq(&a)),
        format!("{}/discard", dlq(&a)),
    ] {
        assert_eq!(app.post(&path, &key, json!({})).await.status, 403, "{path}");
    }
    assert_eq!(row(&app, id).await.0, "PARKED", "nothing changed");

    // Wrong types, unknown enumerations, huge and NUL values are 4xx.
    for filter in ["status=LOST", "source=email"] {
        let refused = app.get(&format!("{}?{filter}", dlq(&a)), &a.auth).await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, "invalid_parameter"),
            "{filter}"
        );
    }
    assert_eq!(
        app.get(&format!("{}?sourceID=nope", dlq(&a)), &a.auth)
            .await
            .status,
        400
    );
    assert_eq!(
        app.get(&format!("{}?error={}", dlq(&a), "x".repeat(600)), &a.auth)
            .await
            .status,
        400
    );
    assert_eq!(
        app.get(&format!("{}?error=a%00b", dlq(&a)), &a.auth)
            .await
            .status,
        400
    );
    assert_eq!(
        app.get(&format!("{}/not-a-uuid", dlq(&a)), &a.auth)
            .await
            .status,
        400
    );
    let wrong = app
        .post(
            &format!("{}/{id}/replay", dlq(&a)),
            &a.auth,
            json!({"dryRun": "yes"}),
        )
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    let nul = app
        .post(
            &format!("{}/{id}/replay", dlq(&a)),
            &a.auth,
            json!({"payload": {"workflowID": "a\u{0}b"}}),
        )
        .await;
    assert_eq!(nul.status, 400, "{}", nul.body);
    let rate = app
        .post(
            &format!("{}/replay", dlq(&a)),
            &a.auth,
            json!({"perSecond": 0}),
        )
        .await;
    assert_eq!(rate.status, 400, "{}", rate.body);
    let bad_payload = app
        .post(
            &format!("{}/{id}/replay", dlq(&a)),
            &a.auth,
            json!({"payload": {"workflowID": 7}}),
        )
        .await;
    assert_eq!(bad_payload.status, 422, "{}", bad_payload.body);
    let webhook = park(&app, Some(a.tenant_id), "webhook", json!({}), "PARKED").await;
    let not_yet = app
        .post(&format!("{}/{webhook}/replay", dlq(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(not_yet.status, 409, "{}", not_yet.body);
    assert_eq!(not_yet.code(), "dlq_source_not_replayable");

    // The admin discards: kept with who and when; a second discard is a 409.
    let discarded = app
        .post(
            &format!("{}/{id}/discard", dlq(&a)),
            &a.auth,
            json!({"reason": "the job was deleted"}),
        )
        .await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    let last = discarded.body["attempts"]
        .as_array()
        .expect("array")
        .last()
        .expect("last")
        .clone();
    assert_eq!(last["reason"], "the job was deleted", "{last}");
    assert_eq!(discarded.body["status"], "DISCARDED");
    assert_eq!(
        discarded.body["discardedBy"],
        format!("apikey:{}", a.raw.api_key_id.0)
    );
    assert!(discarded.body["discardedAt"].is_string());
    let twice = app
        .post(&format!("{}/{id}/discard", dlq(&a)), &a.auth, json!({}))
        .await;
    assert_eq!(twice.status, 409);
    assert_eq!(twice.code(), "dlq_not_discardable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_dry_run_counts_replay_honours_the_rate_and_discard_keeps_rows() {
    let app = TestApp::spawn().await;
    let a = app.admin("acme").await;
    let wf = app.save(&a, &flow()).await;
    let payload = json!({"workflowID": wf, "inputValues": {}});
    for _ in 0..3 {
        park(&app, Some(a.tenant_id), "cron", payload.clone(), "PARKED").await;
    }
    for _ in 0..2 {
        park(&app, Some(a.tenant_id), "command", json!({}), "PARKED").await;
    }
    let done = park(&app, Some(a.tenant_id), "cron", payload.clone(), "PARKED").await;
    sqlx::query(r#"UPDATE "tblEventDLQ" SET "status" = 'REPLAYED' WHERE "dlqID" = $1"#)
        .bind(done)
        .execute(&app.db.pool)
        .await
        .expect("replayed");

    let dry = app
        .post(
            &format!("{}/replay", dlq(&a)),
            &a.auth,
            json!({"filters": {"source": "cron"}, "dryRun": true}),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(
        dry.body["matched"], 3,
        "REPLAYED rows are not replayed again"
    );
    assert_eq!(dry.body["dryRun"], true);
    assert_eq!(dry.body["sample"].as_array().expect("array").len(), 3);
    let all = app
        .post(
            &format!("{}/discard", dlq(&a)),
            &a.auth,
            json!({"dryRun": true}),
        )
        .await;
    assert_eq!(all.body["matched"], 5);
    let instances: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblWorkflowInstances""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("instances");
    assert_eq!(instances, 0, "a dry run runs nothing");

    // The runs are worked through by the maintenance role, in the background.
    let _workers = app.start_roles("bulk", &[jet_worker::Role::Maintenance], |_| {});
    let started = Instant::now();
    let replay = app
        .post(
            &format!("{}/replay", dlq(&a)),
            &a.auth,
            json!({"filters": {"source": "cron"}, "perSecond": 5}),
        )
        .await;
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert_eq!(replay.body["matched"], 3);
    let run = replay.str("runID");
    let done = eventually(30, "the bulk replay finishes", || async {
        let progress = app.get(&format!("{}/runs/{run}", dlq(&a)), &a.auth).await;
        (progress.body["status"] == "done").then_some(progress.body)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "3 rows at 5/s take two 200 ms gaps"
    );
    assert_eq!(
        (&done["processed"], &done["succeeded"], &done["failed"]),
        (&json!(3), &json!(3), &json!(0)),
        "{done}"
    );
    let instances: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblWorkflowInstances""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("instances");
    assert_eq!(instances, 3, "one run per replayed row");
    let other = app.admin("other").await;
    let hidden = app
        .get(&format!("{}/runs/{run}", dlq(&other)), &other.auth)
        .await;
    assert_eq!(hidden.status, 404, "another tenant's run: {}", hidden.body);

    let discard = app
        .post(
            &format!("{}/discard", dlq(&a)),
            &a.auth,
            json!({"filters": {"source": "command", "status": "PARKED"}}),
        )
        .await;
    assert_eq!(discard.status, 202, "{}", discard.body);
    let run = discard.str("runID");
    let done = eventually(30, "the bulk discard finishes", || async {
        let progress = app.get(&format!("{}/runs/{run}", dlq(&a)), &a.auth).await;
        (progress.body["status"] == "done").then_some(progress.body)
    })
    .await;
    assert_eq!(done["processed"], 2, "{done}");
    // The filters come back as the typed `DlqFilters` they were sent as: no null members.
    assert_eq!(
        done["filters"],
        json!({"source": "command", "status": "PARKED"})
    );
    assert_eq!(done["action"], "discard");
    let kept: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblEventDLQ" WHERE "status" = 'DISCARDED' AND "discardedAt" IS NOT NULL"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("discarded");
    assert_eq!(kept, 2);
}

/// What the DLQ's re-runs need: the pool and a datasource runtime (no vault, no deny-list).
fn rerun<'a>(
    pool: &'a sqlx::PgPool,
    data: &'a jet_shared::datasource::DataRuntime,
) -> jet_shared::dlq::Rerun<'a> {
    jet_shared::dlq::Rerun { pool, data }
}

fn data_runtime() -> jet_shared::datasource::DataRuntime {
    jet_shared::datasource::DataRuntime::new(
        None,
        jet_shared::datasource::network::DenyList::new(&[], None),
    )
}

#[tokio::test]
async fn a_retrying_row_whose_command_vanished_is_pending_again() {
    let app = TestApp::spawn().await;
    let a = app.admin("acme").await;
    let lost = park(
        &app,
        Some(a.tenant_id),
        "command",
        json!({"command": {}}),
        "PENDING",
    )
    .await;
    let fresh = park(
        &app,
        Some(a.tenant_id),
        "command",
        json!({"command": {}}),
        "PENDING",
    )
    .await;
    sqlx::query(
        r#"UPDATE "tblEventDLQ" SET "status" = 'RETRYING', "replayJobID" = 'vanished-' || "dlqID"::text,
             "updatedAt" = CASE WHEN "dlqID" = $1 THEN now() - interval '2 minutes' ELSE now() END
           WHERE "dlqID" IN ($1, $2)"#,
    )
    .bind(lost)
    .bind(fresh)
    .execute(&app.db.pool)
    .await
    .expect("retrying");
    let swept = jet_shared::dlq::sweep_lost_reruns(&app.db.pool)
        .await
        .expect("sweep");
    assert_eq!(swept, 1, "only the row past the grace minute");
    let (status, next, last): (String, Option<chrono::DateTime<chrono::Utc>>, Value) = sqlx::query_as(
        r#"SELECT "status", "nextRetryAt", "attempts" -> -1 FROM "tblEventDLQ" WHERE "dlqID" = $1"#,
    )
    .bind(lost)
    .fetch_one(&app.db.pool)
    .await
    .expect("row");
    assert_eq!(status, "PENDING");
    assert!(next.is_some(), "retried again later");
    assert_eq!(last["outcome"], "lost", "{last}");
    let still: String =
        sqlx::query_scalar(r#"SELECT "status" FROM "tblEventDLQ" WHERE "dlqID" = $1"#)
            .bind(fresh)
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert_eq!(still, "RETRYING");
}
