//! Settling node results: the transaction that records a node's result and moves its
//! instance forward (fence, log row, instance CAS, successors dispatched, completion), alone
//! or for a whole claimed batch.

use super::finish::{finish_instance, without_pending_work};
use super::graph::Graph;
use super::joins::ready_successors;
use super::nodes::{NodeType, Outcome};
use super::queue::{Claimed, Dispatch, dispatch_many};
use super::storable::scrub_message;
use crate::Result;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// How many times a settle retries after losing the instance CAS to a concurrent settle.
const MAX_CAS_RETRIES: usize = 20;

/// How a node run ended, as the settle records it.
#[derive(Debug, Clone)]
pub enum NodeResult {
    /// Ran; `outcome` says where to go next.
    Completed(Outcome),
    /// Failed for good (retries exhausted): follow an `error` edge, else fail the instance.
    Failed(String),
}

/// What a settle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Recorded, successors dispatched.
    Advanced,
    /// Recorded, and the instance ended.
    Finished,
    /// The lease was lost (reaped and claimed by another worker): nothing was recorded.
    LostLease,
    /// This dispatch already has a result (a duplicate delivery): nothing changed.
    Duplicate,
    /// The instance is no longer running (cancelled, ended): the result was dropped.
    InstanceNotRunning,
}

/// The context contribution of a completed node (upstream's payload shape).
pub fn completion_payload(
    node_id: &str,
    node_type: NodeType,
    config: &Value,
    outcome: &Outcome,
) -> Value {
    let mut payload: Map<String, Value> = outcome.patch.clone();
    let output_variable =
        config
            .get("outputVariable")
            .and_then(Value::as_str)
            .or(match node_type {
                NodeType::Loop => Some("loopResults"),
                NodeType::DataCollection => Some("collectedData"),
                NodeType::Approval => Some("approvalResult"),
                NodeType::SubWorkflow => Some(super::subworkflow::DEFAULT_OUTPUT_VARIABLE),
                NodeType::DataQuery => Some(crate::dataquery::NODE_OUTPUT_VARIABLE),
                _ => None,
            });
    if let Some(ov) = output_variable {
        payload.insert(
            ov.to_owned(),
            outcome
                .output
                .get(ov)
                // Upstream's `output[ov] ?? output`: null falls back to the whole output.
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or_else(|| outcome.output.clone()),
        );
    }
    payload.insert(
        format!("__node_{node_id}"),
        json!({"output": outcome.output, "status": "success", "outputVariable": output_variable}),
    );
    Value::Object(payload)
}

/// Records a node's result and moves the instance forward, in one transaction: fenced
/// removal of the execution row, the `NODE_COMPLETED`/`NODE_FAILED` log row (a duplicate is a
/// no-op), the instance CAS on `version`, successors dispatched, completion detected.
pub async fn settle(
    pool: &PgPool,
    c: &Claimed,
    owner: &str,
    graph: &Graph,
    result: &NodeResult,
) -> Result<Settled> {
    for _ in 0..MAX_CAS_RETRIES {
        let mut tx = pool.begin().await?;
        match settle_in(&mut tx, c, owner, graph, result).await? {
            Step::Done(settled) => {
                tx.commit().await?;
                return Ok(settled);
            }
            Step::CasLost => tx.rollback().await?,
        }
    }
    Err(crate::Error::Invalid(format!(
        "instance {} is too contended to settle; will retry",
        c.instance_id
    )))
}

/// One node result to settle in a batch.
pub struct Pending {
    pub claimed: Claimed,
    pub graph: std::sync::Arc<Graph>,
    pub result: NodeResult,
}

/// Settles many results in one transaction (one commit, one fsync, for the whole batch). The
/// batch's instances are locked first, in id order, so two workers' batches cannot deadlock;
/// an instance another transaction holds is skipped, never waited for, and its results come
/// back in [`BatchSettled::busy`] for the caller to try again later (keeping their leases), so
/// one held lock never stalls the rest of the batch or the connection pool.
/// Simple results (see `batch_settle`) are settled together in a fixed number of statements;
/// the others one by one, each inside its own savepoint, so one that fails is rolled back
/// alone and reported. A result the database refuses as data fails its node instead (see
/// [`settle_or_fail`]).
pub async fn settle_batch(pool: &PgPool, owner: &str, pending: Vec<Pending>) -> BatchSettled {
    let settled = settle_rounds(pool, owner, pending).await;
    // Counted on the final outcomes: a round that rolled back and ran again counts once.
    for (_, outcome) in &settled.outcomes {
        if matches!(outcome, Ok(Settled::LostLease)) {
            crate::metrics::record_lease_lost();
        }
    }
    settled
}

/// [`settle_batch`]'s rounds: settle, then retry what lost a compare-and-set.
async fn settle_rounds(pool: &PgPool, owner: &str, mut pending: Vec<Pending>) -> BatchSettled {
    pending.sort_by(|a, b| {
        (a.claimed.instance_id, a.claimed.execution_id)
            .cmp(&(b.claimed.instance_id, b.claimed.execution_id))
    });
    let mut outcomes = Vec::with_capacity(pending.len());
    let mut busy = Vec::new();
    for _ in 0..MAX_CAS_RETRIES {
        if pending.is_empty() {
            return BatchSettled { outcomes, busy };
        }
        let round = match settle_round(pool, owner, &pending).await {
            Ok(round) => round,
            Err(err) => {
                // The batch transaction failed as a whole (e.g. a lost connection): settle
                // each result on its own so one bad item cannot hold back the others.
                tracing::warn!(error = %err, "batch settle failed; settling one by one");
                for p in pending.drain(..) {
                    let r = settle_or_fail(pool, &p.claimed, owner, &p.graph, &p.result).await;
                    outcomes.push((p.claimed.execution_id, r));
                }
                return BatchSettled { outcomes, busy };
            }
        };
        outcomes.extend(round.done);
        let (locked_out, rest): (Vec<Pending>, Vec<Pending>) = pending
            .into_iter()
            .partition(|p| round.busy.contains(&p.claimed.execution_id));
        busy.extend(locked_out);
        pending = rest
            .into_iter()
            .filter(|p| round.cas_lost.contains(&p.claimed.execution_id))
            .collect();
    }
    for p in pending {
        outcomes.push((
            p.claimed.execution_id,
            Err(crate::Error::Invalid(
                "instance too contended to settle".into(),
            )),
        ));
    }
    BatchSettled { outcomes, busy }
}

/// What [`settle_batch`] did with a batch of results.
pub struct BatchSettled {
    /// What became of each result it settled (or failed to).
    pub outcomes: Vec<(i64, Result<Settled>)>,
    /// Results whose instance another transaction holds: not settled yet, to try again.
    pub busy: Vec<Pending>,
}

/// A settle transaction waits at most this long for any row lock; set with its `BEGIN`, in
/// the same round trip.
const BEGIN_SETTLE: &str = "BEGIN; SET LOCAL lock_timeout = '5s'";

/// What one round of a batch settle came to.
struct Round {
    /// Settled (or failed for good) executions.
    done: Vec<(i64, Result<Settled>)>,
    /// Executions whose instance CAS lost to a concurrent settle: try again now.
    cas_lost: Vec<i64>,
    /// Executions whose instance another transaction holds: try again shortly.
    busy: Vec<i64>,
}

async fn settle_round(pool: &PgPool, owner: &str, pending: &[Pending]) -> Result<Round> {
    let mut tx = pool.begin_with(BEGIN_SETTLE).await?;
    let locked = super::batch_settle::lock(&mut tx, pending).await?;
    let (busy, pending): (Vec<&Pending>, Vec<&Pending>) = pending
        .iter()
        .partition(|p| locked.busy.contains(&p.claimed.instance_id));
    let mut per_instance: std::collections::HashMap<Uuid, usize> = Default::default();
    for p in &pending {
        *per_instance.entry(p.claimed.instance_id).or_default() += 1;
    }
    let (fast, mut slow): (Vec<&Pending>, Vec<&Pending>) = pending
        .into_iter()
        .partition(|p| super::batch_settle::eligible(p, per_instance[&p.claimed.instance_id] == 1));
    // The set-based path inside a savepoint: if the database refuses one of its rows, the
    // results go the per-result way, where a refusal fails only its own node.
    sqlx::raw_sql("SAVEPOINT fast").execute(&mut *tx).await?;
    let mut done: Vec<(i64, Result<Settled>)> =
        match super::batch_settle::settle(&mut tx, owner, &locked.statuses, &fast).await {
            Ok(settled) => {
                sqlx::raw_sql("RELEASE SAVEPOINT fast")
                    .execute(&mut *tx)
                    .await?;
                settled.into_iter().map(|(id, s)| (id, Ok(s))).collect()
            }
            Err(err) if err.is_data_rejection() => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT fast; RELEASE SAVEPOINT fast")
                    .execute(&mut *tx)
                    .await?;
                slow.extend(fast);
                vec![]
            }
            Err(err) => return Err(err),
        };
    let mut cas_lost = Vec::new();
    // The rest one by one. One round trip per result for its savepoint: the previous one is
    // released and the next taken in the same call (a rolled-back savepoint stays open).
    let mut open = false;
    for p in slow {
        let savepoint = if open {
            "RELEASE SAVEPOINT settle; SAVEPOINT settle"
        } else {
            "SAVEPOINT settle"
        };
        sqlx::raw_sql(savepoint).execute(&mut *tx).await?;
        open = true;
        let mut outcome = settle_in(&mut tx, &p.claimed, owner, &p.graph, &p.result).await;
        if let Err(err) = &outcome
            && err.is_data_rejection()
        {
            sqlx::query("ROLLBACK TO SAVEPOINT settle")
                .execute(&mut *tx)
                .await?;
            let failed = unstorable(err);
            outcome = settle_in(&mut tx, &p.claimed, owner, &p.graph, &failed).await;
        }
        match outcome {
            Ok(Step::Done(settled)) => {
                done.push((p.claimed.execution_id, Ok(settled)));
            }
            Ok(Step::CasLost) => {
                sqlx::query("ROLLBACK TO SAVEPOINT settle")
                    .execute(&mut *tx)
                    .await?;
                cas_lost.push(p.claimed.execution_id);
            }
            Err(err) => {
                sqlx::query("ROLLBACK TO SAVEPOINT settle")
                    .execute(&mut *tx)
                    .await?;
                done.push((p.claimed.execution_id, Err(err)));
            }
        }
    }
    tx.commit().await?;
    Ok(Round {
        done,
        cas_lost,
        busy: busy.iter().map(|p| p.claimed.execution_id).collect(),
    })
}

/// The failure recorded for a node whose result the database refused to store.
fn unstorable(err: &crate::Error) -> NodeResult {
    let detail = match err {
        crate::Error::Database(sqlx::Error::Database(db)) => db.message().to_owned(),
        other => other.to_string(),
    };
    NodeResult::Failed(format!(
        "the node's result could not be stored: {}",
        scrub_message(&detail)
    ))
}

/// [`settle`], and when the database refuses the result as data, the node's failure instead:
/// trying the same result again could never succeed.
pub async fn settle_or_fail(
    pool: &PgPool,
    c: &Claimed,
    owner: &str,
    graph: &Graph,
    result: &NodeResult,
) -> Result<Settled> {
    match settle(pool, c, owner, graph, result).await {
        Err(err) if err.is_data_rejection() => {
            settle(pool, c, owner, graph, &unstorable(&err)).await
        }
        other => other,
    }
}

/// What one settle attempt inside a transaction came to.
pub(crate) enum Step {
    Done(Settled),
    CasLost,
}

async fn settle_in(
    conn: &mut PgConnection,
    c: &Claimed,
    owner: &str,
    graph: &Graph,
    result: &NodeResult,
) -> Result<Step> {
    // The fence and the instance read in one round trip.
    let (fenced, version, status): (bool, i32, String) = sqlx::query_as(
        r#"WITH fenced AS (
             DELETE FROM "tblNodeExecutions" WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3
             RETURNING 1)
           SELECT EXISTS (SELECT 1 FROM fenced), "version", "status"
           FROM "tblWorkflowInstances" WHERE "instanceID" = $4"#,
    )
    .bind(c.execution_id)
    .bind(owner)
    .bind(c.claim_count)
    .bind(c.instance_id)
    .fetch_one(&mut *conn)
    .await?;
    if !fenced {
        return Ok(Step::Done(Settled::LostLease));
    }
    advance(conn, c, graph, result, version, &status).await
}

/// Everything a settle does after the fence: the log row, the CAS, successors, completion.
/// Also used to resume a human step, whose dispatch has no execution row left to fence.
pub(crate) async fn record_and_advance(
    conn: &mut PgConnection,
    c: &Claimed,
    graph: &Graph,
    result: &NodeResult,
) -> Result<Step> {
    let (version, status): (i32, String) = sqlx::query_as(
        r#"SELECT "version", "status" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
    )
    .bind(c.instance_id)
    .fetch_one(&mut *conn)
    .await?;
    advance(conn, c, graph, result, version, &status).await
}

/// [`record_and_advance`] once the instance's `version` and `status` are read.
async fn advance(
    conn: &mut PgConnection,
    c: &Claimed,
    graph: &Graph,
    result: &NodeResult,
    version: i32,
    status: &str,
) -> Result<Step> {
    if status != "RUNNING" {
        return Ok(Step::Done(Settled::InstanceNotRunning));
    }
    let node = graph.nodes.get(&c.node_id);
    if let Some(request) = result_suspend(result) {
        return suspend(conn, c, version, request).await;
    }
    let (event, node_status, payload, error) = match (result, node) {
        (NodeResult::Completed(outcome), Some(node)) => (
            "NODE_COMPLETED",
            "success",
            completion_payload(&c.node_id, node.node_type, &node.config, outcome),
            None,
        ),
        (NodeResult::Completed(_), None) => (
            "NODE_FAILED",
            "error",
            json!({}),
            Some("the node is no longer in the workflow"),
        ),
        (NodeResult::Failed(message), _) => {
            ("NODE_FAILED", "error", json!({}), Some(message.as_str()))
        }
    };
    let output_variable = node
        .and_then(|n| n.config.get("outputVariable"))
        .and_then(Value::as_str);
    let logged = sqlx::query(
        r#"INSERT INTO "tblWorkflowInstanceLogs"
             ("instanceID", "nodeID", "eventType", "nodeStatus", "outputVariable", "payload", "errorMessage", "nodeAttempt")
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT ("instanceID", "nodeID", "eventType", "nodeAttempt") WHERE "nodeID" IS NOT NULL AND "eventType" <> 'NODE_RETRY' DO NOTHING"#,
    )
    .bind(c.instance_id)
    .bind(&c.node_id)
    .bind(event)
    .bind(node_status)
    .bind(output_variable)
    .bind(&payload)
    .bind(error)
    .bind(c.node_attempt)
    .execute(&mut *conn)
    .await?;
    if logged.rows_affected() == 0 {
        return Ok(Step::Done(Settled::Duplicate));
    }

    let Next {
        handles,
        delay,
        finish,
    } = next_step(result, graph, &c.node_id);
    let ready = if finish.is_none() {
        ready_successors(&mut *conn, c.instance_id, graph, &c.node_id, &handles).await?
    } else {
        vec![]
    };

    let won = sqlx::query(
        r#"UPDATE "tblWorkflowInstances" SET "version" = "version" + 1, "updatedAt" = now()
           WHERE "instanceID" = $1 AND "version" = $2 AND "status" = 'RUNNING'"#,
    )
    .bind(c.instance_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    if won.rows_affected() == 0 {
        // A concurrent settle moved the instance: the caller rolls back and retries.
        return Ok(Step::CasLost);
    }
    if let Some((status, reason)) = finish {
        finish_instance(&mut *conn, c.instance_id, status, reason.as_deref()).await?;
        return Ok(Step::Done(Settled::Finished));
    }
    let dispatches: Vec<Dispatch> = ready
        .iter()
        .map(|target| Dispatch {
            instance_id: c.instance_id,
            tenant_id: c.tenant_id,
            node_id: target,
            delay,
        })
        .collect();
    dispatch_many(&mut *conn, &dispatches).await?;
    // Something just dispatched is pending work; only a node that led nowhere can end the run.
    if ready.is_empty()
        && !without_pending_work(&mut *conn, &[c.instance_id])
            .await?
            .is_empty()
    {
        finish_instance(&mut *conn, c.instance_id, "COMPLETED", None).await?;
        return Ok(Step::Done(Settled::Finished));
    }
    Ok(Step::Done(Settled::Advanced))
}

fn result_suspend(result: &NodeResult) -> Option<&Value> {
    match result {
        NodeResult::Completed(o) => o.suspend.as_ref(),
        NodeResult::Failed(_) => None,
    }
}

/// A human step: the request row and a `NODE_SUSPENDED` log row; the instance stays RUNNING
/// and does not advance until the request is answered (or expires).
async fn suspend(
    conn: &mut PgConnection,
    c: &Claimed,
    version: i32,
    request: &Value,
) -> Result<Step> {
    let minutes = request
        .get("expiryMinutes")
        .and_then(Value::as_i64)
        .unwrap_or(60);
    let kind = request
        .get("collectionType")
        .and_then(Value::as_str)
        .unwrap_or("form");
    // The log row first: its idempotency index makes a duplicate delivery a no-op before any
    // request row exists.
    let request_id = Uuid::new_v4();
    let logged = sqlx::query(
        r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeStatus", "payload", "nodeAttempt")
           VALUES ($1, $2, 'NODE_SUSPENDED', 'suspended', $3, $4)
           ON CONFLICT ("instanceID", "nodeID", "eventType", "nodeAttempt") WHERE "nodeID" IS NOT NULL AND "eventType" <> 'NODE_RETRY' DO NOTHING"#,
    )
    .bind(c.instance_id)
    .bind(&c.node_id)
    .bind(json!({"collectionRequestID": request_id}))
    .bind(c.node_attempt)
    .execute(&mut *conn)
    .await?;
    if logged.rows_affected() == 0 {
        return Ok(Step::Done(Settled::Duplicate));
    }
    sqlx::query(
        r#"INSERT INTO "tblWorkflowDataCollectionRequests"
             ("collectionRequestID", "instanceID", "nodeID", "nodeAttempt", "status", "collectionType", "collectionConfig", "expiresAt")
           VALUES ($1, $2, $3::uuid, $4, 'PENDING', $5, $6, CASE WHEN $7 > 0 THEN now() + make_interval(mins => $7::int) END)"#,
    )
    .bind(request_id)
    .bind(c.instance_id)
    .bind(&c.node_id)
    .bind(c.node_attempt)
    .bind(kind)
    .bind(request)
    .bind(minutes)
    .execute(&mut *conn)
    .await?;
    let won = sqlx::query(
        r#"UPDATE "tblWorkflowInstances" SET "version" = "version" + 1, "updatedAt" = now()
           WHERE "instanceID" = $1 AND "version" = $2 AND "status" = 'RUNNING'"#,
    )
    .bind(c.instance_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    if won.rows_affected() == 0 {
        return Ok(Step::CasLost);
    }
    Ok(Step::Done(Settled::Advanced))
}

/// Where a settled node leads: handles to follow (after `delay`), or the end of the run.
struct Next {
    handles: Vec<String>,
    delay: Duration,
    /// `(status, reason)` when the instance ends here.
    finish: Option<(&'static str, Option<String>)>,
}

fn next_step(result: &NodeResult, graph: &Graph, node_id: &str) -> Next {
    match result {
        NodeResult::Completed(o) => Next {
            handles: o.handles.clone(),
            delay: o.delay.unwrap_or_default(),
            finish: o.finish.map(|ok| match ok {
                true => ("COMPLETED", None),
                false => ("FAILED", Some("the end node reported an error".to_owned())),
            }),
        },
        NodeResult::Failed(_) if graph.has_handle(node_id, "error") => Next {
            handles: vec!["error".into()],
            delay: Duration::ZERO,
            finish: None,
        },
        NodeResult::Failed(message) => Next {
            handles: vec![],
            delay: Duration::ZERO,
            finish: Some(("FAILED", Some(format!("node {node_id} failed: {message}")))),
        },
    }
}
