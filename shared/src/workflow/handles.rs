//! The handles each node type leaves by: the route an edge without `sourceHandle` takes, and
//! the set of handles a node can ever follow (so an edge on any other handle is reported).
//!
//! Editors and people copying edges drop `sourceHandle` all the time. An edge without one
//! follows its node's primary route (`success` after `javascript` and `dataQuery`, the default
//! branch after `condition` and `switch`, `output` elsewhere). Where a node has no single
//! primary route (`loop`, `fanout`, `approval`) a handle-less edge is refused at save: guessing
//! would run a loop body once or treat a rejection as an approval. The `error` handle is never
//! a default: failures follow only edges that name it.

use super::nodes::NodeType;
use serde_json::Value;

/// The handle a node's failures follow.
pub const ERROR: &str = "error";

/// The route an edge without `sourceHandle` follows from a node of this type; `Err` names the
/// handles to choose from where the node has no single primary route.
pub fn default_handle(node_type: NodeType, config: &Value) -> Result<String, String> {
    match node_type {
        NodeType::Javascript | NodeType::DataQuery => Ok("success".into()),
        NodeType::Condition => Ok(config
            .get("defaultBranch")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned()),
        NodeType::Switch => Ok("default".into()),
        NodeType::Loop | NodeType::Fanout | NodeType::Approval => Err(format!(
            "a {} node has no default route; set sourceHandle to one of {}",
            node_type.as_str(),
            emitted(node_type, config).join(", ")
        )),
        NodeType::Start
        | NodeType::End
        | NodeType::Delay
        | NodeType::Join
        | NodeType::DataCollection
        | NodeType::SubWorkflow => Ok("output".into()),
    }
}

/// Every handle a node of this type can follow, besides [`ERROR`].
pub fn emitted(node_type: NodeType, config: &Value) -> Vec<String> {
    let ids = |list: &str| -> Vec<String> {
        config
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("id").and_then(Value::as_str).map(String::from))
            .collect()
    };
    let timeout_handle = || {
        config
            .get("timeoutHandle")
            .and_then(Value::as_str)
            .unwrap_or("expired")
            .to_owned()
    };
    let fixed = |handles: &[&str]| handles.iter().map(|h| (*h).to_owned()).collect();
    match node_type {
        NodeType::End => vec![],
        NodeType::Start | NodeType::Delay | NodeType::Join => fixed(&["output"]),
        NodeType::Javascript | NodeType::DataQuery => fixed(&["success"]),
        NodeType::SubWorkflow => fixed(&["output", "success"]),
        NodeType::Loop => fixed(&["loop", "completed"]),
        NodeType::Fanout => ids("branches"),
        NodeType::Condition => {
            let mut out = ids("branches");
            out.push(default_handle(node_type, config).unwrap_or_default());
            out
        }
        NodeType::Switch => {
            let mut out = ids("cases");
            out.push("default".into());
            out
        }
        NodeType::DataCollection => vec!["output".into(), timeout_handle()],
        NodeType::Approval => vec!["approved".into(), "rejected".into(), timeout_handle()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_nodes_default_to_success_and_exclusive_ones_to_their_default_branch() {
        let none = json!({});
        assert_eq!(
            default_handle(NodeType::Javascript, &none).as_deref(),
            Ok("success")
        );
        assert_eq!(
            default_handle(NodeType::DataQuery, &none).as_deref(),
            Ok("success")
        );
        assert_eq!(
            default_handle(NodeType::Condition, &json!({"defaultBranch": "else"})).as_deref(),
            Ok("else")
        );
        assert_eq!(
            default_handle(NodeType::Delay, &none).as_deref(),
            Ok("output")
        );
        let refused = default_handle(NodeType::Approval, &none).expect_err("ambiguous");
        assert!(refused.contains("approved, rejected, expired"), "{refused}");
    }

    #[test]
    fn emitted_handles_come_from_the_config() {
        let fan = json!({"branches": [{"id": "l"}, {"id": "r"}]});
        assert_eq!(emitted(NodeType::Fanout, &fan), ["l", "r"]);
        let sw = json!({"cases": [{"id": "red"}]});
        assert_eq!(emitted(NodeType::Switch, &sw), ["red", "default"]);
        assert!(emitted(NodeType::End, &json!({})).is_empty());
    }
}
