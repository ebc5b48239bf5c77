//! Stored workflow definitions: `tblWorkflows` + `tblWorkflowNodes` + `tblWorkflowEdge`.
//! A save replaces all nodes and edges in one transaction, as upstream does, and publishes
//! the result as an immutable version (`tblWorkflowVersions`). Instances pin the version they
//! started on and the engine reads only versions, so a save never touches a running run.

use super::graph::{EditorEdge, EditorNode, Graph};
use crate::api_key::Creator;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A row of `tblWorkflows`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Workflow {
    #[sqlx(rename = "workflowID")]
    pub workflow_id: Uuid,
    pub title: String,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[sqlx(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    #[sqlx(rename = "isDisabled")]
    pub is_disabled: Option<bool>,
    #[sqlx(rename = "workflowOptions")]
    pub workflow_options: Option<Value>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

/// A workflow with its graph in the editor's shape.
#[derive(Debug, Clone)]
pub struct Definition {
    pub workflow: Workflow,
    pub nodes: Vec<EditorNode>,
    pub edges: Vec<EditorEdge>,
}

const COLUMNS: &str = r#""workflowID", "title", "tenantID", "creatorID", "createdByApiKeyID", "isDisabled",
    "workflowOptions", "createdAt", "updatedAt""#;

/// Keys of `nodeConfig` that are editor layout, not configuration.
const LAYOUT_KEYS: [&str; 4] = ["position", "width", "height", "measured"];

/// Saved node ids are `tblWorkflowNodes.nodeID` (uuid); the message names the first bad one.
pub fn check_node_ids(nodes: &[EditorNode]) -> std::result::Result<(), String> {
    match nodes.iter().find(|n| Uuid::parse_str(&n.id).is_err()) {
        Some(n) => Err(format!(
            "node id `{}` must be a UUID in a saved workflow",
            n.id
        )),
        None => Ok(()),
    }
}

/// Creates a workflow with its graph.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    title: &str,
    options: &Value,
    nodes: &[EditorNode],
    edges: &[EditorEdge],
    creator: Creator,
) -> Result<Workflow> {
    let workflow: Workflow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"INSERT INTO "tblWorkflows" ("title", "tenantID", "workflowOptions", "creatorID", "createdByApiKeyID", "isDisabled")
           VALUES ($1, $2, $3, $4, $5, false) RETURNING {COLUMNS}"#
    )))
    .bind(title)
    .bind(tenant_id)
    .bind(options)
    .bind(creator.user_id)
    .bind(creator.api_key_id)
    .fetch_one(&mut *conn)
    .await?;
    replace_graph(conn, workflow.workflow_id, nodes, edges).await?;
    publish(conn, workflow.workflow_id).await?;
    Ok(workflow)
}

/// Publishes the workflow's graph and options as they are stored now as its next version,
/// which new instances start on. Runs already going keep the version they started with.
pub async fn publish(conn: &mut PgConnection, workflow_id: Uuid) -> Result<i32> {
    let (nodes, edges) = load_editor_graph(&mut *conn, workflow_id).await?;
    let start = nodes
        .iter()
        .find(|n| n.node_type == "start")
        .map(|n| n.id.clone());
    let to_json = |v: serde_json::Result<Value>| {
        v.map_err(|e| Error::Invalid(format!("the graph cannot be stored: {e}")))
    };
    let (nodes, edges) = (
        to_json(serde_json::to_value(&nodes))?,
        to_json(serde_json::to_value(&edges))?,
    );
    Ok(sqlx::query_scalar(
        r#"WITH w AS (
             UPDATE "tblWorkflows" SET "currentVersion" = "currentVersion" + 1 WHERE "workflowID" = $1
             RETURNING "currentVersion", "workflowOptions")
           INSERT INTO "tblWorkflowVersions" ("workflowID", "version", "nodes", "edges", "workflowOptions", "startNodeID")
           SELECT $1, w."currentVersion", $2, $3, COALESCE(w."workflowOptions", '{}'), $4 FROM w
           RETURNING "version""#,
    )
    .bind(workflow_id)
    .bind(&nodes)
    .bind(&edges)
    .bind(start)
    .fetch_one(conn)
    .await?)
}

/// A published version of a workflow: the graph and options its instances run with.
#[derive(Debug, Clone)]
pub struct Version {
    pub nodes: Vec<EditorNode>,
    pub edges: Vec<EditorEdge>,
    pub options: Value,
}

impl Version {
    /// The runnable graph; an error when the stored graph no longer validates (it did when
    /// it was saved, so only a change of the rules can cause this).
    pub fn graph(&self) -> Result<Graph> {
        Graph::validate(&self.nodes, &self.edges)
            .map(|v| v.graph)
            .map_err(|problems| {
                Error::Invalid(
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })
    }
}

/// Reads a published version; `NotFound` when it does not exist (its workflow was deleted).
pub async fn load_version(
    conn: &mut PgConnection,
    workflow_id: Uuid,
    version: i32,
) -> Result<Version> {
    let row: Option<(Value, Value, Value)> = sqlx::query_as(
        r#"SELECT "nodes", "edges", "workflowOptions" FROM "tblWorkflowVersions"
           WHERE "workflowID" = $1 AND "version" = $2"#,
    )
    .bind(workflow_id)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    let (nodes, edges, options) = row.ok_or(Error::NotFound("workflow version"))?;
    let bad =
        |e: serde_json::Error| Error::Invalid(format!("stored workflow version is malformed: {e}"));
    Ok(Version {
        nodes: serde_json::from_value(nodes).map_err(bad)?,
        edges: serde_json::from_value(edges).map_err(bad)?,
        options,
    })
}

/// Replaces all nodes and edges of a workflow.
pub async fn replace_graph(
    conn: &mut PgConnection,
    workflow_id: Uuid,
    nodes: &[EditorNode],
    edges: &[EditorEdge],
) -> Result<()> {
    sqlx::query(r#"DELETE FROM "tblWorkflowEdge" WHERE "workflowID" = $1"#)
        .bind(workflow_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(r#"DELETE FROM "tblWorkflowNodes" WHERE "workflowID" = $1"#)
        .bind(workflow_id)
        .execute(&mut *conn)
        .await?;
    let mut ids = Vec::with_capacity(nodes.len());
    let mut types = Vec::with_capacity(nodes.len());
    let mut configs = Vec::with_capacity(nodes.len());
    // The policy columns mirror the node's own settings (NULL when it has none), so the
    // precedence nodeConfig > columns > workflowOptions > platform is never short-circuited
    // by upstream's column defaults (300 s, 3 retries).
    let mut timeouts: Vec<Option<i32>> = Vec::with_capacity(nodes.len());
    let mut retries: Vec<Option<i32>> = Vec::with_capacity(nodes.len());
    for n in nodes {
        ids.push(
            Uuid::parse_str(&n.id)
                .map_err(|_| Error::Invalid(format!("node id `{}` must be a UUID", n.id)))?,
        );
        types.push(n.node_type.clone());
        let int = |key: &str| {
            n.data
                .get(key)
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
        };
        timeouts.push(int("timeoutSeconds"));
        retries.push(int("retryLimit"));
        let mut config: Map<String, Value> = n.data.as_object().cloned().unwrap_or_default();
        if let Some(position) = &n.position {
            config.insert("position".into(), position.clone());
        }
        configs.push(Value::Object(config));
    }
    sqlx::query(
        r#"INSERT INTO "tblWorkflowNodes" ("nodeID", "workflowID", "nodeType", "nodeConfig", "timeoutSeconds", "retryLimit")
           SELECT id, $1, t, c, ts, rl FROM unnest($2::uuid[], $3::varchar[], $4::jsonb[], $5::int4[], $6::int4[]) AS n(id, t, c, ts, rl)"#,
    )
    .bind(workflow_id)
    .bind(&ids)
    .bind(&types)
    .bind(&configs)
    .bind(&timeouts)
    .bind(&retries)
    .execute(&mut *conn)
    .await?;
    let parse = |s: &str| {
        Uuid::parse_str(s)
            .map_err(|_| Error::Invalid(format!("edge end `{s}` must be a node UUID")))
    };
    let (mut ups, mut downs, mut sources, mut targets) = (vec![], vec![], vec![], vec![]);
    for e in edges {
        ups.push(parse(&e.source)?);
        downs.push(parse(&e.target)?);
        sources.push(e.source_handle.clone());
        targets.push(e.target_handle.clone());
    }
    sqlx::query(
        r#"INSERT INTO "tblWorkflowEdge" ("workflowID", "upstreamNodeID", "downstreamNodeID", "sourceHandle", "targetHandle", "edgeType")
           SELECT $1, u, d, s, t, 'smoothstep' FROM unnest($2::uuid[], $3::uuid[], $4::varchar[], $5::varchar[]) AS e(u, d, s, t)"#,
    )
    .bind(workflow_id)
    .bind(&ups)
    .bind(&downs)
    .bind(&sources)
    .bind(&targets)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Updates title and options (when given) and bumps `updatedAt`.
pub async fn update_row(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    workflow_id: Uuid,
    title: Option<&str>,
    options: Option<&Value>,
) -> Result<Workflow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"UPDATE "tblWorkflows" SET "title" = COALESCE($3, "title"),
             "workflowOptions" = COALESCE($4, "workflowOptions"), "updatedAt" = now()
           WHERE "tenantID" = $1 AND "workflowID" = $2 RETURNING {COLUMNS}"#
    )))
    .bind(tenant_id)
    .bind(workflow_id)
    .bind(title)
    .bind(options)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("workflow"))
}

/// A tenant's workflows, newest first.
pub async fn list(pool: &PgPool, tenant_id: TenantId, page: PageRequest) -> Result<Page<Workflow>> {
    let total: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "tblWorkflows" WHERE "tenantID" = $1"#)
            .bind(tenant_id)
            .fetch_one(pool)
            .await?;
    let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblWorkflows" WHERE "tenantID" = $1
           ORDER BY "createdAt" DESC, "workflowID" LIMIT $2 OFFSET $3"#
    )))
    .bind(tenant_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    Ok(Page {
        items,
        total_count: total,
        request: page,
    })
}

/// One workflow of the tenant with its graph; `NotFound` for another tenant's.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    workflow_id: Uuid,
) -> Result<Definition> {
    let workflow = get_workflow(&mut *conn, tenant_id, workflow_id).await?;
    let (nodes, edges) = load_editor_graph(&mut *conn, workflow_id).await?;
    Ok(Definition {
        workflow,
        nodes,
        edges,
    })
}

/// The workflow row of the tenant without its graph (what starting a run checks).
pub async fn get_workflow(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    workflow_id: Uuid,
) -> Result<Workflow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"SELECT {COLUMNS} FROM "tblWorkflows" WHERE "tenantID" = $1 AND "workflowID" = $2"#
    )))
    .bind(tenant_id)
    .bind(workflow_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("workflow"))
}

async fn load_editor_graph(
    conn: &mut PgConnection,
    workflow_id: Uuid,
) -> Result<(Vec<EditorNode>, Vec<EditorEdge>)> {
    let rows: Vec<(Uuid, String, Option<Value>)> = sqlx::query_as(
        r#"SELECT "nodeID", "nodeType", "nodeConfig" FROM "tblWorkflowNodes" WHERE "workflowID" = $1 ORDER BY "createdAt", "nodeID""#,
    )
    .bind(workflow_id)
    .fetch_all(&mut *conn)
    .await?;
    let nodes = rows
        .into_iter()
        .map(|(id, node_type, config)| {
            let mut data = config
                .and_then(|c| c.as_object().cloned())
                .unwrap_or_default();
            let position = data.remove("position");
            for key in LAYOUT_KEYS {
                data.remove(key);
            }
            EditorNode {
                id: id.to_string(),
                node_type,
                data: Value::Object(data),
                position,
            }
        })
        .collect();
    let edges: Vec<(Uuid, Uuid, Option<String>, Option<String>)> = sqlx::query_as(
        r#"SELECT "upstreamNodeID", "downstreamNodeID", "sourceHandle", "targetHandle" FROM "tblWorkflowEdge"
           WHERE "workflowID" = $1 ORDER BY "createdAt", "edgeID""#,
    )
    .bind(workflow_id)
    .fetch_all(&mut *conn)
    .await?;
    let edges = edges
        .into_iter()
        .map(|(s, t, sh, th)| EditorEdge {
            source: s.to_string(),
            target: t.to_string(),
            source_handle: sh,
            target_handle: th,
        })
        .collect();
    Ok((nodes, edges))
}

/// The runnable graph of the workflow's current version (what a new run would execute).
pub async fn load_graph(conn: &mut PgConnection, workflow_id: Uuid) -> Result<Graph> {
    let version: i32 = sqlx::query_scalar(
        r#"SELECT "currentVersion" FROM "tblWorkflows" WHERE "workflowID" = $1"#,
    )
    .bind(workflow_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("workflow"))?;
    load_version(conn, workflow_id, version).await?.graph()
}

/// Deletes a workflow with its graph and its instances (logs and queued executions go by
/// cascade). Cron jobs that still point at it make this a `Conflict`.
pub async fn delete(conn: &mut PgConnection, tenant_id: TenantId, workflow_id: Uuid) -> Result<()> {
    sqlx::query(
        r#"DELETE FROM "tblWorkflowInstances" WHERE "tenantID" = $1 AND "workflowID" = $2"#,
    )
    .bind(tenant_id)
    .bind(workflow_id)
    .execute(&mut *conn)
    .await?;
    let deleted =
        sqlx::query(r#"DELETE FROM "tblWorkflows" WHERE "tenantID" = $1 AND "workflowID" = $2"#)
            .bind(tenant_id)
            .bind(workflow_id)
            .execute(&mut *conn)
            .await?;
    if deleted.rows_affected() == 0 {
        return Err(Error::NotFound("workflow"));
    }
    Ok(())
}
