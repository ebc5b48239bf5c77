//! Running one action on one event. Every action with an effect records itself in
//! `tblListenerActionRuns` first, in the transaction of its effect: a second run (a re-claimed
//! event, a DLQ retry racing a replay) finds the record, waits for the first to commit, and
//! does nothing.

use super::super::actions::{ActionSpec, Retention};
use super::super::model::{Action, Listener};
use crate::datasource::DataRuntime;
use crate::workflow::template::resolve_in;
use crate::{Error, Result};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// An action failed in a way retrying the event now would not fix: it is parked.
pub(crate) struct Failure(pub String);

/// What an action did.
pub(crate) enum Performed {
    /// A transform's output; `None` filters the event out.
    Transformed(Option<Value>),
    /// An action with an effect ran; its result (instance id, buffer seqNo, …).
    Effect(Value),
    /// The action had already succeeded for this event.
    AlreadyDone,
}

type Attempt = Result<std::result::Result<Performed, Failure>>;

/// Whether a domain error is the action's failure (park it) rather than the platform's (leave
/// the event pending and try again).
fn failure_of(err: Error) -> Result<Failure> {
    match err {
        Error::Database(_) if !err.is_data_rejection() => Err(err),
        other => Ok(Failure(other.to_string())),
    }
}

/// Runs `spec` on `event`.
pub(crate) async fn perform(
    pool: &PgPool,
    data: &DataRuntime,
    listener: &Listener,
    action: &Action,
    spec: &ActionSpec,
    event_id: Uuid,
    event: &Value,
) -> Attempt {
    if let ActionSpec::Transform { script, timeout_ms } = spec {
        return Ok(transform(script, *timeout_ms, event).await);
    }
    // The record is taken first and held (uncommitted) while the effect runs, so a concurrent
    // second run waits for this one instead of repeating the effect.
    let Some(mut tx) = begin_recorded(pool, event_id, action.action_id).await? else {
        return Ok(Ok(Performed::AlreadyDone));
    };
    let outcome = match spec {
        ActionSpec::Transform { .. } => unreachable!("handled above"),
        ActionSpec::TriggerWorkflow {
            workflow_id,
            input_values,
        } => {
            let inputs = match input_values {
                Some(template) => resolve_in(template, "event", event),
                None => json!({"event": event}),
            };
            trigger_workflow(&mut tx, listener, *workflow_id, &inputs).await?
        }
        ActionSpec::TriggerQuery {
            data_query_id,
            input_values,
        } => {
            let inputs = match input_values {
                Some(template) => resolve_in(template, "event", event),
                None => json!({}),
            };
            trigger_query(pool, data, listener, *data_query_id, &inputs).await?
        }
        ActionSpec::SaveToBuffer {
            buffer_name,
            retention,
            max_events,
            max_age_hours,
        } => {
            let seq = save_to_buffer(
                &mut tx,
                listener,
                buffer_name,
                *retention,
                *max_events,
                *max_age_hours,
                event,
            )
            .await?;
            Ok(json!({"bufferName": buffer_name, "seqNo": seq}))
        }
        ActionSpec::PushToAppPage {
            app_page_id,
            channel_name,
            mode,
            max_array_length,
        } => {
            push_to_app_page(
                &mut tx,
                listener,
                *app_page_id,
                channel_name.as_deref(),
                mode,
                *max_array_length,
                event,
            )
            .await?
        }
    };
    match outcome {
        Ok(result) => {
            sqlx::query(r#"UPDATE "tblListenerActionRuns" SET "result" = $3 WHERE "eventID" = $1 AND "actionID" = $2"#)
                .bind(event_id)
                .bind(action.action_id)
                .bind(&result)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(Performed::Effect(result)))
        }
        Err(failure) => {
            tx.rollback().await?;
            Ok(Err(failure))
        }
    }
}

type Effect = Result<std::result::Result<Value, Failure>>;

/// Begins the transaction of an effect by recording the action as done for the event; `None`
/// when it already is (after the first run committed).
async fn begin_recorded(
    pool: &PgPool,
    event_id: Uuid,
    action_id: Uuid,
) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
    let mut tx = pool.begin().await?;
    let fresh: Option<Uuid> = sqlx::query_scalar(
        r#"INSERT INTO "tblListenerActionRuns" ("eventID", "actionID") VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING "actionID""#,
    )
    .bind(event_id)
    .bind(action_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(fresh.map(|_| tx))
}

async fn trigger_workflow(
    conn: &mut PgConnection,
    listener: &Listener,
    workflow_id: Uuid,
    inputs: &Value,
) -> Effect {
    let instance_id = match crate::cron::fire::start_workflow(
        &mut *conn,
        listener.tenant_id,
        Some(workflow_id),
        inputs,
    )
    .await
    {
        Ok(id) => id,
        Err(e) => return Ok(Err(failure_of(e)?)),
    };
    sqlx::query(r#"UPDATE "tblWorkflowInstances" SET "originType" = 'listener', "originID" = $2 WHERE "instanceID" = $1"#)
        .bind(instance_id)
        .bind(listener.listener_id)
        .execute(&mut *conn)
        .await?;
    Ok(Ok(json!({"instanceID": instance_id})))
}

async fn trigger_query(
    pool: &PgPool,
    data: &DataRuntime,
    listener: &Listener,
    data_query_id: Uuid,
    inputs: &Value,
) -> Effect {
    let query = match crate::dataquery::get(pool, listener.tenant_id, data_query_id).await {
        Ok(q) => q,
        Err(e) => return Ok(Err(failure_of(e)?)),
    };
    Ok(
        match crate::dataquery::run(pool, data, &query, inputs).await {
            Ok(out) => Ok(json!({"rowCount": out.row_count, "truncated": out.truncated})),
            Err(e) => Err(Failure(format!("{}: {e}", e.code()))),
        },
    )
}

async fn push_to_app_page(
    conn: &mut PgConnection,
    listener: &Listener,
    app_page_id: Uuid,
    channel_name: Option<&str>,
    mode: &str,
    max_array_length: i64,
    event: &Value,
) -> Effect {
    if let Err(e) = crate::app_page::get(&mut *conn, listener.tenant_id, app_page_id).await {
        return Ok(Err(failure_of(e)?));
    }
    let channel = channel_name.map_or_else(
        || format!("listener:{}", listener.listener_id),
        str::to_owned,
    );
    let message = json!({
        "type": "listener_event", "channelName": channel, "data": event, "mode": mode,
        "limit": max_array_length,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    Ok(
        match crate::app_page::push(conn, app_page_id, &message).await {
            Ok(()) => Ok(json!({"appPageID": app_page_id, "channelName": channel})),
            Err(e) => Err(failure_of(e)?),
        },
    )
}

/// Runs a transform script on a blocking thread: `event` is in scope, its return value is the
/// new event.
pub(crate) async fn transform(
    script: &str,
    timeout_ms: u64,
    event: &Value,
) -> std::result::Result<Performed, Failure> {
    let source = format!("(function(event){{\n{script}\n}})(ctx)");
    let event = event.clone();
    let timeout = Duration::from_millis(timeout_ms);
    let ran = tokio::task::spawn_blocking(move || {
        crate::workflow::sandbox::eval(&source, &event, timeout)
    })
    .await;
    match ran {
        Ok(Ok(Value::Null)) => Ok(Performed::Transformed(None)),
        Ok(Ok(next)) => match super::super::inbox::check(&next) {
            Ok(()) => Ok(Performed::Transformed(Some(next))),
            Err(e) => Err(Failure(format!(
                "the transform's output cannot be stored: {e}"
            ))),
        },
        Ok(Err(message)) => Err(Failure(format!("transform failed: {message}"))),
        Err(join) => Err(Failure(format!("transform failed: {join}"))),
    }
}

/// Appends to a ring buffer and applies its retention in the same transaction. A per-buffer
/// advisory lock serialises writers of one buffer, so "the newest N" is exact under
/// concurrency: each writer deletes beyond N after its own insert, in seqNo order.
async fn save_to_buffer(
    tx: &mut PgConnection,
    listener: &Listener,
    buffer_name: &str,
    retention: Retention,
    max_events: Option<i64>,
    max_age_hours: Option<i64>,
    event: &Value,
) -> Result<i64> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("jet-buffer:{}:{buffer_name}", listener.listener_id))
        .execute(&mut *tx)
        .await?;
    let seq: i64 = sqlx::query_scalar(
        r#"INSERT INTO "tblListenerEvents" ("listenerID", "tenantID", "bufferName", "eventData", "eventMeta")
           VALUES ($1, $2, $3, $4, $4 -> '__metadata') RETURNING "seqNo""#,
    )
    .bind(listener.listener_id)
    .bind(listener.tenant_id)
    .bind(buffer_name)
    .bind(event)
    .fetch_one(&mut *tx)
    .await?;
    if let (Retention::Count | Retention::Both, Some(max)) = (retention, max_events) {
        sqlx::query(
            r#"DELETE FROM "tblListenerEvents" WHERE "listenerID" = $1 AND "bufferName" = $2 AND "seqNo" <= (
                 SELECT "seqNo" FROM "tblListenerEvents" WHERE "listenerID" = $1 AND "bufferName" = $2
                 ORDER BY "seqNo" DESC OFFSET $3 LIMIT 1)"#,
        )
        .bind(listener.listener_id)
        .bind(buffer_name)
        .bind(max)
        .execute(&mut *tx)
        .await?;
    }
    if let (Retention::Time | Retention::Both, Some(hours)) = (retention, max_age_hours) {
        sqlx::query(
            r#"DELETE FROM "tblListenerEvents" WHERE "listenerID" = $1 AND "bufferName" = $2
               AND "receivedAt" < now() - make_interval(hours => $3)"#,
        )
        .bind(listener.listener_id)
        .bind(buffer_name)
        .bind(hours as i32)
        .execute(&mut *tx)
        .await?;
    }
    Ok(seq)
}

/// Re-runs a parked listener action (a DLQ retry or replay): a parked transform resumes the
/// pipeline at that transform; any other action runs alone; a parked poison event runs the
/// whole pipeline. Actions that already succeeded for the event are skipped. `Ok(Err(_))` is
/// the re-run's failure, for the DLQ row's history.
pub async fn run_parked(
    pool: &PgPool,
    data: &DataRuntime,
    listener_id: Uuid,
    event_id: Uuid,
    action_id: Option<Uuid>,
    event: &Value,
) -> Result<std::result::Result<Value, String>> {
    let Some(listener) = super::super::model::get_any(pool, listener_id).await? else {
        return Ok(Err("the listener no longer exists".into()));
    };
    let actions = super::super::model::actions(pool, listener_id).await?;
    let (from, only) = match action_id {
        None => (0, None),
        Some(id) => match actions.iter().position(|a| a.action_id == id) {
            None => return Ok(Err("the action no longer exists".into())),
            Some(i) if actions[i].action_type == "transform" => (i, None),
            Some(i) => (i, Some(&actions[i])),
        },
    };
    if let Some(action) = only {
        let spec = match ActionSpec::parse(&action.action_type, &action.config) {
            Ok(spec) => spec,
            Err(e) => return Ok(Err(format!("the action's configuration is invalid: {e}"))),
        };
        return Ok(
            match perform(pool, data, &listener, action, &spec, event_id, event).await? {
                Ok(Performed::Effect(result)) => Ok(result),
                Ok(Performed::AlreadyDone) => Ok(json!({"alreadyDone": true})),
                Ok(Performed::Transformed(_)) => Ok(json!({})),
                Err(Failure(message)) => Err(message),
            },
        );
    }
    let done: std::collections::HashSet<Uuid> = sqlx::query_scalar(
        r#"SELECT "actionID" FROM "tblListenerActionRuns" WHERE "eventID" = $1"#,
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let outcome = super::run_actions(
        pool,
        data,
        &listener,
        &actions,
        event_id,
        event.clone(),
        &done,
        Some(from),
    )
    .await?;
    // A step that fails again is parked on its own row (or, for this same step, recorded on
    // this row by the caller); report the first failure.
    let failed = outcome.summary["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["status"] == "parked"))
        .map(|e| e["error"].as_str().unwrap_or("failed").to_owned());
    Ok(match failed {
        Some(message) => Err(message),
        None => Ok(outcome.summary),
    })
}
