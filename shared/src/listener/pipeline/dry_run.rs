//! `POST …/listeners/{id}/test`: the pipeline on a sample event, writing nothing. Transforms
//! run for real (they have no effects); every other action answers what it would do, with
//! the templates resolved against the transformed event and the assets it names looked up.

use super::super::actions::ActionSpec;
use super::super::model::{Action, Listener};
use super::perform::{Failure, Performed, transform};
use crate::Result;
use crate::datasource::DataRuntime;
use crate::workflow::template::resolve_in;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Runs the listener's enabled `actions` on `event` as a dry run:
/// `{rawEvent, transformedEvent, filtered, transformError, actions: [{actionID, actionType,
/// status, effect | error}]}`.
pub async fn dry_run(
    pool: &PgPool,
    _data: &DataRuntime,
    listener: &Listener,
    actions: &[Action],
    event: Value,
) -> Result<Value> {
    let raw = event.clone();
    let mut event = event;
    let mut report = Vec::new();
    let mut filtered = false;
    let mut transform_error = Value::Null;
    for action in actions.iter().filter(|a| a.is_enabled) {
        let base = json!({"actionID": action.action_id, "actionType": action.action_type});
        let with = |mut e: Value, more: Value| {
            if let (Some(o), Value::Object(m)) = (e.as_object_mut(), more) {
                o.extend(m);
            }
            e
        };
        let spec = match ActionSpec::parse(&action.action_type, &action.config) {
            Ok(spec) => spec,
            Err(e) => {
                report.push(with(
                    base,
                    json!({"status": "invalid", "error": e.to_string()}),
                ));
                continue;
            }
        };
        let planned = match &spec {
            ActionSpec::Transform { script, timeout_ms } => {
                match transform(script, *timeout_ms, &event).await {
                    Ok(Performed::Transformed(Some(next))) => {
                        event = next;
                        report.push(with(
                            base,
                            json!({"status": "transformed", "output": event}),
                        ));
                    }
                    Ok(_) => {
                        filtered = true;
                        report.push(with(base, json!({"status": "filtered"})));
                        break;
                    }
                    Err(Failure(message)) => {
                        transform_error = json!(message);
                        report.push(with(base, json!({"status": "aborted", "error": message})));
                        break;
                    }
                }
                continue;
            }
            ActionSpec::TriggerWorkflow {
                workflow_id,
                input_values,
            } => {
                let inputs = input_values.as_ref().map_or_else(
                    || json!({"event": event}),
                    |t| resolve_in(t, "event", &event),
                );
                let found: Option<(String, Option<bool>)> = sqlx::query_as(
                    r#"SELECT "title", "isDisabled" FROM "tblWorkflows" WHERE "workflowID" = $1 AND "tenantID" = $2"#,
                )
                .bind(workflow_id)
                .bind(listener.tenant_id)
                .fetch_optional(pool)
                .await?;
                match found {
                    None => Err("the workflow does not exist in this tenant".to_owned()),
                    Some((_, Some(true))) => Err("the workflow is disabled".to_owned()),
                    Some((title, _)) => Ok(
                        json!({"startWorkflow": {"workflowID": workflow_id, "workflowTitle": title, "inputValues": inputs}}),
                    ),
                }
            }
            ActionSpec::TriggerQuery {
                data_query_id,
                input_values,
            } => {
                let inputs = input_values
                    .as_ref()
                    .map_or_else(|| json!({}), |t| resolve_in(t, "event", &event));
                match crate::dataquery::get(pool, listener.tenant_id, *data_query_id).await {
                    Ok(q) => Ok(
                        json!({"runDataQuery": {"dataQueryID": data_query_id, "dataQueryTitle": q.title, "inputValues": inputs}}),
                    ),
                    Err(e) => Err(e.to_string()),
                }
            }
            ActionSpec::SaveToBuffer {
                buffer_name,
                max_events,
                max_age_hours,
                ..
            } => Ok(json!({
                "saveToBuffer": {"bufferName": buffer_name, "maxEvents": max_events, "maxAgeHours": max_age_hours, "eventData": event}
            })),
            ActionSpec::PushToAppPage {
                app_page_id,
                channel_name,
                mode,
                max_array_length,
            } => match crate::app_page::get(pool, listener.tenant_id, *app_page_id).await {
                Ok(_) => Ok(json!({"pushToAppPage": {
                        "appPageID": app_page_id,
                        "channelName": channel_name.clone().unwrap_or_else(|| format!("listener:{}", listener.listener_id)),
                        "mode": mode, "maxArrayLength": max_array_length, "data": event}})),
                Err(e) => Err(e.to_string()),
            },
        };
        report.push(match planned {
            Ok(effect) => with(base, json!({"status": "planned", "effect": effect})),
            Err(error) => with(base, json!({"status": "would_fail", "error": error})),
        });
    }
    Ok(json!({
        "rawEvent": raw,
        "transformedEvent": if filtered || !transform_error.is_null() { Value::Null } else { event },
        "filtered": filtered,
        "transformError": transform_error,
        "actions": report,
    }))
}
