//! Real `jet-worker --roles cron` processes: three replicas fire 50 per-second jobs for 60 s
//! and a ledger query finds every (job, second) fired exactly once, none missing; the only
//! scheduler is killed and `skip` and `catch_up` each account for the outage as stated; and
//! the database restarts under three replicas without a second fired twice or lost.

use chrono::{DateTime, Utc};
use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::bins::Running;
use jet_tests::cluster::OwnCluster;
use jet_tests::db::TestDb;
use jet_tests::flow::Flow;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

const JOBS: usize = 50;

/// `(cronJobID, fires, distinct due times, first due time, last due time)`.
type LedgerRow = (Uuid, i64, i64, DateTime<Utc>, DateTime<Utc>);
const WINDOW_SECONDS: i64 = 60;

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
        let missed = accounted(&rows, last, catchups);
        assert_eq!(missed.len(), 1, "{rows:?}");
        assert!(
            missed[0].0 > killed - chrono::Duration::seconds(2),
            "the missed range starts at the outage"
        );
        assert_eq!(
            rows.iter().filter(|r| r.1 == "CATCHUP").count() as i64,
            catchups,
            "{rows:?}"
        );
    }
}

/// Checks that a per-second job's `rows` account for every second from its first row to
/// `last` exactly once: fired (no second twice), or inside the range of a missed-times row
/// whose count matches it; with `catchups` > 0 the seconds right after each missed range
/// fired as CATCHUP. Returns the missed ranges.
fn accounted(
    rows: &[(String, String, DateTime<Utc>, Option<String>)],
    last: DateTime<Utc>,
    catchups: i64,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut missed = Vec::new();
    let mut fired = BTreeSet::new();
    for (status, trigger, at, result) in rows {
        let result: Value = result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        if status == "SKIPPED" && result["reason"] == "missed" {
            let to: DateTime<Utc> = serde_json::from_value(result["to"].clone()).expect("to");
            assert_eq!(result["missed"], json!((to - *at).num_seconds() + 1));
            missed.push((*at, to));
        } else {
            assert!(fired.insert(*at), "{at} fired twice");
            assert!(
                catchups > 0 || trigger != "CATCHUP",
                "{at} caught up under `skip`"
            );
        }
    }
    let mut t = rows[0].2;
    while t <= last {
        let in_missed = missed.iter().any(|(from, to)| t >= *from && t <= *to);
        assert!(
            in_missed != fired.contains(&t),
            "{t} is fired {} and missed {in_missed}",
            fired.contains(&t)
        );
        t += chrono::Duration::seconds(1);
    }
    for (_, to) in &missed {
        for n in 1..=catchups {
            let at = *to + chrono::Duration::seconds(n);
            assert!(
                rows.iter().any(|r| r.2 == at && r.1 == "CATCHUP"),
                "{at}, right after the missed range, fired as CATCHUP: {rows:?}"
            );
        }
    }
    let missed_seconds: i64 = missed
        .iter()
        .map(|(f, t)| (*t - *f).num_seconds() + 1)
        .sum();
    assert_eq!(
        fired.len() as i64 + missed_seconds,
        (last - rows[0].2).num_seconds() + 1
    );
    missed
}

/// A new pool on `url`, retried while the database comes back after a restart.
async fn reconnect(url: &str) -> PgPool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match jet_shared::db::connect(url, 4).await {
            Ok(pool) => return pool,
            Err(err) => assert!(Instant::now() < deadline, "the database is back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_three_schedulers_fires_no_second_twice_and_loses_none() {
    let mut db_server = OwnCluster::start();
    let app = TestApp::spawn_on(TestDb::on_server(&db_server.cluster.url("postgres")).await).await;
    let a = app.admin("Restart").await;
    let wf = workflow(&app, &a).await;
    let mut skip = Vec::new();
    let mut catch_up = Vec::new();
    for n in 0..JOBS {
        let policy = if n % 2 == 0 { "skip" } else { "catch_up" };
        let id = create(
            &app,
            &a,
            json!({"cronJobTitle": format!("job {n}"), "cronJobSchedule": "* * * * * *",
            "workflowID": wf, "isDisabled": true, "catchupPolicy": policy, "maxCatchupRuns": 3}),
        )
        .await;
        if n % 2 == 0 {
            skip.push(id)
        } else {
            catch_up.push(id)
        }
    }
    let pool = &app.db.pool;
    let mut replicas: Vec<Running> = (1..=3)
        .map(|n| scheduler(&app, &format!("restart-{n}")))
        .collect();
    until(30, "three live replicas", || async {
        live_replicas(pool).await == 3
    })
    .await;
    let first: DateTime<Utc> = sqlx::query_scalar(
        r#"UPDATE "tblCronJobs" SET "isDisabled" = false, "nextRunAt" = date_trunc('second', now()) + interval '1 second'
           RETURNING "nextRunAt""#,
    )
    .fetch_all(pool)
    .await
    .expect("enable")[0];
    until(30, "fires before the restart", || async {
        db_now(pool).await > first + chrono::Duration::seconds(4)
    })
    .await;

    // Down for 10 s, twice the misfire grace, mid-fire: any transaction in flight is cut off.
    let stopped = db_now(pool).await;
    db_server.cluster.stop().expect("stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(10)).await;
    db_server.cluster.start().expect("start PostgreSQL again");
    let pool = &reconnect(&app.db.url()).await;
    let back = db_now(pool).await;
    // Every job has handled a second well after the restart: the outage is accounted for.
    until(60, "fires after the restart", || async {
        let behind: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblCronJobs" WHERE "lastScheduledAt" IS NULL OR "lastScheduledAt" < $1"#,
        )
        .bind(back + chrono::Duration::seconds(5))
        .fetch_one(pool)
        .await
        .unwrap_or(i64::MAX);
        behind == 0
    })
    .await;
    let lasts: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        r#"UPDATE "tblCronJobs" SET "isDisabled" = true, "nextRunAt" = NULL RETURNING "cronJobID", "lastScheduledAt""#,
    )
    .fetch_all(pool)
    .await
    .expect("disable");
    for r in &mut replicas {
        assert!(r.terminate(30).await.success(), "replicas stop cleanly");
    }

    let (mut missed_seconds, mut caught_up) = (0, 0);
    for (jobs, catchups) in [(&skip, 0), (&catch_up, 3)] {
        for &job in jobs {
            let rows = rows(pool, job).await;
            caught_up += rows.iter().filter(|r| r.1 == "CATCHUP").count();
            assert_eq!(rows[0].2, first, "job {job} missed its first second");
            let last = lasts.iter().find(|(id, _)| *id == job).expect("job").1;
            let missed = accounted(&rows, last, catchups);
            assert!(
                missed.iter().any(
                    |(from, _)| *from >= stopped - chrono::Duration::seconds(2) && *from < back
                ),
                "job {job} counts the seconds missed while the database was down: {missed:?}"
            );
            missed_seconds += missed
                .iter()
                .map(|(from, to)| (*to - *from).num_seconds() + 1)
                .sum::<i64>();
        }
    }
    // Each fire started exactly one instance: none from a transaction cut off by the restart.
    let (fires, instances, with_instance): (i64, i64, i64) = sqlx::query_as(
        r#"SELECT count(*) FILTER (WHERE "status" <> 'SKIPPED'), (SELECT count(*) FROM "tblWorkflowInstances"),
                  count(DISTINCT "instanceID")
           FROM "tblCronJobHistory""#,
    )
    .fetch_one(pool)
    .await
    .expect("instances");
    assert_eq!((instances, with_instance), (fires, fires));
    eprintln!(
        "database down {:.1} s: {fires} fires, {missed_seconds} job-seconds counted as missed, {caught_up} caught up",
        (back - stopped).num_milliseconds() as f64 / 1000.0
    );
}
