//! When a successor may run: joins wait for their upstreams and fire once per pass.

use super::graph::Graph;
use super::nodes::{self, NodeType};
use crate::Result;
use sqlx::PgConnection;
use uuid::Uuid;

/// Successors reachable through `handles` that may run now: a join (several upstreams) waits
/// for all (or any) of them to have completed; a node already dispatched and not yet settled
/// is not dispatched twice. Joins fire once per pass, so they work inside loops (see
/// [`join_fires`]). Loop nodes, re-entered by their body's back edge, run on every arrival.
pub(crate) async fn ready_successors(
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
        let is_join = upstream.len() > 1
            && graph
                .nodes
                .get(target)
                .is_some_and(|n| n.node_type != NodeType::Loop);
        if is_join && !join_fires(&mut *conn, instance_id, graph, target, &upstream).await? {
            continue;
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

/// Whether join `target` fires now that one of its `upstream` nodes completed.
///
/// - `all`: its `n`-th dispatch needs every upstream to have completed `n` times, so
///   completions from earlier loop iterations never count again.
/// - `any`: once per pass. A pass is one iteration of the innermost loop node whose cycle
///   holds the join (the join fires if it has not been dispatched since that loop node's
///   latest dispatch), or the whole run for a join outside every cycle. A join on a cycle
///   without a loop node has no passes to count and fires on every arrival.
async fn join_fires(
    conn: &mut PgConnection,
    instance_id: Uuid,
    graph: &Graph,
    target: &str,
    upstream: &[&str],
) -> Result<bool> {
    let mode = graph
        .nodes
        .get(target)
        .map(|n| nodes::join_mode(&n.config))
        .unwrap_or("all");
    if mode == "all" {
        let (passes, completions): (i64, Vec<i64>) = sqlx::query_as(
            r#"SELECT COALESCE((SELECT "nodeAttempt"::int8 FROM "tblWorkflowInstanceLogs"
                                WHERE "instanceID" = $1 AND "nodeID" = $2 AND "eventType" = 'NODE_DISPATCHED'
                                ORDER BY "nodeAttempt" DESC LIMIT 1), 0),
                      ARRAY(SELECT (SELECT count(*) FROM "tblWorkflowInstanceLogs" l
                                    WHERE l."instanceID" = $1 AND l."eventType" = 'NODE_COMPLETED' AND l."nodeID" = u)
                            FROM unnest($3::text[]) AS u)"#,
        )
        .bind(instance_id)
        .bind(target)
        .bind(upstream)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(completions.iter().all(|n| *n > passes));
    }
    let reach = |from: &str| reachable_from(graph, from);
    let from_target = reach(target);
    if !from_target.contains(target) {
        // Outside every cycle: one pass.
        let (last, _) = last_dispatches(conn, instance_id, target, &[]).await?;
        return Ok(last.is_none());
    }
    let loops: Vec<&str> = graph
        .nodes
        .values()
        .filter(|n| n.node_type == NodeType::Loop && from_target.contains(n.id.as_str()))
        .map(|n| n.id.as_str())
        .filter(|l| reach(l).contains(target))
        .collect();
    if loops.is_empty() {
        return Ok(true);
    }
    let (last, loop_last) = last_dispatches(conn, instance_id, target, &loops).await?;
    Ok(match (last, loop_last) {
        (None, _) => true,
        (Some(last), Some(pass_began)) => last < pass_began,
        (Some(_), None) => false,
    })
}

/// The `logID`s of the latest dispatch of `node` and of the latest dispatch of any of `of`.
/// A node's latest dispatch is its highest dispatch number, one probe of the idempotency
/// index, rather than a scan of every earlier dispatch (inside a loop, one per iteration).
async fn last_dispatches(
    conn: &mut PgConnection,
    instance_id: Uuid,
    node: &str,
    of: &[&str],
) -> Result<(Option<i64>, Option<i64>)> {
    Ok(sqlx::query_as(
        r#"SELECT (SELECT "logID" FROM "tblWorkflowInstanceLogs"
                   WHERE "instanceID" = $1 AND "nodeID" = $2 AND "eventType" = 'NODE_DISPATCHED'
                   ORDER BY "nodeAttempt" DESC LIMIT 1),
                  (SELECT max((SELECT l."logID" FROM "tblWorkflowInstanceLogs" l
                               WHERE l."instanceID" = $1 AND l."nodeID" = o AND l."eventType" = 'NODE_DISPATCHED'
                               ORDER BY l."nodeAttempt" DESC LIMIT 1))
                   FROM unnest($3::text[]) AS o)"#,
    )
    .bind(instance_id)
    .bind(node)
    .bind(of)
    .fetch_one(conn)
    .await?)
}

/// Every node reachable from `from` by one or more edges (`from` itself only on a cycle).
fn reachable_from<'g>(graph: &'g Graph, from: &str) -> std::collections::HashSet<&'g str> {
    let mut out: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for e in &graph.edges {
        out.entry(e.source.as_str())
            .or_default()
            .push(e.target.as_str());
    }
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<&str> = out.get(from).cloned().unwrap_or_default();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(out.get(id).into_iter().flatten().copied());
        }
    }
    seen
}
