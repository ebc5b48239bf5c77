//! Workflow instances (`tblWorkflowInstances`) and their append-only log
//! (`tblWorkflowInstanceLogs`): creation with inputs, the folded context, listing, cancel.

use super::queue;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool, QueryBuilder};
use std::time::Duration;
use uuid::Uuid;

/// The NOTIFY channel on which every instance whose status becomes final publishes its id
/// (a trigger, `jetNotifyInstanceEnded`): run-and-wait wakes on it.
pub const ENDED_CHANNEL: &str = "jet_instance_ended";

/// Whether a run with this status has ended (COMPLETED, FAILED or CANCELLED): it will not
/// change again.
pub fn has_ended(status: &str) -> bool {
    matches!(status, "COMPLETED" | "FAILED" | "CANCELLED")
}

/// A row of `tblWorkflowInstances`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Instance {
    #[sqlx(rename = "instanceID")]
    pub instance_id: Uuid,
    #[sqlx(rename = "workflowID")]
    pub workflow_id: Option<Uuid>,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    pub status: String,
    pub version: i32,
    #[sqlx(rename = "startedAt")]
    pub started_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "completedAt")]
    pub completed_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    #[sqlx(rename = "isTest")]
    pub is_test: bool,
    #[sqlx(rename = "parentInstanceID")]
    pub parent_instance_id: Option<Uuid>,
    /// The `subWorkflow` node of the parent that started this instance.
    #[sqlx(rename = "parentNodeID")]
    pub parent_node_id: Option<String>,
}

/// A log row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    #[sqlx(rename = "logID")]
    pub log_id: i64,
    #[sqlx(rename = "nodeID")]
    pub node_id: Option<String>,
    #[sqlx(rename = "eventType")]
    pub event_type: String,
    #[sqlx(rename = "nodeStatus")]
    pub node_status: Option<String>,
    #[sqlx(rename = "outputVariable")]
    pub output_variable: Option<String>,
    pub payload: Value,
    #[sqlx(rename = "errorMessage")]
    pub error_message: Option<String>,
    #[sqlx(rename = "nodeAttempt")]
    pub node_attempt: Option<i32>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = r#""instanceID", "workflowID", "tenantID", "status", "version", "startedAt", "completedAt",
    "createdAt", "updatedAt", "isTest", "parentInstanceID", "parentNodeID""#;

/// Checks inputs against `workflowOptions.inputs` (`[{name, type, required, default}]`):
/// required ones present, defaults filled in, numbers and booleans given as strings coerced.
pub fn check_inputs(options: &Value, given: &Value) -> std::result::Result<Value, String> {
    let mut out: Map<String, Value> = match given {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err("inputValues must be an object".into()),
    };
    for def in options
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = def.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = match out.get(name) {
            Some(v) if !v.is_null() => v.clone(),
            _ => match def.get("default") {
                Some(d) => d.clone(),
                None if def
                    .get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false) =>
                {
                    return Err(format!("input `{name}` is required"));
                }
                None => continue,
            },
        };
        let coerced = match (
            def.get("type").and_then(Value::as_str).unwrap_or("any"),
            &value,
        ) {
            ("number", Value::String(s)) => s
                .trim()
                .parse::<serde_json::Number>()
                .ok()
                .map(Value::Number),
            ("number", Value::Number(_)) => Some(value.clone()),
            ("boolean", Value::String(s)) => match s.as_str() {
                "true" => Some(json!(true)),
                "false" => Some(json!(false)),
                _ => None,
            },
            ("boolean", Value::Bool(_)) => Some(value.clone()),
            ("string", Value::String(_)) => Some(value.clone()),
            ("object", Value::Object(_)) | ("array", Value::Array(_)) => Some(value.clone()),
            ("any", _) => Some(value.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "input `{name}` must be of type {}",
                def.get("type").and_then(Value::as_str).unwrap_or("any")
            )
        })?;
        out.insert(name.to_owned(), coerced);
    }
    Ok(Value::Object(out))
}

/// Where a sub-workflow's instance was started from.
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub instance_id: Uuid,
    pub node_id: &'a str,
    pub is_test: bool,
}

/// Creates a RUNNING instance with its `INPUT_SET` row and dispatches its start node, in the
/// caller's transaction: the instance is runnable exactly when the caller commits, with no
/// command hop in between. [`create_many`] is its set-based twin; keep the two in step.
pub async fn create(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    workflow_id: Uuid,
    inputs: &Value,
) -> anyhow::Result<Uuid> {
    create_from(conn, tenant_id, workflow_id, inputs, None).await
}

/// [`create`], for a sub-workflow started by a node of `parent` (or a top-level run).
pub async fn create_from(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    workflow_id: Uuid,
    inputs: &Value,
    parent: Option<Parent<'_>>,
) -> anyhow::Result<Uuid> {
    // One statement: the instance, its INPUT_SET row, and its start node dispatched (the
    // NODE_DISPATCHED row and the execution), so a run costs its caller one round trip.
    // Validation guarantees exactly one start node per saved workflow; none, no row.
    let instance_id: Option<Uuid> = sqlx::query_scalar(
        r#"WITH start AS (
             SELECT v."startNodeID" AS node, v."version" FROM "tblWorkflows" w
             JOIN "tblWorkflowVersions" v ON v."workflowID" = w."workflowID" AND v."version" = w."currentVersion"
             WHERE w."workflowID" = $1 AND v."startNodeID" IS NOT NULL),
           inst AS (
             INSERT INTO "tblWorkflowInstances"
               ("workflowID", "workflowVersion", "tenantID", "status", "startedAt", "isTest", "parentInstanceID", "parentNodeID", "traceContext")
             SELECT $1, start."version", $2, 'RUNNING', now(), $3, $4, $5, $7 FROM start RETURNING "instanceID"),
           logged AS (
             INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "outputVariable", "payload", "nodeAttempt")
             SELECT inst."instanceID", NULL, 'INPUT_SET', 'input', $6::jsonb, NULL FROM inst
             UNION ALL
             SELECT inst."instanceID", start.node, 'NODE_DISPATCHED', NULL, '{}'::jsonb, 1 FROM inst, start)
           INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt")
           SELECT inst."instanceID", $2, start.node, 1 FROM inst, start RETURNING "instanceID""#,
    )
    .bind(workflow_id)
    .bind(tenant_id)
    .bind(parent.is_some_and(|p| p.is_test))
    .bind(parent.map(|p| p.instance_id))
    .bind(parent.map(|p| p.node_id))
    .bind(json!({"input": inputs}))
    .bind(crate::telemetry::instance_traceparent())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(instance_id.ok_or_else(|| Error::Invalid("the workflow has no start node".into()))?)
}

/// One top-level run for [`create_many`].
#[derive(Debug, Clone)]
pub struct NewRun {
    pub tenant_id: TenantId,
    pub workflow_id: Uuid,
    /// Already checked against the workflow's inputs ([`check_inputs`]).
    pub inputs: Value,
}

/// [`create`] for many top-level runs in one statement, for callers that start runs in bulk
/// (the cron scheduler's due batch): per run the same rows as [`create`] (the RUNNING instance
/// of the workflow's current version, its `INPUT_SET` row, and its start node dispatched),
/// in the caller's transaction. Returns each run's instance id in order; `None` where the
/// workflow is not the tenant's or has no start node (nothing is written for that run).
/// Keep the two statements in step.
pub async fn create_many(conn: &mut PgConnection, runs: &[NewRun]) -> Result<Vec<Option<Uuid>>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = runs.iter().map(|r| r.tenant_id.0).collect();
    let workflows: Vec<Uuid> = runs.iter().map(|r| r.workflow_id).collect();
    let inputs: Vec<Value> = runs.iter().map(|r| json!({"input": r.inputs})).collect();
    // Each run its own trace, unless a traced span creates them all.
    let traces: Vec<Option<String>> = runs
        .iter()
        .map(|_| crate::telemetry::instance_traceparent())
        .collect();
    // `run` is referenced by every insert, so PostgreSQL evaluates it (and each run's new
    // instance id) once. INPUT_SET rows are inserted before NODE_DISPATCHED rows, so each
    // instance's log starts in the same order as with `create`.
    let created: Vec<(i64, Uuid)> = sqlx::query_as(
        r#"WITH run AS (
             SELECT r.n, r.tenant_id, r.workflow_id, r.payload, r.trace, gen_random_uuid() AS instance_id,
                    v."startNodeID" AS node, v."version"
             FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::text[]) WITH ORDINALITY AS r(tenant_id, workflow_id, payload, trace, n)
             JOIN "tblWorkflows" w ON w."workflowID" = r.workflow_id AND w."tenantID" = r.tenant_id
             JOIN "tblWorkflowVersions" v ON v."workflowID" = w."workflowID" AND v."version" = w."currentVersion"
             WHERE v."startNodeID" IS NOT NULL),
           inst AS (
             INSERT INTO "tblWorkflowInstances" ("instanceID", "workflowID", "workflowVersion", "tenantID", "status", "startedAt", "isTest", "traceContext")
             SELECT instance_id, workflow_id, "version", tenant_id, 'RUNNING', now(), false, trace FROM run),
           logged AS (
             INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "outputVariable", "payload", "nodeAttempt")
             SELECT instance_id, NULL, 'INPUT_SET', 'input', payload, NULL FROM run
             UNION ALL
             SELECT instance_id, node, 'NODE_DISPATCHED', NULL, '{}'::jsonb, 1 FROM run),
           queued AS (
             INSERT INTO "tblNodeExecutions" ("instanceID", "tenantID", "nodeID", "nodeAttempt")
             SELECT instance_id, tenant_id, node, 1 FROM run)
           SELECT n, instance_id FROM run"#,
    )
    .bind(&tenants)
    .bind(&workflows)
    .bind(&inputs)
    .bind(&traces)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = vec![None; runs.len()];
    for (n, instance_id) in created {
        // WITH ORDINALITY counts from 1.
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| ids.get_mut(i)) {
            *slot = Some(instance_id);
        }
    }
    Ok(ids)
}

/// Context key holding a test run's graph (upstream's `__workflowDefinition`).
pub const TEST_DEFINITION_KEY: &str = "__workflowDefinition";

/// Creates a test instance of an unsaved graph: `isTest`, no workflow; the graph and options
/// travel in a `SYSTEM_SET` row, as upstream's test runs do. Its start node is dispatched in
/// the same transaction.
pub async fn create_test(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    nodes: &[super::graph::EditorNode],
    edges: &[super::graph::EditorEdge],
    options: &Value,
    inputs: &Value,
) -> anyhow::Result<Uuid> {
    let start = nodes
        .iter()
        .find(|n| n.node_type == "start")
        .map(|n| n.id.clone())
        .ok_or_else(|| Error::Invalid("the workflow has no start node".into()))?;
    let instance_id: Uuid = sqlx::query_scalar(
        r#"INSERT INTO "tblWorkflowInstances" ("tenantID", "status", "startedAt", "isTest", "traceContext")
           VALUES ($1, 'RUNNING', now(), true, $2) RETURNING "instanceID""#,
    )
    .bind(tenant_id)
    .bind(crate::telemetry::instance_traceparent())
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "eventType", "outputVariable", "payload")
           VALUES ($1, 'SYSTEM_SET', '__meta', $2), ($1, 'INPUT_SET', 'input', $3)"#,
    )
    .bind(instance_id)
    .bind(json!({TEST_DEFINITION_KEY: {"nodes": nodes, "edges": edges, "workflowOptions": options}, "__isTestRun": true}))
    .bind(json!({"input": inputs}))
    .execute(&mut *conn)
    .await?;
    queue::dispatch(conn, instance_id, tenant_id.0, &start, Duration::ZERO).await?;
    Ok(instance_id)
}

/// The graph and options of a test run, from its context.
pub fn test_graph(ctx: &Value) -> Result<(super::graph::Graph, Value)> {
    let def = ctx
        .get(TEST_DEFINITION_KEY)
        .ok_or_else(|| Error::Invalid("a test run without its definition".into()))?;
    let nodes: Vec<super::graph::EditorNode> =
        serde_json::from_value(def.get("nodes").cloned().unwrap_or_default())
            .map_err(|e| Error::Invalid(format!("test definition: {e}")))?;
    let edges: Vec<super::graph::EditorEdge> =
        serde_json::from_value(def.get("edges").cloned().unwrap_or_default())
            .map_err(|e| Error::Invalid(format!("test definition: {e}")))?;
    let graph = super::graph::Graph::validate(&nodes, &edges)
        .map(|v| v.graph)
        .map_err(|p| {
            Error::Invalid(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
    Ok((
        graph,
        def.get("workflowOptions")
            .cloned()
            .unwrap_or_else(|| json!({})),
    ))
}

/// Deletes a test instance with its log (upstream's "stop" of a test run). `Conflict` for a
/// real run: those are history.
pub async fn delete_test(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    instance_id: Uuid,
) -> Result<()> {
    let row = get(&mut *conn, tenant_id, instance_id).await?;
    if !row.is_test {
        return Err(Error::Conflict {
            constraint: "not_a_test_instance".into(),
        });
    }
    sqlx::query(r#"DELETE FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#)
        .bind(instance_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Dispatches the start node of a RUNNING instance that has none yet. Instances are created
/// with their start node dispatched; this serves start commands queued by earlier versions
/// (idempotent, so a redelivered command does nothing).
pub async fn start(conn: &mut PgConnection, instance_id: Uuid) -> Result<bool> {
    // One read: the instance (locked), whether anything was dispatched yet, and the start
    // node (validation guarantees exactly one per saved workflow).
    let row: Option<(TenantId, String, bool, Option<String>)> = sqlx::query_as(
        r#"SELECT i."tenantID", i."status",
                  EXISTS (SELECT 1 FROM "tblWorkflowInstanceLogs" l
                          WHERE l."instanceID" = i."instanceID" AND l."eventType" = 'NODE_DISPATCHED'),
                  (SELECT v."startNodeID" FROM "tblWorkflowVersions" v
                   WHERE v."workflowID" = i."workflowID" AND v."version" = i."workflowVersion")
           FROM "tblWorkflowInstances" i WHERE i."instanceID" = $1 FOR UPDATE OF i"#,
    )
    .bind(instance_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((tenant_id, status, started, start_node)) = row else {
        return Ok(false);
    };
    if status != "RUNNING" || started {
        return Ok(false);
    }
    let start = match start_node {
        Some(id) => id,
        None => {
            // A test run carries its graph in its context.
            let ctx = load_context(&mut *conn, instance_id).await?;
            let (graph, _) = test_graph(&ctx)?;
            graph
                .start()
                .map(|n| n.id.clone())
                .ok_or_else(|| Error::Invalid("the workflow has no start node".into()))?
        }
    };
    queue::dispatch(conn, instance_id, tenant_id.0, &start, Duration::ZERO).await?;
    Ok(true)
}

/// Cancels a RUNNING instance: status CANCELLED, queued executions removed, so nothing runs
/// further (a node running right now has its result dropped at settle). Its sub-workflows are
/// cancelled with it; a parent waiting on it is woken and sees it CANCELLED.
pub async fn cancel(conn: &mut PgConnection, instance_id: Uuid) -> Result<bool> {
    super::finish::cancel_run(conn, instance_id).await
}

/// One instance of the tenant.
pub async fn get(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    instance_id: Uuid,
) -> Result<Instance> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblWorkflowInstances" WHERE "tenantID" = $1 AND "instanceID" = $2"#
    )))
    .bind(tenant_id)
    .bind(instance_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("instance"))
}

/// The context (internal keys included), as kept beside the log.
pub async fn load_context(conn: impl PgExecutor<'_>, instance_id: Uuid) -> Result<Value> {
    Ok(sqlx::query_scalar(
        r#"SELECT COALESCE(jsonb_object_agg("key", "value"), '{}') FROM "tblWorkflowInstanceContext"
           WHERE "instanceID" = $1"#,
    )
    .bind(instance_id)
    .fetch_one(conn)
    .await?)
}

/// The instance's log, in order; `after` skips rows up to that `logID` (SSE resumption).
pub async fn logs(conn: impl PgExecutor<'_>, instance_id: Uuid, after: i64) -> Result<Vec<LogRow>> {
    Ok(sqlx::query_as(
        r#"SELECT "logID", "nodeID", "eventType", "nodeStatus", "outputVariable", "payload", "errorMessage",
                  "nodeAttempt", "createdAt"
           FROM "tblWorkflowInstanceLogs" WHERE "instanceID" = $1 AND "logID" > $2 ORDER BY "logID""#,
    )
    .bind(instance_id)
    .bind(after)
    .fetch_all(conn)
    .await?)
}

/// Filters of the instance list.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub workflow_id: Option<Uuid>,
    pub status: Option<String>,
    pub is_test: Option<bool>,
    pub parent_instance_id: Option<Uuid>,
}

/// A tenant's instances, newest first.
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &InstanceFilter,
    page: PageRequest,
) -> Result<Page<Instance>> {
    let build = |select: &str| {
        let mut q = QueryBuilder::new(select);
        q.push(r#" FROM "tblWorkflowInstances" WHERE "tenantID" = "#)
            .push_bind(tenant_id);
        if let Some(w) = filter.workflow_id {
            q.push(r#" AND "workflowID" = "#).push_bind(w);
        }
        if let Some(s) = &filter.status {
            q.push(r#" AND "status" = "#).push_bind(s.clone());
        }
        if let Some(t) = filter.is_test {
            q.push(r#" AND "isTest" = "#).push_bind(t);
        }
        if let Some(p) = filter.parent_instance_id {
            q.push(r#" AND "parentInstanceID" = "#).push_bind(p);
        }
        q
    };
    let total: i64 = build("SELECT count(*)")
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    let mut q = build(&format!("SELECT {COLUMNS}"));
    q.push(r#" ORDER BY "createdAt" DESC, "instanceID" LIMIT "#)
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let items = q.build_query_as().fetch_all(pool).await?;
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}
