//! The node-execution queue (`tblNodeExecutions`): dispatch, batch claim with
//! `FOR UPDATE SKIP LOCKED`, leases with heartbeats, a reaper, fenced retries, and the settle
//! transaction that records a node's result and moves the instance forward.

use super::graph::Graph;
use super::nodes::{self, NodeType, Outcome};
use crate::Result;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// How many times a settle retries after losing the instance CAS to a concurrent settle.
const MAX_CAS_RETRIES: usize = 20;

/// A claimed execution; `claim_count` is the fencing token of this lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(rename = "executionID")]
    pub execution_id: i64,
    #[sqlx(rename = "instanceID")]
    pub instance_id: Uuid,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: Uuid,
    #[sqlx(rename = "nodeID")]
    pub node_id: String,
    #[sqlx(rename = "nodeAttempt")]
    pub node_attempt: i32,
    #[sqlx(rename = "retryCount")]
    pub retry_count: i32,
    #[sqlx(rename = "claimCount")]
    pub claim_count: i32,
}

fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Dispatches `node_id` in an instance: a `NODE_DISPATCHED` log row and an execution row that
/// becomes claimable after `delay`. The dispatch number counts earlier dispatches of the node.
pub async fn dispatch(
    conn: &mut PgConnection,
    instance_id: Uuid,
    tenant_id: Uuid,
    node_id: &str,
    delay: Duration,
) -> Result<()> {
    let attempt: i32 = sqlx::query_scalar(
        r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeAttempt")
           SELECT $1, $2, 'NODE_DISPATCHED', count(*) + 1 FROM "tblWorkflowInstanceLogs"
           WHERE "instanceID" = $1 AND "nodeID" = $2 AND "eventType" = 'NODE_DISPATCHED'
           RETURNING "nodeAttempt""#,
    )
    .bind(instance_id)
    .bind(node_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt", "availableAt")
           VALUES ($1, $2, $3, $4, now() + $5::interval)"#,
    )
    .bind(instance_id)
    .bind(tenant_id)
    .bind(node_id)
    .bind(attempt)
    .bind(interval(delay))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Claims up to `batch` ready executions for `owner`, leased for `lease`.
///
/// Fairness: each tenant with ready work contributes its oldest executions and the batch is
/// filled round-robin over tenants, so one tenant's flood cannot starve another tenant's
/// single execution.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    batch: i64,
) -> Result<Vec<Claimed>> {
    Ok(sqlx::query_as(
        r#"WITH ready_tenants AS (
             SELECT DISTINCT "tenantID" FROM "tblNodeExecutions"
             WHERE "leaseOwner" IS NULL AND "availableAt" <= now()
           ), candidates AS (
             SELECT c."executionID", c."availableAt",
                    row_number() OVER (PARTITION BY c."tenantID" ORDER BY c."availableAt") AS turn
             FROM ready_tenants t CROSS JOIN LATERAL (
               SELECT e."executionID", e."availableAt", e."tenantID" FROM "tblNodeExecutions" e
               WHERE e."tenantID" = t."tenantID" AND e."leaseOwner" IS NULL AND e."availableAt" <= now()
               ORDER BY e."availableAt" LIMIT $3 FOR UPDATE SKIP LOCKED) c
           ), fair AS (
             SELECT "executionID" FROM candidates ORDER BY turn, "availableAt" LIMIT $3
           )
           UPDATE "tblNodeExecutions" e
           SET "leaseOwner" = $1, "leaseExpiresAt" = now() + $2::interval, "claimCount" = e."claimCount" + 1
           FROM fair WHERE e."executionID" = fair."executionID"
           RETURNING e."executionID", e."instanceID", e."tenantID", e."nodeID", e."nodeAttempt",
                     e."retryCount", e."claimCount""#,
    )
    .bind(owner)
    .bind(interval(lease))
    .bind(batch)
    .fetch_all(pool)
    .await?)
}

/// Extends a held lease; `false` when the lease was lost (reaped and reclaimed).
pub async fn heartbeat(pool: &PgPool, c: &Claimed, owner: &str, lease: Duration) -> Result<bool> {
    let done = sqlx::query(
        r#"UPDATE "tblNodeExecutions" SET "leaseExpiresAt" = now() + $4::interval
           WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3"#,
    )
    .bind(c.execution_id)
    .bind(owner)
    .bind(c.claim_count)
    .bind(interval(lease))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Returns expired leases to the ready set (their holders died or stalled).
pub async fn reap_expired(pool: &PgPool) -> Result<u64> {
    let done = sqlx::query(
        r#"UPDATE "tblNodeExecutions" SET "leaseOwner" = NULL, "leaseExpiresAt" = NULL
           WHERE "leaseOwner" IS NOT NULL AND "leaseExpiresAt" < now()"#,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Gives a held execution back: after a failed try (`retry` = true: counted, due after
/// `delay`) or on shutdown (not counted, due now). Fenced like a settle.
pub async fn release(
    pool: &PgPool,
    c: &Claimed,
    owner: &str,
    retry: Option<(Duration, &str)>,
) -> Result<bool> {
    let (count, delay, error) = match retry {
        Some((delay, error)) => (1, delay, Some(error)),
        None => (0, Duration::ZERO, None),
    };
    let done = sqlx::query(
        r#"UPDATE "tblNodeExecutions" SET "leaseOwner" = NULL, "leaseExpiresAt" = NULL,
             "retryCount" = "retryCount" + $4, "availableAt" = now() + $5::interval,
             "lastError" = COALESCE($6, "lastError")
           WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3"#,
    )
    .bind(c.execution_id)
    .bind(owner)
    .bind(c.claim_count)
    .bind(count)
    .bind(interval(delay))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a held execution without recording anything (its instance is no longer running).
pub async fn discard(pool: &PgPool, c: &Claimed, owner: &str) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblNodeExecutions" WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3"#)
        .bind(c.execution_id)
        .bind(owner)
        .bind(c.claim_count)
        .execute(pool)
        .await?;
    Ok(())
}

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
            .or(if node_type == NodeType::Loop {
                Some("loopResults")
            } else {
                None
            });
    if let Some(ov) = output_variable {
        payload.insert(
            ov.to_owned(),
            outcome
                .output
                .get(ov)
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
        let fenced = sqlx::query(
            r#"DELETE FROM "tblNodeExecutions" WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3"#,
        )
        .bind(c.execution_id)
        .bind(owner)
        .bind(c.claim_count)
        .execute(&mut *tx)
        .await?;
        if fenced.rows_affected() == 0 {
            return Ok(Settled::LostLease);
        }
        let (version, status): (i32, String) = sqlx::query_as(
            r#"SELECT "version", "status" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
        )
        .bind(c.instance_id)
        .fetch_one(&mut *tx)
        .await?;
        if status != "RUNNING" {
            tx.commit().await?;
            return Ok(Settled::InstanceNotRunning);
        }
        let node = graph.nodes.get(&c.node_id);
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
               ON CONFLICT ("instanceID", "nodeID", "eventType", "nodeAttempt") WHERE "nodeID" IS NOT NULL DO NOTHING"#,
        )
        .bind(c.instance_id)
        .bind(&c.node_id)
        .bind(event)
        .bind(node_status)
        .bind(output_variable)
        .bind(&payload)
        .bind(error)
        .bind(c.node_attempt)
        .execute(&mut *tx)
        .await?;
        if logged.rows_affected() == 0 {
            tx.commit().await?;
            return Ok(Settled::Duplicate);
        }

        let Next {
            handles,
            delay,
            finish,
        } = next_step(result, graph, &c.node_id);
        let ready = if finish.is_none() {
            ready_successors(&mut tx, c.instance_id, graph, &c.node_id, &handles).await?
        } else {
            vec![]
        };

        let won = sqlx::query(
            r#"UPDATE "tblWorkflowInstances" SET "version" = "version" + 1, "updatedAt" = now()
               WHERE "instanceID" = $1 AND "version" = $2 AND "status" = 'RUNNING'"#,
        )
        .bind(c.instance_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if won.rows_affected() == 0 {
            // A concurrent settle moved the instance: re-read everything and try again.
            tx.rollback().await?;
            continue;
        }
        if let Some((status, reason)) = finish {
            finish_instance(&mut tx, c.instance_id, status, reason.as_deref()).await?;
            tx.commit().await?;
            return Ok(Settled::Finished);
        }
        for target in &ready {
            dispatch(&mut tx, c.instance_id, c.tenant_id, target, delay).await?;
        }
        if !has_pending_work(&mut tx, c.instance_id).await? {
            finish_instance(&mut tx, c.instance_id, "COMPLETED", None).await?;
            tx.commit().await?;
            return Ok(Settled::Finished);
        }
        tx.commit().await?;
        return Ok(Settled::Advanced);
    }
    Err(crate::Error::Invalid(format!(
        "instance {} is too contended to settle; will retry",
        c.instance_id
    )))
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

/// Successors reachable through `handles` that may run now: a join (several upstreams) waits
/// for all (or any) of them to have completed; a node already dispatched and not yet settled
/// is not dispatched twice.
async fn ready_successors(
    conn: &mut PgConnection,
    instance_id: Uuid,
    graph: &Graph,
    node_id: &str,
    handles: &[String],
) -> Result<Vec<String>> {
    let mut targets: Vec<&str> = handles
        .iter()
        .flat_map(|h| graph.successors(node_id, h))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let mut ready = Vec::new();
    for target in targets {
        let upstream = graph.incoming(target);
        if upstream.len() > 1 {
            let mode = graph
                .nodes
                .get(target)
                .map(|n| nodes::join_mode(&n.config))
                .unwrap_or("all");
            if mode == "all" {
                let done: Vec<String> = sqlx::query_scalar(
                    r#"SELECT DISTINCT "nodeID" FROM "tblWorkflowInstanceLogs"
                       WHERE "instanceID" = $1 AND "eventType" = 'NODE_COMPLETED' AND "nodeID" = ANY($2)"#,
                )
                .bind(instance_id)
                .bind(&upstream)
                .fetch_all(&mut *conn)
                .await?;
                if !upstream.iter().all(|u| done.iter().any(|d| d == u)) {
                    continue;
                }
            }
        }
        let open: bool = sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM "tblNodeExecutions" WHERE "instanceID" = $1 AND "nodeID" = $2)"#,
        )
        .bind(instance_id)
        .bind(target)
        .fetch_one(&mut *conn)
        .await?;
        if !open {
            ready.push(target.to_owned());
        }
    }
    Ok(ready)
}

/// Whether anything can still move the instance: a queued or running execution, or a human
/// step waiting for input.
async fn has_pending_work(conn: &mut PgConnection, instance_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        r#"SELECT EXISTS (SELECT 1 FROM "tblNodeExecutions" WHERE "instanceID" = $1)
               OR EXISTS (SELECT 1 FROM "tblWorkflowDataCollectionRequests" WHERE "instanceID" = $1 AND "status" = 'PENDING')"#,
    )
    .bind(instance_id)
    .fetch_one(conn)
    .await?)
}

/// Ends an instance: its status, `completedAt`, a `SYSTEM_SET` row with the reason, and no
/// execution left behind.
pub async fn finish_instance(
    conn: &mut PgConnection,
    instance_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" SET "status" = $2, "completedAt" = now(), "updatedAt" = now()
           WHERE "instanceID" = $1"#,
    )
    .bind(instance_id)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    sqlx::query(r#"DELETE FROM "tblNodeExecutions" WHERE "instanceID" = $1"#)
        .bind(instance_id)
        .execute(&mut *conn)
        .await?;
    if let Some(reason) = reason {
        sqlx::query(
            r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "outputVariable", "payload")
               VALUES ($1, 'SYSTEM_SET', '__error', $2)"#,
        )
        .bind(instance_id)
        .bind(json!({"__error": reason}))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
