//! The workflow shapes `jet bench` runs, saved straight into the bench database.

use jet_shared::ids::TenantId;
use jet_shared::workflow::definition;
use jet_shared::workflow::graph::{EditorEdge, EditorNode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// A scenario's workflow.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    /// start → (n − 2 pass-through joins) → end: the engine's own cost per step.
    Chain(usize),
    /// start → n javascript nodes → end: the sandbox's cost per step.
    Javascript(usize),
    /// start → fanout of n branches → one pass-through node each → join (all) → end.
    Fanout(usize),
    /// start → loop over `ctx.input.items` with a zero-delay body → end.
    Loop,
}

impl Shape {
    /// Node executions one instance makes (a loop's depend on its items: see `loop_executions`).
    pub(super) fn executions(self) -> usize {
        match self {
            Shape::Chain(n) => n,
            Shape::Javascript(n) => n + 2,
            Shape::Fanout(n) => n + 4,
            Shape::Loop => 0,
        }
    }
}

/// start, the loop node once per item plus its exit, the body once per item, end.
pub(super) fn loop_executions(items: usize) -> usize {
    2 + (items + 1) + items
}

/// A graph under construction: named nodes, edges between names.
#[derive(Default)]
struct Graph {
    nodes: Vec<EditorNode>,
    edges: Vec<EditorEdge>,
}

impl Graph {
    fn node(&mut self, node_type: &str, data: Value) -> String {
        let id = Uuid::new_v4().to_string();
        self.nodes.push(EditorNode {
            id: id.clone(),
            node_type: node_type.into(),
            data,
            position: None,
        });
        id
    }

    fn edge(&mut self, source: &str, target: &str, handle: Option<&str>) {
        self.edges.push(EditorEdge {
            source: source.into(),
            target: target.into(),
            source_handle: handle.map(Into::into),
            target_handle: None,
        });
    }

    fn chain(&mut self, node_type: &str, data: Value, n: usize, from: String) -> String {
        (0..n).fold(from, |prev, _| {
            let next = self.node(node_type, data.clone());
            self.edge(&prev, &next, None);
            next
        })
    }
}

fn build(shape: Shape) -> Graph {
    let mut g = Graph::default();
    let start = g.node("start", json!({}));
    let last = match shape {
        Shape::Chain(n) => g.chain("join", json!({}), n.saturating_sub(2), start),
        Shape::Javascript(n) => g.chain(
            "javascript",
            json!({"code": "return (ctx.input.n || 0) + 1", "outputVariable": "v"}),
            n,
            start,
        ),
        Shape::Fanout(n) => {
            let branches: Vec<Value> = (0..n).map(|i| json!({"id": format!("b{i}")})).collect();
            let fan = g.node("fanout", json!({"branches": branches}));
            g.edge(&start, &fan, None);
            let join = g.node("join", json!({"joinMode": "all"}));
            for i in 0..n {
                let branch = g.node("join", json!({}));
                g.edge(&fan, &branch, Some(&format!("b{i}")));
                g.edge(&branch, &join, None);
            }
            join
        }
        Shape::Loop => {
            let looped = g.node(
                "loop",
                json!({"sourceVariable": "{{ctx.input.items}}", "itemVariable": "item", "maxIterations": 100_000}),
            );
            // A zero delay, not a pass-through join: a join inside a loop is not a plain step.
            let body = g.node("delay", json!({"delayType": "fixed", "delayMs": 0}));
            g.edge(&start, &looped, None);
            g.edge(&looped, &body, Some("loop"));
            g.edge(&body, &looped, None);
            looped
        }
    };
    let end = g.node("end", json!({}));
    let handle = matches!(shape, Shape::Loop).then_some("completed");
    g.edge(&last, &end, handle);
    g
}

/// Saves `shape` as a workflow of `tenant`.
pub(super) async fn save(pool: &PgPool, tenant: TenantId, shape: Shape) -> anyhow::Result<Uuid> {
    let g = build(shape);
    let mut tx = pool.begin().await?;
    let wf = definition::insert(
        &mut tx,
        tenant,
        "bench",
        &json!({}),
        &g.nodes,
        &g.edges,
        Default::default(),
    )
    .await?;
    tx.commit().await?;
    Ok(wf.workflow_id)
}
