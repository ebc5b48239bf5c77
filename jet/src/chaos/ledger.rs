//! The ledger check that ends every cell: every run ended (completed), every dispatched node
//! attempt settled exactly once, and no effect written by a run that did not count.
//!
//! Effects are at-least-once by design: a worker that dies (or loses its connection) after a
//! node's query committed but before the node's result did leaves the attempt unsettled, and
//! the node runs again. Those repeats happen *before* the attempt counts and are reported as
//! re-runs. A duplicate is what fencing must prevent: an effect written *after* its node's
//! attempt was settled (a stale worker that woke up or got its connection back), or an
//! attempt settled twice.

use sqlx::PgPool;

/// What the ledger found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Runs in the database.
    pub instances: i64,
    /// Runs that did not complete (still running, failed or cancelled).
    pub lost: i64,
    /// Node attempts of completed runs that were dispatched but never settled.
    pub unsettled: i64,
    /// Effect nodes that completed without writing their effect.
    pub missing_effects: i64,
    /// Node attempts settled more than once.
    pub double_settled: i64,
    /// Effects written after their node's attempt had been settled.
    pub late_effects: i64,
    /// Repeats of an effect before its attempt was settled (at-least-once, after a crash).
    pub reruns: i64,
}

impl Ledger {
    /// Runs lost and node attempts never settled: work that disappeared.
    pub fn lost_total(&self) -> i64 {
        self.lost + self.unsettled + self.missing_effects
    }

    /// Work done twice in a visible way.
    pub fn duplicated(&self) -> i64 {
        self.double_settled + self.late_effects
    }
}

/// Reads the ledger of a cell's database; `effect_nodes` are the ids of its effect nodes.
pub async fn check(pool: &PgPool, effect_nodes: &[String]) -> anyhow::Result<Ledger> {
    let (instances, lost): (i64, i64) = sqlx::query_as(
        r#"SELECT count(*), count(*) FILTER (WHERE "status" <> 'COMPLETED') FROM "tblWorkflowInstances""#,
    )
    .fetch_one(pool)
    .await?;
    let unsettled: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblWorkflowInstanceLogs" d
           JOIN "tblWorkflowInstances" i ON i."instanceID" = d."instanceID" AND i."status" = 'COMPLETED'
           WHERE d."eventType" = 'NODE_DISPATCHED' AND NOT EXISTS (
             SELECT 1 FROM "tblWorkflowInstanceLogs" c
             WHERE c."instanceID" = d."instanceID" AND c."nodeID" = d."nodeID"
               AND c."nodeAttempt" = d."nodeAttempt" AND c."eventType" IN ('NODE_COMPLETED', 'NODE_FAILED'))"#,
    )
    .fetch_one(pool)
    .await?;
    let double_settled: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM (
             SELECT 1 FROM "tblWorkflowInstanceLogs" WHERE "eventType" IN ('NODE_COMPLETED', 'NODE_FAILED')
             GROUP BY "instanceID", "nodeID", "nodeAttempt" HAVING count(*) > 1) d"#,
    )
    .fetch_one(pool)
    .await?;
    let (missing_effects, late_effects, reruns): (i64, i64, i64) = sqlx::query_as(
        r#"WITH runs AS (
             SELECT l."instanceID", l."payload"->'input'->>'key' AS key FROM "tblWorkflowInstanceLogs" l
             WHERE l."eventType" = 'INPUT_SET'),
           settled AS (
             SELECT r.key, c."nodeID" AS node, min(c."createdAt") AS at
             FROM runs r JOIN "tblWorkflowInstanceLogs" c ON c."instanceID" = r."instanceID"
             WHERE c."eventType" = 'NODE_COMPLETED' AND c."nodeID" = ANY($1)
             GROUP BY r.key, c."nodeID"),
           effects AS (
             SELECT e.key, e.node, e.at, row_number() OVER (PARTITION BY e.key, e.node ORDER BY e.at) AS n
             FROM chaos_effects e)
           SELECT
             (SELECT count(*) FROM settled s WHERE NOT EXISTS (
                SELECT 1 FROM effects e WHERE e.key = s.key AND e.node = s.node)),
             (SELECT count(*) FROM effects e JOIN settled s ON s.key = e.key AND s.node = e.node WHERE e.at > s.at),
             (SELECT count(*) FROM effects e LEFT JOIN settled s ON s.key = e.key AND s.node = e.node
              WHERE e.n > 1 AND (s.at IS NULL OR e.at <= s.at))"#,
    )
    .bind(effect_nodes)
    .fetch_one(pool)
    .await?;
    Ok(Ledger {
        instances,
        lost,
        unsettled,
        missing_effects,
        double_settled,
        late_effects,
        reruns,
    })
}
