//! What a node's configuration may say, checked when a workflow is saved or test-run: one
//! check per node type, plus the retry and error-handling policy every node may carry.
//! Running a node is `nodes`'s; this changes when a node type gains or changes a setting.

use super::nodes::{ERROR_MODES, MAX_DELAY, NodeType};
use serde_json::Value;
use std::time::Duration;

/// The comparison operators of condition and switch nodes (upstream's set).
const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "greater_than",
    "less_than",
    "greater_or_equal",
    "less_or_equal",
    "is_empty",
    "is_not_empty",
    "matches_regex",
];

/// Checks the execution policy fields every node may carry.
fn validate_policy(c: &Value) -> Result<(), String> {
    if let Some(mode) = c.get("errorHandling") {
        one_of(mode, "errorHandling", ERROR_MODES)?;
    }
    for (field, range) in [
        ("timeoutSeconds", 1..=3600),
        ("retryLimit", 0..=10),
        ("retryDelaySeconds", 0..=300),
    ] {
        if let Some(v) = c.get(field).filter(|v| !v.is_null()) {
            v.as_u64().filter(|n| range.contains(n)).ok_or(format!(
                "{field} must be an integer in {}..{}",
                range.start(),
                range.end()
            ))?;
        }
    }
    Ok(())
}

/// Deepest sub-workflow nesting a `subWorkflow` node may allow (`maxDepth`).
pub const MAX_SUBWORKFLOW_DEPTH: u64 = 10;

/// Checks a node's configuration; the message names the offending field.
pub fn validate_config(node_type: NodeType, c: &Value) -> Result<(), String> {
    if !c.is_object() {
        return Err("data must be an object".into());
    }
    validate_policy(c)?;
    match node_type {
        NodeType::Start | NodeType::Join => {
            if let Some(mode) = c.get("joinMode") {
                one_of(mode, "joinMode", &["all", "any"])?;
            }
            Ok(())
        }
        NodeType::End => {
            if let Some(status) = c.get("status") {
                one_of(status, "status", &["success", "error"])?;
            }
            if let Some(params) = c.get("outputParameters") {
                let list = params
                    .as_array()
                    .ok_or("outputParameters must be an array")?;
                for p in list {
                    p.get("name")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .ok_or("every output parameter needs a name")?;
                }
            }
            Ok(())
        }
        NodeType::Condition => {
            let branches = unique_branches(c)?;
            for (id, b) in branches {
                if let Some(logic) = b.get("conditionLogic") {
                    one_of(logic, "conditionLogic", &["AND", "OR"])?;
                }
                let conditions = b
                    .get("conditions")
                    .and_then(Value::as_array)
                    .ok_or(format!("branch `{id}` needs a conditions array"))?;
                for cond in conditions {
                    check_operator(cond.get("operator"))?;
                }
            }
            Ok(())
        }
        NodeType::Switch => {
            c.get("switchValue").ok_or("switchValue is required")?;
            let cases = c
                .get("cases")
                .and_then(Value::as_array)
                .ok_or("cases must be an array")?;
            let mut ids = std::collections::HashSet::new();
            for case in cases {
                let id = case
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or("every case needs an id")?;
                if !ids.insert(id) {
                    return Err(format!("duplicate case id `{id}`"));
                }
                if let Some(op) = case.get("operator") {
                    check_operator(Some(op))?;
                }
            }
            Ok(())
        }
        NodeType::Delay => match c
            .get("delayType")
            .and_then(Value::as_str)
            .unwrap_or("fixed")
        {
            "fixed" => {
                let d = fixed_delay(c)?;
                if d > MAX_DELAY {
                    return Err("a delay is at most 24 hours".into());
                }
                Ok(())
            }
            "dynamic" => c
                .get("delayVariable")
                .map(|_| ())
                .ok_or_else(|| "delayVariable is required for dynamic delays".into()),
            "until" => c
                .get("untilTime")
                .map(|_| ())
                .ok_or_else(|| "untilTime is required for `until` delays".into()),
            other => Err(format!(
                "delayType must be fixed, dynamic or until, not `{other}`"
            )),
        },
        NodeType::Loop => {
            c.get("sourceVariable")
                .ok_or("sourceVariable is required")?;
            if let Some(max) = c.get("maxIterations") {
                let n = max
                    .as_u64()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or("maxIterations must be 1..100000")?;
                let _ = n;
            }
            Ok(())
        }
        NodeType::DataCollection | NodeType::Approval => {
            if let Some(schema) = c.get("formSchema") {
                jsonschema::validator_for(schema)
                    .map_err(|e| format!("formSchema is not a valid JSON Schema: {e}"))?;
            }
            if let Some(minutes) = c.get("expiryMinutes") {
                minutes
                    .as_u64()
                    .filter(|m| *m <= 43_200)
                    .ok_or("expiryMinutes must be 0..43200 (0 = never)")?;
            }
            if let Some(on_timeout) = c.get("onTimeout") {
                one_of(on_timeout, "onTimeout", &["expired", "fail"])?;
            }
            Ok(())
        }
        NodeType::Javascript => {
            c.get("code")
                .and_then(Value::as_str)
                .filter(|code| !code.trim().is_empty())
                .ok_or("code must be a non-empty string")?;
            Ok(())
        }
        NodeType::Fanout => {
            unique_branches(c)?;
            Ok(())
        }
        NodeType::DataQuery => {
            c.get("dataQueryID")
                .and_then(Value::as_str)
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .ok_or("dataQueryID must be a data query id (uuid)")?;
            if let Some(inputs) = c.get("inputValues").filter(|m| !m.is_null()) {
                inputs
                    .as_object()
                    .ok_or("inputValues must be an object of input name to template")?;
            }
            Ok(())
        }
        NodeType::SubWorkflow => {
            c.get("childWorkflowID")
                .and_then(Value::as_str)
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .ok_or("childWorkflowID must be a workflow id (uuid)")?;
            if let Some(mapping) = c.get("inputMapping").filter(|m| !m.is_null()) {
                mapping
                    .as_object()
                    .ok_or("inputMapping must be an object of input name to template")?;
            }
            if let Some(depth) = c.get("maxDepth") {
                depth
                    .as_u64()
                    .filter(|d| (1..=MAX_SUBWORKFLOW_DEPTH).contains(d))
                    .ok_or(format!("maxDepth must be 1..{MAX_SUBWORKFLOW_DEPTH}"))?;
            }
            Ok(())
        }
    }
}

/// `branches`: a non-empty array whose entries have distinct, non-empty ids (the handles).
fn unique_branches(c: &Value) -> Result<Vec<(&str, &Value)>, String> {
    let branches = c
        .get("branches")
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
        .ok_or("branches must be a non-empty array")?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(branches.len());
    for b in branches {
        let id = b
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("every branch needs an id")?;
        if !seen.insert(id) {
            return Err(format!("duplicate branch id `{id}`"));
        }
        out.push((id, b));
    }
    Ok(out)
}

fn one_of(v: &Value, field: &str, allowed: &[&str]) -> Result<(), String> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(format!("{field} must be one of {}", allowed.join(", "))),
    }
}

fn check_operator(op: Option<&Value>) -> Result<(), String> {
    match op.and_then(Value::as_str) {
        Some(o) if OPERATORS.contains(&o) || o == "expression" => Ok(()),
        Some(o) => Err(format!("unknown operator `{o}`")),
        None => Err("every condition needs an operator".into()),
    }
}

pub(super) fn fixed_delay(c: &Value) -> Result<Duration, String> {
    let part = |field: &str, unit_ms: f64| -> Result<f64, String> {
        match c.get(field) {
            None | Some(Value::Null) => Ok(0.0),
            Some(v) => v
                .as_f64()
                .filter(|n| *n >= 0.0 && n.is_finite())
                .map(|n| n * unit_ms)
                .ok_or(format!("{field} must be a non-negative number")),
        }
    };
    let ms =
        part("delayMinutes", 60_000.0)? + part("delaySeconds", 1000.0)? + part("delayMs", 1.0)?;
    Ok(Duration::from_millis(ms.min(u64::MAX as f64) as u64))
}
