//! `jet status [--json] [--watch [SECONDS]]`: one screen for an operator, read from the
//! `jet_ops` views of `DATABASE_URL`: workers, queue depth and age, commands, the DLQ, cron,
//! listeners, stuck instances and what holds back vacuum.

use anyhow::Context;
use jet_shared::config::Config;
use serde_json::Value;
use std::time::Duration;

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut json = false;
    let mut watch: Option<Duration> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--watch" => {
                let secs = rest
                    .clone()
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .inspect(|_| {
                        rest.next();
                    })
                    .unwrap_or(2);
                watch = Some(Duration::from_secs(secs.max(1)));
            }
            other => anyhow::bail!(
                "unknown option `{other}`; usage: jet status [--json] [--watch [SECONDS]]"
            ),
        }
    }
    let config = Config::from_env()?;
    let pool = jet_shared::db::connect(config.require_database_url()?, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    loop {
        let snapshot = jet_shared::ops::snapshot(&pool).await?;
        if json {
            println!("{}", serde_json::to_string(&snapshot)?);
        } else {
            if watch.is_some() {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&snapshot));
        }
        match watch {
            Some(every) => tokio::time::sleep(every).await,
            None => return Ok(()),
        }
    }
}

/// The text screen: one block per section, one line per row with the fields that matter.
fn render(s: &Value) -> String {
    let mut out = String::new();
    let rows = |name: &str| s[name].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut section = |title: &str, rows: Vec<Value>, line: &dyn Fn(&Value) -> String| {
        out.push_str(&format!("{title} ({})\n", rows.len()));
        if rows.is_empty() {
            out.push_str("  (none)\n");
        }
        for row in &rows {
            out.push_str("  ");
            out.push_str(&line(row));
            out.push('\n');
        }
        out.push('\n');
    };
    section("workers", rows("workers"), &|r| {
        format!(
            "{} {} roles={} node_leases={} listeners={} cron={} heartbeat={}",
            text(&r["worker_id"]),
            if r["alive"] == true { "alive" } else { "DEAD" },
            text(&r["roles"]),
            text(&r["node_leases"]),
            text(&r["listeners_held"]),
            text(&r["cron_scheduler"]),
            text(&r["heartbeat_at"]),
        )
    });
    section("queues", rows("queues"), &|r| {
        format!(
            "{} tenant={} ready={} delayed={} leased={} expired_leases={} oldest_ready={}",
            text(&r["queue"]),
            text(&r["tenant_id"]),
            text(&r["ready"]),
            text(&r["delayed"]),
            text(&r["leased"]),
            text(&r["expired_leases"]),
            text(&r["oldest_ready_age"]),
        )
    });
    section("commands", rows("commands"), &|r| {
        format!(
            "{} {} jobs={} oldest_age={}",
            text(&r["queue"]),
            text(&r["status"]),
            text(&r["jobs"]),
            text(&r["oldest_age"]),
        )
    });
    section("dlq", rows("dlq"), &|r| {
        format!(
            "tenant={} {} {} rows={} oldest_parked={} next_retry={}",
            text(&r["tenant_id"]),
            text(&r["source"]),
            text(&r["status"]),
            text(&r["rows"]),
            text(&r["oldest_parked_at"]),
            text(&r["next_retry_at"]),
        )
    });
    section(
        "cron (enabled jobs, most overdue first)",
        rows("cron"),
        &|r| {
            format!(
                "{} next={} overdue={} lag_p50={} lag_p99={}",
                text(&r["title"]),
                text(&r["next_run_at"]),
                text(&r["overdue"]),
                text(&r["lag_p50"]),
                text(&r["lag_p99"]),
            )
        },
    );
    section("listeners", rows("listeners"), &|r| {
        format!(
            "{} {} {} held_by={} connected={} pending={} lag_bytes={} retained_wal={} error={}",
            text(&r["title"]),
            text(&r["listener_type"]),
            text(&r["status"]),
            text(&r["held_by"]),
            text(&r["connected_at"]),
            text(&r["pending_events"]),
            text(&r["lag_bytes"]),
            text(&r["retained_wal_bytes"]),
            text(&r["last_error"]),
        )
    });
    section(
        "stuck instances (must be empty)",
        rows("stuck_instances"),
        &|r| {
            format!(
                "{} idle_for={}",
                text(&r["instance_id"]),
                text(&r["idle_for"])
            )
        },
    );
    section(
        "xmin horizon (what holds back vacuum)",
        rows("xmin_horizon"),
        &|r| {
            format!(
                "{} {} age={} open_for={} {}",
                text(&r["holder"]),
                text(&r["name"]),
                text(&r["xmin_age"]),
                text(&r["open_for"]),
                text(&r["detail"]),
            )
        },
    );
    out
}
