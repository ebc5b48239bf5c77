//! Request and response types of the DLQ routes: rows with their typed history, replay plans,
//! bulk filters and runs.

use crate::routes::enums::{DlqSource, DlqStatus, UnknownStored, stored, wire_enum};
use chrono::{DateTime, Utc};
use jet_shared::dlq::{self, DlqRow, Filter};
use poem_openapi::{Object, Union};
use serde_json::Value;
use uuid::Uuid;

/// A DLQ row with its attempt history.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DlqOut {
    #[oai(rename = "dlqID")]
    pub dlq_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Option<Uuid>,
    pub source: DlqSource,
    /// The instance (command), cron job (cron), listener, … the failure came from.
    #[oai(rename = "sourceID")]
    pub source_id: Option<Uuid>,
    /// What a replay re-runs: a command's bytes (`command`), a fire's workflow and inputs (`cron`).
    pub payload: Value,
    /// The payload as it first arrived, when a replay ran an edited one.
    pub original_payload: Option<Value>,
    /// The last error.
    pub error: String,
    /// Retries made since the row landed.
    pub retry_count: i32,
    /// Retries allowed before the row is PARKED.
    pub max_retries: i32,
    /// When the next automatic retry is due (PENDING rows).
    pub next_retry_at: Option<DateTime<Utc>>,
    pub status: DlqStatus,
    /// Every try, oldest first; the first is the failure that landed the row.
    pub attempts: Vec<DlqAttempt>,
    /// When it landed.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it was REPLAYED or DISCARDED.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When a re-run last succeeded.
    pub replayed_at: Option<DateTime<Utc>>,
    /// When it was discarded.
    pub discarded_at: Option<DateTime<Utc>>,
    /// `user:<userID>` or `apikey:<apiKeyID>`.
    pub discarded_by: Option<String>,
}

/// One entry of a DLQ row's history: the landing failure, then each re-run, failure and
/// discard, as the database and the re-run code record them.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DlqAttempt {
    pub at: DateTime<Utc>,
    /// Who: `user:<userID>`, `apikey:<apiKeyID>`, `maintenance` (automatic retries and
    /// bulk runs), `command` (the re-run command itself), or the row's source when it landed.
    pub by: String,
    /// Absent on the landing entry.
    pub outcome: Option<AttemptOutcome>,
    /// Why the try failed (and, on the landing entry, the failure itself).
    pub error: Option<String>,
    /// The reason given with a discard.
    pub reason: Option<String>,
    /// The queued command of a `pushed` re-run, or the command that failed.
    #[oai(rename = "jobID")]
    pub job_id: Option<String>,
    /// The run a `succeeded` cron replay started.
    #[oai(rename = "instanceID")]
    pub instance_id: Option<Uuid>,
    /// What a replayed listener action returned (free-form).
    pub result: Option<Value>,
    /// The row's retry count when it landed.
    pub retry_count: Option<i32>,
    /// The queue's own attempts of a command that landed here.
    pub apalis_attempts: Option<i32>,
}

wire_enum! {
    /// How a try of a DLQ row ended: re-queued (`pushed`), ran (`succeeded`), failed again
    /// (`failed`), `discarded`, or `lost` (its re-run command vanished from the queue).
    pub enum AttemptOutcome {
        Pushed = "pushed",
        Succeeded = "succeeded",
        Failed = "failed",
        Discarded = "discarded",
        Lost = "lost",
    }
}

/// What a replay runs, by `action`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "action", one_of)]
pub enum ReplayPlan {
    #[oai(mapping = "push_command")]
    PushCommand(PlanPushCommand),
    #[oai(mapping = "start_workflow")]
    StartWorkflow(PlanStartWorkflow),
    #[oai(mapping = "listener_action")]
    ListenerAction(PlanListenerAction),
}

/// Queue the command again.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PlanPushCommand {
    /// The command as JSON (`{raw: <hex>}` when its bytes are not JSON).
    pub command: Value,
    /// Queue attempts the re-run gets.
    pub max_attempts: i64,
}

/// Start the cron fire's workflow.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PlanStartWorkflow {
    #[oai(rename = "workflowID")]
    pub workflow_id: Uuid,
    /// The fire's inputs (free-form, the workflow's).
    pub input_values: Value,
}

/// Run the listener action on the event again.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PlanListenerAction {
    #[oai(rename = "listenerID")]
    pub listener_id: Uuid,
    #[oai(rename = "eventID")]
    pub event_id: Uuid,
    #[oai(rename = "actionID")]
    pub action_id: Uuid,
    /// The event the action runs on (free-form, the source's).
    pub event: Value,
}

impl TryFrom<DlqRow> for DlqOut {
    type Error = UnknownStored;

    fn try_from(r: DlqRow) -> Result<Self, UnknownStored> {
        Ok(Self {
            dlq_id: r.dlq_id,
            tenant_id: r.tenant_id,
            source: DlqSource::from_stored(&r.source)?,
            source_id: r.source_id,
            payload: r.payload,
            original_payload: r.original_payload,
            error: r.error,
            retry_count: r.retry_count,
            max_retries: r.max_retries,
            next_retry_at: r.next_retry_at,
            status: DlqStatus::from_stored(&r.status)?,
            attempts: stored("attempts", r.attempts)?,
            created_at: r.created_at,
            updated_at: r.updated_at,
            resolved_at: r.resolved_at,
            replayed_at: r.replayed_at,
            discarded_at: r.discarded_at,
            discarded_by: r.discarded_by,
        })
    }
}

/// `POST …/{dlqID}/replay`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ReplayRequest {
    /// An edited payload to run instead (the first one is kept as `originalPayload`). An edited
    /// command must decode and name an instance or human step of this tenant.
    pub payload: Option<Value>,
    /// Answer what would run; write nothing.
    pub dry_run: Option<bool>,
}

/// What a replay did or would do.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ReplayOut {
    #[oai(rename = "dlqID")]
    pub dlq_id: Uuid,
    /// The row's status afterwards: REPLAYED (a workflow started), RETRYING (a command was
    /// queued again; REPLAYED once it runs), PENDING or PARKED (the re-run failed again).
    pub status: DlqStatus,
    /// What runs.
    pub plan: ReplayPlan,
    /// The attempt recorded (absent on a dry run).
    pub attempt: Option<DlqAttempt>,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
}

/// `POST …/{dlqID}/discard`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct DiscardRequest {
    /// Why, kept in the row's history.
    #[oai(validator(max_length = 500))]
    pub reason: Option<String>,
}

/// The filters of a bulk action (all optional; they combine with AND).
#[derive(Debug, Object, Default)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DlqFilters {
    pub source: Option<DlqSource>,
    pub status: Option<DlqStatus>,
    #[oai(rename = "sourceID")]
    pub source_id: Option<Uuid>,
    /// Case-insensitive substring of the last error.
    #[oai(validator(max_length = 500))]
    pub error: Option<String>,
    /// Rows created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Rows created before.
    pub to: Option<DateTime<Utc>>,
}

impl From<DlqFilters> for Filter {
    fn from(f: DlqFilters) -> Self {
        Filter {
            source: f.source.map(|s| s.as_str().to_owned()),
            status: f.status.map(|s| s.as_str().to_owned()),
            source_id: f.source_id,
            error: f.error,
            from: f.from,
            to: f.to,
        }
    }
}

/// `POST …/replay` and `POST …/discard`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct BulkRequest {
    /// Which rows (PENDING and PARKED ones only); none: all of them.
    pub filters: Option<DlqFilters>,
    /// Count the matching rows and show a sample; act on none.
    pub dry_run: Option<bool>,
    /// At most this many rows a second (1–50); unlimited when absent.
    #[oai(validator(minimum(value = "1"), maximum(value = "50")))]
    pub per_second: Option<u32>,
}

/// A bulk dry run: what the action would act on.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct BulkPreviewOut {
    /// PENDING and PARKED rows matching the filters.
    pub matched: i64,
    /// Always true: nothing was written.
    pub dry_run: bool,
    /// The first 10 matching rows, oldest first.
    pub sample: Vec<DlqOut>,
}

/// A bulk replay or discard running in the background.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct BulkRunOut {
    #[oai(rename = "runID")]
    pub run_id: Uuid,
    pub action: BulkRunAction,
    pub status: BulkRunStatus,
    /// PENDING and PARKED rows matching the filters when the run started.
    pub matched: i64,
    /// Rows acted on so far.
    pub processed: i64,
    /// Rows replayed (or queued again) or discarded.
    pub succeeded: i64,
    /// Rows whose replay failed again (back in the DLQ with one more attempt) or that changed
    /// meanwhile.
    pub failed: i64,
    /// At most this many rows a second.
    pub per_second: Option<i32>,
    /// The filters the run was started with.
    pub filters: DlqFilters,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

wire_enum! {
    /// What a bulk run does to each row.
    #[oai(remote = "jet_shared::dlq::BulkAction")]
    pub enum BulkRunAction {
        Replay = "replay",
        Discard = "discard",
    }
}

wire_enum! {
    /// `running` until every matching row has been acted on, then `done`.
    pub enum BulkRunStatus {
        Running = "running",
        Done = "done",
    }
}

impl TryFrom<dlq::runs::BulkRun> for BulkRunOut {
    type Error = UnknownStored;

    fn try_from(r: dlq::runs::BulkRun) -> Result<Self, UnknownStored> {
        // Stored by `dlq::runs::start` from the same filters; nulls are absent filters.
        let filters = stored("filters", r.filters)?;
        Ok(Self {
            run_id: r.run_id,
            action: BulkRunAction::from_stored(&r.action)?,
            status: BulkRunStatus::from_stored(&r.status)?,
            matched: r.matched,
            processed: r.processed,
            succeeded: r.succeeded,
            failed: r.failed,
            per_second: r.per_second,
            filters,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        })
    }
}
