//! Graceful drain with real processes. A `jet-worker` sent SIGTERM in the middle of long nodes
//! stops claiming, stops what it cannot finish when its grace period ends (or at a second
//! SIGTERM), releases those leases so another worker re-runs the nodes at once (not after the
//! lease would have expired), deregisters and exits 0; nothing is lost, duplicated or counted
//! as a failure. `jet-api` sent SIGTERM stops accepting, ends its SSE streams cleanly, lets an
//! in-flight request complete and exits 0.

use jet_tests::TestApp;
use jet_tests::bins::{Running, free_port};
use jet_tests::flow::Flow;
use serde_json::json;
use std::time::{Duration, Instant};

/// Far longer than any wait below: a node that runs again within it was released, not reaped.
const LEASE_SECONDS: &str = "60";

/// A flow whose middle node is a script that runs `millis` ms and doubles its input.
fn long_flow(millis: u64) -> Flow {
    let code = format!(
        "const t = Date.now() + {millis}; while (Date.now() < t) {{}} return ctx.input.i * 2"
    );
    Flow::new()
        .node("start", "start", json!({}))
        .node(
            "work",
            "javascript",
            json!({"code": code, "outputVariable": "doubled", "timeoutSeconds": 120}),
        )
        .node(
            "end",
            "end",
            json!({"outputParameters": [{"name": "doubled", "sourceVariable": "{{ctx.doubled}}"}]}),
        )
        .edge("start", "work")
        .edge_on("work", "success", "end")
}

/// Starts a nodes worker; `log` is its `JET_LOG` (its output is read only when it ends, so a
/// chatty one must stay at `warn` not to fill the pipe).
fn start_worker(app: &TestApp, name: &str, grace_secs: &str, log: &str) -> Running {
    Running::start(
        "jet-worker",
        &["--roles", "nodes"],
        &std::env::temp_dir(),
        &[
            ("DATABASE_URL", &app.db.url()),
            ("JET_WORKER_ID", name),
            ("JET_NODE_LEASE_SECONDS", LEASE_SECONDS),
            ("JET_SHUTDOWN_GRACE_SECONDS", grace_secs),
            // Every long node of the test runs at once on one worker.
            ("JET_JS_CONCURRENCY", "8"),
            ("JET_LOG", log),
        ],
    )
}

/// How many executions of node `work` the worker `worker` holds.
async fn held_by(app: &TestApp, worker: &str, work: &str) -> i64 {
    sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblNodeExecutions"
           WHERE "leaseOwner" LIKE $1 || '-nodes-%' AND "nodeID" = $2"#,
    )
    .bind(worker)
    .bind(work)
    .fetch_one(&app.db.pool)
    .await
    .expect("leases")
}

/// Polls `check` every 5 ms until it holds; panics after `secs`.
async fn until<F, Fut>(secs: u64, what: &str, mut check: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what} within {secs}s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn signal(worker: &Running, sig: &str) {
    let pid = worker.child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill {sig}");
}

/// Starts `instances` runs of a long flow on a victim worker, brings up a survivor once the
/// victim holds every long node, then signals the victim with `signals` (SIGTERMs spaced
/// 200 ms apart). Returns the victim's exit status, how long after the first signal the
/// survivor held every node, and what the ledger checks need.
async fn drain_mid_node(
    instances: usize,
    grace_secs: &str,
    signals: usize,
) -> (TestApp, Flow, Vec<String>, Duration) {
    let app = TestApp::spawn().await;
    let admin = app.admin("Drain").await;
    let flow = long_flow(6000);
    let workflow = app.save(&admin, &flow).await;
    let work = flow.id("work");
    let work = work.as_str();
    let mut runs = Vec::new();
    for i in 0..instances {
        runs.push(app.execute(&admin, &workflow, json!({"i": i})).await);
    }
    let mut victim = start_worker(&app, "victim", grace_secs, "info");
    let n = instances as i64;
    until(60, "the victim holds every long node", || async {
        held_by(&app, "victim", work).await == n
    })
    .await;
    let mut survivor = start_worker(&app, "survivor", "20", "warn");
    until(30, "the survivor registers", || async {
        sqlx::query_scalar::<_, bool>(
            r#"SELECT EXISTS (SELECT 1 FROM "tblWorkers" WHERE "workerID" = 'survivor')"#,
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("registry")
    })
    .await;
    assert_eq!(
        held_by(&app, "survivor", work).await,
        0,
        "all the work is the victim's"
    );

    let signalled = Instant::now();
    for k in 0..signals {
        if k > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        signal(&victim, "-TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let taken = loop {
        if held_by(&app, "survivor", work).await == n {
            break Instant::now();
        }
        if Instant::now() > deadline {
            let rows: Vec<(Option<String>, i32, i32, i32)> = sqlx::query_as(
                r#"SELECT "leaseOwner", "claimCount", "retryCount", "releaseCount" FROM "tblNodeExecutions""#,
            )
            .fetch_all(&app.db.pool)
            .await
            .expect("rows");
            let status = victim.wait(30).await;
            panic!(
                "the survivor did not take the nodes over within 30 s: {rows:?}\nvictim {status:?}:\n{}",
                victim.seen.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = victim.wait(30).await;
    assert!(
        status.success(),
        "the victim exits 0 after draining: {status:?}\n{}",
        victim.seen.join("\n")
    );

    // The released claims count neither as failed tries nor as claims without a result.
    let counts: Vec<(i32, i32, i32)> = sqlx::query_as(
        r#"SELECT "retryCount", "releaseCount", "claimCount" FROM "tblNodeExecutions"
           WHERE "leaseOwner" LIKE 'survivor-nodes-%'"#,
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("counts");
    assert!(
        counts.iter().all(|&c| c == (0, 1, 2)),
        "one release, no failed try, per re-run node: {counts:?}"
    );
    let deregistered: bool = sqlx::query_scalar(
        r#"SELECT "stoppedAt" IS NOT NULL FROM "tblWorkers" WHERE "workerID" = 'victim'"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("registry row");
    assert!(deregistered, "the victim recorded its stop");

    for run in &runs {
        let detail = app.finished(&admin, run, 60).await;
        assert_eq!(detail["status"], "COMPLETED", "{detail}");
    }
    assert!(survivor.terminate(30).await.success());
    (app, flow, runs, taken - signalled)
}

/// Every node of every run completed exactly once, with its own input, and nothing failed.
async fn ledger(app: &TestApp, flow: &Flow, runs: &[String]) {
    let per_node: Vec<(String, String, i64)> = sqlx::query_as(
        r#"SELECT "instanceID"::text, "nodeID", count(*) FROM "tblWorkflowInstanceLogs"
           WHERE "eventType" = 'NODE_COMPLETED' GROUP BY 1, 2"#,
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("completions");
    assert_eq!(
        per_node.len(),
        runs.len() * 3,
        "every node of every run completed"
    );
    assert!(
        per_node.iter().all(|(_, _, n)| *n == 1),
        "no node completed twice: {per_node:?}"
    );
    let failures: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "tblWorkflowInstanceLogs" WHERE "eventType" IN ('NODE_FAILED', 'NODE_RETRY')"#,
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("failures");
    assert_eq!(failures, 0, "a released node is not a failed try");
    for (i, run) in runs.iter().enumerate() {
        let output: serde_json::Value = sqlx::query_scalar(
            r#"SELECT "payload" FROM "tblWorkflowInstanceLogs"
               WHERE "instanceID"::text = $1 AND "nodeID" = $2 AND "eventType" = 'NODE_COMPLETED'"#,
        )
        .bind(run)
        .bind(flow.id("end"))
        .fetch_one(&app.db.pool)
        .await
        .expect("end output");
        assert_eq!(
            output["output"]["doubled"],
            json!(i * 2),
            "run {run} computed its own input"
        );
    }
    let left: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("left");
    assert_eq!(left, 0, "the queue is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_releases_unfinished_nodes_to_another_at_once() {
    // Grace 1 s, nodes of 6 s: the victim cannot finish them and must hand them over.
    let (app, flow, runs, taken) = drain_mid_node(4, "1", 1).await;
    let after_grace = taken.saturating_sub(Duration::from_secs(1));
    println!(
        "released nodes held by the other worker {} ms after SIGTERM ({} ms after the 1 s grace; the lease was {LEASE_SECONDS} s)",
        taken.as_millis(),
        after_grace.as_millis()
    );
    assert!(
        after_grace < Duration::from_secs(1),
        "re-run within a second of the grace ending, not at lease expiry: {taken:?} after SIGTERM"
    );
    ledger(&app, &flow, &runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_grace_short() {
    // A 60 s grace the second signal makes moot.
    let (app, flow, runs, taken) = drain_mid_node(2, "60", 2).await;
    println!(
        "after a second SIGTERM, released nodes held by the other worker {} ms after the first",
        taken.as_millis()
    );
    assert!(
        taken < Duration::from_secs(2),
        "the second signal ended the drain at once: {taken:?} after the first"
    );
    ledger(&app, &flow, &runs).await;
}

/// Writes an HTTP/1.1 request whose body arrives in two parts; returns the open socket.
async fn half_sent_request(
    addr: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (head, rest) = body.split_at(body.len() / 2);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    );
    socket
        .write_all(request.as_bytes())
        .await
        .expect("write head");
    (socket, rest.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_stops_accepting_ends_streams_and_finishes_in_flight_requests() {
    use futures::StreamExt as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let admin = app.admin("ApiDrain").await;
    let workflow = app.save(&admin, &long_flow(10)).await;
    // No worker runs: the instance stays RUNNING and its event stream stays open.
    let instance = app.execute(&admin, &workflow, json!({"i": 1})).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut api = Running::start(
        "jet-api",
        &[],
        &std::env::temp_dir(),
        &[
            ("DATABASE_URL", &app.db.url()),
            ("JET_API_ADDR", &addr),
            ("JET_LOG", "info"),
        ],
    );
    api.wait_for("jet-api listening", 30).await;
    let tenant = admin.tenant_id;
    let stream = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/tenants/{tenant}/workflows/instances/{instance}/events"
        ))
        .header("Authorization", &admin.auth)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut events = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a first event")
        .expect("open")
        .expect("bytes");
    assert!(!first.is_empty());
    let (mut in_flight, rest) = half_sent_request(
        &addr,
        &format!("/api/v1/tenants/{tenant}/workflows/{workflow}/execute"),
        &admin.auth,
        &json!({"inputValues": {"i": 2}}).to_string(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    signal(&api, "-TERM");
    // New connections are refused while the in-flight request is still open.
    until(10, "the API stops accepting", || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    // The stream ends cleanly: no error, just the end of the body.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = events.next().await {
            chunk.expect("the stream ends without an error");
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream ended at shutdown");
    // The in-flight request completes.
    in_flight
        .write_all(rest.as_bytes())
        .await
        .expect("write rest");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        in_flight.read_to_string(&mut response),
    )
    .await
    .expect("the response arrives")
    .expect("read");
    assert!(
        response.starts_with("HTTP/1.1 202"),
        "the in-flight request completed: {response}"
    );
    let status = api.wait(20).await;
    assert!(status.success(), "jet-api exits 0: {status:?}");
    let runs: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblWorkflowInstances""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("instances");
    assert_eq!(
        runs, 2,
        "the request that was in flight at SIGTERM started its run"
    );
}
