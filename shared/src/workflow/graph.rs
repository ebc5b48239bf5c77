//! A workflow graph: nodes with their type and config, edges with their routing handle.
//! Built from the editor's shape and validated before it is saved or run.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::nodes::NodeType;
use super::{dominance, handles, node_config};

/// A node as the editor sends it (React Flow: `{id, type, data, position}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditorNode {
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Value>,
}

/// An edge as the editor sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EditorEdge {
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub source_handle: Option<String>,
    #[serde(default)]
    pub target_handle: Option<String>,
}

/// One node of a runnable graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub node_type: NodeType,
    /// The editor's `data` object: the node's configuration.
    pub config: Value,
}

/// One edge; `handle` is the routing key: its `sourceHandle`, or when it has none the source
/// node's default route (`handles::default_handle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub handle: String,
}

/// A validated graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub nodes: BTreeMap<String, Node>,
    pub edges: Vec<Edge>,
}

/// What is wrong with a definition, naming the node where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub node_id: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node_id {
            Some(id) => write!(f, "node {id}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn problem(node_id: Option<&str>, message: impl Into<String>) -> Problem {
    Problem {
        node_id: node_id.map(str::to_owned),
        message: message.into(),
    }
}

/// The routing key of an edge handle whose source node is unknown: NULL and empty mean `output`.
pub fn handle_of(handle: Option<&str>) -> String {
    match handle {
        None | Some("") => "output".to_owned(),
        Some(h) => h.to_owned(),
    }
}

/// The result of validation: the graph, plus warnings that do not block saving.
#[derive(Debug)]
pub struct Validated {
    pub graph: Graph,
    /// e.g. nodes no path from the start node reaches.
    pub warnings: Vec<Problem>,
}

impl Graph {
    /// Validates an editor definition: one start node, unique ids, edges between existing
    /// nodes, configs valid for their node type, a route for every edge, and no join that can
    /// never be satisfied where that is decidable. Near-linear in the size of the graph.
    pub fn validate(
        nodes_in: &[EditorNode],
        edges_in: &[EditorEdge],
    ) -> Result<Validated, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut nodes = BTreeMap::new();
        for n in nodes_in {
            if n.id.trim().is_empty() {
                problems.push(problem(None, "a node has an empty id"));
                continue;
            }
            let node_type = match n.node_type.parse::<NodeType>() {
                Ok(t) => t,
                Err(message) => {
                    problems.push(problem(Some(&n.id), message));
                    continue;
                }
            };
            let config = if n.data.is_null() {
                Value::Object(Default::default())
            } else {
                n.data.clone()
            };
            if let Err(message) = node_config::validate_config(node_type, &config) {
                problems.push(problem(Some(&n.id), message));
            }
            if nodes
                .insert(
                    n.id.clone(),
                    Node {
                        id: n.id.clone(),
                        node_type,
                        config,
                    },
                )
                .is_some()
            {
                problems.push(problem(Some(&n.id), "duplicate node id"));
            }
        }
        let starts: Vec<&String> = nodes
            .values()
            .filter(|n| n.node_type == NodeType::Start)
            .map(|n| &n.id)
            .collect();
        match starts.len() {
            0 => problems.push(problem(None, "the workflow has no start node")),
            1 => {}
            _ => problems.push(problem(
                Some(starts[1]),
                format!(
                    "a workflow has exactly one start node; found {}",
                    starts.len()
                ),
            )),
        }
        let known: HashSet<&str> = nodes_in.iter().map(|n| n.id.as_str()).collect();
        let mut edges = Vec::with_capacity(edges_in.len());
        let mut warnings = Vec::new();
        for e in edges_in {
            for end in [&e.source, &e.target] {
                if !known.contains(end.as_str()) {
                    problems.push(problem(
                        Some(end),
                        format!(
                            "an edge {} -> {} references a missing node",
                            e.source, e.target
                        ),
                    ));
                }
            }
            let source = nodes.get(&e.source);
            let handle = match (e.source_handle.as_deref(), source) {
                (Some(h), _) if !h.is_empty() => h.to_owned(),
                (_, Some(n)) => match handles::default_handle(n.node_type, &n.config) {
                    Ok(h) => h,
                    Err(message) => {
                        problems.push(problem(
                            Some(&e.source),
                            format!(
                                "the edge {} -> {} has no sourceHandle: {message}",
                                e.source, e.target
                            ),
                        ));
                        continue;
                    }
                },
                (_, None) => handle_of(None),
            };
            if let Some(n) = source {
                let emitted = handles::emitted(n.node_type, &n.config);
                if handle != handles::ERROR && !emitted.contains(&handle) {
                    warnings.push(problem(
                        Some(&e.source),
                        format!(
                            "the edge {} -> {} leaves on `{handle}`, which a {} node never takes \
                             (it takes {}): the edge is never followed",
                            e.source,
                            e.target,
                            n.node_type.as_str(),
                            emitted.join(", ")
                        ),
                    ));
                }
            }
            edges.push(Edge {
                source: e.source.clone(),
                target: e.target.clone(),
                handle,
            });
        }
        let graph = Graph { nodes, edges };
        if problems.is_empty() {
            for (node, message) in dominance::unsatisfiable_joins(&graph) {
                problems.push(problem(Some(&node), message));
            }
            let mut seen = HashSet::new();
            for e in &graph.edges {
                let target = &graph.nodes[&e.target];
                if target.node_type == NodeType::Start && seen.insert(&e.target) {
                    problems.push(problem(
                        Some(&e.target),
                        "the start node cannot have incoming edges",
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let reachable = graph.reachable_from_start();
        warnings.extend(
            graph
                .nodes
                .keys()
                .filter(|id| !reachable.contains(id.as_str()))
                .map(|id| {
                    problem(
                        Some(id),
                        "unreachable: no path from the start node leads here",
                    )
                }),
        );
        Ok(Validated { graph, warnings })
    }

    /// The start node (validation guarantees exactly one).
    pub fn start(&self) -> Option<&Node> {
        self.nodes.values().find(|n| n.node_type == NodeType::Start)
    }

    /// Targets of the edges leaving `node_id` through `handle`, in a stable order.
    pub fn successors(&self, node_id: &str, handle: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .edges
            .iter()
            .filter(|e| e.source == node_id && e.handle == handle)
            .map(|e| e.target.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Distinct upstream node ids of `node_id`.
    pub fn incoming(&self, node_id: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .edges
            .iter()
            .filter(|e| e.target == node_id)
            .map(|e| e.source.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `node_id` has an outgoing edge on `handle`.
    pub fn has_handle(&self, node_id: &str, handle: &str) -> bool {
        self.edges
            .iter()
            .any(|e| e.source == node_id && e.handle == handle)
    }

    /// Node ids a path from the start node reaches: one traversal over an adjacency map.
    fn reachable_from_start(&self) -> HashSet<&str> {
        let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in &self.edges {
            next.entry(e.source.as_str())
                .or_default()
                .push(e.target.as_str());
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<&str> = self
            .start()
            .map(|s| vec![s.id.as_str()])
            .unwrap_or_default();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(next.get(id).into_iter().flatten().copied());
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, t: &str, data: Value) -> EditorNode {
        EditorNode {
            id: id.into(),
            node_type: t.into(),
            data,
            position: None,
        }
    }

    fn edge(s: &str, t: &str, h: Option<&str>) -> EditorEdge {
        EditorEdge {
            source: s.into(),
            target: t.into(),
            source_handle: h.map(String::from),
            target_handle: None,
        }
    }

    fn cond() -> Value {
        json!({"branches": [{"id": "yes", "conditions": [{"leftValue": "{{ctx.input.x}}", "operator": "equals", "rightValue": 1}]}]})
    }

    #[test]
    fn a_linear_graph_validates_and_routes() {
        let v = Graph::validate(
            &[node("s", "start", json!({})), node("e", "end", json!({}))],
            &[edge("s", "e", None)],
        )
        .expect("valid");
        assert!(v.warnings.is_empty());
        assert_eq!(v.graph.successors("s", "output"), ["e"]);
        assert!(v.graph.successors("s", "error").is_empty());
    }

    #[test]
    fn start_node_count_and_missing_edge_ends_are_named() {
        let none = Graph::validate(&[node("e", "end", json!({}))], &[]).expect_err("no start");
        assert!(none[0].message.contains("no start node"));
        let two = Graph::validate(
            &[node("a", "start", json!({})), node("b", "start", json!({}))],
            &[],
        )
        .expect_err("two");
        assert_eq!(two[0].node_id.as_deref(), Some("b"));
        let dangling = Graph::validate(
            &[node("s", "start", json!({}))],
            &[edge("s", "ghost", None)],
        )
        .expect_err("ghost");
        assert_eq!(dangling[0].node_id.as_deref(), Some("ghost"));
        let unknown = Graph::validate(
            &[
                node("s", "start", json!({})),
                node("x", "teleport", json!({})),
            ],
            &[],
        )
        .expect_err("type");
        assert_eq!(unknown[0].node_id.as_deref(), Some("x"));
    }

    #[test]
    fn unreachable_nodes_are_warnings() {
        let v = Graph::validate(
            &[
                node("s", "start", json!({})),
                node("lost", "end", json!({})),
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(v.warnings.len(), 1);
        assert_eq!(v.warnings[0].node_id.as_deref(), Some("lost"));
    }

    #[test]
    fn a_join_all_over_exclusive_branches_is_rejected_and_any_is_fine() {
        let nodes = |mode: &str| {
            vec![
                node("s", "start", json!({})),
                node("c", "condition", cond()),
                node("a", "end", json!({})),
                node("b", "end", json!({})),
                node("j", "join", json!({"joinMode": mode})),
            ]
        };
        let edges = [
            edge("s", "c", None),
            edge("c", "a", Some("yes")),
            edge("c", "b", Some("default")),
            edge("a", "j", None),
            edge("b", "j", None),
        ];
        let err = Graph::validate(&nodes("all"), &edges).expect_err("deadlock");
        assert_eq!(err[0].node_id.as_deref(), Some("j"));
        assert!(Graph::validate(&nodes("any"), &edges).is_ok());
    }

    #[test]
    fn a_join_after_a_fanout_is_fine() {
        let v = Graph::validate(
            &[
                node("s", "start", json!({})),
                node(
                    "f",
                    "fanout",
                    json!({"branches": [{"id": "l"}, {"id": "r"}]}),
                ),
                node("a", "join", json!({})),
                node("l", "delay", json!({"delayType": "fixed", "delayMs": 1})),
                node("r", "delay", json!({"delayType": "fixed", "delayMs": 1})),
            ],
            &[
                edge("s", "f", None),
                edge("f", "l", Some("l")),
                edge("f", "r", Some("r")),
                edge("l", "a", None),
                edge("r", "a", None),
            ],
        );
        assert!(v.is_ok(), "{v:?}");
    }

    #[test]
    fn an_edge_without_a_handle_follows_the_default_route_and_never_the_error_one() {
        let v = Graph::validate(
            &[
                node("s", "start", json!({})),
                node("js", "javascript", json!({"code": "return 1"})),
                node("c", "condition", cond()),
                node("e", "end", json!({})),
                node("f", "end", json!({})),
            ],
            &[
                edge("s", "js", None),
                edge("js", "c", None),
                edge("c", "e", Some("yes")),
                edge("c", "f", Some("")),
            ],
        )
        .expect("valid");
        assert_eq!(v.graph.successors("js", "success"), ["c"]);
        assert!(!v.graph.has_handle("js", "error"));
        assert_eq!(v.graph.successors("c", "default"), ["f"]);
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    }

    #[test]
    fn an_edge_without_a_handle_from_a_node_without_a_default_route_is_refused() {
        let err = Graph::validate(
            &[
                node("s", "start", json!({})),
                node("ask", "approval", json!({})),
                node("e", "end", json!({})),
            ],
            &[edge("s", "ask", None), edge("ask", "e", None)],
        )
        .expect_err("ambiguous");
        assert_eq!(err[0].node_id.as_deref(), Some("ask"));
        assert!(err[0].message.contains("ask -> e"), "{}", err[0].message);
    }

    #[test]
    fn an_edge_on_a_handle_the_node_never_takes_is_a_warning() {
        let v = Graph::validate(
            &[
                node("s", "start", json!({})),
                node("js", "javascript", json!({"code": "return 1"})),
                node("e", "end", json!({})),
            ],
            &[edge("s", "js", None), edge("js", "e", Some("output"))],
        )
        .expect("saved");
        assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
        assert!(v.warnings[0].message.contains("never followed"));
    }

    /// A chain of conditions whose branches meet again at `all` joins, then one join over
    /// every branch: the shape that made the old pairwise fixpoint cubic.
    fn wide_graph(conditions: usize) -> (Vec<EditorNode>, Vec<EditorEdge>) {
        let mut nodes = vec![node("s", "start", json!({}))];
        let mut edges = vec![];
        let mut prev = "s".to_owned();
        for i in 0..conditions {
            let (c, a, b, j) = (
                format!("c{i}"),
                format!("a{i}"),
                format!("b{i}"),
                format!("j{i}"),
            );
            nodes.push(node(&c, "condition", cond()));
            nodes.push(node(&a, "delay", json!({"delayMs": 0})));
            nodes.push(node(&b, "delay", json!({"delayMs": 0})));
            nodes.push(node(&j, "join", json!({"joinMode": "any"})));
            edges.push(edge(&prev, &c, None));
            edges.push(edge(&c, &a, Some("yes")));
            edges.push(edge(&c, &b, None));
            edges.push(edge(&a, &j, None));
            edges.push(edge(&b, &j, None));
            prev = j;
        }
        (nodes, edges)
    }

    #[test]
    fn a_graph_of_thousands_of_nodes_validates_and_its_impossible_join_is_found() {
        let (mut nodes, mut edges) = wide_graph(1250);
        assert!(Graph::validate(&nodes, &edges).is_ok());
        // One `all` join fed by both branches of the last condition can never fire.
        nodes.push(node("stuck", "join", json!({"joinMode": "all"})));
        edges.push(edge("a1249", "stuck", None));
        edges.push(edge("b1249", "stuck", None));
        let err = Graph::validate(&nodes, &edges).expect_err("deadlock");
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!(err[0].node_id.as_deref(), Some("stuck"));
        assert!(err[0].message.contains("c1249"), "{}", err[0].message);
    }
}
