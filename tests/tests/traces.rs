//! Traces and log context, on real `jet-api` and `jet-worker` processes.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, one run (a retried node, a sub-workflow, a human
//! approval) arrives at an in-process OTLP receiver as one trace under the caller's
//! `traceparent`, every span linked to one that arrived; without it nothing is sent. Worker log
//! lines about a node carry exactly that execution's context, even with several instances
//! running at once.

use jet_tests::app::api_key;
use jet_tests::bins::{Running, free_port};
use jet_tests::flow::Flow;
use jet_tests::otlp::{Receiver, Span};
use jet_tests::wait::eventually;
use jet_tests::{TestApp, TestDb};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// `jet-api` and a `jet-worker` (commands, nodes) on `db`, with `env` added, and a tenant.
struct Fleet {
    api: Running,
    worker: Running,
    base: String,
    auth: String,
    client: reqwest::Client,
}

impl Fleet {
    async fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let url = db.url();
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = std::env::temp_dir();
        let mut common = vec![
            ("DATABASE_URL", url.as_str()),
            ("JET_API_ADDR", addr.as_str()),
        ];
        common.extend_from_slice(env);
        let mut api = Running::start("jet-api", &[], &dir, &common);
        let worker = Running::start("jet-worker", &["--roles", "commands,nodes"], &dir, &common);
        api.wait_for("jet-api listening", 30).await;
        let admin = jet_shared::bootstrap::bootstrap(&db.pool, "Traces", None)
            .await
            .expect("bootstrap");
        Self {
            api,
            worker,
            base: format!("http://{addr}/api/v1/tenants/{}", admin.tenant.tenant_id),
            auth: api_key(admin.api_key.expose()),
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req
            .header("Authorization", &self.auth)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn save(&self, flow: &Flow) -> String {
        let req = self
            .client
            .post(format!("{}/workflows", self.base))
            .json(&flow.body("traced"));
        let (status, body) = self.send(req).await;
        assert_eq!(status, 201, "save: {body}");
        body["workflowID"].as_str().expect("workflowID").to_owned()
    }

    /// Starts a run, sending `traceparent` as the caller's context.
    async fn execute(&self, workflow: &str, traceparent: &str) -> Uuid {
        let req = self
            .client
            .post(format!("{}/workflows/{workflow}/execute", self.base))
            .header("traceparent", traceparent)
            .json(&json!({"inputValues": {}}));
        let (status, body) = self.send(req).await;
        assert_eq!(status, 202, "execute: {body}");
        body["instanceID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("instanceID")
    }

    /// Waits for the instance's pending human request and approves it.
    async fn approve(&self, instance: Uuid) {
        let url = format!("{}/workflows/instances/{instance}", self.base);
        let request = eventually(60, "a pending request", || async {
            let (_, body) = self.send(self.client.get(&url)).await;
            body["pendingRequests"][0]["collectionRequestID"]
                .as_str()
                .map(str::to_owned)
        })
        .await;
        let submit = self
            .client
            .post(format!(
                "{}/workflows/data-collection/{request}/submit",
                self.base
            ))
            .json(&json!({"data": {"approved": true}}));
        let (status, body) = self.send(submit).await;
        assert_eq!(status, 202, "submit: {body}");
    }

    async fn finished(&self, instance: Uuid) -> String {
        let url = format!("{}/workflows/instances/{instance}", self.base);
        eventually(60, "the instance finishes", || async {
            let (status, body) = self.send(self.client.get(&url)).await;
            assert_eq!(status, 200, "{body}");
            let s = body["status"].as_str().unwrap_or_default().to_owned();
            (s != "RUNNING").then_some(s)
        })
        .await
    }

    /// SIGTERM to both: a clean stop flushes the spans not yet exported.
    async fn stop(mut self) {
        assert!(self.api.terminate(30).await.success(), "jet-api stops");
        assert!(
            self.worker.terminate(30).await.success(),
            "jet-worker stops"
        );
    }
}

async fn trace_context(db: &TestDb, instance: Uuid) -> Option<String> {
    sqlx::query_scalar(
        r#"SELECT "traceContext" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
    )
    .bind(instance)
    .fetch_one(&db.pool)
    .await
    .expect("instance row")
}

/// A caller's W3C context: (header, trace id, span id).
fn caller() -> (String, String, String) {
    let trace = Uuid::new_v4().simple().to_string();
    let span = Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// The span id part of a stored traceparent.
fn span_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_is_one_trace_under_the_callers_span() {
    let receiver = Receiver::start("127.0.0.1:0").await;
    let db = TestDb::new().await;
    let endpoint = format!("http://{}", receiver.addr);
    // A delay longer than the test: every span arrives through the shutdown flush.
    let fleet = Fleet::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "120000"),
        ],
    )
    .await;
    let child = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "double",
            "javascript",
            json!({"code": "return 2", "outputVariable": "d"}),
        )
        .node("end", "end", json!({}))
        .edge("start", "double")
        .edge_on("double", "success", "end");
    let child_id = fleet.save(&child).await;
    // `flaky` fails twice (one retry), then continues on its error handle into the child;
    // then a person approves.
    let parent = Flow::new()
        .node("start", "start", json!({}))
        .node("flaky", "javascript", json!({"code": "throw new Error('flaky')", "errorHandling": "retry_then_continue", "retryLimit": 1, "retryDelaySeconds": 0}))
        .node("call", "subWorkflow", json!({"childWorkflowID": child_id, "outputVariable": "result"}))
        .node("ask", "approval", json!({"title": "Go on?"}))
        .node("end", "end", json!({}))
        .edge("start", "flaky")
        .edge_on("flaky", "error", "call")
        .edge("call", "ask")
        .edge_on("ask", "approved", "end");
    let parent_id = fleet.save(&parent).await;
    // A malformed or oversized traceparent is ignored: the request is served, as a root.
    for bad in [
        "00-not-a-trace-01".to_owned(),
        format!("00-{}-01", "a".repeat(4096)),
    ] {
        let req = fleet
            .client
            .get(format!("{}/workflows/{parent_id}", fleet.base))
            .header("traceparent", bad);
        assert_eq!(fleet.send(req).await.0, 200);
    }
    let (traceparent, trace, caller_span) = caller();
    let instance = fleet.execute(&parent_id, &traceparent).await;
    fleet.approve(instance).await;
    assert_eq!(fleet.finished(instance).await, "COMPLETED");
    let child_instance: Uuid = sqlx::query_scalar(
        r#"SELECT "instanceID" FROM "tblWorkflowInstances" WHERE "parentInstanceID" = $1"#,
    )
    .bind(instance)
    .fetch_one(&db.pool)
    .await
    .expect("one child instance");
    let stored = trace_context(&db, instance)
        .await
        .expect("a stored context");
    let child_stored = trace_context(&db, child_instance)
        .await
        .expect("the child's stored context");
    fleet.stop().await;

    let spans = receiver.spans();
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let dump = || format!("{spans:#?}");
    // The request span: a child of the caller's span, in its trace, and what the instance stores.
    let request = spans
        .iter()
        .find(|s| s.name == "request" && s.attr("uri").ends_with("/execute"))
        .unwrap_or_else(|| panic!("no request span: {}", dump()));
    assert_eq!(
        (request.trace_id.as_str(), request.parent.as_str()),
        (trace.as_str(), caller_span.as_str())
    );
    assert_eq!(request.service, "jet-api");
    assert_eq!(stored, format!("00-{trace}-{}-01", request.span_id));
    let ignored: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "request" && s.attr("uri").ends_with(parent_id.as_str()))
        .collect();
    assert_eq!(ignored.len(), 2, "{}", dump());
    assert!(ignored.iter().all(|s| s.parent.is_empty()), "{ignored:?}");
    // Every span of the trace hangs off one that arrived, or off the caller's.
    let ours: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    for span in &ours {
        assert!(
            span.parent == caller_span || by_id.contains_key(span.parent.as_str()),
            "dangling parent of {span:?}"
        );
    }
    // One span per node execution, retries included, all in the trace, under the request.
    let nodes_of = |instance: Uuid| -> Vec<&Span> {
        let id = instance.to_string();
        spans
            .iter()
            .filter(|s| s.name == "node" && s.attr("instance") == id)
            .collect()
    };
    let parent_nodes = nodes_of(instance);
    for span in &parent_nodes {
        assert_eq!(span.trace_id, trace, "{span:?}");
        assert_eq!(span.parent, request.span_id, "{span:?}");
        assert_eq!(span.service, "jet-worker");
        assert!(span.attr("worker").contains("-nodes-"), "{span:?}");
    }
    let tries: HashSet<&str> = parent_nodes
        .iter()
        .filter(|s| s.attr("node") == parent.id("flaky"))
        .map(|s| s.attr("retry"))
        .collect();
    assert_eq!(tries, HashSet::from(["0", "1"]), "flaky's two tries");
    for name in ["start", "call", "ask", "end"] {
        assert!(
            parent_nodes
                .iter()
                .any(|s| s.attr("node") == parent.id(name)),
            "no span of {name}: {}",
            dump()
        );
    }
    // The answer's resume joins the run's trace, under the request that started it.
    let answer = spans
        .iter()
        .find(|s| s.name == "human_answer")
        .unwrap_or_else(|| panic!("no human_answer span: {}", dump()));
    assert_eq!(
        (answer.trace_id.as_str(), answer.parent.as_str()),
        (trace.as_str(), request.span_id.as_str())
    );
    assert_eq!(answer.attr("instance"), instance.to_string());
    // The child joins the trace under the subWorkflow node's span that started it.
    let call_span = by_id
        .get(span_id_of(&child_stored))
        .unwrap_or_else(|| panic!("the child's parent span did not arrive: {}", dump()));
    assert_eq!(
        (call_span.name.as_str(), call_span.attr("node")),
        ("node", parent.id("call").as_str())
    );
    let child_nodes = nodes_of(child_instance);
    for name in ["start", "double", "end"] {
        let span = child_nodes
            .iter()
            .find(|s| s.attr("node") == child.id(name))
            .unwrap_or_else(|| panic!("no span of the child's {name}: {}", dump()));
        assert_eq!(
            (span.trace_id.as_str(), span.parent.as_str()),
            (trace.as_str(), call_span.span_id.as_str())
        );
    }
    // Nothing of this run went elsewhere.
    let strays: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "node" && s.trace_id != trace)
        .collect();
    assert!(
        strays.is_empty(),
        "node spans outside the trace: {strays:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_or_stored() {
    // Where an exporter with no endpoint would send: the default OTLP/HTTP port.
    let receiver = Receiver::start("127.0.0.1:4318").await;
    let db = TestDb::new().await;
    let fleet = Fleet::start(&db, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]).await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", "end");
    let workflow = fleet.save(&flow).await;
    let (traceparent, ..) = caller();
    let instance = fleet.execute(&workflow, &traceparent).await;
    assert_eq!(fleet.finished(instance).await, "COMPLETED");
    assert_eq!(trace_context(&db, instance).await, None);
    fleet.stop().await;
    assert_eq!(receiver.requests(), 0, "{:?}", receiver.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_log_lines_carry_exactly_their_own_context() {
    let app = TestApp::spawn().await;
    let a = app.admin("Logs").await;
    let flow = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "bad",
            "javascript",
            json!({"code": "throw new Error('nope')", "retryLimit": 2, "retryDelaySeconds": 0}),
        )
        .edge("start", "bad");
    let workflow = app.save(&a, &flow).await;
    let url = app.db.url();
    let mut worker = Running::start(
        "jet-worker",
        &["--roles", "nodes"],
        &std::env::temp_dir(),
        &[
            ("DATABASE_URL", &url),
            ("JET_WORKER_ID", "logs"),
            ("JET_LOG_FORMAT", "json"),
            ("JET_LOG", "info"),
        ],
    );
    // Several instances at once, so executions of different instances share batches.
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(app.execute(&a, &workflow, json!({})).await);
    }
    for instance in &instances {
        assert_eq!(app.finished(&a, instance, 60).await["status"], "FAILED");
    }
    assert!(worker.terminate(30).await.success());

    let lines: Vec<Value> = worker
        .seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        let instances_named = line["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s.get("instance").is_some())
            .count()
            + usize::from(line.get("instance").is_some());
        assert!(
            instances_named <= 1,
            "a line naming several instances: {line}"
        );
    }
    for instance in &instances {
        let retries: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"] == "node failed; retrying")
            .filter(|l| l["spans"][0]["instance"] == instance.as_str())
            .collect();
        let mut seen_retries = Vec::new();
        for line in &retries {
            let spans = line["spans"].as_array().expect("spans");
            assert_eq!(spans.len(), 1, "one span of context: {line}");
            let span = &spans[0];
            assert_eq!(span["name"], "node", "{line}");
            assert_eq!(span["node"], flow.id("bad").as_str(), "{line}");
            assert_eq!(span["attempt"], 1, "{line}");
            assert_eq!(span["node_type"], "javascript", "{line}");
            assert!(
                span["worker"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("logs-nodes-"),
                "{line}"
            );
            seen_retries.push(span["retry"].as_i64().expect("retry"));
        }
        seen_retries.sort_unstable();
        assert_eq!(seen_retries, [0, 1], "instance {instance}'s retries");
    }
}
