//! `jet explain <instanceID> [--json]`: why a run is not running, read from `DATABASE_URL`
//! (the same explanation as `GET …/workflows/instances/{id}/explain`, for any tenant).

use anyhow::Context;
use jet_shared::config::Config;
use jet_shared::workflow::explain::{self, Explanation};
use uuid::Uuid;

const USAGE: &str = "usage: jet explain <instanceID> [--json]";

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut json = false;
    let mut instance: Option<Uuid> = None;
    for arg in args {
        match arg.as_str() {
            "--json" => json = true,
            other if instance.is_none() => {
                instance = Some(
                    Uuid::parse_str(other)
                        .with_context(|| format!("`{other}` is not an instance id; {USAGE}"))?,
                );
            }
            other => anyhow::bail!("unexpected argument `{other}`; {USAGE}"),
        }
    }
    let instance = instance.ok_or_else(|| anyhow::anyhow!(USAGE))?;
    let config = Config::from_env()?;
    let pool = jet_shared::db::connect(config.require_database_url()?, 1)
        .await
        .context("connecting to DATABASE_URL")?;
    let explained = match explain::explain(&pool, None, instance).await {
        Err(jet_shared::Error::NotFound(_)) => anyhow::bail!("no instance {instance}"),
        other => other.context("explaining the instance")?,
    };
    if json {
        println!("{}", serde_json::to_string(&explained)?);
    } else {
        print!("{}", render(&explained));
    }
    Ok(())
}

/// The text answer: the run's status, then one line per waiting node.
fn render(e: &Explanation) -> String {
    let mut out = format!("instance {} {}", e.instance_id, e.status);
    if e.stuck {
        out.push_str(" STUCK: nothing runnable and nothing waiting (an engine bug)");
    }
    out.push('\n');
    if e.nodes.is_empty() && e.status == "RUNNING" {
        out.push_str("  (no node is waiting)\n");
    }
    for node in &e.nodes {
        out.push_str(&format!(
            "  {} {}: {}\n",
            node.node_type.as_deref().unwrap_or("?"),
            node.node_id,
            node.message
        ));
    }
    out
}
