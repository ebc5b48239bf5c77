//! The pipeline: claims inbox events (`SKIP LOCKED`, a lease per claim) and runs the
//! listener's enabled actions on each, in `orderIndex` order, in a worker.
//!
//! - `transform` replaces the event; `null`/`undefined` filters it out; an error aborts the
//!   rest of the pipeline (the event is parked in the DLQ at that transform).
//! - Any other action that fails is parked in the DLQ on its own and the others go on
//!   (upstream). Each action that succeeded is recorded in `tblListenerActionRuns` in the same
//!   transaction as its effect, so a re-claimed event (its worker died) or a DLQ retry never
//!   starts a second instance or writes a second buffer row.
//! - A failure of the platform database leaves the event pending: it is claimed again when the
//!   lease lapses. An event claimed [`MAX_DELIVERIES`] times without finishing is poison: it is
//!   parked whole.

mod dry_run;
mod fast;
mod perform;

pub use dry_run::dry_run;
pub use perform::run_parked;

use super::actions::ActionSpec;
use super::inbox::TAIL_CHANNEL;
use super::model::{self, Action, Listener};
use crate::Result;
use crate::datasource::DataRuntime;
use crate::ids::TenantId;
use crate::workflow::storable::scrub_message;
use perform::{Failure, Performed};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// How long a claimed event is reserved for its worker.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// Claims of one event without finishing before it is parked as poison.
pub const MAX_DELIVERIES: i32 = 5;
/// Automatic DLQ retries of a failed action.
pub const DLQ_MAX_RETRIES: i32 = 5;

/// A claimed inbox event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(rename = "eventID")]
    pub event_id: Uuid,
    #[sqlx(rename = "listenerID")]
    pub listener_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "rawEvent")]
    pub raw: Value,
    pub attempts: i32,
}

/// Claims up to `limit` pending events whose time has come.
pub async fn claim(pool: &PgPool, limit: i64) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(
        r#"UPDATE "tblListenerInbox" SET "availableAt" = now() + make_interval(secs => $2),
             "attempts" = "attempts" + 1
           WHERE "eventID" IN (
             SELECT "eventID" FROM "tblListenerInbox"
             WHERE "status" = 'pending' AND "availableAt" <= now()
             ORDER BY "availableAt", "receivedAt" LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING "eventID", "listenerID", "tenantID", "rawEvent", "attempts""#,
    )
    .bind(limit)
    .bind(CLAIM_LEASE.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// The end state of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Every action ran (some may have been parked).
    Done,
    /// A transform returned null.
    Filtered,
    /// A transform failed, or the event was poison.
    Aborted,
}

impl Finished {
    fn as_str(self) -> &'static str {
        match self {
            Finished::Done => "done",
            Finished::Filtered => "filtered",
            Finished::Aborted => "aborted",
        }
    }
}

/// Runs the pipeline on a claimed event and records the outcome. An `Err` is a platform
/// failure: the event stays pending and runs again after its lease.
pub async fn process(pool: &PgPool, data: &DataRuntime, event: Claimed) -> Result<Finished> {
    let listener = model::get_any(pool, event.listener_id).await?;
    let actions = match &listener {
        Some(l) => model::actions(pool, l.listener_id).await?,
        None => Vec::new(),
    };
    process_loaded(pool, data, event, listener.as_ref(), &actions).await
}

/// Runs a claimed batch, up to `parallel` events at once, reading each listener and its
/// actions once for the whole batch. Answers each event's outcome.
pub async fn process_batch(
    pool: &PgPool,
    data: &DataRuntime,
    events: Vec<Claimed>,
    parallel: usize,
) -> Result<Vec<(Uuid, Result<Finished>)>> {
    use futures::StreamExt;
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.listener_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let listeners: Vec<Listener> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {} FROM "tblListeners" WHERE "listenerID" = ANY($1)"#,
        model::COLUMNS
    )))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let all_actions: Vec<Action> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {} FROM "tblListenerActions" WHERE "listenerID" = ANY($1)
           ORDER BY "orderIndex", "createdAt", "actionID""#,
        model::ACTION_COLUMNS
    )))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let listeners: std::collections::HashMap<Uuid, (Listener, Vec<Action>)> = listeners
        .into_iter()
        .map(|l| {
            let actions = all_actions
                .iter()
                .filter(|a| a.listener_id == l.listener_id)
                .cloned()
                .collect();
            (l.listener_id, (l, actions))
        })
        .collect();
    // First deliveries of listeners whose actions suit it go set-based, one transaction per
    // listener; everything else (and anything the fast path hands back) runs event by event.
    let mut outcomes: Vec<(Uuid, Result<Finished>)> = Vec::new();
    let mut handled: HashSet<Uuid> = HashSet::new();
    for (listener, actions) in listeners.values() {
        if !fast::suits(actions) {
            continue;
        }
        let first: Vec<&Claimed> = events
            .iter()
            .filter(|e| e.listener_id == listener.listener_id && e.attempts == 1)
            .collect();
        if first.len() < 2 {
            continue;
        }
        for (id, finished) in fast::run(pool, listener, actions, &first).await? {
            handled.insert(id);
            outcomes.push((id, Ok(finished)));
        }
    }
    let rest: Vec<Claimed> = events
        .into_iter()
        .filter(|e| !handled.contains(&e.event_id))
        .collect();
    let slow: Vec<(Uuid, Result<Finished>)> = futures::stream::iter(rest)
        .map(|event| {
            let loaded = listeners.get(&event.listener_id);
            async move {
                let id = event.event_id;
                let (listener, actions) = match loaded {
                    Some((l, a)) => (Some(l), a.as_slice()),
                    None => (None, &[][..]),
                };
                (
                    id,
                    process_loaded(pool, data, event, listener, actions).await,
                )
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    outcomes.extend(slow);
    Ok(outcomes)
}

async fn process_loaded(
    pool: &PgPool,
    data: &DataRuntime,
    event: Claimed,
    listener: Option<&Listener>,
    actions: &[Action],
) -> Result<Finished> {
    let Some(listener) = listener else {
        // Deleted meanwhile: the inbox row went with it (cascade).
        return Ok(Finished::Aborted);
    };
    if event.attempts > MAX_DELIVERIES {
        let error = format!(
            "the pipeline did not finish this event in {MAX_DELIVERIES} deliveries (the worker running it stopped each time)"
        );
        park(pool, listener, event.event_id, None, &event.raw, &error).await?;
        let result = json!({"error": error});
        finish(pool, listener, &event, Finished::Aborted, &result, false).await?;
        return Ok(Finished::Aborted);
    }
    // A first delivery has no recorded actions yet (the records' own conflict check guards
    // every effect regardless); a redelivery reads them to report them as already done.
    let done = if event.attempts > 1 {
        completed_actions(pool, event.event_id).await?
    } else {
        HashSet::new()
    };
    let outcome = run_actions(
        pool,
        data,
        listener,
        actions,
        event.event_id,
        event.raw.clone(),
        &done,
        None,
    )
    .await?;
    finish(
        pool,
        listener,
        &event,
        outcome.finished,
        &outcome.summary,
        outcome.any_effect,
    )
    .await?;
    Ok(outcome.finished)
}

/// What running the actions did.
pub(crate) struct Outcome {
    pub finished: Finished,
    /// `{event (after transforms), actions: [{actionID, actionType, status, result|error}]}`
    pub summary: Value,
    /// Whether any non-transform action completed (upstream counts the event then).
    pub any_effect: bool,
}

/// Runs `actions` (from index `from`, or all) on `event`. `done` are actions that already
/// succeeded for this event.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_actions(
    pool: &PgPool,
    data: &DataRuntime,
    listener: &Listener,
    actions: &[Action],
    event_id: Uuid,
    mut event: Value,
    done: &HashSet<Uuid>,
    from: Option<usize>,
) -> Result<Outcome> {
    let mut report = Vec::new();
    let mut any_effect = false;
    let mut finished = Finished::Done;
    for action in actions
        .iter()
        .skip(from.unwrap_or(0))
        .filter(|a| a.is_enabled)
    {
        let entry = |status: &str, detail: Value| {
            let mut e = json!({"actionID": action.action_id, "actionType": action.action_type, "status": status});
            if let (Some(obj), Value::Object(more)) = (e.as_object_mut(), detail) {
                obj.extend(more);
            }
            e
        };
        let spec = match ActionSpec::parse(&action.action_type, &action.config) {
            Ok(spec) => spec,
            Err(e) => {
                // Saved before a check existed, or edited in SQL: park it like any failure.
                let error = format!("the action's configuration is invalid: {e}");
                park(pool, listener, event_id, Some(action), &event, &error).await?;
                report.push(entry("parked", json!({"error": error})));
                if action.action_type == "transform" {
                    finished = Finished::Aborted;
                    break;
                }
                continue;
            }
        };
        if done.contains(&action.action_id) {
            report.push(entry("already_done", json!({})));
            any_effect |= !matches!(spec, ActionSpec::Transform { .. });
            continue;
        }
        match perform::perform(pool, data, listener, action, &spec, event_id, &event).await? {
            Ok(Performed::Transformed(Some(next))) => {
                event = next;
                report.push(entry("transformed", json!({})));
            }
            Ok(Performed::Transformed(None)) => {
                report.push(entry("filtered", json!({})));
                finished = Finished::Filtered;
                break;
            }
            Ok(Performed::Effect(result)) => {
                any_effect = true;
                report.push(entry("succeeded", json!({"result": result})));
            }
            Ok(Performed::AlreadyDone) => {
                any_effect = true;
                report.push(entry("already_done", json!({})));
            }
            Err(Failure(error)) => {
                park(pool, listener, event_id, Some(action), &event, &error).await?;
                report.push(entry("parked", json!({"error": error})));
                if matches!(spec, ActionSpec::Transform { .. }) {
                    finished = Finished::Aborted;
                    break;
                }
            }
        }
    }
    Ok(Outcome {
        finished,
        summary: json!({"event": event, "actions": report}),
        any_effect,
    })
}

/// Actions that already succeeded for `event_id`.
async fn completed_actions(pool: &PgPool, event_id: Uuid) -> Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        r#"SELECT "actionID" FROM "tblListenerActionRuns" WHERE "eventID" = $1"#,
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Parks a failed action (or a whole poison event when `action` is `None`) in the DLQ with
/// the event as the action saw it. Once per event and action: a re-run that fails the same
/// way does not add a second row.
pub(crate) async fn park(
    pool: &PgPool,
    listener: &Listener,
    event_id: Uuid,
    action: Option<&Action>,
    event: &Value,
    error: &str,
) -> Result<()> {
    let payload = json!({
        "listenerID": listener.listener_id,
        "eventID": event_id,
        "actionID": action.map(|a| a.action_id),
        "actionType": action.map(|a| a.action_type.clone()),
        "event": event,
    });
    sqlx::query(
        r#"INSERT INTO "tblEventDLQ" ("tenantID", "source", "sourceID", "payload", "error", "maxRetries", "status", "nextRetryAt")
           VALUES ($1, 'listener', $2, $3, $4, $5, 'PENDING', "jetDlqNextRetryAt"(0))
           ON CONFLICT (("payload" ->> 'eventID'), COALESCE("payload" ->> 'actionID', ''))
             WHERE "source" = 'listener' DO NOTHING"#,
    )
    .bind(listener.tenant_id)
    .bind(listener.listener_id)
    .bind(payload)
    .bind(scrub_message(error))
    .bind(DLQ_MAX_RETRIES)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the event's end, counts it on the listener, and publishes it to the live tail.
async fn finish(
    pool: &PgPool,
    listener: &Listener,
    event: &Claimed,
    finished: Finished,
    summary: &Value,
    any_effect: bool,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        r#"UPDATE "tblListenerInbox" SET "status" = $2, "processedAt" = now(), "result" = $3
           WHERE "eventID" = $1 AND "status" = 'pending'"#,
    )
    .bind(event.event_id)
    .bind(finished.as_str())
    .bind(summary)
    .execute(&mut *tx)
    .await?;
    if any_effect {
        sqlx::query(
            r#"UPDATE "tblListeners" SET "lastEventAt" = now(), "eventCount" = "eventCount" + 1
               WHERE "listenerID" = $1"#,
        )
        .bind(listener.listener_id)
        .execute(&mut *tx)
        .await?;
    }
    let transformed = summary.get("event").cloned().unwrap_or(Value::Null);
    let transform_error = summary["actions"].as_array().and_then(|actions| {
        actions
            .iter()
            .find(|a| a["actionType"] == "transform" && a["status"] == "parked")
            .map(|a| a["error"].clone())
    });
    tail(
        &mut tx,
        listener.listener_id,
        event.event_id,
        &event.raw,
        &transformed,
        transform_error,
        finished,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The tail message of one processed event (see [`TAIL_CHANNEL`]); without the events when
/// the whole would not fit a NOTIFY.
fn tail_message(
    listener_id: Uuid,
    event_id: Uuid,
    raw: &Value,
    transformed: &Value,
    transform_error: Option<Value>,
    finished: Finished,
) -> String {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let filtered = finished == Finished::Filtered;
    let message = json!({
        "listenerID": listener_id, "eventID": event_id, "rawEvent": raw,
        "transformedEvent": if filtered { Value::Null } else { transformed.clone() },
        "transformError": transform_error, "filtered": filtered, "status": finished.as_str(),
        "truncated": false, "timestamp": timestamp,
    })
    .to_string();
    if message.len() <= MAX_TAIL_BYTES {
        return message;
    }
    json!({
        "listenerID": listener_id, "eventID": event_id, "filtered": filtered,
        "status": finished.as_str(), "truncated": true, "timestamp": timestamp,
    })
    .to_string()
}

/// Largest NOTIFY payload the tail sends whole (PostgreSQL's limit is just under 8000 bytes).
const MAX_TAIL_BYTES: usize = 7000;

/// Publishes one processed event on [`TAIL_CHANNEL`] when the transaction commits.
async fn tail(
    conn: &mut sqlx::PgConnection,
    listener_id: Uuid,
    event_id: Uuid,
    raw: &Value,
    transformed: &Value,
    transform_error: Option<Value>,
    finished: Finished,
) -> Result<()> {
    let message = tail_message(
        listener_id,
        event_id,
        raw,
        transformed,
        transform_error,
        finished,
    );
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(TAIL_CHANNEL)
        .bind(message)
        .execute(conn)
        .await?;
    Ok(())
}
