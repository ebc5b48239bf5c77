//! A workflow graph: nodes with their type and config, edges with their routing handle.
//! Built from the editor's shape and validated before it is saved or run.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::nodes::{self, NodeType};

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

/// One edge; `handle` is the routing key (`sourceHandle`, NULL meaning `output`).
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

/// The routing key of an edge handle: NULL and empty mean `output`.
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
    /// nodes, configs valid for their node type, and no join that can never be satisfied
    /// where that is decidable.
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
            if let Err(message) = nodes::validate_config(node_type, &config) {
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
        let mut edges = Vec::new();
        for e in edges_in {
            for end in [&e.source, &e.target] {
                if !nodes.contains_key(end) && !nodes_in.iter().any(|n| &n.id == end) {
                    problems.push(problem(
                        Some(end),
                        format!(
                            "an edge {} -> {} references a missing node",
                            e.source, e.target
                        ),
                    ));
                }
            }
            edges.push(Edge {
                source: e.source.clone(),
                target: e.target.clone(),
                handle: handle_of(e.source_handle.as_deref()),
            });
        }
        let graph = Graph { nodes, edges };
        if problems.is_empty() {
            for (node, message) in graph.unsatisfiable_joins() {
                problems.push(problem(Some(&node), message));
            }
            for n in graph.nodes.values() {
                if graph.incoming(&n.id).is_empty() && n.node_type != NodeType::Start {
                    continue; // reported as unreachable below
                }
                if n.node_type == NodeType::Start && !graph.incoming(&n.id).is_empty() {
                    problems.push(problem(
                        Some(&n.id),
                        "the start node cannot have incoming edges",
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let reachable = graph.reachable_from_start();
        let warnings = graph
            .nodes
            .keys()
            .filter(|id| !reachable.contains(*id))
            .map(|id| {
                problem(
                    Some(id),
                    "unreachable: no path from the start node leads here",
                )
            })
            .collect();
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

    fn reachable_from_start(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = self
            .start()
            .map(|s| vec![s.id.as_str()])
            .unwrap_or_default();
        while let Some(id) = stack.pop() {
            if seen.insert(id.to_owned()) {
                stack.extend(
                    self.edges
                        .iter()
                        .filter(|e| e.source == id)
                        .map(|e| e.target.as_str()),
                );
            }
        }
        seen
    }

    fn in_cycle(&self, node_id: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = self
            .edges
            .iter()
            .filter(|e| e.source == node_id)
            .map(|e| e.target.as_str())
            .collect();
        while let Some(id) = stack.pop() {
            if id == node_id {
                return true;
            }
            if seen.insert(id) {
                stack.extend(
                    self.edges
                        .iter()
                        .filter(|e| e.source == id)
                        .map(|e| e.target.as_str()),
                );
            }
        }
        false
    }

    /// Joins (`joinMode` all, several upstreams) two of whose upstreams lie on different
    /// branches of the same exclusive node (condition, switch) outside any cycle: only one of
    /// them can ever complete, so the join never becomes ready.
    fn unsatisfiable_joins(&self) -> Vec<(String, String)> {
        // guards[n]: the (exclusive node, handle) choices every path from start to n takes.
        let mut guards: HashMap<&str, Option<BTreeSet<(&str, &str)>>> =
            self.nodes.keys().map(|k| (k.as_str(), None)).collect();
        if let Some(start) = self.start() {
            guards.insert(start.id.as_str(), Some(BTreeSet::new()));
        }
        for _ in 0..=self.nodes.len() {
            let mut changed = false;
            for node in self.nodes.keys() {
                if Some(node.as_str()) == self.start().map(|s| s.id.as_str()) {
                    continue;
                }
                let mut acc: Option<BTreeSet<(&str, &str)>> = None;
                for e in self.edges.iter().filter(|e| &e.target == node) {
                    let Some(Some(from)) = guards.get(e.source.as_str()) else {
                        continue;
                    };
                    let mut contribution = from.clone();
                    if self
                        .nodes
                        .get(&e.source)
                        .is_some_and(|n| n.node_type.is_exclusive())
                    {
                        contribution.insert((e.source.as_str(), e.handle.as_str()));
                    }
                    acc = Some(match acc {
                        None => contribution,
                        Some(prev) => prev.intersection(&contribution).copied().collect(),
                    });
                }
                if acc.is_some() && guards.get(node.as_str()) != Some(&acc) {
                    guards.insert(node.as_str(), acc);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut out = Vec::new();
        for node in self.nodes.values() {
            let upstream = self.incoming(&node.id);
            if upstream.len() < 2 || nodes::join_mode(&node.config) != "all" {
                continue;
            }
            'pairs: for (i, a) in upstream.iter().enumerate() {
                for b in &upstream[i + 1..] {
                    let (Some(Some(ga)), Some(Some(gb))) = (guards.get(a), guards.get(b)) else {
                        continue;
                    };
                    for (choice, handle) in ga {
                        if self.in_cycle(choice) {
                            continue;
                        }
                        if let Some((_, other)) =
                            gb.iter().find(|(c, h)| c == choice && h != handle)
                        {
                            out.push((
                                node.id.clone(),
                                format!(
                                    "join waits for all of {a} and {b}, but they lie on different branches \
                                     (`{handle}` and `{other}`) of {choice}; use joinMode `any`"
                                ),
                            ));
                            break 'pairs;
                        }
                    }
                }
            }
        }
        out
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
}
