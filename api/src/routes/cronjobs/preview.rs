//! Next fire times of a schedule, and the scheduler's status, as the API returns them.

use super::wire::schedule_error;
use crate::error::ApiResult;
use chrono::{DateTime, Utc};
use jet_shared::cron::schedule::Schedule;
use jet_shared::cron::status::Status;
use poem_openapi::Object;
use uuid::Uuid;

/// One upcoming fire.
#[derive(Debug, Object)]
pub struct FireTime {
    /// In the schedule's zone, RFC 3339 with its offset (`2026-03-08T03:00:00-04:00`).
    pub local: String,
    pub utc: DateTime<Utc>,
}

/// The next fire times of a schedule.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct Preview {
    pub cron_job_schedule: String,
    pub timezone: String,
    /// Plain English, e.g. "At 02:30.".
    pub description: String,
    pub times: Vec<FireTime>,
}

/// The next `count` fire times of `expression` in `zone` after `now`.
pub fn preview(
    expression: &str,
    zone: &str,
    count: usize,
    now: DateTime<Utc>,
) -> ApiResult<Preview> {
    let schedule = Schedule::parse(expression, zone).map_err(schedule_error)?;
    let times = schedule
        .upcoming(now, count)
        .into_iter()
        .map(|t| FireTime {
            local: t.to_rfc3339(),
            utc: t.with_timezone(&Utc),
        })
        .collect();
    Ok(Preview {
        cron_job_schedule: expression.trim().to_owned(),
        timezone: schedule.zone().name().to_owned(),
        description: schedule.describe(),
        times,
    })
}

/// A live scheduler replica.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ReplicaOut {
    #[oai(rename = "workerID")]
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

/// The tenant's next due job.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct NextJob {
    #[oai(rename = "cronJobID")]
    pub cron_job_id: Uuid,
    pub cron_job_title: String,
    pub next_run_at: DateTime<Utc>,
}

/// Which scheduler replicas are alive, what is due next, and how late fires start.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct StatusOut {
    /// Replicas with a heartbeat in the last 30 s.
    pub replicas: Vec<ReplicaOut>,
    pub next_job: Option<NextJob>,
    /// Median due time → start of the tenant's last 1000 scheduled fires, in ms.
    pub lag_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub lag_p99_ms: Option<f64>,
}

impl From<Status> for StatusOut {
    fn from(s: Status) -> Self {
        Self {
            replicas: s
                .replicas
                .into_iter()
                .map(|r| ReplicaOut {
                    worker_id: r.worker_id,
                    started_at: r.started_at,
                    heartbeat_at: r.heartbeat_at,
                })
                .collect(),
            next_job: s.next_job.map(|(id, title, at)| NextJob {
                cron_job_id: id,
                cron_job_title: title,
                next_run_at: at,
            }),
            lag_p50_ms: s.lag_p50_ms,
            lag_p99_ms: s.lag_p99_ms,
        }
    }
}
