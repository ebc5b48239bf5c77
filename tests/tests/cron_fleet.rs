//! Real `jet-worker --roles cron` processes: three replicas fire 50 per-second jobs for 15 s
//! and a ledger query finds every (job, second) fired exactly once, none missing; then the
//! only scheduler is killed and `skip` and `catch_up` each account for the outage as stated.

use chrono::{DateTime, Utc};
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::bins::Running;
use jet_tests::flow::Flow;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

const JOBS: usize = 50;

/// `(cronJobID, fires, distinct due times, first due time, last due time)`.
type LedgerRow = (Uuid, i64, i64, DateTime<Utc>, DateTime<Utc>);
const WINDOW_SECONDS: i64 = 15;

fn scheduler(app: &TestApp, name: &str) -> Running {
    let url = app.db.url();
    Running::start(
        "jet-worker",
        &["--roles", "cron"],
        &std::env::temp_dir(),
        &[
            ("DATABASE_URL", &url),
            ("JET_WORKER_ID", name),
            ("JET_LOG", "warn"),
        ],
    )
}

async fn workflow(app: &TestApp, a: &Admin) -> String {
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end");
    app.save(a, &flow).await
}

async fn create(app: &TestApp, a: &Admin, body: Value) -> Uuid {
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

/// Polls `probe` every 50 ms until it holds; panics after `secs`.
async fn until<F, Fut>(secs: u64, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .expect("now")
}

async fn live_replicas(pool: &PgPool) -> i64 {
    sqlx::query_scalar(r#"SELECT count(*) FROM "tblCronSchedulers""#)
        .fetch_one(pool)
        .await
        .expect("replicas")
}

async fn fires(pool: &PgPool, job: Uuid) -> i64 {
    sqlx::query_scalar(r#"SELECT count(*) FROM "tblCronJobHistory" WHERE "cronJobID" = $1"#)
        .bind(job)
        .fetch_one(pool)
        .await
        .expect("fires")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_fire_every_job_second_exactly_once() {
    let app = TestApp::spawn().await;
    let a = app.admin("Fleet").await;
    let wf = workflow(&app, &a).await;
    for n in 0..JOBS {
        create(&app, &a, json!({"cronJobTitle": format!("job {n}"), "cronJobSchedule": "* * * * * *",
            "workflowID": wf, "isDisabled": true, "catchupPolicy": "catch_up", "maxCatchupRuns": 1000}))
        .await;
    }
    let pool = &app.db.pool;
    let mut replicas: Vec<Running> = (1..=3)
        .map(|n| scheduler(&app, &format!("cron-{n}")))
        .collect();
    until(30, "three live replicas", || async {
        live_replicas(pool).await == 3
    })
    .await;

    // All jobs come due at the same second; the NOTIFY of this update wakes the replicas.
    let first: DateTime<Utc> = sqlx::query_scalar(
        r#"UPDATE "tblCronJobs" SET "isDisabled" = false, "nextRunAt" = date_trunc('second', now()) + interval '1 second'
           RETURNING "nextRunAt""#,
    )
    .fetch_all(pool)
    .await
    .expect("enable")[0];
    let end = first + chrono::Duration::seconds(WINDOW_SECONDS);
    until(WINDOW_SECONDS as u64 + 30, "the window to pass", || async {
        db_now(pool).await > end
    })
    .await;
    // Waits for any fire in flight (it holds the row lock), then stops the schedule.
    let lasts: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar(
        r#"UPDATE "tblCronJobs" SET "isDisabled" = true, "nextRunAt" = NULL RETURNING "lastScheduledAt""#,
    )
    .fetch_all(pool)
    .await
    .expect("disable");

    // The ledger: per job, the fired seconds have no duplicate and no gap, from the first due
    // second to the last one handled, which is at least the end of the window.
    let ledger: Vec<LedgerRow> = sqlx::query_as(
        r#"SELECT "cronJobID", count(*), count(DISTINCT "scheduledAt"), min("scheduledAt"), max("scheduledAt")
           FROM "tblCronJobHistory" GROUP BY 1"#,
    )
    .fetch_all(pool)
    .await
    .expect("ledger");
    assert_eq!(ledger.len(), JOBS, "every job fired");
    for (job, fires, distinct, min, max) in &ledger {
        assert_eq!(fires, distinct, "job {job} fired a second twice");
        assert_eq!(*min, first, "job {job} missed its first second");
        assert!(*max >= end, "job {job} stopped at {max}, before {end}");
        assert_eq!(
            *fires,
            (*max - *min).num_seconds() + 1,
            "job {job} has a gap"
        );
        assert!(lasts.contains(&Some(*max)));
    }
    let total: i64 = ledger.iter().map(|l| l.1).sum();
    let (instances, distinct_instances, not_started): (i64, i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM "tblWorkflowInstances"),
                  count(DISTINCT "instanceID"), count(*) FILTER (WHERE "status" <> 'RUNNING')
           FROM "tblCronJobHistory""#,
    )
    .fetch_one(pool)
    .await
    .expect("instances");
    assert_eq!(
        (instances, distinct_instances, not_started),
        (total, total, 0)
    );
    let (p50, p99, late): (f64, f64, i64) = sqlx::query_as(
        r#"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag),
                  count(*) FILTER (WHERE trigger = 'CATCHUP')
           FROM (SELECT EXTRACT(EPOCH FROM "startTime" - "scheduledAt")::float8 * 1000 AS lag, "triggerType" AS trigger
                 FROM "tblCronJobHistory") x"#,
    )
    .fetch_one(pool)
    .await
    .expect("lag");
    eprintln!(
        "{total} fires by 3 replicas: fire lag p50 {p50:.1} ms, p99 {p99:.1} ms, {late} fired as CATCHUP"
    );

    for r in &mut replicas {
        assert!(r.terminate(30).await.success(), "replicas stop cleanly");
    }
    assert_eq!(
        live_replicas(pool).await,
        0,
        "stopped replicas leave the live list"
    );
}

/// `(status, triggerType, scheduledAt, result)` of a job's rows.
async fn rows(pool: &PgPool, job: Uuid) -> Vec<(String, String, DateTime<Utc>, Option<String>)> {
    sqlx::query_as(
        r#"SELECT "status", "triggerType", "scheduledAt", "result" FROM "tblCronJobHistory"
           WHERE "cronJobID" = $1 ORDER BY "scheduledAt""#,
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_only_scheduler_dies_skip_and_catch_up_account_for_every_second() {
    let app = TestApp::spawn().await;
    let a = app.admin("Outage").await;
    let wf = workflow(&app, &a).await;
    let pool = &app.db.pool;
    let every = |policy: &str| {
        json!({"cronJobTitle": policy, "cronJobSchedule": "* * * * * *", "workflowID": wf,
               "catchupPolicy": policy, "maxCatchupRuns": 3})
    };
    let skip = create(&app, &a, every("skip")).await;
    let catch_up = create(&app, &a, every("catch_up")).await;
    let mut solo = scheduler(&app, "solo");
    until(30, "fires before the outage", || async {
        fires(pool, skip).await >= 2 && fires(pool, catch_up).await >= 2
    })
    .await;
    solo.child.kill().await.expect("SIGKILL");
    let killed = db_now(pool).await;
    // Down for 12 s: more than the 5 s grace plus the 3 catch-up runs, so both policies
    // have due times to count as missed.
    until(30, "the outage", || async {
        db_now(pool).await > killed + chrono::Duration::seconds(12)
    })
    .await;
    let mut second = scheduler(&app, "second");
    let count_of = |job: Uuid, status: &'static str, trigger: &'static str| async move {
        sqlx::query_scalar::<_, i64>(
            r#"SELECT count(*) FROM "tblCronJobHistory" WHERE "cronJobID" = $1
                 AND ($2 = '' OR "status" = $2) AND ($3 = '' OR "triggerType" = $3)"#,
        )
        .bind(job)
        .bind(status)
        .bind(trigger)
        .fetch_one(pool)
        .await
        .expect("count")
    };
    until(30, "the restart to account for the outage", || async {
        count_of(skip, "SKIPPED", "").await == 1 && count_of(catch_up, "", "CATCHUP").await == 3
    })
    .await;
    let lasts: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        r#"UPDATE "tblCronJobs" SET "isDisabled" = true, "nextRunAt" = NULL RETURNING "cronJobID", "lastScheduledAt""#,
    )
    .fetch_all(pool)
    .await
    .expect("disable");
    assert!(second.terminate(30).await.success());

    for (job, catchups) in [(skip, 0), (catch_up, 3)] {
        let rows = rows(pool, job).await;
        let last = lasts.iter().find(|(id, _)| *id == job).expect("job").1;
        let skipped: Vec<_> = rows.iter().filter(|r| r.0 == "SKIPPED").collect();
        assert_eq!(skipped.len(), 1, "{rows:?}");
        let result: Value =
            serde_json::from_str(skipped[0].3.as_deref().expect("result")).expect("json");
        let (from, to) = (
            skipped[0].2,
            serde_json::from_value::<DateTime<Utc>>(result["to"].clone()).expect("to"),
        );
        assert_eq!(result["missed"], json!((to - from).num_seconds() + 1));
        assert!(
            from > killed - chrono::Duration::seconds(2),
            "the missed range starts at the outage"
        );
        assert_eq!(rows.iter().filter(|r| r.1 == "CATCHUP").count(), catchups);
        // Every second from the first fire to the last is fired once or counted as missed.
        let fired: Vec<DateTime<Utc>> = rows
            .iter()
            .filter(|r| r.0 != "SKIPPED")
            .map(|r| r.2)
            .collect();
        let unique: BTreeSet<_> = fired.iter().collect();
        assert_eq!(unique.len(), fired.len(), "no second fired twice");
        let mut t = rows[0].2;
        while t <= last {
            let in_range = t >= from && t <= to;
            assert!(
                in_range != unique.contains(&t),
                "{t} is fired {} and skipped {in_range}",
                unique.contains(&t)
            );
            t += chrono::Duration::seconds(1);
        }
        assert_eq!(
            fired.len() as i64 + (to - from).num_seconds() + 1,
            (last - rows[0].2).num_seconds() + 1
        );
    }
}
