//! Building workflow definitions by node name, and running them through the real service
//! and in-process workers.

use crate::app::{Admin, TestApp};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A workflow under construction; node names map to fresh UUIDs.
#[derive(Default, Clone)]
pub struct Flow {
    ids: BTreeMap<String, String>,
    nodes: Vec<Value>,
    edges: Vec<Value>,
    options: Value,
}

impl Flow {
    pub fn new() -> Self {
        Self {
            options: json!({}),
            ..Default::default()
        }
    }

    /// The UUID of a named node.
    pub fn id(&self, name: &str) -> String {
        self.ids
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The name of a node id (for reading logs).
    pub fn name(&self, id: &str) -> String {
        self.ids
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| id.to_owned())
    }

    pub fn node(mut self, name: &str, node_type: &str, data: Value) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        self.ids.insert(name.to_owned(), id.clone());
        self.nodes
            .push(json!({"id": id, "type": node_type, "data": data}));
        self
    }

    pub fn edge(mut self, from: &str, to: &str) -> Self {
        self.edges
            .push(json!({"source": self.id(from), "target": self.id(to)}));
        self
    }

    pub fn edge_on(mut self, from: &str, handle: &str, to: &str) -> Self {
        self.edges
            .push(json!({"source": self.id(from), "target": self.id(to), "sourceHandle": handle}));
        self
    }

    pub fn options(mut self, options: Value) -> Self {
        self.options = options;
        self
    }

    /// The `createWorkflow` body.
    pub fn body(&self, title: &str) -> Value {
        json!({"title": title, "nodes": self.nodes, "edges": self.edges, "workflowOptions": self.options})
    }
}

impl TestApp {
    /// Saves a flow; returns its workflow id.
    pub async fn save(&self, admin: &Admin, flow: &Flow) -> String {
        let resp = self
            .post(
                &format!("/api/v1/tenants/{}/workflows", admin.tenant_id),
                &admin.auth,
                flow.body("test flow"),
            )
            .await;
        assert_eq!(resp.status, 201, "save workflow: {}", resp.body);
        resp.str("workflowID")
    }

    /// Starts a run; returns its instance id.
    pub async fn execute(&self, admin: &Admin, workflow_id: &str, inputs: Value) -> String {
        let resp = self
            .post(
                &format!(
                    "/api/v1/tenants/{}/workflows/{workflow_id}/execute",
                    admin.tenant_id
                ),
                &admin.auth,
                json!({"inputValues": inputs}),
            )
            .await;
        assert_eq!(resp.status, 202, "execute: {}", resp.body);
        resp.str("instanceID")
    }

    /// The instance detail (status, context, logs).
    pub async fn instance(&self, admin: &Admin, instance_id: &str) -> Value {
        let resp = self
            .get(
                &format!(
                    "/api/v1/tenants/{}/workflows/instances/{instance_id}",
                    admin.tenant_id
                ),
                &admin.auth,
            )
            .await;
        assert_eq!(resp.status, 200, "get instance: {}", resp.body);
        resp.body
    }

    /// Waits until the instance has left RUNNING; panics after `secs`.
    pub async fn finished(&self, admin: &Admin, instance_id: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let detail = self.instance(admin, instance_id).await;
            if detail["status"] != "RUNNING" {
                return detail;
            }
            assert!(
                Instant::now() < deadline,
                "instance still RUNNING after {secs}s: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves, runs and waits for a flow.
    pub async fn run_flow(&self, admin: &Admin, flow: &Flow, inputs: Value) -> Value {
        let workflow = self.save(admin, flow).await;
        let instance = self.execute(admin, &workflow, inputs).await;
        self.finished(admin, &instance, 30).await
    }
}

/// The names of the nodes that completed, in log order.
pub fn completed(flow: &Flow, detail: &Value) -> Vec<String> {
    events(flow, detail, "NODE_COMPLETED")
}

/// The names of the nodes with `event` rows, in log order.
pub fn events(flow: &Flow, detail: &Value, event: &str) -> Vec<String> {
    detail["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| l["eventType"] == event)
        .map(|l| flow.name(l["nodeID"].as_str().unwrap_or_default()))
        .collect()
}
