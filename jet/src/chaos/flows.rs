//! The load's workflows: a chain, a fanout/join with a delay, and a human step, each with
//! effect nodes (a `dataQuery` inserting the run's key and the node's id into the ledger
//! table), so a node that ran twice shows as two rows.

use serde_json::{Value, json};
use uuid::Uuid;

/// A workflow body for `POST …/workflows` and the ids of its effect nodes.
pub struct FlowBody {
    pub body: Value,
    pub effects: Vec<String>,
}

/// Builds nodes and edges by name.
struct Builder {
    ids: std::collections::HashMap<&'static str, String>,
    nodes: Vec<Value>,
    edges: Vec<Value>,
    effects: Vec<String>,
    query: String,
}

impl Builder {
    fn new(query: &str) -> Self {
        Self {
            ids: Default::default(),
            nodes: vec![],
            edges: vec![],
            effects: vec![],
            query: query.to_owned(),
        }
    }

    fn node(mut self, name: &'static str, node_type: &str, data: Value) -> Self {
        let id = Uuid::new_v4().to_string();
        self.nodes
            .push(json!({"id": id, "type": node_type, "data": data}));
        self.ids.insert(name, id);
        self
    }

    /// An effect node: one ledger row per run of it.
    fn effect(mut self, name: &'static str) -> Self {
        let id = Uuid::new_v4().to_string();
        self.nodes
            .push(json!({"id": id, "type": "dataQuery", "data": {
            "dataQueryID": self.query,
            "inputValues": {"key": "{{ctx.input.key}}", "node": id},
            // A dataQuery node continues on its `error` handle by default (upstream's
            // choice), so a query whose connection a fault killed would complete without
            // its effect. An effect the run relies on retries instead, and fails the run if
            // it never lands, which the ledger then counts as lost.
            "errorHandling": "retry_then_fail", "retryLimit": 10, "retryDelaySeconds": 1,
            "outputVariable": format!("effect_{name}")}}));
        self.effects.push(id.clone());
        self.ids.insert(name, id);
        self
    }

    fn edge(mut self, from: &str, handle: Option<&str>, to: &str) -> Self {
        // No handle is no `sourceHandle` at all: the API's strict schema refuses a null one.
        let mut edge = json!({"source": self.ids[from], "target": self.ids[to]});
        if let Some(handle) = handle {
            edge["sourceHandle"] = json!(handle);
        }
        self.edges.push(edge);
        self
    }

    fn build(self, title: &str) -> FlowBody {
        FlowBody {
            body: json!({"title": title, "nodes": self.nodes, "edges": self.edges, "workflowOptions": {}}),
            effects: self.effects,
        }
    }
}

/// The three load workflows, each writing effects through `query`.
pub fn load_flows(query: &str) -> Vec<FlowBody> {
    let chain = Builder::new(query)
        .node("start", "start", json!({}))
        .effect("first")
        .node("work", "javascript", json!({"code": "return {n: 1}"}))
        .effect("second")
        .node("end", "end", json!({}))
        .edge("start", None, "first")
        .edge("first", Some("success"), "work")
        .edge("work", Some("success"), "second")
        .edge("second", Some("success"), "end")
        .build("chaos chain");
    let fan = Builder::new(query)
        .node("start", "start", json!({}))
        .node(
            "fan",
            "fanout",
            json!({"branches": [{"id": "l"}, {"id": "r"}]}),
        )
        .effect("left")
        .node("wait", "delay", json!({"delaySeconds": 1}))
        .effect("right")
        .node("join", "join", json!({"joinMode": "all"}))
        .node("end", "end", json!({}))
        .edge("start", None, "fan")
        .edge("fan", Some("l"), "left")
        .edge("fan", Some("r"), "wait")
        .edge("wait", None, "right")
        .edge("left", Some("success"), "join")
        .edge("right", Some("success"), "join")
        .edge("join", None, "end")
        .build("chaos fanout");
    let human = Builder::new(query)
        .node("start", "start", json!({}))
        .node("ask", "approval", json!({"title": "go on?"}))
        .effect("approved")
        .node("end", "end", json!({}))
        .edge("start", None, "ask")
        .edge("ask", Some("approved"), "approved")
        .edge("approved", Some("success"), "end")
        .build("chaos human step");
    vec![chain, fan, human]
}

/// start → end: how long until a new run completes after a fault heals.
pub fn probe_flow() -> FlowBody {
    Builder::new("")
        .node("start", "start", json!({}))
        .node("end", "end", json!({}))
        .edge("start", None, "end")
        .build("chaos probe")
}
