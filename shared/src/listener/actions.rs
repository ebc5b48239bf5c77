//! What each pipeline action's `actionConfig` means, checked when the action is saved (a 422
//! naming the field) and read the same way when it runs.

use super::config::ConfigError;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Action types this build runs, upstream's names.
pub const TYPES: [&str; 5] = [
    "transform",
    "trigger_workflow",
    "trigger_query",
    "save_to_buffer",
    "push_to_app_page",
];

/// Upstream's transform limit: 100 ms per event unless the action says otherwise.
pub const DEFAULT_TRANSFORM_TIMEOUT_MS: u64 = 100;
/// The most a transform may be given.
pub const MAX_TRANSFORM_TIMEOUT_MS: u64 = 5_000;
/// Largest transform script.
pub const MAX_SCRIPT_BYTES: usize = 64 << 10;
/// Largest ring buffer.
pub const MAX_BUFFER_EVENTS: i64 = 1_000_000;

/// How a ring buffer drops old events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep the newest `maxEvents`.
    Count,
    /// Drop events older than `maxAgeHours`.
    Time,
    /// Both.
    Both,
    /// Unbounded (no policy configured, as upstream).
    None,
}

/// One action, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionSpec {
    /// Run `script` with `event` in scope; its return value replaces the event, `null` or
    /// `undefined` drops it, an error aborts the pipeline.
    Transform { script: String, timeout_ms: u64 },
    /// Start `workflow_id`; `input_values` is a template rooted at `{{event.…}}` (default
    /// `{event}`).
    TriggerWorkflow {
        workflow_id: Uuid,
        input_values: Option<Value>,
    },
    /// Run `data_query_id`; `input_values` as above (default `{}`).
    TriggerQuery {
        data_query_id: Uuid,
        input_values: Option<Value>,
    },
    /// Append to the ring buffer `buffer_name` of `tblListenerEvents`.
    SaveToBuffer {
        buffer_name: String,
        retention: Retention,
        max_events: Option<i64>,
        max_age_hours: Option<i64>,
    },
    /// Send to the app page's SSE channel.
    PushToAppPage {
        app_page_id: Uuid,
        channel_name: Option<String>,
        mode: String,
        max_array_length: i64,
    },
}

fn bad(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: format!("actionConfig.{field}"),
        message: message.into(),
    }
}

fn uuid_field(obj: &Map<String, Value>, key: &str) -> Result<Uuid, ConfigError> {
    match obj.get(key) {
        Some(Value::String(s)) => s.parse().map_err(|_| bad(key, "must be a UUID")),
        None | Some(Value::Null) => Err(bad(key, "is required")),
        Some(_) => Err(bad(key, "must be a UUID string")),
    }
}

fn input_values(obj: &Map<String, Value>) -> Result<Option<Value>, ConfigError> {
    match obj.get("inputValues") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(bad("inputValues", "must be an object")),
    }
}

fn int_in(
    obj: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be an integer from {min} to {max}"))),
    }
}

fn text(obj: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(bad(key, "must not be empty")),
        Some(Value::String(s)) if s.len() > max || s.contains('\0') => Err(bad(
            key,
            format!("must be at most {max} bytes, without NUL characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(key, "must be a string")),
    }
}

impl ActionSpec {
    /// Parses and checks an action.
    pub fn parse(action_type: &str, config: &Value) -> Result<ActionSpec, ConfigError> {
        let empty = Map::new();
        let obj = match config {
            Value::Object(o) => o,
            Value::Null => &empty,
            _ => {
                return Err(ConfigError {
                    field: "actionConfig".into(),
                    message: "must be an object".into(),
                });
            }
        };
        match action_type {
            "transform" => Ok(ActionSpec::Transform {
                script: text(obj, "script", MAX_SCRIPT_BYTES)?.ok_or_else(|| {
                    bad(
                        "script",
                        "is required: JavaScript that returns the new event",
                    )
                })?,
                timeout_ms: int_in(obj, "timeoutMs", 1, MAX_TRANSFORM_TIMEOUT_MS as i64)?
                    .map_or(DEFAULT_TRANSFORM_TIMEOUT_MS, |n| n as u64),
            }),
            "trigger_workflow" => Ok(ActionSpec::TriggerWorkflow {
                workflow_id: uuid_field(obj, "workflowID")?,
                input_values: input_values(obj)?,
            }),
            "trigger_query" => Ok(ActionSpec::TriggerQuery {
                data_query_id: uuid_field(obj, "dataQueryID")?,
                input_values: input_values(obj)?,
            }),
            "save_to_buffer" => {
                let buffer_name = text(obj, "bufferName", 255)?.unwrap_or_else(|| "default".into());
                let max_events = int_in(obj, "maxEvents", 1, MAX_BUFFER_EVENTS)?;
                let max_age_hours = int_in(obj, "maxAgeHours", 1, 24 * 365 * 10)?;
                let retention = match obj.get("retentionPolicy") {
                    None | Some(Value::Null) => match (max_events, max_age_hours) {
                        (Some(_), Some(_)) => Retention::Both,
                        (Some(_), None) => Retention::Count,
                        (None, Some(_)) => Retention::Time,
                        (None, None) => Retention::None,
                    },
                    Some(Value::String(p)) if p == "count" => Retention::Count,
                    Some(Value::String(p)) if p == "time" => Retention::Time,
                    Some(Value::String(p)) if p == "both" => Retention::Both,
                    Some(_) => {
                        return Err(bad(
                            "retentionPolicy",
                            "must be \"count\", \"time\" or \"both\"",
                        ));
                    }
                };
                if matches!(retention, Retention::Count | Retention::Both) && max_events.is_none() {
                    return Err(bad("maxEvents", "is required by this retentionPolicy"));
                }
                if matches!(retention, Retention::Time | Retention::Both) && max_age_hours.is_none()
                {
                    return Err(bad("maxAgeHours", "is required by this retentionPolicy"));
                }
                Ok(ActionSpec::SaveToBuffer {
                    buffer_name,
                    retention,
                    max_events,
                    max_age_hours,
                })
            }
            "push_to_app_page" => {
                let mode = text(obj, "mode", 20)?.unwrap_or_else(|| "replace".into());
                if !["replace", "append", "prepend"].contains(&mode.as_str()) {
                    return Err(bad(
                        "mode",
                        "must be \"replace\", \"append\" or \"prepend\"",
                    ));
                }
                Ok(ActionSpec::PushToAppPage {
                    app_page_id: uuid_field(obj, "appPageID")?,
                    channel_name: text(obj, "channelName", 255)?,
                    mode,
                    max_array_length: int_in(obj, "maxArrayLength", 1, 100_000)?.unwrap_or(1000),
                })
            }
            other => Err(ConfigError {
                field: "actionType".into(),
                message: format!("unknown action type {other:?}; one of {}", TYPES.join(", ")),
            }),
        }
    }

    /// The workflow or data query this action runs, whose execute permission saving it needs.
    pub fn reference(&self) -> Option<(crate::references::Kind, Uuid)> {
        use crate::references::Kind;
        match self {
            ActionSpec::TriggerWorkflow { workflow_id, .. } => Some((Kind::Workflow, *workflow_id)),
            ActionSpec::TriggerQuery { data_query_id, .. } => {
                Some((Kind::DataQuery, *data_query_id))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn buffers_need_the_limits_their_policy_names() {
        let err = ActionSpec::parse(
            "save_to_buffer",
            &json!({"retentionPolicy": "both", "maxEvents": 5}),
        )
        .expect_err("refused");
        assert_eq!(err.field, "actionConfig.maxAgeHours");
        let spec =
            ActionSpec::parse("save_to_buffer", &json!({"maxEvents": 100})).expect("accepted");
        assert!(matches!(
            spec,
            ActionSpec::SaveToBuffer {
                retention: Retention::Count,
                max_events: Some(100),
                ..
            }
        ));
    }

    #[test]
    fn ids_must_be_uuids_and_types_known() {
        let err =
            ActionSpec::parse("trigger_workflow", &json!({"workflowID": 7})).expect_err("refused");
        assert_eq!(err.field, "actionConfig.workflowID");
        let err = ActionSpec::parse("send_email", &json!({})).expect_err("refused");
        assert_eq!(err.field, "actionType");
    }
}
