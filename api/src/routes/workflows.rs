//! `/api/v1/tenants/{tenantID}/workflows`: workflow definitions (upstream's editor shape),
//! validated on every save; execute.

use super::enums::{NodeType, UnknownStored};
use super::{ApiTags, Created, Deleted, Page, authorize, page_request, required_title};
use crate::error::{ApiError, ApiResult};
use crate::run_wait;
use crate::security::JetAuth;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use jet_shared::ids::TenantId;
use jet_shared::rbac::Grants;
use jet_shared::rbac::permissions::{
    WORKFLOW_CREATE, WORKFLOW_DELETE, WORKFLOW_EXECUTE, WORKFLOW_EXPORT, WORKFLOW_LIST,
    WORKFLOW_READ, WORKFLOW_TEST, WORKFLOW_UPDATE,
};
use jet_shared::references::{self, Kind};
use jet_shared::workflow::definition::{self, Definition};
use jet_shared::workflow::graph::{EditorEdge, EditorNode, Graph};
use jet_shared::workflow::instance;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

/// A node in the editor's shape (React Flow).
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WorkflowNode {
    /// The node id; a UUID in a saved workflow.
    pub id: String,
    #[oai(rename = "type")]
    pub node_type: NodeType,
    /// The node's configuration.
    #[oai(default)]
    pub data: Value,
    /// Editor layout, kept as sent.
    pub position: Option<Value>,
}

/// An edge in the editor's shape; `sourceHandle` is the routing key (absent = the source
/// node's default route: `success` after `javascript`/`dataQuery`, the default branch after
/// `condition`/`switch`, `output` elsewhere; refused after `loop`, `fanout` and `approval`).
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct WorkflowEdge {
    pub source: String,
    pub target: String,
    pub source_handle: Option<String>,
    pub target_handle: Option<String>,
}

impl From<&WorkflowNode> for EditorNode {
    fn from(n: &WorkflowNode) -> Self {
        EditorNode {
            id: n.id.clone(),
            node_type: n.node_type.as_str().to_owned(),
            data: n.data.clone(),
            position: n.position.clone(),
        }
    }
}

impl From<&WorkflowEdge> for EditorEdge {
    fn from(e: &WorkflowEdge) -> Self {
        EditorEdge {
            source: e.source.clone(),
            target: e.target.clone(),
            source_handle: e.source_handle.clone(),
            target_handle: e.target_handle.clone(),
        }
    }
}

/// A workflow without its graph (list rows).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct WorkflowSummary {
    #[oai(rename = "workflowID")]
    pub workflow_id: Uuid,
    pub title: String,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    pub workflow_options: Value,
    pub is_disabled: bool,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<definition::Workflow> for WorkflowSummary {
    fn from(w: definition::Workflow) -> Self {
        Self {
            workflow_id: w.workflow_id,
            title: w.title,
            tenant_id: w.tenant_id.0,
            workflow_options: w
                .workflow_options
                .unwrap_or_else(|| Value::Object(Default::default())),
            is_disabled: w.is_disabled.unwrap_or(false),
            creator_id: w.creator_id,
            created_by_api_key_id: w.created_by_api_key_id,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A workflow with its graph and the validation warnings of its last save.
#[derive(Debug, Object)]
pub struct WorkflowDetail {
    #[oai(flatten)]
    pub workflow: WorkflowSummary,
    pub nodes: Vec<WorkflowNode>,
    pub edges: Vec<WorkflowEdge>,
    /// Problems that do not block saving, e.g. unreachable nodes.
    pub warnings: Vec<String>,
}

fn detail(d: Definition, warnings: Vec<String>) -> Result<WorkflowDetail, UnknownStored> {
    Ok(WorkflowDetail {
        workflow: d.workflow.into(),
        nodes: d
            .nodes
            .into_iter()
            .map(|n| {
                Ok(WorkflowNode {
                    id: n.id,
                    node_type: NodeType::from_stored(&n.node_type)?,
                    data: n.data,
                    position: n.position,
                })
            })
            .collect::<Result<_, UnknownStored>>()?,
        edges: d
            .edges
            .into_iter()
            .map(|e| WorkflowEdge {
                source: e.source,
                target: e.target,
                source_handle: e.source_handle,
                target_handle: e.target_handle,
            })
            .collect(),
        warnings,
    })
}

/// Body of `createWorkflow`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SaveWorkflow {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub title: String,
    pub nodes: Vec<WorkflowNode>,
    #[oai(default)]
    pub edges: Vec<WorkflowEdge>,
    /// Run policy and input definitions (`inputs: [{name, type, required, default}]`).
    pub workflow_options: Option<Value>,
}

/// Body of `updateWorkflow`: nodes and edges are replaced together when given.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct UpdateWorkflow {
    #[oai(validator(min_length = 1, max_length = 255))]
    pub title: Option<String>,
    pub nodes: Option<Vec<WorkflowNode>>,
    pub edges: Option<Vec<WorkflowEdge>>,
    pub workflow_options: Option<Value>,
}

/// Body of `executeWorkflow`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ExecuteWorkflow {
    /// Values for the workflow's inputs; checked against `workflowOptions.inputs`.
    pub input_values: Option<Value>,
}

/// The instance an execution started.
#[derive(Debug, Object)]
pub struct Started {
    #[oai(rename = "instanceID")]
    pub instance_id: Uuid,
}

/// `executeWorkflow` answers.
#[derive(ApiResponse)]
pub enum ExecuteResponse {
    /// The instance exists and its start command is queued.
    #[oai(status = 202)]
    Accepted(Json<Started>),
}

/// `executeWorkflow` answers.
#[derive(ApiResponse)]
pub enum RunResponse {
    /// With `waitSeconds`: the instance as it stands when it ended or the wait ran out. Its
    /// `status` says which: `COMPLETED`, `FAILED` or `CANCELLED` (ended; the end node's output
    /// is `context.output`), or `RUNNING` (still going: poll `getInstance`, stream
    /// `streamInstanceEvents`, or answer its `pendingRequests`).
    #[oai(status = 200)]
    Waited(run_wait::WaitedJson<super::instances::InstanceDetail>),
    /// Without `waitSeconds`: the instance exists and its start command is queued.
    #[oai(status = 202)]
    Accepted(Json<Started>),
    /// With `waitSeconds`: too many waits and event streams are open in this process or for
    /// this tenant (`too_many_streams`). Nothing was started; retry later or without waiting.
    #[oai(status = 429)]
    TooMany(Json<crate::error::ErrorBody>),
}

/// Refuses a graph of more than `max` nodes (`JET_MAX_GRAPH_NODES`) before any other work:
/// 422 `graph_too_large`.
fn check_graph_size(max: usize, nodes: usize) -> ApiResult<()> {
    if nodes > max {
        return Err(ApiError::unprocessable_as(
            "graph_too_large",
            format!("the workflow has {nodes} nodes; at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// Validates a graph for saving: 422 naming the node for every problem.
fn validate(
    max_nodes: usize,
    nodes: &[WorkflowNode],
    edges: &[WorkflowEdge],
) -> ApiResult<(Vec<EditorNode>, Vec<EditorEdge>, Vec<String>)> {
    check_graph_size(max_nodes, nodes.len())?;
    let nodes: Vec<EditorNode> = nodes.iter().map(EditorNode::from).collect();
    let edges: Vec<EditorEdge> = edges.iter().map(EditorEdge::from).collect();
    definition::check_node_ids(&nodes).map_err(ApiError::unprocessable)?;
    let validated = Graph::validate(&nodes, &edges).map_err(|problems| {
        ApiError::unprocessable(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok((
        nodes,
        edges,
        validated.warnings.iter().map(ToString::to_string).collect(),
    ))
}

/// The assets a graph's nodes run later, when no caller is there to ask (child workflows, data
/// queries): each must exist in the tenant (422 naming the node) and the caller must hold its
/// execute permission (403).
async fn check_references(
    conn: &mut sqlx::PgConnection,
    grants: &Grants,
    nodes: &[EditorNode],
) -> ApiResult<()> {
    // Graph validation has already named nodes whose id fields are malformed.
    for node in nodes {
        let (kind, field) = match node.node_type.as_str() {
            "subWorkflow" => (Kind::Workflow, "childWorkflowID"),
            "dataQuery" => (Kind::DataQuery, "dataQueryID"),
            _ => continue,
        };
        let Some(id) = node
            .data
            .get(field)
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            continue;
        };
        references::require(conn, grants, kind, id)
            .await
            .map_err(|err| match err {
                jet_shared::Error::Invalid(m) => {
                    ApiError::unprocessable(format!("node {}: {field}: {m}", node.id))
                }
                other => other.into(),
            })?;
    }
    Ok(())
}

fn options(value: Option<Value>) -> ApiResult<Value> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(ApiError::unprocessable("workflowOptions must be an object")),
    }
}

/// Body of `testWorkflow`: an unsaved graph (any node ids) and its inputs.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct TestWorkflow {
    pub nodes: Vec<WorkflowNode>,
    #[oai(default)]
    pub edges: Vec<WorkflowEdge>,
    pub workflow_options: Option<Value>,
    pub input_values: Option<Value>,
}

/// Workflow definition routes.
pub struct WorkflowsApi {
    pub state: AppState,
}

impl WorkflowsApi {
    /// A workflow with its graph, if the caller holds `permission` on it (get and export).
    async fn read(
        &self,
        auth: &JetAuth,
        tenant_id: Uuid,
        workflow_id: Uuid,
        permission: jet_shared::rbac::Permission,
    ) -> ApiResult<Json<WorkflowDetail>> {
        authorize(&self.state, auth, tenant_id, permission, Some(workflow_id)).await?;
        let mut conn = self.state.pool.acquire().await?;
        let def = definition::get(&mut conn, TenantId(tenant_id), workflow_id).await?;
        Ok(Json(detail(def, vec![])?))
    }
}

#[OpenApi(prefix_path = "/api/v1/tenants", tag = "ApiTags::Workflows")]
impl WorkflowsApi {
    /// List a tenant's workflows
    #[oai(
        path = "/:tenantID/workflows",
        method = "get",
        operation_id = "listWorkflows"
    )]
    async fn list(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(validator(minimum(value = "1")))] page: Query<Option<i64>>,
        #[oai(
            name = "pageSize",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        page_size: Query<Option<i64>>,
    ) -> ApiResult<Json<Page<WorkflowSummary>>> {
        authorize(&self.state, &auth, tenant_id.0, WORKFLOW_LIST, None).await?;
        let request = page_request(page.0, page_size.0)?;
        let page = definition::list(&self.state.pool, TenantId(tenant_id.0), request).await?;
        Ok(Json(Page::from_domain(page, WorkflowSummary::from)))
    }

    /// Create a workflow
    ///
    /// The graph is validated: at most `JET_MAX_GRAPH_NODES` nodes (422 `graph_too_large`),
    /// exactly one start node, edges between existing nodes, node ids that are UUIDs, configs
    /// valid for their node type, a route for every edge, no join that can never be satisfied.
    /// Each problem is a 422 naming the node; unreachable nodes and edges on handles their
    /// node never takes come back as warnings.
    #[oai(
        path = "/:tenantID/workflows",
        method = "post",
        operation_id = "createWorkflow"
    )]
    async fn create(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<SaveWorkflow>,
    ) -> ApiResult<Created<WorkflowDetail>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, WORKFLOW_CREATE, None).await?;
        let body = body.0;
        let title = required_title("title", &body.title)?;
        let (nodes, edges, warnings) =
            validate(self.state.config.max_graph_nodes, &body.nodes, &body.edges)?;
        let opts = options(body.workflow_options)?;
        let tenant = TenantId(tenant_id.0);
        let creator = auth.0.creator();
        let mut tx = self.state.pool.begin().await?;
        check_references(&mut tx, &grants, &nodes).await?;
        let saved =
            definition::insert(&mut tx, tenant, &title, &opts, &nodes, &edges, creator).await?;
        let def = definition::get(&mut tx, tenant, saved.workflow_id).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(detail(def, warnings)?)))
    }

    /// Get a workflow with its graph
    #[oai(
        path = "/:tenantID/workflows/:workflowID",
        method = "get",
        operation_id = "getWorkflow"
    )]
    async fn get(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Path<Uuid>,
    ) -> ApiResult<Json<WorkflowDetail>> {
        self.read(&auth, tenant_id.0, workflow_id.0, WORKFLOW_READ)
            .await
    }

    /// Export a workflow's definition (the shape `createWorkflow` accepts)
    #[oai(
        path = "/:tenantID/workflows/:workflowID/export",
        method = "get",
        operation_id = "exportWorkflow"
    )]
    async fn export(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Path<Uuid>,
    ) -> ApiResult<Json<WorkflowDetail>> {
        self.read(&auth, tenant_id.0, workflow_id.0, WORKFLOW_EXPORT)
            .await
    }

    /// Update a workflow; a new graph replaces all nodes and edges in one transaction
    #[oai(
        path = "/:tenantID/workflows/:workflowID",
        method = "patch",
        operation_id = "updateWorkflow"
    )]
    async fn update(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Path<Uuid>,
        body: Json<UpdateWorkflow>,
    ) -> ApiResult<Json<WorkflowDetail>> {
        let grants = authorize(
            &self.state,
            &auth,
            tenant_id.0,
            WORKFLOW_UPDATE,
            Some(workflow_id.0),
        )
        .await?;
        let body = body.0;
        let title = body
            .title
            .as_deref()
            .map(|t| required_title("title", t))
            .transpose()?;
        let opts = body
            .workflow_options
            .map(|o| options(Some(o)))
            .transpose()?;
        let graph = match (&body.nodes, &body.edges) {
            (Some(nodes), edges) => Some(validate(
                self.state.config.max_graph_nodes,
                nodes,
                edges.as_deref().unwrap_or_default(),
            )?),
            (None, Some(_)) => {
                return Err(ApiError::unprocessable(
                    "edges can only be replaced together with nodes",
                ));
            }
            (None, None) => None,
        };
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        definition::update_row(
            &mut tx,
            tenant,
            workflow_id.0,
            title.as_deref(),
            opts.as_ref(),
        )
        .await?;
        let warnings = match graph {
            Some((nodes, edges, warnings)) => {
                check_references(&mut tx, &grants, &nodes).await?;
                definition::replace_graph(&mut tx, workflow_id.0, &nodes, &edges).await?;
                warnings
            }
            None => vec![],
        };
        definition::publish(&mut tx, workflow_id.0).await?;
        let def = definition::get(&mut tx, tenant, workflow_id.0).await?;
        tx.commit().await?;
        Ok(Json(detail(def, warnings)?))
    }

    /// Delete a workflow with its instances
    #[oai(
        path = "/:tenantID/workflows/:workflowID",
        method = "delete",
        operation_id = "deleteWorkflow"
    )]
    async fn delete(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            WORKFLOW_DELETE,
            Some(workflow_id.0),
        )
        .await?;
        let mut tx = self.state.pool.begin().await?;
        definition::delete(&mut tx, TenantId(tenant_id.0), workflow_id.0).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    /// Clone a workflow: same graph with fresh node ids
    ///
    /// Checks what create checks: execute on every data query and child workflow the graph
    /// runs (403).
    #[oai(
        path = "/:tenantID/workflows/:workflowID/clone",
        method = "post",
        operation_id = "cloneWorkflow"
    )]
    async fn clone_workflow(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Path<Uuid>,
    ) -> ApiResult<Created<WorkflowDetail>> {
        let grants = authorize(&self.state, &auth, tenant_id.0, WORKFLOW_CREATE, None).await?;
        grants.require(WORKFLOW_READ, Some(workflow_id.0))?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        let source = definition::get(&mut tx, tenant, workflow_id.0).await?;
        // The copy is the caller's, with every right on it: it may only run what the caller
        // could have put in a new workflow.
        check_references(&mut tx, &grants, &source.nodes).await?;
        let fresh: std::collections::HashMap<String, String> = source
            .nodes
            .iter()
            .map(|n| (n.id.clone(), Uuid::new_v4().to_string()))
            .collect();
        let nodes: Vec<EditorNode> = source
            .nodes
            .iter()
            .map(|n| EditorNode {
                id: fresh[&n.id].clone(),
                ..n.clone()
            })
            .collect();
        let edges: Vec<EditorEdge> = source
            .edges
            .iter()
            .map(|e| EditorEdge {
                source: fresh[&e.source].clone(),
                target: fresh[&e.target].clone(),
                ..e.clone()
            })
            .collect();
        let creator = auth.0.creator();
        let title = format!("{} (copy)", source.workflow.title);
        let opts = source.workflow.workflow_options.clone().unwrap_or_default();
        let saved =
            definition::insert(&mut tx, tenant, &title, &opts, &nodes, &edges, creator).await?;
        let def = definition::get(&mut tx, tenant, saved.workflow_id).await?;
        tx.commit().await?;
        Ok(Created::Created(Json(detail(def, vec![])?)))
    }

    /// Run an unsaved graph as a test instance
    ///
    /// The graph is validated as on save (node ids may be any strings) and travels with the
    /// instance (`isTest`); human steps need a saved workflow. Delete the test instance with
    /// `deleteTestInstance`.
    #[oai(
        path = "/:tenantID/workflows/test",
        method = "post",
        operation_id = "testWorkflow"
    )]
    async fn test(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        body: Json<TestWorkflow>,
    ) -> ApiResult<ExecuteResponse> {
        let grants = authorize(&self.state, &auth, tenant_id.0, WORKFLOW_TEST, None).await?;
        let body = body.0;
        check_graph_size(self.state.config.max_graph_nodes, body.nodes.len())?;
        let nodes: Vec<EditorNode> = body.nodes.iter().map(EditorNode::from).collect();
        let edges: Vec<EditorEdge> = body.edges.iter().map(EditorEdge::from).collect();
        Graph::validate(&nodes, &edges).map_err(|problems| {
            ApiError::unprocessable(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        if let Some(n) = nodes
            .iter()
            .find(|n| matches!(n.node_type.as_str(), "dataCollection" | "approval"))
        {
            return Err(ApiError::unprocessable(format!(
                "node {}: human steps need a saved workflow",
                n.id
            )));
        }
        let opts = options(body.workflow_options)?;
        let inputs =
            instance::check_inputs(&opts, body.input_values.as_ref().unwrap_or(&Value::Null))
                .map_err(ApiError::unprocessable)?;
        let mut tx = self.state.pool.begin().await?;
        check_references(&mut tx, &grants, &nodes).await?;
        let instance_id = instance::create_test(
            &mut tx,
            TenantId(tenant_id.0),
            &nodes,
            &edges,
            &opts,
            &inputs,
        )
        .await
        .map_err(|e| ApiError::internal(e.as_ref()))?;
        tx.commit().await?;
        Ok(ExecuteResponse::Accepted(Json(Started { instance_id })))
    }

    /// Run a workflow, and optionally wait for its end
    ///
    /// Checks `inputValues` against the workflow's input definitions, then writes the
    /// instance, its `INPUT_SET` log row and its start node's execution in one transaction.
    ///
    /// Without `waitSeconds` the answer is 202 with the instance id. With `waitSeconds`
    /// (0–60) the request waits up to that long for the run to end and answers 200 with the
    /// instance (status, context with the output, log, pending human requests): ended if it
    /// ended in time, else still `RUNNING`. One round trip instead of a poll loop. Waits
    /// count against the event-stream bounds (`JET_SSE_MAX_STREAMS`, `…_PER_TENANT`): beyond
    /// them, 429 `too_many_streams` before anything is started.
    #[oai(
        path = "/:tenantID/workflows/:workflowID/execute",
        method = "post",
        operation_id = "executeWorkflow"
    )]
    async fn execute(
        &self,
        auth: JetAuth,
        #[oai(name = "tenantID")] tenant_id: Path<Uuid>,
        #[oai(name = "workflowID")] workflow_id: Path<Uuid>,
        /// Wait up to this many seconds (0–60) for the run to end; absent: do not wait.
        #[oai(
            name = "waitSeconds",
            validator(minimum(value = "0"), maximum(value = "60"))
        )]
        wait_seconds: Query<Option<u32>>,
        body: Json<ExecuteWorkflow>,
    ) -> ApiResult<RunResponse> {
        authorize(
            &self.state,
            &auth,
            tenant_id.0,
            WORKFLOW_EXECUTE,
            Some(workflow_id.0),
        )
        .await?;
        let tenant = TenantId(tenant_id.0);
        let mut tx = self.state.pool.begin().await?;
        // The row, not the graph: the run pins the current version, read as it is created.
        let workflow = definition::get_workflow(&mut tx, tenant, workflow_id.0).await?;
        if workflow.is_disabled == Some(true) {
            return Err(ApiError::unprocessable("the workflow is disabled"));
        }
        let opts = workflow.workflow_options.clone().unwrap_or_default();
        let inputs =
            instance::check_inputs(&opts, body.input_values.as_ref().unwrap_or(&Value::Null))
                .map_err(ApiError::unprocessable)?;
        // A wait takes its place before the run exists: a refused wait starts nothing, so a
        // retry cannot start the run twice.
        let permit = match wait_seconds.0 {
            Some(_) => match self.state.streams.try_open(tenant.0) {
                Ok(permit) => Some(permit),
                Err(refused) => return Ok(RunResponse::TooMany(Json(refused.body()))),
            },
            None => None,
        };
        let instance_id = instance::create(&mut tx, tenant, workflow_id.0, &inputs)
            .await
            .map_err(|e| ApiError::internal(e.as_ref()))?;
        tx.commit().await?;
        let (Some(seconds), Some(permit)) = (wait_seconds.0, permit) else {
            return Ok(RunResponse::Accepted(Json(Started { instance_id })));
        };
        let wait = std::time::Duration::from_secs(seconds.min(run_wait::MAX_WAIT_SECONDS).into());
        Ok(RunResponse::Waited(run_wait::answer(
            self.state.clone(),
            tenant,
            instance_id,
            wait,
            permit,
        )))
    }
}
