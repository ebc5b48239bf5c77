//! Chaos with real processes: the test's own PostgreSQL cluster goes down for longer than a
//! pool's acquire timeout, under load, while three `jet-worker` processes run; meanwhile their
//! `/ready` says which role is down. Every role survives it: afterwards a cancel and a human
//! step's answer (both travel as commands) still go through, every run of the load ends, and
//! each worker's `/ready` is 200 again with its restarts on record.

use jet_tests::TestApp;
use jet_tests::app::Admin;
use jet_tests::bins::{Running, free_port};
use jet_tests::cluster::OwnCluster;
use jet_tests::db::TestDb;
use jet_tests::flow::Flow;
use jet_tests::wait::eventually;
use serde_json::{Value, json};

async fn statuses(app: &TestApp, ids: &[String]) -> Vec<String> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.parse().expect("uuid")).collect();
    sqlx::query_scalar(
        r#"SELECT "status" FROM "tblWorkflowInstances" WHERE "instanceID" = ANY($1)"#,
    )
    .bind(&ids)
    .fetch_all(&app.db.pool)
    .await
    .unwrap_or_default()
}

async fn ready(client: &reqwest::Client, port: u16) -> Option<Value> {
    let resp = client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .ok()?;
    let ok = resp.status().is_success();
    let body: Value = resp.json().await.ok()?;
    ok.then_some(body)
}

async fn pending_request(app: &TestApp, a: &Admin, instance: &str) -> Value {
    eventually(20, "the approval step waits for an answer", || async {
        let detail = app.instance(a, instance).await;
        detail["pendingRequests"]
            .as_array()
            .and_then(|r| r.first())
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_survives_a_database_restart() {
    let mut db_server = OwnCluster::start();
    let app = TestApp::spawn_on(TestDb::on_server(&db_server.cluster.url("postgres")).await).await;
    let a = app.admin("Chaos").await;
    let work = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "work",
            "javascript",
            json!({"code": "const t = Date.now() + 5; while (Date.now() < t) {} return 1"}),
        )
        .node("end", "end", json!({}))
        .edge("start", "work")
        .edge_on("work", "success", "end");
    let approval = Flow::new()
        .node("start", "start", json!({}))
        .node("ask", "approval", json!({"title": "ok?"}))
        .node(
            "yes",
            "end",
            json!({"outputParameters": [{"name": "answer", "sourceVariable": "yes"}]}),
        )
        .edge("start", "ask")
        .edge_on("ask", "approved", "yes");
    let slow = Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delaySeconds": 600}))
        .node("end", "end", json!({}))
        .edge("start", "wait")
        .edge("wait", "end");
    let (work, approval, slow) = (
        app.save(&a, &work).await,
        app.save(&a, &approval).await,
        app.save(&a, &slow).await,
    );
    let mut load = Vec::new();
    for _ in 0..150 {
        load.push(app.execute(&a, &work, json!({})).await);
    }

    let url = app.db.url();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut workers: Vec<Running> = ports
        .iter()
        .enumerate()
        .map(|(n, port)| {
            Running::start(
                "jet-worker",
                &[],
                &std::env::temp_dir(),
                &[
                    ("DATABASE_URL", url.as_str()),
                    ("JET_WORKER_ID", &format!("chaos-{n}")),
                    ("JET_WORKER_HEALTH_ADDR", &format!("127.0.0.1:{port}")),
                    // A small pool: the restart also exhausts it while connections come back.
                    ("JET_DB_MAX_CONNECTIONS", "4"),
                    ("JET_NODE_LEASE_SECONDS", "3"),
                    ("JET_LOG", "warn"),
                ],
            )
        })
        .collect();
    let client = reqwest::Client::new();
    for &port in &ports {
        eventually(30, "every worker is ready", || ready(&client, port)).await;
    }
    eventually(
        60,
        "part of the load completed before the restart",
        || async {
            let done = statuses(&app, &load)
                .await
                .iter()
                .filter(|s| *s == "COMPLETED")
                .count();
            (done >= 10).then_some(())
        },
    )
    .await;

    // Down long enough for every pool to time out (10 s), as in a real restart or failover.
    db_server.cluster.stop().expect("stop PostgreSQL");
    let unready = eventually(
        40,
        "a worker reports a failed role as not ready",
        || async {
            for &port in &ports {
                let resp = client
                    .get(format!("http://127.0.0.1:{port}/ready"))
                    .send()
                    .await
                    .ok()?;
                if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    return resp.json::<Value>().await.ok();
                }
            }
            None
        },
    )
    .await;
    assert_eq!(unready["status"], "not_ready", "{unready}");
    eprintln!("during the outage: {unready}");
    db_server.cluster.start().expect("start PostgreSQL again");

    for &port in &ports {
        eventually(60, "every worker is ready again", || ready(&client, port)).await;
    }
    // The API's pool drops its dead connections on use; wait until it answers again.
    eventually(30, "the API reaches the database again", || async {
        let resp = app
            .client
            .get(format!("{}/ready", app.base))
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())
    })
    .await;

    // A human step answered after the restart resumes its run (a command).
    let asked = app.execute(&a, &approval, json!({})).await;
    let request = pending_request(&app, &a, &asked).await;
    let submit = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/data-collection/{}/submit",
                a.tenant_id,
                request["collectionRequestID"].as_str().expect("request id")
            ),
            &a.auth,
            json!({"data": {"approved": true}}),
        )
        .await;
    assert_eq!(submit.status, 202, "{}", submit.body);
    let answered = app.finished(&a, &asked, 30).await;
    assert_eq!(answered["status"], "COMPLETED", "{answered}");
    assert_eq!(answered["context"]["output"]["answer"], "yes");

    // A cancel after the restart stops a waiting run (a command).
    let waiting = app.execute(&a, &slow, json!({})).await;
    let cancel = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{waiting}/cancel",
                a.tenant_id
            ),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert_eq!(app.finished(&a, &waiting, 30).await["status"], "CANCELLED");

    // Every run of the load ended, and completed.
    eventually(90, "every run of the load completed", || async {
        let statuses = statuses(&app, &load).await;
        (statuses.len() == load.len() && statuses.iter().all(|s| s == "COMPLETED")).then_some(())
    })
    .await;

    // The outage really hit the command consumers: at least one was restarted, and every
    // worker is ready again with all its roles running.
    let mut commands_restarts = 0;
    for &port in &ports {
        let body = ready(&client, port).await.expect("ready after the restart");
        for role in ["commands", "nodes", "maintenance"] {
            assert_eq!(body["roles"][role]["running"], true, "{body}");
        }
        commands_restarts += body["roles"]["commands"]["restarts"].as_u64().unwrap_or(0);
    }
    assert!(commands_restarts >= 1, "no commands role saw the outage");
    for worker in &mut workers {
        assert!(
            worker.terminate(30).await.success(),
            "{}",
            worker.seen.join("\n")
        );
    }
}
