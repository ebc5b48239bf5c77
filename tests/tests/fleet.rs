//! Real `jet-worker` processes share a few hundred instances; one is killed with SIGKILL while
//! it holds leases. Every instance still ends exactly once, every node completes once, and the
//! killed worker's executions run again only after their leases expired.

use chrono::{DateTime, Utc};
use jet_tests::TestApp;
use jet_tests::bins::Running;
use jet_tests::flow::Flow;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

const INSTANCES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_duplicates_nothing() {
    let app = TestApp::spawn().await;
    let a = app.admin("Fleet").await;
    // ~15 ms of script per instance keeps leases held long enough to kill a worker mid-node.
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("work", "javascript", json!({"code": "const t = Date.now() + 15; while (Date.now() < t) {} return ctx.input.i * 2", "outputVariable": "doubled"}))
        .node("end", "end", json!({"outputParameters": [{"name": "doubled", "sourceVariable": "{{ctx.doubled}}"}]}))
        .edge("start", "work")
        .edge_on("work", "success", "end");
    let workflow = app.save(&a, &flow).await;
    let mut instances = Vec::with_capacity(INSTANCES);
    for i in 0..INSTANCES {
        instances.push(app.execute(&a, &workflow, json!({"i": i})).await);
    }

    let url = app.db.url();
    let dir = std::env::temp_dir();
    let start = |name: &str| {
        Running::start(
            "jet-worker",
            &["--roles", "commands,nodes"],
            &dir,
            &[
                ("DATABASE_URL", &url),
                ("JET_WORKER_ID", name),
                ("JET_NODE_LEASE_SECONDS", "3"),
                ("JET_NODE_BATCH", "8"),
                ("JET_LOG", "warn"),
            ],
        )
    };
    let mut victim = start("victim");
    // The survivors join once the victim is working, so it surely holds work to lose.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let working: bool = sqlx::query_scalar(r#"SELECT EXISTS (SELECT 1 FROM "tblNodeExecutions" WHERE "leaseOwner" LIKE 'victim-nodes-%')"#)
            .fetch_one(&app.db.pool)
            .await
            .expect("leases");
        if working {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim never started working"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut survivors = vec![start("survivor-1"), start("survivor-2")];
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kill the victim while it holds leases; remember what it held and until when.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held: Vec<(String, String, i32, DateTime<Utc>)> = loop {
        let rows: Vec<(Uuid, String, i32, DateTime<Utc>)> = sqlx::query_as(
            r#"SELECT "instanceID", "nodeID", "nodeAttempt", "leaseExpiresAt" FROM "tblNodeExecutions"
               WHERE "leaseOwner" LIKE 'victim-nodes-%'"#,
        )
        .fetch_all(&app.db.pool)
        .await
        .expect("leases");
        if !rows.is_empty() {
            // Freeze the victim first, let a commit already on the wire land, then look again:
            // what it still holds now is what the SIGKILL makes it lose.
            let pid = victim.child.id().expect("pid").to_string();
            let signal = |sig: &str| {
                let sent = std::process::Command::new("kill")
                    .args([sig, &pid])
                    .status()
                    .expect("kill");
                assert!(sent.success(), "kill {sig}");
            };
            signal("-STOP");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let still: Vec<(Uuid, String, i32, DateTime<Utc>)> = sqlx::query_as(
                r#"SELECT "instanceID", "nodeID", "nodeAttempt", "leaseExpiresAt" FROM "tblNodeExecutions"
                   WHERE "leaseOwner" LIKE 'victim-nodes-%'"#,
            )
            .fetch_all(&app.db.pool)
            .await
            .expect("leases");
            if still.is_empty() {
                signal("-CONT");
                continue;
            }
            signal("-KILL");
            break still
                .into_iter()
                .map(|(i, n, at, exp)| (i.to_string(), n, at, exp))
                .collect();
        }
        assert!(Instant::now() < deadline, "the victim never held a lease");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = victim.wait(10).await;
    assert!(!status.success(), "the victim died by SIGKILL");
    // What the victim settled between that read and its death is not orphaned: keep what is
    // still leased to the dead process.
    let mut orphaned = Vec::new();
    for (instance, node, attempt, expires) in held {
        let still: bool = sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM "tblNodeExecutions" WHERE "instanceID"::text = $1 AND "nodeID" = $2
                 AND "nodeAttempt" = $3 AND "leaseOwner" LIKE 'victim-nodes-%')"#,
        )
        .bind(&instance)
        .bind(&node)
        .bind(attempt)
        .fetch_one(&app.db.pool)
        .await
        .expect("orphan check");
        if still {
            orphaned.push((instance, node, attempt, expires));
        }
    }
    assert!(
        !orphaned.is_empty(),
        "the victim died holding at least one execution"
    );

    // Everything finishes on the survivors.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "status" <> 'COMPLETED'"#,
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} instances never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &mut survivors {
        assert!(
            s.terminate(30).await.success(),
            "survivors stop cleanly on SIGTERM"
        );
    }

    // Exactly once: three completed nodes per instance, one row each, no failures.
    let per_node: Vec<(String, String, i64)> = sqlx::query_as(
        r#"SELECT "instanceID"::text, "nodeID", count(*) FROM "tblWorkflowInstanceLogs"
           WHERE "eventType" = 'NODE_COMPLETED' GROUP BY 1, 2"#,
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("counts");
    assert_eq!(
        per_node.len(),
        INSTANCES * 3,
        "every node of every instance completed"
    );
    assert!(
        per_node.iter().all(|(_, _, n)| *n == 1),
        "no node completed twice"
    );
    let failed: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblWorkflowInstanceLogs" WHERE "eventType" = 'NODE_FAILED'"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("failed");
    assert_eq!(failed, 0);
    let outputs: Vec<(String, serde_json::Value)> = sqlx::query_as(
        r#"SELECT "instanceID"::text, "payload" FROM "tblWorkflowInstanceLogs"
           WHERE "eventType" = 'NODE_COMPLETED' AND "nodeID" = $1"#,
    )
    .bind(flow.id("end"))
    .fetch_all(&app.db.pool)
    .await
    .expect("outputs");
    assert_eq!(outputs.len(), INSTANCES);
    for (instance, payload) in &outputs {
        let i = instances
            .iter()
            .position(|x| x == instance)
            .expect("known instance") as i64;
        assert_eq!(
            payload["output"]["doubled"],
            json!(i * 2),
            "instance {instance} computed its own input"
        );
    }
    // The victim's executions ran again, and only after their leases had expired.
    for (instance, node, attempt, expired_at) in &orphaned {
        let (done_at,): (DateTime<Utc>,) = sqlx::query_as(
            r#"SELECT "createdAt" FROM "tblWorkflowInstanceLogs"
               WHERE "instanceID"::text = $1 AND "nodeID" = $2 AND "nodeAttempt" = $3 AND "eventType" = 'NODE_COMPLETED'"#,
        )
        .bind(instance)
        .bind(node)
        .bind(attempt)
        .fetch_one(&app.db.pool)
        .await
        .expect("the held execution completed");
        assert!(
            done_at >= *expired_at,
            "{node} of {instance} re-ran at {done_at}, before its lease expired at {expired_at}"
        );
    }
    let left: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("left");
    assert_eq!(left, 0, "the queue is empty");
}
