//! Firing a claimed batch of due jobs set-based: a handful of statements for the whole batch
//! instead of four round trips per job. [`fire_plain`] takes every job whose fires are plain
//! (their outcome is known before any row is written) and hands the rest back to the per-job
//! path ([`super::fire::fire`]), which also owns retries and DLQ parking.
//!
//! The guarantees are the per-job path's: the caller holds every job's row lock; each history
//! row is inserted `ON CONFLICT DO NOTHING` on the per-due-time unique key, and only rows this
//! statement inserted get an instance; overlap decisions read the job's open runs under that
//! lock.

use super::fire::{self, Fired, input_values};
use super::job::CronJob;
use super::schedule::{Plan, Trigger};
use super::scheduler::Round;
use crate::Result;
use crate::workflow::instance::{self, NewRun};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// A claimed job with what its schedule says to do now.
pub(super) struct Planned<'a> {
    pub job: &'a CronJob,
    pub plan: Plan,
}

/// The status a fire's row starts with, given the job's open runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initial {
    Running,
    Queued,
    Skipped,
}

impl Initial {
    fn as_str(self) -> &'static str {
        match self {
            Initial::Running => "RUNNING",
            Initial::Queued => "QUEUED",
            Initial::Skipped => "SKIPPED",
        }
    }

    /// The overlap policy: `allow` always runs; otherwise run when nothing is open, buffer one
    /// fire behind a running one (`buffer_one`), skip the rest. As [`fire::fire`] decides.
    fn decide(policy: &str, open: OpenRuns) -> Self {
        match (policy, open.running || open.queued, open.queued) {
            ("allow", _, _) | (_, false, _) => Initial::Running,
            ("buffer_one", true, false) => Initial::Queued,
            _ => Initial::Skipped,
        }
    }
}

/// Whether a job has a run in progress (RUNNING or RETRYING) or a buffered fire (QUEUED).
#[derive(Debug, Clone, Copy, Default)]
struct OpenRuns {
    running: bool,
    queued: bool,
}

/// What decides whether a workflow can start a run now.
#[derive(sqlx::FromRow)]
struct Workflow {
    #[sqlx(rename = "workflowID")]
    workflow_id: Uuid,
    #[sqlx(rename = "tenantID")]
    tenant_id: Uuid,
    #[sqlx(rename = "isDisabled")]
    is_disabled: Option<bool>,
    #[sqlx(rename = "workflowOptions")]
    options: Option<Value>,
    /// Its current version has a start node.
    #[sqlx(rename = "hasStart")]
    has_start: bool,
}

/// A history row to insert.
struct Row<'a> {
    job: &'a CronJob,
    at: DateTime<Utc>,
    status: Initial,
    trigger: &'static str,
    result: Option<String>,
    /// The checked inputs of a RUNNING fire.
    inputs: Option<Value>,
    /// The missed-times row (counted as held, whether or not it was new).
    missed: bool,
}

/// Fires the plain jobs of `planned` set-based and returns the indexes of those left for the
/// per-job path: a `skip`/`buffer_one` job with several fires at once (each decision depends
/// on the one before), and a job whose workflow cannot start (disabled, gone, without a start
/// node, inputs no longer valid), whose fires need the retry and DLQ path. Should a statement
/// fail, everything is rolled back to a savepoint and every job is left to the per-job path.
pub(super) async fn fire_plain(
    conn: &mut PgConnection,
    planned: &[Planned<'_>],
    round: &mut Round,
) -> Result<Vec<usize>> {
    let (mut fast, mut slow): (Vec<usize>, Vec<usize>) = (0..planned.len()).partition(|&i| {
        planned[i].job.overlap_policy == "allow" || planned[i].plan.fires.len() <= 1
    });
    let open = open_runs(&mut *conn, planned, &fast).await?;
    let decisions: HashMap<usize, Initial> = fast
        .iter()
        .map(|&i| {
            let p = &planned[i];
            let state = open.get(&p.job.cron_job_id).copied().unwrap_or_default();
            (i, Initial::decide(&p.job.overlap_policy, state))
        })
        .collect();
    let starting: Vec<usize> = fast
        .iter()
        .copied()
        .filter(|i| !planned[*i].plan.fires.is_empty() && decisions[i] == Initial::Running)
        .collect();
    let inputs = startable_inputs(&mut *conn, planned, &starting).await?;
    fast.retain(|i| {
        let keep = !starting.contains(i) || inputs.contains_key(i);
        if !keep {
            slow.push(*i);
        }
        keep
    });
    let rows = rows(planned, &fast, &decisions, &inputs);

    let mut savepoint = conn.begin().await?;
    match write(&mut savepoint, &rows).await {
        Ok(written) => {
            savepoint.commit().await?;
            round.add(written);
        }
        Err(err) => {
            tracing::warn!(error = %err, "set-based cron fire failed; firing job by job");
            savepoint.rollback().await?;
            return Ok((0..planned.len()).collect());
        }
    }
    slow.sort_unstable();
    Ok(slow)
}

/// Open runs of the `skip`/`buffer_one` jobs among `jobs`, in one query.
async fn open_runs(
    conn: &mut PgConnection,
    planned: &[Planned<'_>],
    jobs: &[usize],
) -> Result<HashMap<Uuid, OpenRuns>> {
    let ids: Vec<Uuid> = jobs
        .iter()
        .map(|&i| planned[i].job)
        .filter(|j| j.overlap_policy != "allow")
        .map(|j| j.cron_job_id)
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        r#"SELECT "cronJobID", bool_or("status" IN ('RUNNING', 'RETRYING')), bool_or("status" = 'QUEUED')
           FROM "tblCronJobHistory"
           WHERE "cronJobID" = ANY($1) AND "status" IN ('RUNNING', 'RETRYING', 'QUEUED')
           GROUP BY "cronJobID""#,
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, running, queued)| (id, OpenRuns { running, queued }))
        .collect())
}

/// The checked inputs of each job in `jobs` whose workflow can start now, in one query; a job
/// missing from the map cannot start (the per-job path records why).
async fn startable_inputs(
    conn: &mut PgConnection,
    planned: &[Planned<'_>],
    jobs: &[usize],
) -> Result<HashMap<usize, Value>> {
    let ids: Vec<Uuid> = jobs
        .iter()
        .filter_map(|&i| planned[i].job.workflow_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let workflows: Vec<Workflow> = sqlx::query_as(
        r#"SELECT w."workflowID", w."tenantID", w."isDisabled", w."workflowOptions",
                  EXISTS (SELECT 1 FROM "tblWorkflowVersions" v
                          WHERE v."workflowID" = w."workflowID" AND v."version" = w."currentVersion"
                            AND v."startNodeID" IS NOT NULL) AS "hasStart"
           FROM "tblWorkflows" w WHERE w."workflowID" = ANY($1)"#,
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    let workflows: HashMap<Uuid, Workflow> =
        workflows.into_iter().map(|w| (w.workflow_id, w)).collect();
    Ok(jobs
        .iter()
        .filter_map(|&i| {
            let job = planned[i].job;
            let w = workflows.get(&job.workflow_id?)?;
            if w.tenant_id != job.tenant_id.0 || w.is_disabled == Some(true) || !w.has_start {
                return None;
            }
            let options = w.options.clone().unwrap_or_default();
            instance::check_inputs(&options, &input_values(job))
                .ok()
                .map(|inputs| (i, inputs))
        })
        .collect())
}

/// The history rows of the fast jobs: the missed-times row, then the fires, oldest first.
fn rows<'a>(
    planned: &'a [Planned<'_>],
    fast: &[usize],
    decisions: &HashMap<usize, Initial>,
    inputs: &HashMap<usize, Value>,
) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    for &i in fast {
        let Planned { job, plan } = &planned[i];
        if let Some(missed) = plan.skipped {
            rows.push(Row {
                job,
                at: missed.first,
                status: Initial::Skipped,
                trigger: Trigger::Scheduled.as_str(),
                result: Some(fire::missed_result(missed.first, missed.last, missed.count)),
                inputs: None,
                missed: true,
            });
        }
        for (at, trigger) in &plan.fires {
            let status = decisions[&i];
            rows.push(Row {
                job,
                at: *at,
                status,
                trigger: trigger.as_str(),
                result: (status == Initial::Skipped).then(fire::overlap_result),
                inputs: (status == Initial::Running).then(|| inputs[&i].clone()),
                missed: false,
            });
        }
    }
    rows
}

/// Writes the rows: one INSERT of every history row (a due time that has its row already is
/// left alone), one multi-row instance creation for the new RUNNING rows, one UPDATE giving
/// those rows their instances.
async fn write(conn: &mut PgConnection, rows: &[Row<'_>]) -> Result<Round> {
    let mut round = Round::default();
    if rows.is_empty() {
        return Ok(round);
    }
    let inserted: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        r#"INSERT INTO "tblCronJobHistory" ("cronJobID", "status", "triggerType", "scheduledAt", "startTime", "endTime", "result")
           SELECT job_id, initial, trigger_type, due_at, clock_timestamp(),
                  CASE WHEN initial = 'SKIPPED' THEN clock_timestamp() END, result
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
             AS r(job_id, initial, trigger_type, due_at, result)
           ON CONFLICT ON CONSTRAINT "uq_tblCronJobHistory_cronJobID_scheduledAt" DO NOTHING
           RETURNING "cronJobHistoryID", "cronJobID", "scheduledAt""#,
    )
    .bind(rows.iter().map(|r| r.job.cron_job_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.trigger).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.clone()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashMap<(Uuid, DateTime<Utc>), Uuid> = inserted
        .into_iter()
        .map(|(history, job, at)| ((job, at), history))
        .collect();

    let mut starting = Vec::new();
    for row in rows {
        let Some(&history_id) = inserted.get(&(row.job.cron_job_id, row.at)) else {
            // Another fire of this due time exists: nothing more to do (missed rows still count).
            if row.missed {
                round.held += 1;
            }
            continue;
        };
        match (row.status, &row.inputs) {
            (Initial::Running, Some(inputs)) => starting.push((row, history_id, inputs)),
            _ => round.held += 1,
        }
    }
    let runs: Vec<NewRun> = starting
        .iter()
        .map(|(row, _, inputs)| NewRun {
            tenant_id: row.job.tenant_id,
            workflow_id: row.job.workflow_id.unwrap_or_default(),
            inputs: (*inputs).clone(),
        })
        .collect();
    let instances = instance::create_many(&mut *conn, &runs).await?;

    let (mut histories, mut started, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for ((row, history_id, _), instance_id) in starting.iter().zip(instances) {
        match instance_id {
            Some(id) => {
                histories.push(*history_id);
                started.push(id);
                results.push(json!({"instanceID": id}).to_string());
                round.count(Fired::Running);
            }
            // The workflow changed since it was checked (deleted, or a version without a start
            // node): the per-job start records why and retries or parks the fire.
            None => round.count(fire::start(&mut *conn, row.job, *history_id, 1).await?),
        }
    }
    if !histories.is_empty() {
        sqlx::query(
            r#"UPDATE "tblCronJobHistory" h SET "status" = 'RUNNING', "instanceID" = r.instance, "attempt" = 1,
                 "startTime" = clock_timestamp(), "retryAt" = NULL, "result" = r.result, "updatedAt" = now()
               FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS r(history, instance, result)
               WHERE h."cronJobHistoryID" = r.history"#,
        )
        .bind(&histories)
        .bind(&started)
        .bind(&results)
        .execute(&mut *conn)
        .await?;
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(running: bool, queued: bool) -> OpenRuns {
        OpenRuns { running, queued }
    }

    #[test]
    fn overlap_decisions_match_the_policies() {
        for state in [
            open(false, false),
            open(true, false),
            open(false, true),
            open(true, true),
        ] {
            assert_eq!(Initial::decide("allow", state), Initial::Running);
        }
        assert_eq!(
            Initial::decide("skip", open(false, false)),
            Initial::Running
        );
        assert_eq!(Initial::decide("skip", open(true, false)), Initial::Skipped);
        assert_eq!(Initial::decide("skip", open(false, true)), Initial::Skipped);
        assert_eq!(
            Initial::decide("buffer_one", open(false, false)),
            Initial::Running
        );
        assert_eq!(
            Initial::decide("buffer_one", open(true, false)),
            Initial::Queued
        );
        assert_eq!(
            Initial::decide("buffer_one", open(true, true)),
            Initial::Skipped
        );
        assert_eq!(
            Initial::decide("buffer_one", open(false, true)),
            Initial::Skipped
        );
    }
}
