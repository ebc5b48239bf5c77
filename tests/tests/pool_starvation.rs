//! Two real `jet-worker --roles commands,nodes` processes with a small connection pool drain a
//! backlog of a few hundred instances. No role may starve another of connections, and no
//! connection may be stranded: the drain finishes far within one lease, every node runs once,
//! and no execution waits out its lease (no "node not run", no reaped lease, no second claim).

use jet_tests::TestApp;
use jet_tests::bins::Running;
use jet_tests::flow::Flow;
use serde_json::json;
use std::time::{Duration, Instant};

const INSTANCES: usize = 300;
const WORKFLOWS: usize = 60;
const ROUNDS: usize = 3;

/// Far below the 10 s lease a starved execution waits out, and far above a healthy drain
/// (about 1 s here, in a debug build on two busy cores).
const DRAIN_BOUND: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_small_pools_drain_a_backlog_without_waiting_out_a_lease() {
    let app = TestApp::spawn().await;
    let a = app.admin("Pool").await;
    // Three nodes, so every instance needs a start command, claims, reads and settles; and
    // many workflows, so the workers' graph caches start cold on many versions at once (each
    // a pooled read in the middle of a batch).
    // Node ids are global: each workflow gets its own.
    let flow = || {
        Flow::new()
        .node("start", "start", json!({}))
        .node(
            "double",
            "javascript",
            json!({"code": "return ctx.input.i * 2", "outputVariable": "doubled"}),
        )
        .node(
            "end",
            "end",
            json!({"outputParameters": [{"name": "doubled", "sourceVariable": "{{ctx.doubled}}"}]}),
        )
        .edge("start", "double")
        .edge_on("double", "success", "end")
    };
    let mut workflows = Vec::with_capacity(WORKFLOWS);
    for _ in 0..WORKFLOWS {
        workflows.push(app.save(&a, &flow()).await);
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
                // Small, so that any connection a role holds without using it starves the rest.
                ("JET_DB_MAX_CONNECTIONS", "5"),
                ("JET_LOG", "warn,jet_worker::nodes=info"),
            ],
        )
    };
    // The stall depends on how the batches interleave; a few rounds (fresh workers, cold
    // caches, a new backlog each) make a starving build fail nearly every time.
    for round in 0..ROUNDS {
        for i in 0..INSTANCES {
            app.execute(&a, &workflows[i % WORKFLOWS], json!({"i": i}))
                .await;
        }
        let started = Instant::now();
        let mut workers = vec![
            start(&format!("pool-{round}-a")),
            start(&format!("pool-{round}-b")),
        ];
        let mut left: i64;
        let drained = loop {
            left = sqlx::query_scalar(
                r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "status" <> 'COMPLETED'"#,
            )
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
            if left == 0 || started.elapsed() > Duration::from_secs(60) {
                break started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut output = Vec::new();
        let mut stopped = true;
        for w in &mut workers {
            stopped &= w.terminate(30).await.success();
            output.append(&mut w.seen);
        }
        let output = output.join("\n");
        eprintln!("round {round}: {INSTANCES} instances drained in {drained:?}");
        assert_eq!(left, 0, "instances never completed:\n{output}");
        assert!(stopped, "workers stop on SIGTERM:\n{output}");
        for starved in [
            "pool timed out",
            "node not run",
            "batch not read",
            "returned expired leases",
            "settle failed",
        ] {
            assert!(
                !output.contains(starved),
                "a worker was starved of connections ({starved}) after {drained:?}:\n{output}"
            );
        }
        assert!(
            drained < DRAIN_BOUND,
            "the backlog took {drained:?} to drain (bound {DRAIN_BOUND:?}):\n{output}"
        );
    }

    let per_node: Vec<(i64,)> = sqlx::query_as(
        r#"SELECT count(*) FROM "tblWorkflowInstanceLogs" WHERE "eventType" = 'NODE_COMPLETED'
           GROUP BY "instanceID", "nodeID""#,
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("counts");
    assert_eq!(
        per_node.len(),
        ROUNDS * INSTANCES * 3,
        "every node completed"
    );
    assert!(
        per_node.iter().all(|(n,)| *n == 1),
        "no node completed twice"
    );
}
