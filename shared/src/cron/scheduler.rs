//! The scheduler's units of work, each its own transaction, safe for any number of replicas:
//! fire due jobs (claimed `FOR UPDATE SKIP LOCKED`), time out long runs, retry fires that
//! could not start, start buffered fires, and compute how long to sleep.

use super::batch::{Planned, fire_plain};
use super::fire::{self, Fired};
use super::job::{CronJob, db_now};
use super::schedule::{Catchup, Schedule, plan};
use crate::Result;
use crate::workflow::instance;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// What one round of work did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Jobs claimed as due.
    pub claimed: usize,
    /// Instances started (scheduled, catch-up, retried or buffered fires).
    pub started: usize,
    /// Fires skipped or buffered by the overlap policy, and missed-run rows written.
    pub held: usize,
    /// Fires that could not start (retrying or failed).
    pub failed: usize,
    /// Runs cancelled for exceeding `timeoutSeconds`.
    pub timed_out: usize,
    /// Claimed jobs fired one by one rather than set-based (several fires under `skip` or
    /// `buffer_one`, a workflow that cannot start, or a set-based write that failed).
    pub per_job: usize,
}

impl Round {
    pub(super) fn count(&mut self, fired: Fired) {
        match fired {
            Fired::Running => self.started += 1,
            Fired::Queued | Fired::Skipped => self.held += 1,
            Fired::Retrying | Fired::Failed => self.failed += 1,
            Fired::AlreadyFired => {}
        }
    }

    /// Adds the fires of `other` (not its claims).
    pub fn add(&mut self, other: Round) {
        self.started += other.started;
        self.held += other.held;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.per_job += other.per_job;
    }
}

/// Claims up to `batch` due jobs and fires them in one transaction; each job's row stays
/// locked until commit, so another replica skips it and then sees its new `nextRunAt`.
/// Plain fires go set-based ([`fire_plain`]: a few statements for the whole batch);
/// the rest job by job. One UPDATE advances every claimed job.
pub async fn fire_due(pool: &PgPool, batch: i64, grace: Duration) -> Result<Round> {
    let mut tx = pool.begin().await?;
    let jobs: Vec<CronJob> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {} FROM "tblCronJobs"
           WHERE NOT "isDisabled" AND "nextRunAt" <= clock_timestamp()
           ORDER BY "nextRunAt" LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        super::job::COLUMNS
    )))
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let mut round = Round {
        claimed: jobs.len(),
        ..Round::default()
    };
    if jobs.is_empty() {
        return Ok(round);
    }
    let now = db_now(&mut *tx).await?;
    let mut planned = Vec::with_capacity(jobs.len());
    // The new nextRunAt and lastScheduledAt of every claimed job, written at the end.
    let (mut ids, mut next, mut last) = (Vec::new(), Vec::new(), Vec::new());
    for job in &jobs {
        let Some(due) = job.next_run_at else { continue };
        ids.push(job.cron_job_id);
        match Schedule::parse(&job.schedule, &job.timezone) {
            Ok(schedule) => {
                let catchup = match job.catchup_policy.as_str() {
                    "catch_up" => {
                        Catchup::CatchUp(usize::try_from(job.max_catchup_runs).unwrap_or(1))
                    }
                    _ => Catchup::Skip,
                };
                let plan = plan(&schedule, due, now, catchup, grace);
                next.push(plan.next_run_at);
                last.push(plan.last_scheduled_at);
                planned.push(Planned { job, plan });
            }
            Err(err) => {
                // Only an edit behind the API's back gets here: park the job, say why.
                tracing::error!(job = %job.cron_job_id, error = %err, "unparsable schedule; job unscheduled");
                next.push(None);
                last.push(None);
            }
        }
    }
    for i in fire_plain(&mut tx, &planned, &mut round).await? {
        let Planned { job, plan } = &planned[i];
        round.per_job += 1;
        if let Some(missed) = plan.skipped {
            fire::record_missed(&mut tx, job, missed.first, missed.last, missed.count).await?;
            round.held += 1;
        }
        for (at, trigger) in &plan.fires {
            let (_, fired) = fire::fire(&mut tx, job, *at, *trigger).await?;
            round.count(fired);
        }
    }
    sqlx::query(
        r#"UPDATE "tblCronJobs" j SET "nextRunAt" = r.next_run, "lastScheduledAt" = COALESCE(r.last_run, j."lastScheduledAt")
           FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS r(id, next_run, last_run)
           WHERE j."cronJobID" = r.id"#,
    )
    .bind(&ids)
    .bind(&next)
    .bind(&last)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(round)
}

/// Cancels runs older than their job's `timeoutSeconds`; their rows say TIMEOUT. One
/// transaction per run, locking the instance before the history row, the order in which
/// settling an instance (and the history trigger it fires) takes them.
pub async fn time_out(pool: &PgPool, batch: i64) -> Result<usize> {
    // A run whose instance was deleted with its workflow can never end by itself.
    sqlx::query(
        r#"UPDATE "tblCronJobHistory" SET "status" = 'FAILURE', "endTime" = clock_timestamp(),
             "result" = '{"error":"the instance was deleted"}', "updatedAt" = now()
           WHERE "status" = 'RUNNING' AND "instanceID" IS NULL"#,
    )
    .execute(pool)
    .await?;
    let due: Vec<(Uuid, i32)> = sqlx::query_as(
        r#"SELECT h."instanceID", j."timeoutSeconds" FROM "tblCronJobHistory" h
           JOIN "tblCronJobs" j ON j."cronJobID" = h."cronJobID"
           WHERE h."status" = 'RUNNING' AND h."instanceID" IS NOT NULL AND j."timeoutSeconds" > 0
             AND h."startTime" + make_interval(secs => j."timeoutSeconds") <= clock_timestamp()
           ORDER BY h."instanceID" LIMIT $1"#,
    )
    .bind(batch)
    .fetch_all(pool)
    .await?;
    let mut done = 0;
    for (instance_id, seconds) in due {
        let mut tx = pool.begin().await?;
        sqlx::query(r#"SELECT 1 FROM "tblWorkflowInstances" WHERE "instanceID" = $1 FOR UPDATE"#)
            .bind(instance_id)
            .execute(&mut *tx)
            .await?;
        let timed = sqlx::query(
            r#"UPDATE "tblCronJobHistory" SET "status" = 'TIMEOUT', "endTime" = clock_timestamp(),
                 "durationMs" = LEAST(EXTRACT(EPOCH FROM clock_timestamp() - "startTime") * 1000, 2147483647)::integer,
                 "result" = $2, "updatedAt" = now()
               WHERE "instanceID" = $1 AND "status" = 'RUNNING'"#,
        )
        .bind(instance_id)
        .bind(
            json!({"instanceID": instance_id, "error": format!("still running after {seconds} s: cancelled")})
                .to_string(),
        )
        .execute(&mut *tx)
        .await?;
        if timed.rows_affected() > 0 {
            instance::cancel(&mut tx, instance_id).await?;
            done += 1;
        }
        tx.commit().await?;
    }
    Ok(done)
}

/// Starts fires whose retry time has come, and buffered fires whose blocking run has ended.
pub async fn start_waiting(pool: &PgPool, batch: i64) -> Result<Round> {
    let mut tx = pool.begin().await?;
    // The job row is locked with the history row: overlap decisions of a job stay serial.
    let waiting: Vec<(Uuid, Uuid, i32, String)> = sqlx::query_as(
        r#"SELECT h."cronJobHistoryID", h."cronJobID", h."attempt", h."status"
           FROM "tblCronJobHistory" h JOIN "tblCronJobs" j ON j."cronJobID" = h."cronJobID"
           WHERE (h."status" = 'RETRYING' AND h."retryAt" <= clock_timestamp())
              OR (h."status" = 'QUEUED' AND NOT EXISTS (
                    SELECT 1 FROM "tblCronJobHistory" r
                    WHERE r."cronJobID" = h."cronJobID" AND r."status" IN ('RUNNING', 'RETRYING')))
           ORDER BY h."scheduledAt" LIMIT $1
           FOR UPDATE OF h, j SKIP LOCKED"#,
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let mut round = Round::default();
    for (history_id, job_id, attempt, status) in waiting {
        let job: CronJob = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"SELECT {} FROM "tblCronJobs" WHERE "cronJobID" = $1"#,
            super::job::COLUMNS
        )))
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        let attempt = if status == "RETRYING" {
            attempt + 1
        } else {
            attempt
        };
        round.count(fire::start(&mut tx, &job, history_id, attempt).await?);
    }
    tx.commit().await?;
    Ok(round)
}

/// When the scheduler has work next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// How long until the earliest due time, retry or run timeout (`None`: nothing
    /// scheduled); zero when something is due already.
    pub after: Option<Duration>,
    /// That earliest work was due already at `round_start`, so the round that just ran
    /// found it locked: another replica holds it and is firing it right now.
    pub held_elsewhere: bool,
}

/// When the earliest due time, retry or run timeout comes, on the database's clock, and
/// whether it was due already at `round_start` (the database time a round began).
pub async fn next_wake(pool: &PgPool, round_start: DateTime<Utc>) -> Result<Wake> {
    let (seconds, held): (Option<f64>, bool) = sqlx::query_as(
        r#"SELECT EXTRACT(EPOCH FROM t.at - clock_timestamp())::float8, COALESCE(t.at <= $1, false)
           FROM (SELECT LEAST(
             (SELECT min("nextRunAt") FROM "tblCronJobs" WHERE NOT "isDisabled"),
             (SELECT min("retryAt") FROM "tblCronJobHistory" WHERE "status" = 'RETRYING'),
             (SELECT min(h."startTime" + make_interval(secs => j."timeoutSeconds"))
              FROM "tblCronJobHistory" h JOIN "tblCronJobs" j ON j."cronJobID" = h."cronJobID"
              WHERE h."status" = 'RUNNING' AND j."timeoutSeconds" > 0)) AS at) t"#,
    )
    .bind(round_start)
    .fetch_one(pool)
    .await?;
    Ok(Wake {
        after: seconds.map(|s| Duration::from_secs_f64(s.max(0.0))),
        held_elsewhere: held,
    })
}

/// Records this scheduler replica as alive (the `status/connections` view).
pub async fn heartbeat(pool: &PgPool, worker_id: &str) -> Result<()> {
    sqlx::query(
        r#"INSERT INTO "tblCronSchedulers" ("workerID") VALUES ($1)
           ON CONFLICT ("workerID") DO UPDATE SET "heartbeatAt" = now()"#,
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes this replica from the live list on a clean shutdown.
pub async fn leave(pool: &PgPool, worker_id: &str) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblCronSchedulers" WHERE "workerID" = $1"#)
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}
