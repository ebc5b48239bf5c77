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
    /// The child instance a parked `subWorkflow` node waits for.
    #[sqlx(rename = "childInstanceID")]
    pub child_instance_id: Option<Uuid>,
}

fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// A node of an instance to dispatch, runnable after `delay`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dispatch<'a> {
    pub instance_id: Uuid,
    pub tenant_id: Uuid,
    pub node_id: &'a str,
    pub delay: Duration,
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
    dispatch_many(
        conn,
        &[Dispatch {
            instance_id,
            tenant_id,
            node_id,
            delay,
        }],
    )
    .await
}

/// [`dispatch`] for many (instance, node) pairs, distinct, in one statement: each dispatch
/// number is counted and logged, then the execution rows are written with them.
pub(crate) async fn dispatch_many(conn: &mut PgConnection, items: &[Dispatch<'_>]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let instances: Vec<Uuid> = items.iter().map(|d| d.instance_id).collect();
    let nodes: Vec<&str> = items.iter().map(|d| d.node_id).collect();
    let tenants: Vec<Uuid> = items.iter().map(|d| d.tenant_id).collect();
    let delays: Vec<i64> = items.iter().map(|d| d.delay.as_millis() as i64).collect();
    sqlx::query(
        r#"WITH t AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int8[]) AS t(i, n, tenant, delay_ms)),
           logged AS (
             INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeAttempt")
             SELECT t.i, t.n, 'NODE_DISPATCHED',
                    1 + (SELECT count(*) FROM "tblWorkflowInstanceLogs" l
                         WHERE l."instanceID" = t.i AND l."nodeID" = t.n AND l."eventType" = 'NODE_DISPATCHED')
             FROM t RETURNING "instanceID", "nodeID", "nodeAttempt")
           INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt", "availableAt")
           SELECT l."instanceID", t.tenant, l."nodeID", l."nodeAttempt", now() + t.delay_ms * interval '1 millisecond'
           FROM logged l JOIN t ON t.i = l."instanceID" AND t.n = l."nodeID""#,
    )
    .bind(&instances)
    .bind(&nodes)
    .bind(&tenants)
    .bind(&delays)
    .execute(conn)
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
                     e."retryCount", e."claimCount", e."childInstanceID""#,
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
/// `delay`; a sub-workflow node forgets its failed child and starts a new one) or on shutdown
/// (not counted, due now). Fenced like a settle.
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
             "lastError" = COALESCE($6, "lastError"),
             "childInstanceID" = CASE WHEN $4 = 1 THEN NULL ELSE "childInstanceID" END
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
/// batch's instances are locked first, in id order, so two workers' batches cannot deadlock.
/// Simple results (see `batch_settle`) are settled together in a fixed number of statements;
/// the others one by one, each inside its own savepoint, so one that fails is rolled back
/// alone and reported.
pub async fn settle_batch(
    pool: &PgPool,
    owner: &str,
    mut pending: Vec<Pending>,
) -> Vec<(i64, Result<Settled>)> {
    pending.sort_by(|a, b| {
        (a.claimed.instance_id, a.claimed.execution_id)
            .cmp(&(b.claimed.instance_id, b.claimed.execution_id))
    });
    let mut outcomes = Vec::with_capacity(pending.len());
    for _ in 0..MAX_CAS_RETRIES {
        if pending.is_empty() {
            return outcomes;
        }
        match settle_round(pool, owner, &pending).await {
            Ok((done, retry)) => {
                outcomes.extend(done);
                pending.retain(|p| retry.contains(&p.claimed.execution_id));
            }
            Err(err) => {
                // The batch transaction failed as a whole (e.g. a lost connection): settle
                // each result on its own so one bad item cannot hold back the others.
                tracing::warn!(error = %err, "batch settle failed; settling one by one");
                for p in pending.drain(..) {
                    let r = settle(pool, &p.claimed, owner, &p.graph, &p.result).await;
                    outcomes.push((p.claimed.execution_id, r));
                }
                return outcomes;
            }
        }
    }
    for p in pending {
        outcomes.push((
            p.claimed.execution_id,
            Err(crate::Error::Invalid(
                "instance too contended to settle".into(),
            )),
        ));
    }
    outcomes
}

type Round = (Vec<(i64, Result<Settled>)>, Vec<i64>);

async fn settle_round(pool: &PgPool, owner: &str, pending: &[Pending]) -> Result<Round> {
    let mut tx = pool.begin().await?;
    let statuses = super::batch_settle::lock(&mut tx, pending).await?;
    let mut per_instance: std::collections::HashMap<Uuid, usize> = Default::default();
    for p in pending {
        *per_instance.entry(p.claimed.instance_id).or_default() += 1;
    }
    let (fast, slow): (Vec<&Pending>, Vec<&Pending>) = pending
        .iter()
        .partition(|p| super::batch_settle::eligible(p, per_instance[&p.claimed.instance_id] == 1));
    let mut done: Vec<(i64, Result<Settled>)> =
        super::batch_settle::settle(&mut tx, owner, &statuses, &fast)
            .await?
            .into_iter()
            .map(|(id, settled)| (id, Ok(settled)))
            .collect();
    let mut retry = Vec::new();
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
        match settle_in(&mut tx, &p.claimed, owner, &p.graph, &p.result).await {
            Ok(Step::Done(settled)) => {
                done.push((p.claimed.execution_id, Ok(settled)));
            }
            Ok(Step::CasLost) => {
                sqlx::query("ROLLBACK TO SAVEPOINT settle")
                    .execute(&mut *tx)
                    .await?;
                retry.push(p.claimed.execution_id);
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
    Ok((done, retry))
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
           ON CONFLICT ("instanceID", "nodeID", "eventType", "nodeAttempt") WHERE "nodeID" IS NOT NULL DO NOTHING"#,
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

/// The instances of `ids` that nothing can move any more: no queued or running execution
/// (a parked sub-workflow wait included), no human step waiting for input.
pub(crate) async fn without_pending_work(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        r#"SELECT i FROM unnest($1::uuid[]) AS i
           WHERE NOT EXISTS (SELECT 1 FROM "tblNodeExecutions" e WHERE e."instanceID" = i)
             AND NOT EXISTS (SELECT 1 FROM "tblWorkflowDataCollectionRequests" r
                             WHERE r."instanceID" = i AND r."status" = 'PENDING')"#,
    )
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

/// Ends an instance: its status, `completedAt`, a `SYSTEM_SET` row with the reason, and no
/// execution left behind; a parent waiting on it is woken, its own children are cancelled.
pub async fn finish_instance(
    conn: &mut PgConnection,
    instance_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> Result<()> {
    finish_many(conn, &[(instance_id, status, reason.map(str::to_owned))]).await
}

/// [`finish_instance`] for many instances in a fixed number of statements.
pub(crate) async fn finish_many(
    conn: &mut PgConnection,
    ended: &[(Uuid, &str, Option<String>)],
) -> Result<()> {
    if ended.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ended.iter().map(|e| e.0).collect();
    let statuses: Vec<&str> = ended.iter().map(|e| e.1).collect();
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" i SET "status" = e.status, "completedAt" = now(), "updatedAt" = now()
           FROM unnest($1::uuid[], $2::text[]) AS e(id, status) WHERE i."instanceID" = e.id"#,
    )
    .bind(&ids)
    .bind(&statuses)
    .execute(&mut *conn)
    .await?;
    sqlx::query(r#"DELETE FROM "tblNodeExecutions" WHERE "instanceID" = ANY($1)"#)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    super::subworkflow::ended(&mut *conn, &ids).await?;
    let (reason_ids, reasons): (Vec<Uuid>, Vec<Value>) = ended
        .iter()
        .filter_map(|(id, _, reason)| reason.as_ref().map(|r| (*id, json!({"__error": r}))))
        .unzip();
    if !reason_ids.is_empty() {
        sqlx::query(
            r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "outputVariable", "payload")
               SELECT id, 'SYSTEM_SET', '__error', payload FROM unnest($1::uuid[], $2::jsonb[]) AS r(id, payload)"#,
        )
        .bind(&reason_ids)
        .bind(&reasons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// What running a batch of claimed executions needs, read in one query: each instance's
/// status and workflow version, and its folded context.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub workflow_id: Option<Uuid>,
    pub status: String,
    pub is_test: bool,
    pub workflow_updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub workflow_options: Value,
    pub context: Value,
}

/// Reads the [`InstanceView`] of every instance of a batch in one round trip.
pub async fn prepare(
    pool: &PgPool,
    instance_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, InstanceView>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(rename = "instanceID")]
        instance_id: Uuid,
        #[sqlx(rename = "workflowID")]
        workflow_id: Option<Uuid>,
        status: String,
        #[sqlx(rename = "isTest")]
        is_test: bool,
        #[sqlx(rename = "updatedAt")]
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
        #[sqlx(rename = "workflowOptions")]
        workflow_options: Option<Value>,
        payloads: Value,
    }
    let rows: Vec<Row> = sqlx::query_as(
        r#"SELECT i."instanceID", i."workflowID", i."status", i."isTest", w."updatedAt", w."workflowOptions",
                  COALESCE((SELECT jsonb_agg(l."payload" ORDER BY l."logID") FROM "tblWorkflowInstanceLogs" l
                            WHERE l."instanceID" = i."instanceID"
                              AND l."eventType" IN ('INPUT_SET', 'NODE_COMPLETED', 'SYSTEM_SET')), '[]') AS payloads
           FROM "tblWorkflowInstances" i LEFT JOIN "tblWorkflows" w ON w."workflowID" = i."workflowID"
           WHERE i."instanceID" = ANY($1)"#,
    )
    .bind(instance_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let context = super::context::fold(r.payloads.as_array().into_iter().flatten());
            (
                r.instance_id,
                InstanceView {
                    workflow_id: r.workflow_id,
                    status: r.status,
                    is_test: r.is_test,
                    workflow_updated_at: r.updated_at,
                    workflow_options: r
                        .workflow_options
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    context,
                },
            )
        })
        .collect())
}

/// Extends the leases of a whole batch; returns how many were still held.
pub async fn heartbeat_batch(
    pool: &PgPool,
    owner: &str,
    held: &[(i64, i32)],
    lease: Duration,
) -> Result<u64> {
    let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
    let counts: Vec<i32> = held.iter().map(|h| h.1).collect();
    let done = sqlx::query(
        r#"UPDATE "tblNodeExecutions" e SET "leaseExpiresAt" = now() + $4::interval
           FROM unnest($2::int8[], $3::int4[]) AS h(id, claims)
           WHERE e."executionID" = h.id AND e."claimCount" = h.claims AND e."leaseOwner" = $1"#,
    )
    .bind(owner)
    .bind(&ids)
    .bind(&counts)
    .bind(interval(lease))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
