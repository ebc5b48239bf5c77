//! Every node type, run through the real API and worker loops against a real database.

use jet_tests::TestApp;
use jet_tests::flow::{Flow, completed, events};
use serde_json::json;

fn end_with(name: &str, source: &str) -> serde_json::Value {
    json!({"outputParameters": [{"name": name, "sourceVariable": source}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_to_end_completes_with_the_workflow_output() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", end_with("echo", "{{ctx.input.word}}"))
        .edge("start", "end");
    let done = app.run_flow(&a, &flow, json!({"word": "hi"})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["context"]["output"], json!({"echo": "hi"}));
    assert_eq!(done["context"]["input"], json!({"word": "hi"}));
    assert_eq!(completed(&flow, &done), ["start", "end"]);
    assert!(done["completedAt"].is_string());
    assert!(
        done["context"]
            .get("__node_".to_owned() + &flow.id("start"))
            .is_none(),
        "internal keys stay hidden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_and_switch_route_by_handle() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("cond", "condition", json!({"branches": [
            {"id": "big", "conditions": [{"leftValue": "{{ctx.input.n}}", "operator": "greater_than", "rightValue": 10}]}]}))
        .node("sw", "switch", json!({"switchValue": "{{ctx.input.color}}", "cases": [{"id": "red", "matchValue": "red"}, {"id": "blue", "matchValue": "blue"}]}))
        .node("big", "end", end_with("path", "big"))
        .node("red", "end", end_with("path", "small-red"))
        .node("other", "end", end_with("path", "small-other"))
        .edge("start", "cond")
        .edge_on("cond", "big", "big")
        .edge_on("cond", "default", "sw")
        .edge_on("sw", "red", "red")
        .edge_on("sw", "default", "other");
    let workflow = app.save(&a, &flow).await;
    for (inputs, path) in [
        (json!({"n": 50, "color": "red"}), "big"),
        (json!({"n": 1, "color": "red"}), "small-red"),
        (json!({"n": 1, "color": "green"}), "small-other"),
    ] {
        let instance = app.execute(&a, &workflow, inputs.clone()).await;
        let done = app.finished(&a, &instance, 30).await;
        assert_eq!(done["status"], "COMPLETED");
        assert_eq!(done["context"]["output"]["path"], path, "{inputs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_runs_its_body_once_per_item() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    // start -> loop -(loop)-> body(delay 0) -> loop ; loop -(completed)-> end
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "loop",
            "loop",
            json!({"sourceVariable": "{{ctx.input.items}}", "itemVariable": "item"}),
        )
        .node(
            "body",
            "delay",
            json!({"delayType": "fixed", "delayMs": 0, "outputVariable": "lastBody"}),
        )
        .node("end", "end", end_with("all", "{{ctx.loopResults}}"))
        .edge("start", "loop")
        .edge_on("loop", "loop", "body")
        .edge("body", "loop")
        .edge_on("loop", "completed", "end");
    let done = app
        .run_flow(&a, &flow, json!({"items": ["x", "y", "z"]}))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["context"]["output"]["all"], json!(["x", "y", "z"]));
    let ran = completed(&flow, &done);
    assert_eq!(ran.iter().filter(|n| *n == "body").count(), 3, "{ran:?}");
    assert_eq!(
        ran.iter().filter(|n| *n == "loop").count(),
        4,
        "three items and the exit: {ran:?}"
    );
    let attempts: Vec<i64> = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["eventType"] == "NODE_COMPLETED" && l["nodeID"] == flow.id("body"))
        .map(|l| l["nodeAttempt"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(attempts, [1, 2, 3], "each loop pass is a new dispatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_then_join_all_waits_for_every_branch() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "l"}, {"id": "r"}]}),
        )
        .node("left", "delay", json!({"delayMs": 0}))
        .node("right", "delay", json!({"delayMs": 300}))
        .node("join", "join", json!({"joinMode": "all"}))
        .node("end", "end", json!({}))
        .edge("start", "fan")
        .edge_on("fan", "l", "left")
        .edge_on("fan", "r", "right")
        .edge("left", "join")
        .edge("right", "join")
        .edge("join", "end");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let ran = completed(&flow, &done);
    assert_eq!(ran.iter().filter(|n| *n == "join").count(), 1, "{ran:?}");
    let pos = |n: &str| ran.iter().position(|x| x == n).expect(n);
    assert!(
        pos("join") > pos("left") && pos("join") > pos("right"),
        "{ran:?}"
    );
    assert_eq!(
        events(&flow, &done, "NODE_DISPATCHED")
            .iter()
            .filter(|n| *n == "join")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_any_fires_on_the_first_branch() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    // A delay node holds back its successors, so `slow` runs two seconds after `wait`.
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "fast"}, {"id": "slow"}]}),
        )
        .node("fast", "delay", json!({"delayMs": 0}))
        .node("wait", "delay", json!({"delaySeconds": 2}))
        .node("slow", "delay", json!({"delayMs": 0}))
        .node("join", "join", json!({"joinMode": "any"}))
        .node("end", "end", json!({}))
        .edge("start", "fan")
        .edge_on("fan", "fast", "fast")
        .edge_on("fan", "slow", "wait")
        .edge("wait", "slow")
        .edge("fast", "join")
        .edge("slow", "join")
        .edge("join", "end");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "COMPLETED");
    let ran = completed(&flow, &done);
    assert!(ran.contains(&"end".to_owned()), "{ran:?}");
    assert!(
        !ran.contains(&"slow".to_owned()),
        "the end node finished the run before the slow branch: {ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_follows_its_error_edge_after_its_retries() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .options(json!({"defaultRetryDelaySeconds": 0}))
        .node("start", "start", json!({}))
        .node("bad", "loop", json!({"sourceVariable": "{{ctx.input.notAList}}", "retryLimit": 2, "retryDelaySeconds": 0}))
        .node("recover", "end", end_with("handled", "yes"))
        .edge("start", "bad")
        .edge_on("bad", "error", "recover");
    let done = app.run_flow(&a, &flow, json!({"notAList": 5})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["context"]["output"]["handled"], "yes");
    let failed: Vec<&serde_json::Value> = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["eventType"] == "NODE_FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "one failure row after the retries");
    assert!(
        failed[0]["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("array")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_without_error_edge_fails_the_instance() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "bad",
            "delay",
            json!({"delayType": "dynamic", "delayVariable": "{{ctx.input.missing}}"}),
        )
        .node("end", "end", json!({}))
        .edge("start", "bad")
        .edge("bad", "end");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(completed(&flow, &done), ["start"]);
    let left: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions""#)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "finished instances leave nothing in the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_with_error_status_fails_and_a_dead_branch_completes() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let failing = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({"status": "error"}))
        .edge("start", "end");
    assert_eq!(
        app.run_flow(&a, &failing, json!({})).await["status"],
        "FAILED"
    );
    // No end node reached, nothing left to run: upstream left these RUNNING forever.
    let dangling = Flow::new()
        .node("start", "start", json!({}))
        .node("cond", "condition", json!({"branches": [{"id": "never", "conditions": [{"leftValue": 1, "operator": "equals", "rightValue": 2}]}]}))
        .node("end", "end", json!({}))
        .edge("start", "cond")
        .edge_on("cond", "never", "end");
    let done = app.run_flow(&a, &dangling, json!({})).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(completed(&dangling, &done), ["start", "cond"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_stops_the_instance() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("wait", "delay", json!({"delaySeconds": 1}))
        .node("after", "delay", json!({"delayMs": 0}))
        .node("end", "end", json!({}))
        .edge("start", "wait")
        .edge("wait", "after")
        .edge("after", "end");
    let workflow = app.save(&a, &flow).await;
    let instance = app.execute(&a, &workflow, json!({})).await;
    // Wait until the delayed successor is queued, then cancel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let queued: i64 =
            sqlx::query_scalar(r#"SELECT count(*) FROM "tblNodeExecutions" WHERE "nodeID" = $1"#)
                .bind(flow.id("after"))
                .fetch_one(&app.db.pool)
                .await
                .expect("count");
        if queued == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delayed node was never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let resp = app
        .post(
            &format!(
                "/api/v1/tenants/{}/workflows/instances/{instance}/cancel",
                a.tenant_id
            ),
            &a.auth,
            json!({}),
        )
        .await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    let done = app.finished(&a, &instance, 10).await;
    assert_eq!(done["status"], "CANCELLED");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = app.instance(&a, &instance).await;
    assert_eq!(
        completed(&flow, &after),
        ["start", "wait"],
        "nothing ran after the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_nodes_compute_and_runaway_scripts_time_out() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("sum", "javascript", json!({"code": "return ctx.input.items.reduce((a, b) => a + b, 0)", "outputVariable": "total"}))
        .node("check", "condition", json!({"branches": [{"id": "big", "conditions": [{"leftValue": "ctx.total > 5", "operator": "expression"}]}]}))
        .node("big", "end", end_with("verdict", "big {{ctx.total}}"))
        .node("small", "end", end_with("verdict", "small"))
        .edge("start", "sum")
        .edge_on("sum", "success", "check")
        .edge_on("check", "big", "big")
        .edge_on("check", "default", "small");
    let done = app.run_flow(&a, &flow, json!({"items": [1, 2, 3]})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["context"]["total"], 6);
    assert_eq!(done["context"]["output"]["verdict"], "big 6");

    let runaway = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "spin",
            "javascript",
            json!({"code": "while (true) {}", "timeoutSeconds": 1}),
        )
        .edge("start", "spin");
    let started = std::time::Instant::now();
    let done = app.run_flow(&a, &runaway, json!({})).await;
    assert_eq!(done["status"], "FAILED");
    let failure = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find(|l| l["eventType"] == "NODE_FAILED")
        .cloned()
        .expect("failed row");
    assert!(
        failure["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{failure}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_modes_continue_on_the_error_handle_with_or_without_retries() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = |mode: &str| {
        Flow::new()
            .node("start", "start", json!({}))
            .node("bad", "javascript", json!({"code": "throw new Error('boom')", "outputVariable": "jsResult", "errorHandling": mode, "retryLimit": 2, "retryDelaySeconds": 0}))
            .node("recover", "end", end_with("seen", "{{ctx.jsResult}}"))
            .edge("start", "bad")
            .edge_on("bad", "error", "recover")
    };
    for (mode, attempts) in [("continue", 1), ("retry_then_continue", 3)] {
        let flow = flow(mode);
        let done = app.run_flow(&a, &flow, json!({})).await;
        assert_eq!(done["status"], "COMPLETED", "{mode}: {done}");
        let seen = &done["context"]["output"]["seen"];
        assert_eq!(seen["success"], false, "{mode}: {seen}");
        assert!(
            seen["error"].as_str().unwrap_or("").contains("boom"),
            "{seen}"
        );
        assert_eq!(seen["attempts"], attempts, "{mode}: {seen}");
        assert_eq!(completed(&flow, &done), ["start", "bad", "recover"]);
        assert!(events(&flow, &done, "NODE_FAILED").is_empty(), "{mode}");
    }
    // Without an error edge, `continue` swallows the error as asked; the default fails.
    let swallowed = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "bad",
            "javascript",
            json!({"code": "throw new Error('x')", "errorHandling": "skip_item"}),
        )
        .edge("start", "bad");
    assert_eq!(
        app.run_flow(&a, &swallowed, json!({})).await["status"],
        "COMPLETED"
    );
    let strict = Flow::new()
        .node("start", "start", json!({}))
        .node("bad", "javascript", json!({"code": "throw new Error('x')"}))
        .edge("start", "bad");
    assert_eq!(
        app.run_flow(&a, &strict, json!({})).await["status"],
        "FAILED"
    );
}

#[tokio::test]
async fn unknown_error_modes_and_out_of_range_policies_are_rejected() {
    let app = TestApp::spawn().await;
    let a = app.admin("A").await;
    for (data, field) in [
        (json!({"errorHandling": "ignore"}), "errorHandling"),
        (json!({"retryLimit": 11}), "retryLimit"),
        (json!({"timeoutSeconds": 0}), "timeoutSeconds"),
        (json!({"retryDelaySeconds": -1}), "retryDelaySeconds"),
    ] {
        let flow = Flow::new()
            .node("start", "start", json!({}))
            .node("js", "javascript", {
                let mut d = data.clone();
                d["code"] = json!("return 1");
                d
            })
            .edge("start", "js");
        let resp = app
            .post(
                &format!("/api/v1/tenants/{}/workflows", a.tenant_id),
                &a.auth,
                flow.body("bad policy"),
            )
            .await;
        assert_eq!(resp.status, 422, "{data}: {}", resp.body);
        let message = resp.body["message"].as_str().unwrap_or("");
        assert!(
            message.contains(field) && message.contains(&flow.id("js")),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_a_handle_after_a_javascript_node_is_followed_and_errors_are_not() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let flow = |code: &str| {
        Flow::new()
            .node("start", "start", json!({}))
            .node(
                "js",
                "javascript",
                json!({"code": code, "outputVariable": "n"}),
            )
            .node("end", "end", end_with("n", "{{ctx.n}}"))
            .edge("start", "js")
            .edge("js", "end")
    };
    let ok = flow("return 41 + 1");
    let done = app.run_flow(&a, &ok, json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(completed(&ok, &done), ["start", "js", "end"]);
    assert_eq!(done["context"]["output"]["n"], 42);
    // A failure never takes the default route: without an `error` edge the run fails.
    let bad = flow("throw new Error('no')");
    let done = app.run_flow(&a, &bad, json!({})).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(completed(&bad, &done), ["start"]);
}

/// The successor of `delay` in the queue: when it becomes runnable, as seconds from now.
async fn due_in_seconds(app: &TestApp, flow: &Flow, successor: &str) -> f64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let due: Option<f64> = sqlx::query_scalar(
            r#"SELECT extract(epoch FROM "availableAt" - now())::float8 FROM "tblNodeExecutions" WHERE "nodeID" = $1"#,
        )
        .bind(flow.id(successor))
        .fetch_optional(&app.db.pool)
        .await
        .expect("due");
        if let Some(due) = due {
            return due;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delayed node was never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_and_until_delays_longer_than_a_day_are_honoured_in_full() {
    let app = TestApp::with_workers().await;
    let a = app.admin("A").await;
    let delayed = |data: serde_json::Value| {
        Flow::new()
            .node("start", "start", json!({}))
            .node("wait", "delay", data)
            .node("end", "end", json!({}))
            .edge("start", "wait")
            .edge("wait", "end")
    };
    let two_days = delayed(json!({"delayType": "dynamic", "delayVariable": "{{ctx.input.ms}}"}));
    let dynamic = app.save(&a, &two_days).await;
    app.execute(&a, &dynamic, json!({"ms": 48 * 3_600_000_i64}))
        .await;
    let due = due_in_seconds(&app, &two_days, "end").await;
    assert!(due > 47.9 * 3600.0, "due in {due} s, not 48 h");

    let at = (chrono::Utc::now() + chrono::Duration::days(10)).to_rfc3339();
    let until = delayed(json!({"delayType": "until", "untilTime": "{{ctx.input.at}}"}));
    let workflow = app.save(&a, &until).await;
    app.execute(&a, &workflow, json!({"at": at})).await;
    let due = due_in_seconds(&app, &until, "end").await;
    assert!(due > 9.9 * 86_400.0, "due in {due} s, not 10 days");

    // Beyond the longest delay the node fails, saying so, rather than wait less.
    let instance = app
        .execute(&a, &dynamic, json!({"ms": 400_i64 * 86_400_000}))
        .await;
    let done = app.finished(&a, &instance, 30).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let failed = done["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find(|l| l["eventType"] == "NODE_FAILED")
        .cloned()
        .expect("a failed row");
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("longest delay"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_queue_for_the_script_slots_instead_of_running_all_at_once() {
    let app = TestApp::with_env(&[("JET_JS_CONCURRENCY", "1")], true).await;
    let a = app.admin("A").await;
    let busy = |var: &str| json!({"code": "const s = Date.now(); while (Date.now() - s < 300) {} return [s, Date.now()]", "outputVariable": var});
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "l"}, {"id": "r"}]}),
        )
        .node("left", "javascript", busy("l"))
        .node("right", "javascript", busy("r"))
        .node("join", "join", json!({"joinMode": "all"}))
        .node("end", "end", json!({}))
        .edge("start", "fan")
        .edge_on("fan", "l", "left")
        .edge_on("fan", "r", "right")
        .edge("left", "join")
        .edge("right", "join")
        .edge("join", "end");
    let done = app.run_flow(&a, &flow, json!({})).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let span = |var: &str| {
        let s = &done["context"][var];
        (s[0].as_f64().expect("start"), s[1].as_f64().expect("end"))
    };
    let ((l0, l1), (r0, r1)) = (span("l"), span("r"));
    assert!(
        l1 <= r0 || r1 <= l0,
        "with one slot the scripts ran one after the other: {:?} {:?}",
        (l0, l1),
        (r0, r1)
    );
}
