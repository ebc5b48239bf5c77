//! The answer of `testListener`: what the pipeline did and would do with a sample event, as
//! typed objects read from `listener::pipeline::dry_run`'s report.

use crate::routes::enums::{ActionType, UnknownStored, stored, wire_enum};
use poem_openapi::Object;
use serde_json::Value;
use uuid::Uuid;

/// The pipeline on a sample event; nothing was written.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DryRunReport {
    /// The event as sent.
    pub raw_event: Value,
    /// The event after the transforms; absent when one filtered it out or failed.
    pub transformed_event: Option<Value>,
    /// A transform returned `null` or `undefined`: nothing after it runs.
    pub filtered: bool,
    /// A transform's error, which aborts the pipeline.
    pub transform_error: Option<String>,
    /// The enabled actions in order, up to where the pipeline stopped.
    pub actions: Vec<DryRunStep>,
}

/// What one action did (a transform) or would do (every other type).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DryRunStep {
    #[oai(rename = "actionID")]
    pub action_id: Uuid,
    pub action_type: ActionType,
    pub status: DryRunStatus,
    /// `transformed`: the transform's output, the event from here on.
    pub output: Option<Value>,
    /// `planned`: the effect the action would have.
    pub effect: Option<DryRunEffect>,
    /// `aborted`, `would_fail`, `invalid`: why.
    pub error: Option<String>,
}

wire_enum! {
    /// How a step of a dry run went: a transform `transformed`, `filtered` or `aborted`; any
    /// other action `planned` or `would_fail` (its asset is missing or disabled); an action
    /// whose config no longer parses is `invalid`.
    pub enum DryRunStatus {
        Transformed = "transformed",
        Filtered = "filtered",
        Aborted = "aborted",
        Planned = "planned",
        WouldFail = "would_fail",
        Invalid = "invalid",
    }
}

/// The effect a `planned` action would have: exactly one member, by action type.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct DryRunEffect {
    pub start_workflow: Option<PlannedStart>,
    pub run_data_query: Option<PlannedQuery>,
    pub save_to_buffer: Option<PlannedBufferWrite>,
    pub push_to_app_page: Option<PlannedPush>,
}

/// `trigger_workflow`: the run it would start.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PlannedStart {
    #[oai(rename = "workflowID")]
    pub workflow_id: Uuid,
    pub workflow_title: String,
    /// The inputs, templates resolved against the event (free-form).
    pub input_values: Value,
}

/// `trigger_query`: the query it would run.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PlannedQuery {
    #[oai(rename = "dataQueryID")]
    pub data_query_id: Uuid,
    pub data_query_title: String,
    /// The inputs, templates resolved against the event (free-form).
    pub input_values: Value,
}

/// `save_to_buffer`: the ring buffer entry it would append.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct PlannedBufferWrite {
    pub buffer_name: String,
    pub max_events: Option<i64>,
    pub max_age_hours: Option<i64>,
    /// The event it would store.
    pub event_data: Value,
}

/// `push_to_app_page`: what the page's stream would receive.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PlannedPush {
    #[oai(rename = "appPageID")]
    pub app_page_id: Uuid,
    pub channel_name: String,
    /// How the page keeps what it receives (the action's `mode`).
    pub mode: String,
    pub max_array_length: i64,
    /// What it would push.
    pub data: Value,
}

impl TryFrom<Value> for DryRunReport {
    type Error = UnknownStored;

    /// Reads the report `dry_run` built; one that does not fit is an internal error.
    fn try_from(report: Value) -> Result<Self, UnknownStored> {
        stored("dry run report", report)
    }
}
