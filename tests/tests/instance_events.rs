//! `GET …/instances/{id}/events`: the run's log as Server-Sent Events, ending with its status,
//! resumable with `Last-Event-ID`.

use futures::StreamExt;
use jet_tests::TestApp;
use jet_tests::flow::Flow;
use serde_json::{Value, json};

#[derive(Debug)]
struct Sse {
    id: Option<i64>,
    event: String,
    data: Value,
}

/// Reads events until the `status` event, then checks the stream closes (within 30 s in all).
async fn read_events(app: &TestApp, path: &str, auth: &str, last_id: Option<i64>) -> Vec<Sse> {
    let mut req = app
        .client
        .get(format!("{}{path}", app.base))
        .header("Authorization", auth);
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut e = Sse {
                id: None,
                event: "message".into(),
                data: Value::Null,
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    e.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    e.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    e.data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                }
            }
            if e.data.is_null() {
                continue; // keep-alive comment
            }
            let last = e.event == "status";
            events.push(e);
            if last {
                // The stream closes after the final event: nothing but the end follows.
                loop {
                    match tokio::time::timeout_at(deadline, body.next()).await {
                        Ok(None) => return events,
                        Ok(Some(chunk)) => {
                            let rest = String::from_utf8_lossy(&chunk.expect("chunk")).into_owned();
                            assert!(
                                rest.trim_start_matches(":\n\n").trim().is_empty(),
                                "only keep-alives after the status: {rest:?}"
                            );
                        }
                        Err(_) => panic!("the stream stayed open after its final status"),
                    }
                }
            }
        }
    }
    panic!("no status event; got {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_a_run_to_its_end_and_resumes() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delayMs": 500}))
        .node("end", "end", json!({}))
        .edge("start", "wait")
        .edge("wait", "end");
    let workflow = app.save(&a, &flow).await;
    let instance = app.execute(&a, &workflow, json!({})).await;
    let path = format!(
        "/api/v1/tenants/{}/workflows/instances/{instance}/events",
        a.tenant_id
    );

    // Connected while the run is in progress, the stream follows it live to the end.
    let events = read_events(&app, &path, &a.auth, None).await;
    let status = events.last().expect("events");
    assert_eq!(status.data["status"], "COMPLETED");
    let ids: Vec<i64> = events.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let completed: Vec<String> = events
        .iter()
        .filter(|e| e.event == "NODE_COMPLETED")
        .map(|e| flow.name(e.data["log"]["nodeID"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(completed, ["start", "wait", "end"]);
    assert_eq!(events[0].event, "INPUT_SET");

    // Resuming after a row replays only what came after it.
    let cut = ids[ids.len() / 2];
    let resumed = read_events(&app, &path, &a.auth, Some(cut)).await;
    let resumed_ids: Vec<i64> = resumed.iter().filter_map(|e| e.id).collect();
    assert_eq!(
        resumed_ids,
        ids.iter()
            .copied()
            .filter(|id| *id > cut)
            .collect::<Vec<_>>()
    );
    assert_eq!(resumed.last().map(|e| e.event.as_str()), Some("status"));

    // Another tenant cannot read it.
    let b = app.admin("B").await;
    let foreign = app
        .get(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{instance}/events",
                b.tenant_id
            ),
            &b.auth,
        )
        .await;
    assert_eq!(foreign.status, 404);
}

/// A run that stays RUNNING for `ms` milliseconds; returns its instance's events path.
async fn slow_run(app: &TestApp, a: &jet_tests::app::Admin, ms: u64) -> String {
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delayMs": ms}))
        .node("end", "end", json!({}))
        .edge("start", "wait")
        .edge("wait", "end");
    let workflow = app.save(a, &flow).await;
    let instance = app.execute(a, &workflow, json!({})).await;
    format!(
        "/api/v1/tenants/{}/workflows/instances/{instance}/events",
        a.tenant_id
    )
}

async fn open(app: &TestApp, path: &str, auth: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.base))
        .header("Authorization", auth)
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded_per_tenant_and_per_process() {
    let app = TestApp::with_env(
        &[
            ("JET_SSE_MAX_STREAMS", "2"),
            ("JET_SSE_MAX_STREAMS_PER_TENANT", "1"),
        ],
        true,
    )
    .await;
    let (a, b, c) = (
        app.admin("A").await,
        app.admin("B").await,
        app.admin("C").await,
    );
    let path_a = slow_run(&app, &a, 1500).await;
    let path_b = slow_run(&app, &b, 60_000).await;
    let path_c = slow_run(&app, &c, 60_000).await;

    let first = open(&app, &path_a, &a.auth).await;
    assert_eq!(first.status(), 200);
    let second = open(&app, &path_a, &a.auth).await;
    assert_eq!(second.status(), 429, "a tenant's second stream");
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["code"], "too_many_streams", "{body}");

    let other = open(&app, &path_b, &b.auth).await;
    assert_eq!(other.status(), 200, "another tenant has its own share");
    let third = open(&app, &path_c, &c.auth).await;
    assert_eq!(third.status(), 429, "the process bound");
    drop(third);

    // The first stream closes when its run ends, and frees its place.
    let mut body = first.bytes_stream();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await {
        chunk.expect("chunk");
    }
    assert!(
        tokio::time::Instant::now() < deadline,
        "the stream did not close after its run ended"
    );
    loop {
        let again = open(&app, &path_a, &a.auth).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended stream never freed its place"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_page_streams_share_the_stream_bounds() {
    let app = TestApp::with_env(&[("JET_SSE_MAX_STREAMS_PER_TENANT", "1")], true).await;
    let a = app.admin("A").await;
    let page = app
        .post(
            &format!("/api/v1/tenants/{}/app-pages", a.tenant_id),
            &a.auth,
            json!({"appPageTitle": "live"}),
        )
        .await
        .str("appPageID");
    let page_path = format!("/api/v1/tenants/{}/app-pages/{page}/stream", a.tenant_id);
    let first = open(&app, &page_path, &a.auth).await;
    assert_eq!(first.status(), 200);
    let second = open(&app, &page_path, &a.auth).await;
    assert_eq!(second.status(), 429);
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["code"], "too_many_streams", "{body}");
    let events = open(&app, &slow_run(&app, &a, 60_000).await, &a.auth).await;
    assert_eq!(events.status(), 429, "one budget for both kinds of stream");
    drop(first);
}
