//! Human steps (`dataCollection`, `approval`): requests in `tblWorkflowDataCollectionRequests`,
//! submission with JSON Schema validation, expiry, and resuming the instance.

use super::definition;
use super::nodes::Outcome;
use super::queue::Claimed;
use super::settle::{self, NodeResult, Step};
use crate::commands::{self, Command};
use crate::ids::TenantId;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A request for human input.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Request {
    #[sqlx(rename = "collectionRequestID")]
    pub collection_request_id: Uuid,
    #[sqlx(rename = "instanceID")]
    pub instance_id: Uuid,
    #[sqlx(rename = "workflowID")]
    pub workflow_id: Option<Uuid>,
    /// The definition version its instance runs.
    #[sqlx(rename = "workflowVersion")]
    pub workflow_version: Option<i32>,
    #[sqlx(rename = "tenantID")]
    pub tenant_id: TenantId,
    #[sqlx(rename = "nodeID")]
    pub node_id: Uuid,
    #[sqlx(rename = "nodeAttempt")]
    pub node_attempt: Option<i32>,
    /// `PENDING`, `COMPLETED`, `EXPIRED` or `CANCELLED`.
    pub status: String,
    /// `form` (dataCollection) or `approval`.
    #[sqlx(rename = "collectionType")]
    pub collection_type: String,
    #[sqlx(rename = "collectionConfig")]
    pub collection_config: Value,
    #[sqlx(rename = "submittedData")]
    pub submitted_data: Option<Value>,
    #[sqlx(rename = "expiresAt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
}

const SELECT: &str = r#"SELECT r."collectionRequestID", r."instanceID", i."workflowID", i."workflowVersion", i."tenantID", r."nodeID",
    r."nodeAttempt", r."status", r."collectionType", r."collectionConfig", r."submittedData", r."expiresAt", r."createdAt"
    FROM "tblWorkflowDataCollectionRequests" r JOIN "tblWorkflowInstances" i ON i."instanceID" = r."instanceID""#;

/// The instance a request belongs to and the trace that started it, so that its answer is
/// traced in that run's trace.
pub async fn trace_of(pool: &PgPool, id: Uuid) -> Result<Option<(Uuid, Option<String>)>> {
    Ok(sqlx::query_as(
        r#"SELECT i."instanceID", i."traceContext"
           FROM "tblWorkflowDataCollectionRequests" r JOIN "tblWorkflowInstances" i ON i."instanceID" = r."instanceID"
           WHERE r."collectionRequestID" = $1"#,
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// A request of the tenant; `NotFound` for another tenant's.
pub async fn get(conn: &mut PgConnection, tenant_id: TenantId, id: Uuid) -> Result<Request> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"{SELECT} WHERE r."collectionRequestID" = $1 AND i."tenantID" = $2"#
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("data collection request"))
}

/// The instance's pending requests (for the progress view).
pub async fn pending_of(pool: &PgPool, instance_id: Uuid) -> Result<Vec<Request>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"{SELECT} WHERE r."instanceID" = $1 AND r."status" = 'PENDING' ORDER BY r."createdAt""#
    )))
    .bind(instance_id)
    .fetch_all(pool)
    .await?)
}

/// Checks submitted data: against the form's JSON Schema (formats asserted), or, for an
/// approval, that `approved` is a boolean. Every problem is listed with its path.
pub fn validate_submission(request: &Request, data: &Value) -> std::result::Result<(), String> {
    if request.collection_type == "approval" && !data.get("approved").is_some_and(Value::is_boolean)
    {
        return Err("an approval needs `approved`: true or false".into());
    }
    let Some(schema) = request.collection_config.get("formSchema") else {
        return Ok(());
    };
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("the request's formSchema is invalid: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(data)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("{}: {e}", if path.is_empty() { "/" } else { path.as_str() })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Records a submission and queues the resume command, in one transaction. `Conflict` when
/// the request is no longer pending or has expired; `Invalid` when the data does not fit.
pub async fn submit(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    data: &Value,
) -> Result<Request> {
    let request: Request = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"{SELECT} WHERE r."collectionRequestID" = $1 AND i."tenantID" = $2 FOR UPDATE OF r"#
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("data collection request"))?;
    if request.status != "PENDING" {
        return Err(Error::Conflict {
            constraint: "request_not_pending".into(),
        });
    }
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::Conflict {
            constraint: "request_expired".into(),
        });
    }
    validate_submission(&request, data).map_err(Error::Invalid)?;
    sqlx::query(
        r#"UPDATE "tblWorkflowDataCollectionRequests" SET "status" = 'COMPLETED', "submittedData" = $2, "updatedAt" = now()
           WHERE "collectionRequestID" = $1"#,
    )
    .bind(id)
    .bind(data)
    .execute(&mut *conn)
    .await?;
    commands::push(
        conn,
        &Command::ResumeHumanStep {
            collection_request_id: id,
        },
    )
    .await
    .map_err(|e| Error::Invalid(format!("cannot queue the resume: {e}")))?;
    Ok(Request {
        status: "COMPLETED".into(),
        submitted_data: Some(data.clone()),
        ..request
    })
}

/// Expires every pending request past its `expiresAt` and queues their resumes; returns how
/// many. Safe with several replicas: each row flips from PENDING once.
pub async fn expire_due(pool: &PgPool) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let expired: Vec<Uuid> = sqlx::query_scalar(
        r#"UPDATE "tblWorkflowDataCollectionRequests" SET "status" = 'EXPIRED', "updatedAt" = now()
           WHERE "status" = 'PENDING' AND "expiresAt" <= now() RETURNING "collectionRequestID""#,
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &expired {
        commands::push(
            &mut tx,
            &Command::ResumeHumanStep {
                collection_request_id: *id,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(expired.len())
}

/// Continues the instance after an answered or expired request: the node completes through
/// `output` (form), `approved`/`rejected` (approval) or the timeout handle, or the instance
/// fails when an expired step has nowhere to go. Idempotent (the log's idempotency index).
pub async fn resume(pool: &PgPool, id: Uuid) -> Result<bool> {
    for _ in 0..20 {
        let mut tx = pool.begin().await?;
        let request: Option<Request> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"{SELECT} WHERE r."collectionRequestID" = $1"#
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(request) = request else {
            return Ok(false);
        };
        if request.status == "PENDING" || request.status == "CANCELLED" {
            return Ok(false);
        }
        let graph = match (request.workflow_id, request.workflow_version) {
            (Some(workflow_id), Some(version)) => {
                definition::load_version(&mut tx, workflow_id, version)
                    .await?
                    .graph()?
            }
            // A test run carries its graph in its context.
            _ => {
                let ctx = super::instance::load_context(&mut *tx, request.instance_id).await?;
                super::instance::test_graph(&ctx)?.0
            }
        };
        let node_id = request.node_id.to_string();
        let result = resumed_result(&request, |handle| graph.has_handle(&node_id, handle));
        let claimed = Claimed {
            execution_id: 0, // no execution row: the dispatch ended in NODE_SUSPENDED
            child_instance_id: None,
            instance_id: request.instance_id,
            tenant_id: request.tenant_id.0,
            node_id,
            node_attempt: request.node_attempt.unwrap_or(1),
            retry_count: 0,
            claim_count: 0,
            release_count: 0,
        };
        // Until now the answer counted as pending work of its run; from here its branch
        // moves on (or ends the run) in this same transaction.
        sqlx::query(
            r#"UPDATE "tblWorkflowDataCollectionRequests" SET "resumedAt" = now()
               WHERE "collectionRequestID" = $1"#,
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        match settle::record_and_advance(&mut tx, &claimed, &graph, &result).await? {
            Step::Done(_) => {
                tx.commit().await?;
                return Ok(true);
            }
            Step::CasLost => tx.rollback().await?,
        }
    }
    Err(Error::Invalid(format!(
        "instance of request {id} is too contended to resume; will retry"
    )))
}

/// What an answered or expired request means for its node.
fn resumed_result(request: &Request, has_handle: impl Fn(&str) -> bool) -> NodeResult {
    let config = &request.collection_config;
    let approval = request.collection_type == "approval";
    let variable = config
        .get("outputVariable")
        .and_then(Value::as_str)
        .unwrap_or(if approval {
            "approvalResult"
        } else {
            "collectedData"
        });
    let complete = |handle: &str, value: Value| {
        let mut outcome = Outcome {
            output: json!({variable: value, "success": true}),
            patch: Default::default(),
            handles: vec![handle.to_owned()],
            delay: None,
            finish: None,
            suspend: None,
        };
        outcome.handles.dedup();
        NodeResult::Completed(outcome)
    };
    match request.status.as_str() {
        "COMPLETED" => {
            let data = request.submitted_data.clone().unwrap_or(Value::Null);
            if approval {
                let handle = if data.get("approved") == Some(&Value::Bool(true)) {
                    "approved"
                } else {
                    "rejected"
                };
                complete(handle, data)
            } else {
                complete("output", data)
            }
        }
        _ => {
            let fail = approval && config.get("onTimeout").and_then(Value::as_str) == Some("fail");
            let handle = config
                .get("timeoutHandle")
                .and_then(Value::as_str)
                .unwrap_or("expired");
            if !fail && has_handle(handle) {
                complete(handle, Value::Null)
            } else {
                NodeResult::Failed(format!(
                    "the {} request expired",
                    if approval {
                        "approval"
                    } else {
                        "data collection"
                    }
                ))
            }
        }
    }
}
