//! One operator's view of the fleet, read from the `jet_ops` views (`jet status`).

use crate::Result;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The views a status snapshot reads, in the order it shows them, each with the ordering that
/// puts what needs attention first.
const SECTIONS: &[(&str, &str)] = &[
    (
        "workers",
        "SELECT * FROM jet_ops.workers ORDER BY alive DESC, heartbeat_at DESC LIMIT 50",
    ),
    (
        "queues",
        "SELECT * FROM jet_ops.queue_depth ORDER BY ready DESC, queue, tenant_id LIMIT 50",
    ),
    (
        "commands",
        "SELECT * FROM jet_ops.commands ORDER BY queue, status",
    ),
    (
        "dlq",
        "SELECT * FROM jet_ops.dlq_summary ORDER BY rows DESC LIMIT 50",
    ),
    (
        "cron",
        "SELECT * FROM jet_ops.cron WHERE NOT is_disabled ORDER BY overdue DESC, next_run_at LIMIT 20",
    ),
    (
        "listeners",
        "SELECT * FROM jet_ops.listeners ORDER BY status DESC, pending_events DESC LIMIT 50",
    ),
    (
        "stuck_instances",
        "SELECT * FROM jet_ops.stuck_instances ORDER BY updated_at LIMIT 20",
    ),
    (
        "xmin_horizon",
        "SELECT * FROM jet_ops.xmin_horizon ORDER BY xmin_age DESC NULLS LAST LIMIT 5",
    ),
];

/// Every section as JSON rows: `{workers: [...], queues: [...], ...}`.
pub async fn snapshot(pool: &PgPool) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (name, query) in SECTIONS {
        let rows: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COALESCE(json_agg(v), '[]'::json) FROM ({query}) v"
        )))
        .fetch_one(pool)
        .await?;
        out.insert((*name).to_owned(), rows);
    }
    out.insert("takenAt".into(), json!(chrono::Utc::now()));
    Ok(Value::Object(out))
}
