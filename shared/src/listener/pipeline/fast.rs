//! The set-based fast path of the pipeline: a claimed batch's first deliveries of one listener
//! whose enabled actions are only `transform`s and `trigger_workflow`s run in one transaction
//! — every action record, every instance (`instance::create_many`), every inbox row's end —
//! instead of two transactions per event. It keeps every guarantee of the per-event path:
//! transforms run first (in memory, no effects), an event whose transform fails or whose
//! inputs do not fit the workflow is left to the per-event path (which parks it), and the
//! action records are written in the same transaction as the instances, so a re-run finds
//! them. Anything unexpected rolls the transaction back and hands the events to the per-event
//! path.

use super::super::actions::ActionSpec;
use super::super::model::{Action, Listener};
use super::perform::{Performed, transform};
use super::{Claimed, Finished, TAIL_CHANNEL};
use crate::Result;
use crate::workflow::instance::{self, NewRun};
use crate::workflow::template::resolve_in;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Whether `actions` suit the fast path: at least one `trigger_workflow`, nothing but
/// `transform`s besides.
pub(super) fn suits(actions: &[Action]) -> bool {
    let enabled: Vec<&Action> = actions.iter().filter(|a| a.is_enabled).collect();
    enabled.iter().any(|a| a.action_type == "trigger_workflow")
        && enabled
            .iter()
            .all(|a| matches!(a.action_type.as_str(), "transform" | "trigger_workflow"))
}

/// One event on its way through the fast path.
struct Run<'a> {
    event: &'a Claimed,
    /// After the transforms; `None`: filtered out.
    transformed: Option<Value>,
    /// (action, inputs) for each `trigger_workflow`.
    starts: Vec<(Uuid, Value)>,
}

/// Runs what it can of `events` (all of `listener`) set-based; answers the ids it finished.
/// The rest are for the per-event path.
pub(super) async fn run(
    pool: &PgPool,
    listener: &Listener,
    actions: &[Action],
    events: &[&Claimed],
) -> Result<Vec<(Uuid, Finished)>> {
    let mut specs = Vec::new();
    for action in actions.iter().filter(|a| a.is_enabled) {
        match ActionSpec::parse(&action.action_type, &action.config) {
            Ok(spec) => specs.push((action, spec)),
            Err(_) => return Ok(Vec::new()),
        }
    }
    // The workflows the actions start: each must be the tenant's and enabled.
    let mut workflows = std::collections::HashMap::new();
    for (_, spec) in &specs {
        if let ActionSpec::TriggerWorkflow { workflow_id, .. } = spec {
            let found: Option<(Option<bool>, Option<Value>)> = sqlx::query_as(
                r#"SELECT "isDisabled", "workflowOptions" FROM "tblWorkflows" WHERE "workflowID" = $1 AND "tenantID" = $2"#,
            )
            .bind(workflow_id)
            .bind(listener.tenant_id)
            .fetch_optional(pool)
            .await?;
            match found {
                Some((disabled, options)) if disabled != Some(true) => {
                    workflows.insert(*workflow_id, options.unwrap_or_default());
                }
                // Missing or disabled: the per-event path parks each action with the reason.
                _ => return Ok(Vec::new()),
            }
        }
    }
    let mut runs = Vec::new();
    'events: for event in events {
        let mut current = event.raw.clone();
        let mut starts = Vec::new();
        for (action, spec) in &specs {
            match spec {
                ActionSpec::Transform { script, timeout_ms } => {
                    match transform(script, *timeout_ms, &current).await {
                        Ok(Performed::Transformed(Some(next))) => current = next,
                        Ok(_) => {
                            runs.push(Run {
                                event,
                                transformed: None,
                                starts: Vec::new(),
                            });
                            continue 'events;
                        }
                        // Fails: the per-event path parks it at this transform.
                        Err(_) => continue 'events,
                    }
                }
                ActionSpec::TriggerWorkflow {
                    workflow_id,
                    input_values,
                } => {
                    let inputs = match input_values {
                        Some(template) => resolve_in(template, "event", &current),
                        None => json!({"event": current}),
                    };
                    match instance::check_inputs(&workflows[workflow_id], &inputs) {
                        Ok(inputs) => starts.push((action.action_id, inputs)),
                        Err(_) => continue 'events,
                    }
                }
                _ => return Ok(Vec::new()),
            }
        }
        runs.push(Run {
            event,
            transformed: Some(current),
            starts,
        });
    }
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    commit(pool, listener, &specs, &runs).await
}

/// Writes the batch: action records, instances, origins, inbox ends, counters, tail messages.
async fn commit(
    pool: &PgPool,
    listener: &Listener,
    specs: &[(&Action, ActionSpec)],
    runs: &[Run<'_>],
) -> Result<Vec<(Uuid, Finished)>> {
    let workflow_of = |action_id: Uuid| {
        specs.iter().find_map(|(a, spec)| match spec {
            ActionSpec::TriggerWorkflow { workflow_id, .. } if a.action_id == action_id => {
                Some(*workflow_id)
            }
            _ => None,
        })
    };
    let (mut record_events, mut record_actions, mut new_runs) =
        (Vec::new(), Vec::new(), Vec::new());
    for run in runs {
        for (action_id, inputs) in &run.starts {
            record_events.push(run.event.event_id);
            record_actions.push(*action_id);
            new_runs.push(NewRun {
                tenant_id: listener.tenant_id,
                workflow_id: workflow_of(*action_id).unwrap_or_default(),
                inputs: inputs.clone(),
            });
        }
    }
    let mut tx = pool.begin().await?;
    let recorded: i64 = sqlx::query_scalar(
        r#"WITH ins AS (
             INSERT INTO "tblListenerActionRuns" ("eventID", "actionID")
             SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING RETURNING 1)
           SELECT count(*) FROM ins"#,
    )
    .bind(&record_events)
    .bind(&record_actions)
    .fetch_one(&mut *tx)
    .await?;
    if recorded != record_events.len() as i64 {
        // Something ran these already (a racing re-run): the per-event path sorts it out.
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    let created = instance::create_many(&mut tx, &new_runs).await?;
    let Some(instances) = created.into_iter().collect::<Option<Vec<Uuid>>>() else {
        tx.rollback().await?;
        return Ok(Vec::new());
    };
    let results: Vec<Value> = instances
        .iter()
        .map(|id| json!({"instanceID": id}))
        .collect();
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" i SET "originType" = 'listener', "originID" = $2
           FROM unnest($1::uuid[]) AS c(id) WHERE i."instanceID" = c.id"#,
    )
    .bind(&instances)
    .bind(listener.listener_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        r#"UPDATE "tblListenerActionRuns" r SET "result" = u.result
           FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[]) AS u(event_id, action_id, result)
           WHERE r."eventID" = u.event_id AND r."actionID" = u.action_id"#,
    )
    .bind(&record_events)
    .bind(&record_actions)
    .bind(&results)
    .execute(&mut *tx)
    .await?;
    // Each event's end, with the same summary the per-event path writes.
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut summaries = Vec::new();
    let mut tails = Vec::new();
    let mut finished = Vec::new();
    let mut next_result = results.iter();
    let mut effects = 0i64;
    for run in runs {
        let status = if run.transformed.is_some() {
            Finished::Done
        } else {
            Finished::Filtered
        };
        // A filtered event reports no actions, as the transform that dropped it had no effect.
        let mut report = Vec::new();
        if run.transformed.is_some() {
            for (action, spec) in specs {
                report.push(match spec {
                    ActionSpec::Transform { .. } => json!({"actionID": action.action_id,
                        "actionType": action.action_type, "status": "transformed"}),
                    _ => json!({"actionID": action.action_id, "actionType": action.action_type,
                        "status": "succeeded", "result": next_result.next().cloned().unwrap_or(Value::Null)}),
                });
            }
        }
        if !run.starts.is_empty() {
            effects += 1;
        }
        let event = run.transformed.clone().unwrap_or(Value::Null);
        tails.push(super::tail_message(
            listener.listener_id,
            run.event.event_id,
            &run.event.raw,
            &event,
            None,
            status,
        ));
        ids.push(run.event.event_id);
        statuses.push(status.as_str());
        summaries.push(
            json!({"event": event, "actions": report, "filtered": run.transformed.is_none()}),
        );
        finished.push((run.event.event_id, status));
    }
    sqlx::query(
        r#"UPDATE "tblListenerInbox" i SET "status" = u.status, "processedAt" = now(), "result" = u.result
           FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS u(id, status, result)
           WHERE i."eventID" = u.id AND i."status" = 'pending'"#,
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&summaries)
    .execute(&mut *tx)
    .await?;
    if effects > 0 {
        sqlx::query(
            r#"UPDATE "tblListeners" SET "lastEventAt" = now(), "eventCount" = "eventCount" + $2
               WHERE "listenerID" = $1"#,
        )
        .bind(listener.listener_id)
        .bind(effects)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t")
        .bind(TAIL_CHANNEL)
        .bind(&tails)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(finished)
}
