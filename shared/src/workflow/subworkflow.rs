//! The `subWorkflow` node: runs another workflow of the tenant as a child instance and waits
//! for it without holding a lease.
//!
//! The node runs twice. The first run starts the child (`parentInstanceID`/`parentNodeID` set)
//! and parks its own execution row in the same transaction: no owner, `childInstanceID` set,
//! due at the node's `timeoutSeconds` or never. When the child ends, the transaction that ends
//! it makes the parked row due now ([`ended`]), so the node runs again and collects the
//! child's result: COMPLETED follows `output`/`success` with the child's workflow output,
//! FAILED or CANCELLED is a node failure (retried with a fresh child, then `errorHandling`).

use super::instance::{self, Parent};
use super::nodes::Outcome;
use super::queue::Claimed;
use super::template::resolve;
use crate::Result;
use crate::ids::TenantId;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// How deep sub-workflows may nest when a node does not say (`maxDepth`).
pub const DEFAULT_MAX_DEPTH: i64 = 5;

/// Where the child's output lands when the node names no `outputVariable`.
pub const DEFAULT_OUTPUT_VARIABLE: &str = "subWorkflowResult";

/// The child run a node asks for, its inputs resolved against the parent's context.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildRun {
    pub workflow_id: Uuid,
    pub inputs: Value,
    pub max_depth: i64,
}

/// Reads the node's configuration: `childWorkflowID`, `inputMapping` (input name → template,
/// type-preserving) and `maxDepth`.
pub fn child_run(config: &Value, ctx: &Value) -> std::result::Result<ChildRun, String> {
    let workflow_id = config
        .get("childWorkflowID")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or("childWorkflowID must be a workflow id")?;
    let inputs: Map<String, Value> = config
        .get("inputMapping")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, template)| (name.clone(), resolve(template, ctx)))
        .collect();
    Ok(ChildRun {
        workflow_id,
        inputs: Value::Object(inputs),
        max_depth: config
            .get("maxDepth")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_MAX_DEPTH),
    })
}

/// What one run of a sub-workflow node came to.
#[derive(Debug)]
pub enum Step {
    /// The child runs; the node's execution is parked until it ends.
    Waiting,
    /// The node is done: the child's result, or why it failed.
    Done(std::result::Result<Outcome, String>),
    /// The lease was lost before anything was written; another worker has the node.
    LostLease,
}

/// The parent instance a node runs in, as far as starting a child needs it.
#[derive(Debug, Clone, Copy)]
pub struct ParentRun {
    pub tenant_id: Uuid,
    pub is_test: bool,
    /// Sub-workflow instances the tenant may have running at once (`JET_MAX_RUNNING_CHILDREN`).
    pub max_running_children: i64,
}

/// First run of the node: starts the child and parks the parent's execution, in one
/// transaction fenced by the lease, so a lost lease starts no child.
pub async fn start(
    pool: &PgPool,
    c: &Claimed,
    owner: &str,
    config: &Value,
    ctx: &Value,
    parent: ParentRun,
    timeout: Option<Duration>,
) -> Result<Step> {
    let run = match child_run(config, ctx) {
        Ok(run) => run,
        Err(message) => return Ok(Step::Done(Err(message))),
    };
    let mut tx = pool.begin().await?;
    let depth = nesting_depth(&mut tx, c.instance_id).await?;
    if depth > run.max_depth {
        return Ok(Step::Done(Err(format!(
            "sub-workflows nest {depth} deep here, deeper than maxDepth {}",
            run.max_depth
        ))));
    }
    let child: Option<(Option<Value>, Option<bool>)> = sqlx::query_as(
        r#"SELECT "workflowOptions", "isDisabled" FROM "tblWorkflows" WHERE "workflowID" = $1 AND "tenantID" = $2"#,
    )
    .bind(run.workflow_id)
    .bind(parent.tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let options = match child {
        None => {
            return Ok(Step::Done(Err(format!(
                "workflow {} does not exist in this tenant",
                run.workflow_id
            ))));
        }
        Some((_, Some(true))) => {
            return Ok(Step::Done(Err(format!(
                "workflow {} is disabled",
                run.workflow_id
            ))));
        }
        Some((options, _)) => options.unwrap_or_else(|| json!({})),
    };
    let inputs = match instance::check_inputs(&options, &run.inputs) {
        Ok(inputs) => inputs,
        Err(message) => return Ok(Step::Done(Err(format!("child inputs: {message}")))),
    };
    if let Some(message) =
        children_limit_reached(&mut tx, parent.tenant_id, parent.max_running_children).await?
    {
        return Ok(Step::Done(Err(message)));
    }
    let child_id = instance::create_from(
        &mut tx,
        TenantId(parent.tenant_id),
        run.workflow_id,
        &inputs,
        Some(Parent {
            instance_id: c.instance_id,
            node_id: &c.node_id,
            is_test: parent.is_test,
        }),
    )
    .await
    .map_err(|e| crate::Error::Invalid(format!("starting the child: {e}")))?;
    let parked = sqlx::query(
        r#"UPDATE "tblNodeExecutions"
           SET "leaseOwner" = NULL, "leaseExpiresAt" = NULL, "childInstanceID" = $4,
               "availableAt" = COALESCE(now() + $5::interval, 'infinity')
           WHERE "executionID" = $1 AND "leaseOwner" = $2 AND "claimCount" = $3"#,
    )
    .bind(c.execution_id)
    .bind(owner)
    .bind(c.claim_count)
    .bind(child_id)
    .bind(timeout.map(|t| format!("{} milliseconds", t.as_millis())))
    .execute(&mut *tx)
    .await?;
    if parked.rows_affected() == 0 {
        return Ok(Step::LostLease);
    }
    // The wait shows in the parent's log (and its SSE stream) with the child's id. A retry's
    // new child of the same dispatch is found through `parentInstanceID`.
    sqlx::query(
        r#"INSERT INTO "tblWorkflowInstanceLogs" ("instanceID", "nodeID", "eventType", "nodeStatus", "payload", "nodeAttempt")
           VALUES ($1, $2, 'NODE_SUSPENDED', 'suspended', $3, $4)
           ON CONFLICT ("instanceID", "nodeID", "eventType", "nodeAttempt") WHERE "nodeID" IS NOT NULL AND "eventType" <> 'NODE_RETRY' DO NOTHING"#,
    )
    .bind(c.instance_id)
    .bind(&c.node_id)
    .bind(json!({"childInstanceID": child_id}))
    .bind(c.node_attempt)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Step::Waiting)
}

/// Why one more child would exceed the tenant's running sub-workflow instances, if it would.
/// A transaction-scoped advisory lock per tenant serialises the count with the insert that
/// follows, so concurrent starts cannot overshoot the bound (fan-out under recursion would
/// otherwise multiply children without limit).
async fn children_limit_reached(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Option<String>> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('jet-children-' || $1::text, 0))")
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    let running: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblWorkflowInstances"
           WHERE "tenantID" = $1 AND "status" IN ('PENDING', 'RUNNING') AND "parentInstanceID" IS NOT NULL"#,
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await?;
    Ok((running >= limit).then(|| {
        format!(
            "the tenant already runs {running} sub-workflow instances, the most allowed \
             (JET_MAX_RUNNING_CHILDREN = {limit}); no child was started"
        )
    }))
}

/// How many instances deep a child of `instance_id` would sit (a top-level run's child: 1).
async fn nesting_depth(conn: &mut PgConnection, instance_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        r#"WITH RECURSIVE chain AS (
             SELECT "parentInstanceID", 1 AS depth FROM "tblWorkflowInstances" WHERE "instanceID" = $1
             UNION ALL
             SELECT i."parentInstanceID", chain.depth + 1 FROM "tblWorkflowInstances" i
             JOIN chain ON i."instanceID" = chain."parentInstanceID"
             WHERE chain.depth <= 64)
           SELECT COALESCE(max(depth), 1)::int8 FROM chain"#,
    )
    .bind(instance_id)
    .fetch_one(conn)
    .await?)
}

/// Later run of the node: the child ended (the parked row was woken), or the node's timeout
/// passed with the child still running, which cancels the child.
pub async fn collect(pool: &PgPool, child_id: Uuid, config: &Value) -> Result<Step> {
    let mut tx = pool.begin().await?;
    let status: Option<String> = sqlx::query_scalar(
        r#"SELECT "status" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
    )
    .bind(child_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(status) = status else {
        return Ok(Step::Done(Err(format!(
            "sub-workflow instance {child_id} no longer exists"
        ))));
    };
    let step = match status.as_str() {
        "RUNNING" => {
            instance::cancel(&mut tx, child_id).await?;
            Step::Done(Err(format!(
                "timed out waiting for sub-workflow instance {child_id} (cancelled)"
            )))
        }
        "COMPLETED" => {
            let ctx = instance::load_context(&mut *tx, child_id).await?;
            Step::Done(Ok(completed(config, child_id, &ctx)))
        }
        ended => {
            let ctx = instance::load_context(&mut *tx, child_id).await?;
            let reason = ctx
                .get("__error")
                .and_then(Value::as_str)
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            Step::Done(Err(format!(
                "sub-workflow instance {child_id} ended {ended}{reason}"
            )))
        }
    };
    tx.commit().await?;
    Ok(step)
}

/// The node's outcome for a completed child: the child's workflow output (its end node's
/// `outputParameters`) under the output variable, following `output` and `success`.
fn completed(config: &Value, child_id: Uuid, child_ctx: &Value) -> Outcome {
    let ov = config
        .get("outputVariable")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_OUTPUT_VARIABLE);
    let workflow_output = child_ctx
        .get("output")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut outcome = Outcome::follow(
        json!({ov: workflow_output, "childInstanceID": child_id, "status": "COMPLETED", "success": true}),
        "output",
    );
    outcome.handles.push("success".into());
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_mapped_type_preserving_from_the_parent_context() {
        let id = Uuid::new_v4();
        let run = child_run(
            &json!({"childWorkflowID": id.to_string(), "inputMapping": {"n": "{{ctx.input.n}}", "label": "n={{ctx.input.n}}"}}),
            &json!({"input": {"n": 7}}),
        )
        .expect("valid");
        assert_eq!(run.workflow_id, id);
        assert_eq!(run.inputs, json!({"n": 7, "label": "n=7"}));
        assert_eq!(run.max_depth, DEFAULT_MAX_DEPTH);
        assert!(child_run(&json!({"childWorkflowID": "nope"}), &json!({})).is_err());
    }

    #[test]
    fn a_completed_child_hands_its_workflow_output_to_the_parent() {
        let child = Uuid::new_v4();
        let outcome = completed(
            &json!({"outputVariable": "sum"}),
            child,
            &json!({"output": {"total": 3}, "input": {}}),
        );
        assert_eq!(outcome.output["sum"], json!({"total": 3}));
        assert_eq!(outcome.output["childInstanceID"], json!(child));
        assert_eq!(outcome.handles, ["output", "success"]);
    }
}
