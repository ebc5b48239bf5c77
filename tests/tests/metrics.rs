//! `/metrics` of real `jet-api` and `jet-worker` processes: the figures move with the work
//! done (HTTP requests by operation id and status, node executions by type and outcome,
//! claims, queue depth sampled from the views), and every metric the Grafana dashboard
//! queries is one the processes export.

use jet_shared::bootstrap::bootstrap;
use jet_tests::TestDb;
use jet_tests::bins::{Running, free_port};
use jet_tests::flow::Flow;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One sample line of a scrape: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: the samples, and each family's type from its `# TYPE` line.
#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
                scrape.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            };
            scrape.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        scrape
    }

    /// The value of the one sample of `name` whose labels include `labels`; 0 when none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }

    /// Whether a name a query uses is exported: a family, or a histogram's
    /// `_bucket`/`_sum`/`_count` series.
    fn exports(&self, name: &str) -> bool {
        if self.types.contains_key(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                self.types.get(family).map(String::as_str) == Some("histogram")
            })
        })
    }
}

/// `a="x",b="y"` into a map (values here never hold quotes or commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("label=value");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

async fn scrape(client: &reqwest::Client, addr: &str) -> Scrape {
    let resp = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(&resp.text().await.expect("scrape body"))
}

/// Scrapes `addr` until `check` holds; panics with the last scrape after 30 s.
async fn scrape_until(
    client: &reqwest::Client,
    addr: &str,
    what: &str,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(client, addr).await;
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never held: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every `jet_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
        } else {
            if current.starts_with("jet_") {
                names.push(current.clone());
            }
            current.clear();
        }
    }
    names
}

/// Every `expr` of a dashboard, wherever it is nested.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_metrics_follow_the_work_and_cover_the_dashboard() {
    let db = TestDb::new().await;
    let url = db.url();
    let admin = bootstrap(&db.pool, "Metrics", None)
        .await
        .expect("bootstrap");
    let auth = format!("api_key {}", admin.api_key.expose());
    let tenant = admin.tenant.tenant_id;
    let dir = std::env::temp_dir();
    let api_addr = format!("127.0.0.1:{}", free_port());
    let mut api = Running::start(
        "jet-api",
        &[],
        &dir,
        &[
            ("DATABASE_URL", &url),
            ("JET_API_ADDR", &api_addr),
            ("JET_METRICS_SAMPLE_SECONDS", "1"),
        ],
    );
    api.wait_for("jet-api listening", 30).await;
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let req = client
            .post(format!("http://{api_addr}{path}"))
            .header("authorization", &auth)
            .json(&body);
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Three runs that complete and one whose script throws (no retry, no error edge).
    let ok = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "work",
            "javascript",
            json!({"code": "return 1", "outputVariable": "one"}),
        )
        .node("end", "end", json!({}))
        .edge("start", "work")
        .edge_on("work", "success", "end");
    let failing = Flow::new()
        .node("start", "start", json!({}))
        .node(
            "boom",
            "javascript",
            json!({"code": "throw new Error('boom')"}),
        )
        .node("end", "end", json!({}))
        .edge("start", "boom")
        .edge_on("boom", "success", "end");
    let mut runs = Vec::new();
    for (flow, times) in [(&ok, 3), (&failing, 1)] {
        let (status, saved) = post(
            format!("/api/v1/tenants/{tenant}/workflows"),
            flow.body("metrics flow"),
        )
        .await;
        assert_eq!(status, 201, "{saved}");
        let workflow = saved["workflowID"].as_str().expect("workflowID").to_owned();
        for _ in 0..times {
            let (status, started) = post(
                format!("/api/v1/tenants/{tenant}/workflows/{workflow}/execute"),
                json!({"inputValues": {}}),
            )
            .await;
            assert_eq!(status, 202, "{started}");
            runs.push(
                started["instanceID"]
                    .as_str()
                    .expect("instanceID")
                    .to_owned(),
            );
        }
    }
    // An operation's error response keeps its operation id; an unknown path does not leak.
    let missing = uuid::Uuid::new_v4();
    let (status, _) = post(
        format!("/api/v1/tenants/{tenant}/workflows/{missing}/execute"),
        json!({"inputValues": {}}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(format!("/api/v1/no-such-route/{missing}"), json!({})).await;
    assert_eq!(status, 404);

    let api_scrape = scrape(&client, &api_addr).await;
    let http = |s: &Scrape, op: &str, status: &str| {
        s.value(
            "jet_http_requests_total",
            &[("operation", op), ("status", status)],
        )
    };
    assert_eq!(http(&api_scrape, "executeWorkflow", "202"), 4.0);
    assert_eq!(http(&api_scrape, "executeWorkflow", "404"), 1.0);
    assert_eq!(http(&api_scrape, "createWorkflow", "201"), 2.0);
    assert_eq!(http(&api_scrape, "unmatched", "404"), 1.0);
    assert!(
        !api_scrape
            .samples
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains(&missing.to_string()))),
        "a raw path became a label"
    );
    assert_eq!(
        api_scrape.value(
            "jet_http_request_duration_seconds_count",
            &[("operation", "executeWorkflow")]
        ),
        5.0
    );
    assert_eq!(api_scrape.value("jet_api_info", &[]), 1.0);
    assert_eq!(
        api_scrape.value("jet_dlq_entries", &[("status", "PARKED")]),
        0.0
    );
    assert!(api_scrape.value("jet_ops_sample_timestamp_seconds", &[("view", "cron")]) > 0.0);

    // A commands-only worker starts the runs: four start nodes wait, ready, in the node
    // queue, and the sampled gauge says so. Its metrics have a listener of their own.
    let commands_addr = format!("127.0.0.1:{}", free_port());
    let mut commands = Running::start(
        "jet-worker",
        &["--roles", "commands"],
        &dir,
        &[
            ("DATABASE_URL", &url),
            ("JET_WORKER_ID", "metrics-commands"),
            ("JET_METRICS_ADDR", &commands_addr),
            ("JET_METRICS_SAMPLE_SECONDS", "1"),
        ],
    );
    commands.wait_for("worker endpoint listening", 30).await;
    let ready = [("queue", "nodes"), ("state", "ready")];
    let queued = scrape_until(&client, &commands_addr, "4 ready nodes", |s| {
        s.value("jet_queue_depth", &ready) == 4.0
    })
    .await;
    assert_eq!(
        queued.value(
            "jet_queue_depth",
            &[("queue", "nodes"), ("state", "leased")]
        ),
        0.0
    );
    assert_eq!(
        queued.value(
            "jet_worker_info",
            &[("roles", "commands"), ("worker_id", "metrics-commands")]
        ),
        1.0
    );
    assert_eq!(
        queued.value("jet_node_claim_duration_seconds_count", &[]),
        0.0
    );
    // The API samples the same views: its gauge agrees.
    scrape_until(&client, &api_addr, "the API sees 4 ready nodes", |s| {
        s.value("jet_queue_depth", &ready) == 4.0
    })
    .await;

    // A nodes worker runs them, its metrics on its health listener.
    let nodes_addr = format!("127.0.0.1:{}", free_port());
    let mut nodes = Running::start(
        "jet-worker",
        &["--roles", "nodes"],
        &dir,
        &[
            ("DATABASE_URL", &url),
            ("JET_WORKER_ID", "metrics-nodes"),
            ("JET_WORKER_HEALTH_ADDR", &nodes_addr),
            ("JET_METRICS_ADDR", &nodes_addr),
            ("JET_DB_MAX_CONNECTIONS", "7"),
            ("JET_METRICS_SAMPLE_SECONDS", "1"),
        ],
    );
    nodes.wait_for("worker endpoint listening", 30).await;
    let health = client
        .get(format!("http://{nodes_addr}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let node = |s: &Scrape, node_type: &str, outcome: &str| {
        s.value(
            "jet_node_executions_total",
            &[("node_type", node_type), ("outcome", outcome)],
        )
    };
    let ran = scrape_until(&client, &nodes_addr, "every node ran", |s| {
        node(s, "end", "completed") == 3.0 && node(s, "javascript", "failed") == 1.0
    })
    .await;
    assert_eq!(node(&ran, "start", "completed"), 4.0);
    assert_eq!(node(&ran, "javascript", "completed"), 3.0);
    assert_eq!(node(&ran, "javascript", "retried"), 0.0);
    assert_eq!(
        ran.value(
            "jet_node_execution_duration_seconds_count",
            &[("node_type", "javascript")]
        ),
        4.0
    );
    // Every execution run was claimed once: the claimed batch sizes add up to the runs.
    let executions: f64 = ran
        .samples
        .iter()
        .filter(|s| s.name == "jet_node_executions_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(executions, 11.0);
    assert_eq!(ran.value("jet_node_claim_batch_size_sum", &[]), executions);
    assert!(
        ran.value("jet_node_claim_duration_seconds_count", &[])
            >= ran.value("jet_node_claim_batch_size_count", &[])
    );
    assert_eq!(ran.value("jet_db_pool_max_connections", &[]), 7.0);
    assert!(ran.value("jet_db_pool_connections", &[("state", "idle")]) >= 1.0);
    // The queue drained, and the sampled gauge follows.
    scrape_until(&client, &nodes_addr, "an empty node queue", |s| {
        s.value("jet_queue_depth", &ready) == 0.0
    })
    .await;
    for run in &runs {
        let status: String = sqlx::query_scalar(
            r#"SELECT "status" FROM "tblWorkflowInstances" WHERE "instanceID"::text = $1"#,
        )
        .bind(run)
        .fetch_one(&db.pool)
        .await
        .expect("instance");
        assert_ne!(status, "RUNNING", "{run}");
    }

    // Every metric name the dashboard queries is exported by the API or a worker.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/jet-fleet.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard"))
        .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let api_scrape = scrape(&client, &api_addr).await;
    let worker_scrape = scrape(&client, &nodes_addr).await;
    let mut missing = BTreeSet::new();
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "`{expr}` queries no jet_ metric");
        for name in names {
            if !api_scrape.exports(&name) && !worker_scrape.exports(&name) {
                missing.insert(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exports: {missing:?}"
    );

    for process in [&mut nodes, &mut commands, &mut api] {
        assert!(process.terminate(30).await.success());
    }
}

#[test]
fn dashboard_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(jet_a_bucket{status=~"5.."}[5m]))) / jet_b"#,
    );
    assert_eq!(names, ["jet_a_bucket", "jet_b"]);
    let s = Scrape::parse(
        "# TYPE jet_h histogram\njet_h_bucket{le=\"1\"} 2\n# TYPE jet_c_total counter\njet_c_total{a=\"x\",b=\"y\"} 3\n",
    );
    assert!(s.exports("jet_h_count") && s.exports("jet_c_total") && !s.exports("jet_c"));
    assert_eq!(s.value("jet_c_total", &[("b", "y")]), 3.0);
}

#[tokio::test]
async fn a_view_that_fails_to_read_leaves_the_others_sampled() {
    let db = TestDb::new().await;
    sqlx::query("DROP VIEW jet_ops.cron")
        .execute(&db.pool)
        .await
        .expect("drop the cron view");
    let metrics = jet_shared::metrics::Scrape::new(db.pool.clone(), Duration::from_millis(1));
    let first = Scrape::parse(&metrics.render().await);
    let view = |s: &Scrape, name: &str, view: &str| s.value(name, &[("view", view)]);
    assert_eq!(view(&first, "jet_ops_sample_failures_total", "cron"), 1.0);
    assert_eq!(
        view(&first, "jet_ops_sample_timestamp_seconds", "cron"),
        0.0
    );
    for ok in ["queue_depth", "dlq_summary", "listeners"] {
        assert_eq!(
            view(&first, "jet_ops_sample_failures_total", ok),
            0.0,
            "{ok}"
        );
        assert!(
            view(&first, "jet_ops_sample_timestamp_seconds", ok) > 0.0,
            "{ok}"
        );
    }
    assert!(first.exports("jet_cron_overdue_seconds"));
    // The next scrape past the interval samples again, and fails again, alone.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = Scrape::parse(&metrics.render().await);
    assert_eq!(view(&second, "jet_ops_sample_failures_total", "cron"), 2.0);
    assert_eq!(
        view(&second, "jet_ops_sample_failures_total", "queue_depth"),
        0.0
    );
}
