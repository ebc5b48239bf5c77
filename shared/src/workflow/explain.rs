//! "Why isn't it running?": for each unfinished node of a run, the one reason it is not
//! running right now, read from the queue, the worker registry, the human requests and the
//! log in one consistent snapshot. The API's explain route and `jet explain` both call
//! [`explain`]; nothing else decides what a wait means.

use super::graph::Graph;
use super::nodes::{self, NodeType};
use crate::ids::TenantId;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Why one node of a run is not running now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    /// Ready, behind `ready_ahead` older ready executions of its tenant (claims go oldest first).
    Queued {
        ready_ahead: i64,
        ready_since: DateTime<Utc>,
    },
    /// Ready, but no live worker of the fleet runs the `nodes` role: nothing will claim it.
    NoNodesWorker { ready_since: DateTime<Utc> },
    /// Dispatched to run later (a delay node's successor, a timer).
    Delayed { until: DateTime<Utc> },
    /// Held by a worker's lease. A dead holder's lease is reaped once it expires.
    Leased {
        /// The lease as written: `<workerID>-nodes-<slot>`.
        lease_owner: String,
        /// The registry's worker holding it (none when the owner is not registered).
        #[serde(rename = "workerID")]
        worker_id: Option<String>,
        worker_alive: bool,
        lease_expires_at: DateTime<Utc>,
        /// The lease ran out: the reaper gives the node back to the ready set.
        lease_expired: bool,
    },
    /// Failed `failed_tries` times; the next try is due at `until`.
    RetryBackoff {
        until: DateTime<Utc>,
        failed_tries: i32,
        last_error: String,
    },
    /// A human step waiting for its form or approval.
    WaitingForHuman {
        #[serde(rename = "requestID")]
        request_id: Uuid,
        /// `form` or `approval`.
        request_type: String,
        expires_at: Option<DateTime<Utc>>,
    },
    /// A human step answered (or expired) whose resume command has not run yet (the
    /// `commands` role moves the run on).
    ResumeQueued {
        #[serde(rename = "requestID")]
        request_id: Uuid,
        /// `COMPLETED` or `EXPIRED`.
        request_status: String,
    },
    /// A sub-workflow node parked until its child instance ends.
    WaitingForChild {
        #[serde(rename = "childInstanceID")]
        child_instance_id: Uuid,
        /// The child's status; none when the child is gone (the node is woken to fail).
        child_status: Option<String>,
        /// When the node stops waiting (`timeoutSeconds`); none for no timeout.
        timeout_at: Option<DateTime<Utc>>,
    },
    /// A join (`all`) that has some of its inputs for this pass and waits for the others.
    WaitingOnJoin {
        waiting_for: Vec<String>,
        arrived: Vec<String>,
    },
}

impl Reason {
    /// The reason as one line for a person.
    pub fn message(&self) -> String {
        match self {
            Reason::Queued { ready_ahead, .. } => {
                format!("queued behind {ready_ahead} ready executions of its tenant")
            }
            Reason::NoNodesWorker { .. } => {
                "ready, but no live worker has the `nodes` role".to_owned()
            }
            Reason::Delayed { until } => format!("delayed until {}", until.to_rfc3339()),
            Reason::Leased {
                lease_owner,
                worker_id,
                worker_alive,
                lease_expires_at,
                lease_expired,
            } => format!(
                "leased by {} ({}) until {}{}",
                worker_id.as_deref().unwrap_or(lease_owner),
                match (worker_id, worker_alive) {
                    (None, _) => "unregistered",
                    (Some(_), true) => "alive",
                    (Some(_), false) => "dead",
                },
                lease_expires_at.to_rfc3339(),
                if *lease_expired {
                    ", expired: the reaper will requeue it"
                } else {
                    ""
                }
            ),
            Reason::RetryBackoff {
                until,
                failed_tries,
                last_error,
            } => format!(
                "retry backoff until {} after {failed_tries} failed tries; last error: {last_error}",
                until.to_rfc3339()
            ),
            Reason::WaitingForHuman {
                request_id,
                request_type,
                expires_at,
            } => format!(
                "waiting for human {request_type} request {request_id} ({})",
                expires_at.map_or("no expiry".to_owned(), |t| format!(
                    "expires {}",
                    t.to_rfc3339()
                ))
            ),
            Reason::ResumeQueued {
                request_id,
                request_status,
            } => format!(
                "human request {request_id} is {request_status}; its resume command is queued"
            ),
            Reason::WaitingForChild {
                child_instance_id,
                child_status,
                timeout_at,
            } => format!(
                "waiting for child instance {child_instance_id} ({}){}",
                child_status.as_deref().unwrap_or("deleted"),
                timeout_at.map_or(String::new(), |t| format!(", times out {}", t.to_rfc3339()))
            ),
            Reason::WaitingOnJoin { waiting_for, .. } => {
                format!("waiting on join inputs {}", waiting_for.join(", "))
            }
        }
    }
}

/// One unfinished node and why it waits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeWait {
    #[serde(rename = "nodeID")]
    pub node_id: String,
    /// The node's type in the run's definition (none if the definition is gone).
    pub node_type: Option<String>,
    /// The reason as one line for a person ([`Reason::message`]).
    pub message: String,
    #[serde(flatten)]
    pub reason: Reason,
}

/// A run's status and, while it runs, why each unfinished node waits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    #[serde(rename = "instanceID")]
    pub instance_id: Uuid,
    pub status: String,
    /// RUNNING with nothing runnable and nothing waiting (`jet_ops.stuck_instances`): an
    /// engine bug, never a state a run should be in.
    pub stuck: bool,
    /// Empty once the run has ended.
    pub nodes: Vec<NodeWait>,
}

/// Explains a run of `tenant` (another tenant's id is `NotFound`), or of any tenant for an
/// operator with database access (`tenant` none). Reads in one repeatable-read snapshot so
/// the reasons agree with each other.
pub async fn explain(
    pool: &sqlx::PgPool,
    tenant: Option<TenantId>,
    instance_id: Uuid,
) -> Result<Explanation> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let run: Option<(String, Option<Uuid>, Option<i32>)> = sqlx::query_as(
        r#"SELECT "status", "workflowID", "workflowVersion" FROM "tblWorkflowInstances"
           WHERE "instanceID" = $1 AND ($2::uuid IS NULL OR "tenantID" = $2)"#,
    )
    .bind(instance_id)
    .bind(tenant.map(|t| t.0))
    .fetch_optional(&mut *tx)
    .await?;
    let (status, workflow_id, version) = run.ok_or(Error::NotFound("instance"))?;
    if status != "RUNNING" {
        return Ok(Explanation {
            instance_id,
            status,
            stuck: false,
            nodes: vec![],
        });
    }
    let graph = load_graph(&mut tx, instance_id, workflow_id, version).await;
    let node_type = |id: &str| -> Option<String> {
        let node = graph.as_ref()?.nodes.get(id)?;
        Some(node.node_type.as_str().to_owned())
    };
    let mut found = execution_reasons(&mut tx, instance_id).await?;
    found.extend(human_reasons(&mut tx, instance_id).await?);
    if let Some(graph) = &graph {
        let busy: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
        let joins = join_reasons(&mut tx, instance_id, graph, &busy).await?;
        found.extend(joins);
    }
    let waits = found
        .into_iter()
        .map(|(node_id, reason)| NodeWait {
            node_type: node_type(&node_id),
            message: reason.message(),
            node_id,
            reason,
        })
        .collect();
    let stuck: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jet_ops.stuck_instances WHERE instance_id = $1)",
    )
    .bind(instance_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Explanation {
        instance_id,
        status,
        stuck,
        nodes: waits,
    })
}

/// The run's pinned definition, or a test run's own graph; none if it cannot be read (an
/// explanation without node types beats no explanation).
async fn load_graph(
    conn: &mut PgConnection,
    instance_id: Uuid,
    workflow_id: Option<Uuid>,
    version: Option<i32>,
) -> Option<Graph> {
    match (workflow_id, version) {
        (Some(workflow_id), Some(version)) => {
            super::definition::load_version(conn, workflow_id, version)
                .await
                .ok()?
                .graph()
                .ok()
        }
        _ => {
            let ctx = super::instance::load_context(&mut *conn, instance_id)
                .await
                .ok()?;
            super::instance::test_graph(&ctx).ok().map(|(g, _)| g)
        }
    }
}

/// One queued, delayed, leased or parked execution row, with what its reason needs.
#[derive(sqlx::FromRow)]
struct ExecutionRow {
    node_id: String,
    retry_count: i32,
    /// None for 'infinity' (a child wait without timeout).
    available_at: Option<DateTime<Utc>>,
    ready: bool,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    lease_expired: bool,
    last_error: Option<String>,
    child_instance_id: Option<Uuid>,
    child_status: Option<String>,
    worker_id: Option<String>,
    worker_alive: bool,
    /// Ready rows of the tenant a fair claim takes before this one (ready rows only).
    ready_ahead: Option<i64>,
}

async fn execution_reasons(
    conn: &mut PgConnection,
    instance_id: Uuid,
) -> Result<Vec<(String, Reason)>> {
    // The lease owner is `<workerID>-nodes-<slot>`: the longest registered id it starts with.
    let rows: Vec<ExecutionRow> = sqlx::query_as(
        r#"SELECT e."nodeID" AS node_id, e."retryCount" AS retry_count,
                  CASE WHEN isfinite(e."availableAt") THEN e."availableAt" END AS available_at,
                  e."availableAt" <= now() AS ready,
                  e."leaseOwner" AS lease_owner, e."leaseExpiresAt" AS lease_expires_at,
                  COALESCE(e."leaseExpiresAt" < now(), false) AS lease_expired,
                  e."lastError" AS last_error, e."childInstanceID" AS child_instance_id,
                  c."status"::text AS child_status,
                  w."workerID"::text AS worker_id, COALESCE(w.alive, false) AS worker_alive,
                  CASE WHEN e."leaseOwner" IS NULL AND e."availableAt" <= now() THEN
                    (SELECT count(*) FROM "tblNodeExecutions" o
                     WHERE o."tenantID" = e."tenantID" AND o."leaseOwner" IS NULL
                       AND (o."availableAt", o."executionID") < (e."availableAt", e."executionID"))
                  END AS ready_ahead
           FROM "tblNodeExecutions" e
           LEFT JOIN "tblWorkflowInstances" c ON c."instanceID" = e."childInstanceID"
           LEFT JOIN LATERAL (
             SELECT r."workerID",
                    r."stoppedAt" IS NULL AND r."heartbeatAt" > now() - make_interval(secs => $2) AS alive
             FROM "tblWorkers" r
             WHERE starts_with(e."leaseOwner", r."workerID" || '-nodes-')
             ORDER BY length(r."workerID") DESC LIMIT 1) w ON true
           WHERE e."instanceID" = $1
           ORDER BY e."executionID""#,
    )
    .bind(instance_id)
    .bind(crate::workers::DEAD_AFTER.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    let nodes_workers = if rows.iter().any(|r| r.ready && r.lease_owner.is_none()) {
        crate::workers::alive_with_role(&mut *conn, "nodes").await?
    } else {
        0
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let node_id = r.node_id.clone();
            (node_id, execution_reason(r, nodes_workers > 0))
        })
        .collect())
}

/// The one reason of an execution row, most specific first: a lease, a parked child wait,
/// a future due time (a retry's backoff or a delay), else it is ready.
fn execution_reason(r: ExecutionRow, nodes_worker_alive: bool) -> Reason {
    if let (Some(lease_owner), Some(lease_expires_at)) = (r.lease_owner, r.lease_expires_at) {
        return Reason::Leased {
            lease_owner,
            worker_id: r.worker_id,
            worker_alive: r.worker_alive,
            lease_expires_at,
            lease_expired: r.lease_expired,
        };
    }
    if let Some(child_instance_id) = r.child_instance_id
        && !r.ready
    {
        return Reason::WaitingForChild {
            child_instance_id,
            child_status: r.child_status,
            timeout_at: r.available_at,
        };
    }
    let since = r.available_at.unwrap_or_else(Utc::now);
    if !r.ready {
        return if r.retry_count > 0 {
            Reason::RetryBackoff {
                until: since,
                failed_tries: r.retry_count,
                last_error: r.last_error.unwrap_or_default(),
            }
        } else {
            Reason::Delayed { until: since }
        };
    }
    if !nodes_worker_alive {
        return Reason::NoNodesWorker { ready_since: since };
    }
    Reason::Queued {
        ready_ahead: r.ready_ahead.unwrap_or(0),
        ready_since: since,
    }
}

/// Human steps that still hold the run: waiting for an answer, or answered and not resumed.
async fn human_reasons(
    conn: &mut PgConnection,
    instance_id: Uuid,
) -> Result<Vec<(String, Reason)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        request_id: Uuid,
        node_id: String,
        status: String,
        request_type: String,
        expires_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        r#"SELECT "collectionRequestID" AS request_id, "nodeID"::text AS node_id, "status"::text AS status,
                  "collectionType"::text AS request_type, "expiresAt" AS expires_at
           FROM "tblWorkflowDataCollectionRequests"
           WHERE "instanceID" = $1
             AND ("status" = 'PENDING' OR ("status" <> 'CANCELLED' AND "resumedAt" IS NULL))
           ORDER BY "createdAt""#,
    )
    .bind(instance_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let reason = if r.status == "PENDING" {
                Reason::WaitingForHuman {
                    request_id: r.request_id,
                    request_type: r.request_type,
                    expires_at: r.expires_at,
                }
            } else {
                Reason::ResumeQueued {
                    request_id: r.request_id,
                    request_status: r.status,
                }
            };
            (r.node_id, reason)
        })
        .collect())
}

/// `all` joins not dispatched yet that have some inputs of this pass and lack others. A join's
/// `n`-th pass needs each input to have completed more than `n - 1` times (see `joins`).
async fn join_reasons(
    conn: &mut PgConnection,
    instance_id: Uuid,
    graph: &Graph,
    busy: &[&str],
) -> Result<Vec<(String, Reason)>> {
    let joins: Vec<(&str, Vec<&str>)> = graph
        .nodes
        .values()
        .filter(|n| n.node_type != NodeType::Loop && nodes::join_mode(&n.config) == "all")
        .map(|n| (n.id.as_str(), graph.incoming(&n.id)))
        .filter(|(id, upstream)| upstream.len() > 1 && !busy.contains(id))
        .collect();
    if joins.is_empty() {
        return Ok(vec![]);
    }
    let mut ids: Vec<&str> = joins
        .iter()
        .flat_map(|(id, up)| std::iter::once(*id).chain(up.iter().copied()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let counts: std::collections::HashMap<String, (i64, i64)> = sqlx::query_as(
        r#"SELECT "nodeID", count(*) FILTER (WHERE "eventType" = 'NODE_DISPATCHED'),
                  count(*) FILTER (WHERE "eventType" = 'NODE_COMPLETED')
           FROM "tblWorkflowInstanceLogs"
           WHERE "instanceID" = $1 AND "nodeID" = ANY($2)
           GROUP BY "nodeID""#,
    )
    .bind(instance_id)
    .bind(&ids)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|(id, dispatched, completed): (String, i64, i64)| (id, (dispatched, completed)))
    .collect();
    let count = |id: &str| counts.get(id).copied().unwrap_or((0, 0));
    Ok(joins
        .into_iter()
        .filter_map(|(join, upstream)| {
            let passes = count(join).0;
            let (arrived, waiting_for): (Vec<&str>, Vec<&str>) =
                upstream.into_iter().partition(|u| count(u).1 > passes);
            (!arrived.is_empty() && !waiting_for.is_empty()).then(|| {
                let names = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect();
                (
                    join.to_owned(),
                    Reason::WaitingOnJoin {
                        waiting_for: names(waiting_for),
                        arrived: names(arrived),
                    },
                )
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ExecutionRow {
        ExecutionRow {
            node_id: "n".into(),
            retry_count: 0,
            available_at: Some(Utc::now()),
            ready: true,
            lease_owner: None,
            lease_expires_at: None,
            lease_expired: false,
            last_error: None,
            child_instance_id: None,
            child_status: None,
            worker_id: None,
            worker_alive: false,
            ready_ahead: Some(3),
        }
    }

    #[test]
    fn a_lease_is_the_reason_whatever_else_the_row_says() {
        let r = ExecutionRow {
            lease_owner: Some("w-nodes-0".into()),
            lease_expires_at: Some(Utc::now()),
            retry_count: 2,
            child_instance_id: Some(Uuid::nil()),
            ..row()
        };
        assert!(matches!(
            execution_reason(r, true),
            Reason::Leased {
                worker_id: None,
                ..
            }
        ));
    }

    #[test]
    fn a_parked_child_wait_is_waiting_and_a_woken_one_is_ready_work() {
        let parked = ExecutionRow {
            child_instance_id: Some(Uuid::nil()),
            child_status: Some("RUNNING".into()),
            ready: false,
            available_at: None,
            ..row()
        };
        assert!(matches!(
            execution_reason(parked, true),
            Reason::WaitingForChild {
                timeout_at: None,
                ..
            }
        ));
        let woken = ExecutionRow {
            child_instance_id: Some(Uuid::nil()),
            ..row()
        };
        assert!(matches!(
            execution_reason(woken, true),
            Reason::Queued { ready_ahead: 3, .. }
        ));
    }

    #[test]
    fn a_future_row_is_a_backoff_after_failures_else_a_delay() {
        let later = ExecutionRow {
            ready: false,
            ..row()
        };
        assert!(matches!(
            execution_reason(later, false),
            Reason::Delayed { .. }
        ));
        let retry = ExecutionRow {
            ready: false,
            retry_count: 2,
            last_error: Some("boom".into()),
            ..row()
        };
        assert!(matches!(
            execution_reason(retry, false),
            Reason::RetryBackoff { failed_tries: 2, ref last_error, .. } if last_error == "boom"
        ));
    }

    #[test]
    fn ready_work_without_a_live_nodes_worker_says_so_rather_than_queued() {
        assert!(matches!(
            execution_reason(row(), false),
            Reason::NoNodesWorker { .. }
        ));
    }
}
