//! Request and response types of the cron job routes, and the checks a saved job must pass.

use crate::error::{ApiError, ApiResult};
use crate::routes::enums::{CatchupPolicy, OverlapPolicy, UnknownStored, stored, wire_enum};
use crate::routes::nullable::Nullable;
use chrono::{DateTime, Utc};
use jet_shared::cron::history::HistoryRow;
use jet_shared::cron::job::{CronJob, CronJobSpec};
use jet_shared::cron::schedule::{Schedule, ScheduleError};
use jet_shared::rbac::Grants;
use jet_shared::references::{self, Kind};
use jet_shared::workflow::instance;
use poem_openapi::Object;
use serde_json::Value;
use uuid::Uuid;

/// A cron job.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct CronJobOut {
    #[oai(rename = "cronJobID")]
    pub cron_job_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub cron_job_title: String,
    pub cron_job_description: Option<String>,
    /// node-cron expression: 5 fields, or 6 with leading seconds.
    pub cron_job_schedule: String,
    /// IANA zone the schedule is read in.
    pub timezone: String,
    pub is_disabled: bool,
    /// The next due time; absent while disabled.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last due time the scheduler handled.
    pub last_scheduled_at: Option<DateTime<Utc>>,
    pub timeout_seconds: Option<i32>,
    pub retry_attempts: i32,
    pub retry_delay_seconds: i32,
    pub overlap_policy: OverlapPolicy,
    pub catchup_policy: CatchupPolicy,
    pub max_catchup_runs: i32,
    #[oai(rename = "workflowID")]
    pub workflow_id: Option<Uuid>,
    pub workflow_config: Option<CronWorkflowConfig>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<CronJob> for CronJobOut {
    type Error = UnknownStored;

    fn try_from(j: CronJob) -> Result<Self, UnknownStored> {
        Ok(Self {
            cron_job_id: j.cron_job_id,
            tenant_id: j.tenant_id.0,
            cron_job_title: j.title,
            cron_job_description: j.description,
            cron_job_schedule: j.schedule,
            timezone: j.timezone,
            is_disabled: j.is_disabled,
            next_run_at: j.next_run_at,
            last_scheduled_at: j.last_scheduled_at,
            timeout_seconds: j.timeout_seconds,
            retry_attempts: j.retry_attempts,
            retry_delay_seconds: j.retry_delay_seconds,
            overlap_policy: OverlapPolicy::from_stored(&j.overlap_policy)?,
            catchup_policy: CatchupPolicy::from_stored(&j.catchup_policy)?,
            max_catchup_runs: j.max_catchup_runs,
            workflow_id: j.workflow_id,
            workflow_config: match j.workflow_config {
                None | Some(Value::Null) => None,
                Some(config) => Some(stored("workflowConfig", config)?),
            },
            creator_id: j.creator_id,
            created_by_api_key_id: j.created_by_api_key_id,
            created_at: j.created_at,
            updated_at: j.updated_at,
        })
    }
}

/// What each run of a cron job is given.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct CronWorkflowConfig {
    /// The run's input values (an object), checked against the workflow's input definitions
    /// (422 `invalid_inputs`).
    pub input_values: Option<Value>,
}

impl CronWorkflowConfig {
    /// As stored (upstream's column shape).
    fn into_value(self) -> Value {
        match self.input_values {
            Some(values) => serde_json::json!({ "inputValues": values }),
            None => serde_json::json!({}),
        }
    }
}

/// Body of `createCronJob`; absent optional fields take upstream's defaults.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreateCronJob {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub cron_job_title: String,
    #[oai(validator(max_length = 10000))]
    pub cron_job_description: Option<String>,
    #[oai(validator(max_length = 255))]
    pub cron_job_schedule: String,
    #[oai(rename = "workflowID")]
    pub workflow_id: Uuid,
    pub workflow_config: Option<CronWorkflowConfig>,
    pub is_disabled: Option<bool>,
    /// Seconds a run may take before it is cancelled (TIMEOUT); default 300.
    #[oai(validator(minimum(value = "1"), maximum(value = "604800")))]
    pub timeout_seconds: Option<i32>,
    /// Extra attempts for a fire that could not start; default 0.
    #[oai(validator(minimum(value = "0"), maximum(value = "10")))]
    pub retry_attempts: Option<i32>,
    /// Seconds between those attempts; default 60.
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub retry_delay_seconds: Option<i32>,
    /// IANA zone, default `UTC`.
    #[oai(validator(max_length = 64))]
    pub timezone: Option<String>,
    /// Default `allow`.
    pub overlap_policy: Option<OverlapPolicy>,
    /// Default `skip`.
    pub catchup_policy: Option<CatchupPolicy>,
    /// Most missed fires `catch_up` runs; default 10.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub max_catchup_runs: Option<i32>,
}

impl CreateCronJob {
    /// The spec this body describes, defaults filled in.
    pub fn into_spec(self) -> CronJobSpec {
        CronJobSpec {
            title: self.cron_job_title.trim().to_owned(),
            description: self.cron_job_description,
            schedule: self.cron_job_schedule.trim().to_owned(),
            timezone: self.timezone.unwrap_or_else(|| "UTC".into()),
            workflow_id: self.workflow_id,
            workflow_config: self.workflow_config.map(CronWorkflowConfig::into_value),
            is_disabled: self.is_disabled.unwrap_or(false),
            timeout_seconds: Some(self.timeout_seconds.unwrap_or(300)),
            retry_attempts: self.retry_attempts.unwrap_or(0),
            retry_delay_seconds: self.retry_delay_seconds.unwrap_or(60),
            overlap_policy: self
                .overlap_policy
                .unwrap_or(OverlapPolicy::Allow)
                .as_str()
                .to_owned(),
            catchup_policy: self
                .catchup_policy
                .unwrap_or(CatchupPolicy::Skip)
                .as_str()
                .to_owned(),
            max_catchup_runs: self.max_catchup_runs.unwrap_or(10),
        }
    }
}

/// Body of `updateCronJob`: absent fields stay, `null` clears a nullable one.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct UpdateCronJob {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub cron_job_title: Option<String>,
    /// `null` clears the description.
    #[oai(validator(max_length = 10000))]
    pub cron_job_description: Nullable<String>,
    #[oai(validator(max_length = 255))]
    pub cron_job_schedule: Option<String>,
    #[oai(rename = "workflowID")]
    pub workflow_id: Option<Uuid>,
    /// `null` clears the input given to each run.
    pub workflow_config: Nullable<CronWorkflowConfig>,
    pub is_disabled: Option<bool>,
    /// `null`: no timeout.
    #[oai(validator(minimum(value = "1"), maximum(value = "604800")))]
    pub timeout_seconds: Nullable<i32>,
    #[oai(validator(minimum(value = "0"), maximum(value = "10")))]
    pub retry_attempts: Option<i32>,
    #[oai(validator(minimum(value = "0"), maximum(value = "86400")))]
    pub retry_delay_seconds: Option<i32>,
    #[oai(validator(max_length = 64))]
    pub timezone: Option<String>,
    pub overlap_policy: Option<OverlapPolicy>,
    pub catchup_policy: Option<CatchupPolicy>,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub max_catchup_runs: Option<i32>,
}

fn maybe<T>(value: Nullable<T>, current: Option<T>) -> Option<T> {
    value.into_patch().unwrap_or(current)
}

impl UpdateCronJob {
    /// `base` with this body's fields applied.
    pub fn apply(self, base: CronJobSpec) -> CronJobSpec {
        CronJobSpec {
            title: self
                .cron_job_title
                .map(|t| t.trim().to_owned())
                .unwrap_or(base.title),
            description: maybe(self.cron_job_description, base.description),
            schedule: self
                .cron_job_schedule
                .map(|s| s.trim().to_owned())
                .unwrap_or(base.schedule),
            timezone: self.timezone.unwrap_or(base.timezone),
            workflow_id: self.workflow_id.unwrap_or(base.workflow_id),
            workflow_config: self
                .workflow_config
                .into_patch()
                .map_or(base.workflow_config, |c| {
                    c.map(CronWorkflowConfig::into_value)
                }),
            is_disabled: self.is_disabled.unwrap_or(base.is_disabled),
            timeout_seconds: maybe(self.timeout_seconds, base.timeout_seconds),
            retry_attempts: self.retry_attempts.unwrap_or(base.retry_attempts),
            retry_delay_seconds: self.retry_delay_seconds.unwrap_or(base.retry_delay_seconds),
            overlap_policy: self
                .overlap_policy
                .map_or(base.overlap_policy, |p| p.as_str().to_owned()),
            catchup_policy: self
                .catchup_policy
                .map_or(base.catchup_policy, |p| p.as_str().to_owned()),
            max_catchup_runs: self.max_catchup_runs.unwrap_or(base.max_catchup_runs),
        }
    }
}

/// A 422 naming the schedule field at fault.
pub fn schedule_error(err: ScheduleError) -> ApiError {
    match err {
        ScheduleError::Expression(m) => {
            ApiError::unprocessable_as("invalid_schedule", format!("cronJobSchedule: {m}"))
        }
        e @ ScheduleError::TimeZone(_) => {
            ApiError::unprocessable_as("invalid_timezone", format!("timezone: {e}"))
        }
    }
}

/// Checks a spec before it is saved: a title, a parsable schedule in a known zone, known
/// policies (a stored one may predate the enums), and `workflowConfig` shaped
/// `{inputValues: {...}}`. (NUL characters never get
/// here: the request boundary refuses them for every route.)
pub fn check(spec: &CronJobSpec) -> ApiResult<()> {
    if spec.title.is_empty() {
        return Err(ApiError::unprocessable("cronJobTitle must not be blank"));
    }
    let schedule = Schedule::parse(&spec.schedule, &spec.timezone).map_err(schedule_error)?;
    if schedule.next_after(Utc::now()).is_none() {
        return Err(ApiError::unprocessable_as(
            "invalid_schedule",
            "cronJobSchedule: the expression never matches a date (e.g. 31 April)",
        ));
    }
    OverlapPolicy::from_stored(&spec.overlap_policy)?;
    CatchupPolicy::from_stored(&spec.catchup_policy)?;
    match &spec.workflow_config {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => match map.get("inputValues") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => {
                return Err(ApiError::unprocessable_as(
                    "invalid_inputs",
                    "workflowConfig.inputValues must be an object",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::unprocessable("workflowConfig must be an object"));
        }
    }
    Ok(())
}

/// A fire of a cron job.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct HistoryOut {
    #[oai(rename = "cronJobHistoryID")]
    pub cron_job_history_id: Uuid,
    #[oai(rename = "cronJobID")]
    pub cron_job_id: Uuid,
    pub status: FireStatus,
    pub trigger_type: Option<TriggerType>,
    /// The due time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When it fired.
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Run time of the instance.
    pub duration_ms: Option<i32>,
    /// The instance id and its output or error (upstream stores this as JSON text).
    pub result: Option<Value>,
    #[oai(rename = "instanceID")]
    pub instance_id: Option<Uuid>,
    /// Start attempts so far.
    pub attempt: i32,
    /// When a RETRYING fire is tried again.
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

wire_enum! {
    /// Where a fire is: QUEUED (due, not started), RETRYING (a start failed, tried again at
    /// `retryAt`), RUNNING, then SUCCESS, FAILURE or TIMEOUT; SKIPPED counts due times that
    /// were not fired (overlap, downtime).
    pub enum FireStatus {
        Queued = "QUEUED",
        Retrying = "RETRYING",
        Running = "RUNNING",
        Success = "SUCCESS",
        Failure = "FAILURE",
        Timeout = "TIMEOUT",
        Skipped = "SKIPPED",
    }
}

wire_enum! {
    /// How a fire came about: on time (SCHEDULED), run now (MANUAL), or a missed due time
    /// fired late (CATCHUP).
    #[oai(remote = "jet_shared::cron::schedule::Trigger")]
    pub enum TriggerType {
        Scheduled = "SCHEDULED",
        Manual = "MANUAL",
        Catchup = "CATCHUP",
    }
}

impl TryFrom<HistoryRow> for HistoryOut {
    type Error = UnknownStored;

    fn try_from(h: HistoryRow) -> Result<Self, UnknownStored> {
        Ok(Self {
            cron_job_history_id: h.history_id,
            cron_job_id: h.cron_job_id,
            status: FireStatus::from_stored(&h.status)?,
            trigger_type: h
                .trigger_type
                .as_deref()
                .map(TriggerType::from_stored)
                .transpose()?,
            scheduled_at: h.scheduled_at,
            start_time: h.start_time,
            end_time: h.end_time,
            duration_ms: h.duration_ms,
            result: h
                .result
                .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text))),
            instance_id: h.instance_id,
            attempt: h.attempt,
            retry_at: h.retry_at,
            created_at: h.created_at,
        })
    }
}

/// The workflow must be the tenant's and executable by the caller (as upstream), and the
/// job's input values must fit its input definitions.
pub async fn check_workflow(
    conn: &mut sqlx::PgConnection,
    grants: &Grants,
    spec: &CronJobSpec,
) -> ApiResult<()> {
    references::require(conn, grants, Kind::Workflow, spec.workflow_id)
        .await
        .map_err(|err| match err {
            jet_shared::Error::Invalid(m) => {
                ApiError::unprocessable_as("invalid_workflow", format!("workflowID: {m}"))
            }
            other => other.into(),
        })?;
    let options =
        jet_shared::cron::job::workflow_options(conn, grants.tenant_id, spec.workflow_id).await?;
    let given = spec
        .workflow_config
        .as_ref()
        .and_then(|c| c.get("inputValues"))
        .cloned()
        .unwrap_or(Value::Null);
    instance::check_inputs(&options.unwrap_or_default(), &given).map_err(|m| {
        ApiError::unprocessable_as("invalid_inputs", format!("workflowConfig.inputValues: {m}"))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::FireStatus;

    /// The history filter's list in `shared` is the wire enum's, in order.
    #[test]
    fn fire_statuses_are_the_histories() {
        assert_eq!(FireStatus::VALUES, jet_shared::cron::history::STATUSES);
    }
}
