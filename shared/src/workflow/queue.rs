//! The node-execution queue (`tblNodeExecutions`): dispatch, batch claim with
//! `FOR UPDATE SKIP LOCKED` (returning what the batch needs to run), leases with heartbeats,
//! a reaper, fenced retries and releases. Recording results is `settle`'s.

use super::storable::scrub_message;
use crate::Result;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

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
    /// Claims handed back unfinished by a draining worker: neither failures nor lost runs.
    #[sqlx(rename = "releaseCount")]
    pub release_count: i32,
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
/// becomes claimable after `delay`. The dispatch number is one past the node's latest one, read
/// from the end of the log's idempotency index: counting every earlier dispatch made a loop's
/// k-th step cost O(k).
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
                    1 + COALESCE((SELECT l."nodeAttempt" FROM "tblWorkflowInstanceLogs" l
                                  WHERE l."instanceID" = t.i AND l."nodeID" = t.n AND l."eventType" = 'NODE_DISPATCHED'
                                  ORDER BY l."nodeAttempt" DESC LIMIT 1), 0)
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
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    batch: i64,
) -> Result<Vec<Claimed>> {
    Ok(claim_batch(pool, owner, lease, batch).await?.claimed)
}

/// A claimed batch with what running it needs: the [`InstanceView`] of each of its instances.
#[derive(Debug, Default)]
pub struct ClaimedBatch {
    pub claimed: Vec<Claimed>,
    pub views: HashMap<Uuid, InstanceView>,
}

/// Claims up to `batch` ready executions for `owner`, leased for `lease`, and reads each
/// instance's view in the same statement: one round trip per batch, not a claim and a read.
///
/// Fairness: each tenant with ready work contributes its oldest executions and the batch is
/// filled round-robin over tenants, so one tenant's flood cannot starve another tenant's
/// single execution.
///
/// The claim commits without waiting for its WAL flush (`synchronous_commit = off` for this
/// statement's transaction only): under load that wait was 1–5 ms of every node's latency.
/// Nothing durable depends on a claim. If the server loses it in a crash, the row is simply
/// unclaimed again and runs again, as after any worker crash; a settle is always
/// synchronous, and its flush covers the claim's earlier WAL, so a settled node's claim is
/// durable. The fencing token stays sound: a settle needs owner and `claimCount` to match
/// the row, and only one settle can remove it.
pub async fn claim_batch(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    batch: i64,
) -> Result<ClaimedBatch> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        claimed: Claimed,
        #[sqlx(rename = "workflowID")]
        workflow_id: Option<Uuid>,
        status: Option<String>,
        #[sqlx(rename = "isTest")]
        is_test: Option<bool>,
        #[sqlx(rename = "workflowVersion")]
        workflow_version: Option<i32>,
        #[sqlx(rename = "workflowOptions")]
        workflow_options: Option<Value>,
        #[sqlx(rename = "traceContext")]
        trace_context: Option<String>,
        /// Read on the first row of each instance only.
        context: Option<Value>,
    }
    let started = std::time::Instant::now();
    let rows: Vec<Row> = sqlx::query_as(
        r#"WITH no_flush_wait AS MATERIALIZED (
             SELECT set_config('synchronous_commit', 'off', true)
           ), ready_tenants AS (
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
             SELECT "executionID" FROM candidates, no_flush_wait ORDER BY turn, "availableAt" LIMIT $3
           ), claimed AS (
             UPDATE "tblNodeExecutions" e
             SET "leaseOwner" = $1, "leaseExpiresAt" = now() + $2::interval, "claimCount" = e."claimCount" + 1
             FROM fair WHERE e."executionID" = fair."executionID"
             RETURNING e."executionID", e."instanceID", e."tenantID", e."nodeID", e."nodeAttempt",
                       e."retryCount", e."claimCount", e."releaseCount", e."childInstanceID"
           )
           SELECT c."executionID", c."instanceID", c."tenantID", c."nodeID", c."nodeAttempt", c."retryCount",
                  c."claimCount", c."releaseCount", c."childInstanceID", i."workflowID", i."status", i."isTest", i."workflowVersion", v."workflowOptions",
                  i."traceContext",
                  CASE WHEN i."instanceID" IS NOT NULL AND row_number() OVER (PARTITION BY c."instanceID") = 1 THEN
                    COALESCE((SELECT jsonb_object_agg(k."key", k."value") FROM "tblWorkflowInstanceContext" k
                              WHERE k."instanceID" = c."instanceID"), '{}')
                  END AS context
           FROM claimed c
           LEFT JOIN "tblWorkflowInstances" i ON i."instanceID" = c."instanceID"
           LEFT JOIN "tblWorkflowVersions" v ON v."workflowID" = i."workflowID" AND v."version" = i."workflowVersion""#,
    )
    .bind(owner)
    .bind(interval(lease))
    .bind(batch)
    .fetch_all(pool)
    .await?;
    let mut out = ClaimedBatch::default();
    for r in rows {
        if let (Some(status), Some(context)) = (r.status, r.context) {
            out.views.insert(
                r.claimed.instance_id,
                InstanceView {
                    workflow_id: r.workflow_id,
                    workflow_version: r.workflow_version,
                    status,
                    is_test: r.is_test.unwrap_or(false),
                    workflow_options: r
                        .workflow_options
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    context,
                    trace_context: r.trace_context,
                },
            );
        }
        out.claimed.push(r.claimed);
    }
    crate::metrics::record_claim(out.claimed.len(), started.elapsed());
    Ok(out)
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
///
/// Rows another transaction holds are skipped, not waited for: a holder frozen (SIGSTOP, a
/// network stall) inside its settle keeps its rows locked for as long as it is frozen, and a
/// reaper waiting on them would stall every claim loop of every worker behind it (found by
/// `jet chaos`, the frozen-worker cell). A skipped row is reaped by a later round if its
/// holder's transaction ends without settling it.
pub async fn reap_expired(pool: &PgPool) -> Result<u64> {
    let done = sqlx::query(
        r#"UPDATE "tblNodeExecutions" e SET "leaseOwner" = NULL, "leaseExpiresAt" = NULL
           FROM (SELECT "executionID" FROM "tblNodeExecutions"
                 WHERE "leaseOwner" IS NOT NULL AND "leaseExpiresAt" < now()
                 FOR UPDATE SKIP LOCKED) expired
           WHERE e."executionID" = expired."executionID""#,
    )
    .execute(pool)
    .await?;
    crate::metrics::record_leases_reaped(done.rows_affected());
    Ok(done.rows_affected())
}

/// Gives a held execution back: after a failed try (`retry` = true: counted, due after
/// `delay`, and a `NODE_RETRY` row in its run's log with the try's number, error and due
/// time; a sub-workflow node forgets its failed child and starts a new one) or on shutdown
/// (not counted, due now). Fenced like a settle.
pub async fn release(
    pool: &PgPool,
    c: &Claimed,
    owner: &str,
    retry: Option<(Duration, &str)>,
) -> Result<bool> {
    let (count, delay, error) = match retry {
        Some((delay, error)) => (1, delay, Some(scrub_message(error))),
        None => (0, Duration::ZERO, None),
    };
    let released: Option<bool> = sqlx::query_scalar(
        r#"WITH released AS (
             UPDATE "tblNodeExecutions" SET "leaseOwner" = NULL, "leaseExpiresAt" = NULL,
               "retryCount" = "retryCount" + $4, "availableAt" = now() + $5::interval,
               "lastError" = COALESCE($6, "lastError"),
               "childInstanceID" = CASE WHEN $4 = 1 THEN NULL ELSE "childInstanceID" END
             WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3
             RETURNING "instanceID", "nodeID", "nodeAttempt", "retryCount", "availableAt"),
           logged AS (
             INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeStatus", "payload", "errorMessage", "nodeAttempt")
             SELECT "instanceID", "nodeID", 'NODE_RETRY', 'retrying',
                    jsonb_build_object('failedTry', "retryCount", 'retryAt', "availableAt"), $6, "nodeAttempt"
             FROM released WHERE $4 = 1)
           SELECT true FROM released"#,
    )
    .bind(c.execution_id)
    .bind(owner)
    .bind(c.claim_count)
    .bind(count)
    .bind(interval(delay))
    .bind(error)
    .fetch_optional(pool)
    .await?;
    Ok(released.is_some())
}

/// Hands back executions a draining worker holds but will not finish: each `(executionID,
/// claimCount)` still leased to `owner` becomes ready now, its claim counted as released
/// (not as a failed try, nor as a claim without a result), and sleeping workers are woken so
/// one takes it at once rather than after the lease would have expired. Returns how many
/// were released; one no longer held (settled meanwhile, or reaped and claimed elsewhere) is
/// left alone.
pub async fn release_unfinished(pool: &PgPool, owner: &str, held: &[(i64, i32)]) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
    let claims: Vec<i32> = held.iter().map(|h| h.1).collect();
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        r#"UPDATE "tblNodeExecutions" e
           SET "leaseOwner" = NULL, "leaseExpiresAt" = NULL, "availableAt" = now(),
               "releaseCount" = e."releaseCount" + 1
           FROM unnest($2::int8[], $3::int4[]) AS h(id, claims)
           WHERE e."executionID" = h.id AND e."claimCount" = h.claims AND e."leaseOwner" = $1"#,
    )
    .bind(owner)
    .bind(&ids)
    .bind(&claims)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() > 0 {
        // Delivered at commit, when the rows are claimable.
        sqlx::query("SELECT pg_notify('jet_node_executions', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected())
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

/// What running a batch of claimed executions needs, read with the claim: each instance's
/// status and workflow version, and its context (kept folded beside the log, so reading it
/// costs O(keys), not O(steps so far)).
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub workflow_id: Option<Uuid>,
    /// The definition version the instance runs (none for a test run).
    pub workflow_version: Option<i32>,
    pub status: String,
    pub is_test: bool,
    pub workflow_options: Value,
    pub context: Value,
    /// The W3C traceparent of the span that started the instance, if it was traced.
    pub trace_context: Option<String>,
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
