//! The set-based settle: the common results of a claimed batch recorded and advanced with a
//! fixed number of statements for the whole batch, not a handful per result.
//!
//! It takes the results that need no per-item judgement: a completed node (not a human step),
//! alone in the batch for its instance, whose successors are not joins. Everything else goes
//! through the per-result settle (`queue::settle_in`) in the same transaction. The caller has
//! locked every instance of the batch in id order ([`lock`]), so no compare-and-set is needed
//! here, and a concurrent settle of the same instance waits, then loses its own CAS and
//! retries.

use super::finish::{finish_many, without_pending_work};
use super::queue::{Dispatch, dispatch_many};
use super::settle::{NodeResult, Pending, Settled, completion_payload};
use crate::Result;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Whether `p` can be settled by [`settle`]; `alone` says it is its instance's only result in
/// the batch.
pub(crate) fn eligible(p: &Pending, alone: bool) -> bool {
    let NodeResult::Completed(outcome) = &p.result else {
        return false;
    };
    alone
        && outcome.suspend.is_none()
        && p.graph.nodes.contains_key(&p.claimed.node_id)
        && outcome.handles.iter().all(|h| {
            p.graph
                .successors(&p.claimed.node_id, h)
                .iter()
                .all(|t| p.graph.incoming(t).len() <= 1)
        })
}

/// Locks the instances of a batch for the transaction, in id order (so two workers' batches
/// cannot deadlock), and returns the statuses of those it locked. An instance locked by
/// another transaction is skipped rather than waited for: its results are settled in a later
/// round, so one held lock cannot stall the whole batch (and the pool with it).
pub(crate) async fn lock(conn: &mut PgConnection, pending: &[Pending]) -> Result<Locked> {
    let mut ids: Vec<Uuid> = pending.iter().map(|p| p.claimed.instance_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let statuses: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
        r#"SELECT "instanceID", "status" FROM "tblWorkflowInstances"
           WHERE "instanceID" = ANY($1) ORDER BY "instanceID" FOR UPDATE SKIP LOCKED"#,
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    ids.retain(|id| !statuses.contains_key(id));
    // Skipped ones that still exist are busy; the others were deleted (their results find
    // no execution row to fence and are dropped).
    let busy: HashSet<Uuid> = if ids.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(
            r#"SELECT "instanceID" FROM "tblWorkflowInstances" WHERE "instanceID" = ANY($1)"#,
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    Ok(Locked { statuses, busy })
}

/// What [`lock`] got: the statuses of the instances it locked, and the instances it skipped
/// because another transaction holds them.
pub(crate) struct Locked {
    pub statuses: HashMap<Uuid, String>,
    pub busy: HashSet<Uuid>,
}

/// Settles eligible results (each its instance's only one in the batch, instance locked)
/// inside the caller's transaction; returns what became of each execution.
pub(crate) async fn settle(
    conn: &mut PgConnection,
    owner: &str,
    statuses: &HashMap<Uuid, String>,
    items: &[&Pending],
) -> Result<Vec<(i64, Settled)>> {
    if items.is_empty() {
        return Ok(vec![]);
    }

    let ids: Vec<i64> = items.iter().map(|p| p.claimed.execution_id).collect();
    let claims: Vec<i32> = items.iter().map(|p| p.claimed.claim_count).collect();
    let fenced: HashSet<i64> = sqlx::query_scalar(
        r#"DELETE FROM "tblNodeExecutions" e USING unnest($1::int8[], $2::int4[]) AS f(id, claims)
           WHERE e."executionID" = f.id AND e."claimCount" = f.claims AND e."leaseOwner" = $3
           RETURNING e."executionID""#,
    )
    .bind(&ids)
    .bind(&claims)
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();

    let mut outcomes = Vec::with_capacity(items.len());
    let mut running = Vec::new();
    for p in items {
        let id = p.claimed.execution_id;
        if !fenced.contains(&id) {
            outcomes.push((id, Settled::LostLease));
        } else if statuses.get(&p.claimed.instance_id).map(String::as_str) != Some("RUNNING") {
            outcomes.push((id, Settled::InstanceNotRunning));
        } else {
            running.push(*p);
        }
    }
    let recorded = record(conn, &running).await?;
    let mut advancing = Vec::new();
    for p in running {
        if recorded.contains(&p.claimed.execution_id) {
            advancing.push(p);
        } else {
            outcomes.push((p.claimed.execution_id, Settled::Duplicate));
        }
    }
    outcomes.extend(advance(conn, &advancing).await?);
    Ok(outcomes)
}

/// The `NODE_COMPLETED` rows; returns the executions recorded (a duplicate delivery's row
/// already exists and is skipped).
async fn record(conn: &mut PgConnection, items: &[&Pending]) -> Result<HashSet<i64>> {
    if items.is_empty() {
        return Ok(HashSet::new());
    }
    let mut instances = Vec::new();
    let mut nodes = Vec::new();
    let mut variables: Vec<Option<String>> = Vec::new();
    let mut payloads = Vec::new();
    let mut attempts = Vec::new();
    for p in items {
        let NodeResult::Completed(outcome) = &p.result else {
            continue;
        };
        let node = &p.graph.nodes[&p.claimed.node_id];
        instances.push(p.claimed.instance_id);
        nodes.push(p.claimed.node_id.clone());
        variables.push(
            node.config
                .get("outputVariable")
                .and_then(Value::as_str)
                .map(str::to_owned),
        );
        payloads.push(completion_payload(
            &p.claimed.node_id,
            node.node_type,
            &node.config,
            outcome,
        ));
        attempts.push(p.claimed.node_attempt);
    }
    let inserted: Vec<(Uuid, String, i32)> = sqlx::query_as(
        r#"INSERT INTO "tblWorkflowInstanceLogs"
             ("instanceID", "nodeID", "eventType", "nodeStatus", "outputVariable", "payload", "nodeAttempt")
           SELECT i, n, 'NODE_COMPLETED', 'success', v, p, a
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int4[]) AS r(i, n, v, p, a)
           ON CONFLICT ("instanceID", "nodeID", "eventType", "nodeAttempt") WHERE "nodeID" IS NOT NULL AND "eventType" <> 'NODE_RETRY' DO NOTHING
           RETURNING "instanceID", "nodeID", "nodeAttempt""#,
    )
    .bind(&instances)
    .bind(&nodes)
    .bind(&variables)
    .bind(&payloads)
    .bind(&attempts)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<(Uuid, String, i32)> = inserted.into_iter().collect();
    Ok(items
        .iter()
        .filter(|p| {
            inserted.contains(&(
                p.claimed.instance_id,
                p.claimed.node_id.clone(),
                p.claimed.node_attempt,
            ))
        })
        .map(|p| p.claimed.execution_id)
        .collect())
}

/// Version bumps, successors dispatched, and runs that ended: an `end` node, or a node that
/// led nowhere with nothing else pending.
async fn advance(conn: &mut PgConnection, items: &[&Pending]) -> Result<Vec<(i64, Settled)>> {
    if items.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = items.iter().map(|p| p.claimed.instance_id).collect();
    sqlx::query(
        r#"UPDATE "tblWorkflowInstances" SET "version" = "version" + 1, "updatedAt" = now()
           WHERE "instanceID" = ANY($1)"#,
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;

    // Successor candidates of every result that does not end its run.
    let mut candidates: Vec<(usize, String)> = Vec::new();
    let mut ended: Vec<(Uuid, &str, Option<String>)> = Vec::new();
    let mut finished = HashSet::new();
    for (i, p) in items.iter().enumerate() {
        let NodeResult::Completed(outcome) = &p.result else {
            continue;
        };
        match outcome.finish {
            Some(ok) => {
                ended.push((
                    p.claimed.instance_id,
                    if ok { "COMPLETED" } else { "FAILED" },
                    (!ok).then(|| "the end node reported an error".to_owned()),
                ));
                finished.insert(i);
            }
            None => {
                let mut targets: Vec<&str> = outcome
                    .handles
                    .iter()
                    .flat_map(|h| p.graph.successors(&p.claimed.node_id, h))
                    .collect();
                targets.sort_unstable();
                targets.dedup();
                candidates.extend(targets.into_iter().map(|t| (i, t.to_owned())));
            }
        }
    }
    // A successor already queued is not dispatched twice.
    let open: HashSet<(Uuid, String)> = if candidates.is_empty() {
        HashSet::new()
    } else {
        let (inst, node): (Vec<Uuid>, Vec<String>) = candidates
            .iter()
            .map(|(i, t)| (items[*i].claimed.instance_id, t.clone()))
            .unzip();
        sqlx::query_as::<_, (Uuid, String)>(
            r#"SELECT e."instanceID", e."nodeID" FROM "tblNodeExecutions" e
               JOIN unnest($1::uuid[], $2::text[]) AS c(i, n) ON e."instanceID" = c.i AND e."nodeID" = c.n"#,
        )
        .bind(&inst)
        .bind(&node)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    let mut dispatched = HashSet::new();
    let mut dispatches = Vec::new();
    for (i, target) in &candidates {
        let p = items[*i];
        if open.contains(&(p.claimed.instance_id, target.clone())) {
            continue;
        }
        let NodeResult::Completed(outcome) = &p.result else {
            continue;
        };
        dispatched.insert(*i);
        dispatches.push(Dispatch {
            instance_id: p.claimed.instance_id,
            tenant_id: p.claimed.tenant_id,
            node_id: target,
            delay: outcome.delay.unwrap_or_default(),
        });
    }
    dispatch_many(conn, &dispatches).await?;
    // Results that led nowhere end their run when nothing else is pending.
    let idle: Vec<Uuid> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| !finished.contains(i) && !dispatched.contains(i))
        .map(|(_, p)| p.claimed.instance_id)
        .collect();
    if !idle.is_empty() {
        let done = without_pending_work(conn, &idle).await?;
        ended.extend(done.into_iter().map(|id| (id, "COMPLETED", None)));
    }
    let ended_ids: HashSet<Uuid> = ended.iter().map(|e| e.0).collect();
    finish_many(conn, &ended).await?;
    Ok(items
        .iter()
        .map(|p| {
            let settled = if ended_ids.contains(&p.claimed.instance_id) {
                Settled::Finished
            } else {
                Settled::Advanced
            };
            (p.claimed.execution_id, settled)
        })
        .collect())
}
