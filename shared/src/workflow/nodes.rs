//! Node types: what each one's configuration must look like, and what running it produces.
//! Running a node is a pure function of its configuration and the instance context; the
//! queue (`queue.rs`) persists what it returns.

use super::template::resolve;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The node types the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    Start,
    End,
    Condition,
    Switch,
    Delay,
    Loop,
    Fanout,
    Join,
    Javascript,
    DataCollection,
    Approval,
    SubWorkflow,
    DataQuery,
}

impl std::str::FromStr for NodeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "start" => NodeType::Start,
            "end" => NodeType::End,
            "condition" => NodeType::Condition,
            "switch" => NodeType::Switch,
            "delay" => NodeType::Delay,
            "loop" => NodeType::Loop,
            "fanout" => NodeType::Fanout,
            "join" => NodeType::Join,
            "javascript" => NodeType::Javascript,
            "dataCollection" => NodeType::DataCollection,
            "approval" => NodeType::Approval,
            "subWorkflow" => NodeType::SubWorkflow,
            "dataQuery" => NodeType::DataQuery,
            other => return Err(format!("unknown node type `{other}`")),
        })
    }
}

impl NodeType {
    /// The editor's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Start => "start",
            NodeType::End => "end",
            NodeType::Condition => "condition",
            NodeType::Switch => "switch",
            NodeType::Delay => "delay",
            NodeType::Loop => "loop",
            NodeType::Fanout => "fanout",
            NodeType::Join => "join",
            NodeType::Javascript => "javascript",
            NodeType::DataCollection => "dataCollection",
            NodeType::Approval => "approval",
            NodeType::SubWorkflow => "subWorkflow",
            NodeType::DataQuery => "dataQuery",
        }
    }

    /// Whether running the node evaluates JavaScript, so it must run on a blocking thread.
    pub fn needs_sandbox(self, config: &Value) -> bool {
        match self {
            NodeType::Javascript => true,
            NodeType::Condition => config.to_string().contains("\"expression\""),
            _ => false,
        }
    }

    /// Nodes that follow exactly one of their handles, so their branches exclude each other.
    pub fn is_exclusive(self) -> bool {
        matches!(
            self,
            NodeType::Condition | NodeType::Switch | NodeType::Approval
        )
    }
}

/// `joinMode` of a node with several incoming edges: `all` by default; loop nodes, which are
/// re-entered by their body's back edge, default to `any`.
pub fn join_mode(config: &Value) -> &str {
    match config.get("joinMode").and_then(Value::as_str) {
        Some("any") => "any",
        Some(_) => "all",
        None if config.get("sourceVariable").is_some() => "any",
        None => "all",
    }
}

/// Longest fixed delay a delay node may be saved with (upstream: 24 h).
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Longest delay a `dynamic` or `until` delay may resolve to at run time: 366 days. Such a
/// delay is durable (the successor's `availableAt`), so it is honoured in full; beyond this
/// bound the node fails rather than wait a shortened time.
pub const MAX_RESOLVED_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a node does when running it fails for good (`errorHandling`, upstream's allowlist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// `fail_workflow`, `retry_then_fail` (the default): retry per policy, then follow the
    /// `error` edge if there is one, else fail the instance.
    Fail,
    /// `retry_then_continue`: retry per policy, then continue as [`ErrorMode::Continue`].
    RetryThenContinue,
    /// `continue`, `continue_default`, `skip_item`: no retries; the node completes with
    /// `{[outputVariable]: null, success: false, error}` and follows its `error` handle.
    Continue,
}

pub(super) const ERROR_MODES: &[&str] = &[
    "fail_workflow",
    "retry_then_fail",
    "retry_then_continue",
    "continue",
    "continue_default",
    "skip_item",
];

impl ErrorMode {
    /// The mode a node's configuration asks for. Unset, a dataQuery node continues on its
    /// `error` handle (upstream's default for it); every other node fails.
    pub fn of(node_type: NodeType, config: &Value) -> Self {
        match config.get("errorHandling").and_then(Value::as_str) {
            Some("retry_then_continue") => ErrorMode::RetryThenContinue,
            Some("continue" | "continue_default" | "skip_item") => ErrorMode::Continue,
            None if node_type == NodeType::DataQuery => ErrorMode::Continue,
            _ => ErrorMode::Fail,
        }
    }

    /// Whether failures are retried (per `retryLimit`) before the mode applies.
    pub fn retries(self) -> bool {
        self != ErrorMode::Continue
    }

    /// Whether a failure, once retries are spent, becomes a completed node on its `error`
    /// handle instead of a failed one.
    pub fn continues(self) -> bool {
        self != ErrorMode::Fail
    }
}

/// The outcome of a failed node whose error mode continues: upstream's shape, plus how many
/// times it was tried.
pub fn caught_failure(config: &Value, message: &str, attempts: i32) -> Outcome {
    let mut output = json!({"success": false, "error": message, "attempts": attempts});
    if let Some(ov) = config.get("outputVariable").and_then(Value::as_str) {
        output[ov] = Value::Null;
    }
    Outcome::follow(output, "error")
}

/// What running a node produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The node's output (upstream's `output`).
    pub output: Value,
    /// Top-level context keys this node sets besides its output (`__contextPatch`).
    pub patch: Map<String, Value>,
    /// The handles to follow; empty for an `end` node.
    pub handles: Vec<String>,
    /// Successors become runnable only after this long (durable delay).
    pub delay: Option<Duration>,
    /// An `end` node finishes the instance: `true` = COMPLETED, `false` = FAILED.
    pub finish: Option<bool>,
    /// A human step waits for input: the request's configuration (title and description
    /// resolved). The instance does not advance until the request is answered or expires.
    pub suspend: Option<Value>,
}

impl Outcome {
    pub(crate) fn follow(output: Value, handle: impl Into<String>) -> Self {
        Self {
            output,
            patch: Map::new(),
            handles: vec![handle.into()],
            delay: None,
            finish: None,
            suspend: None,
        }
    }
}

/// Runs a node against the context; `Err` is a node failure (retried per policy). `timeout`
/// bounds script evaluation (javascript nodes, expression conditions).
pub fn run(
    node_type: NodeType,
    node_id: &str,
    c: &Value,
    ctx: &Value,
    timeout: Duration,
) -> Result<Outcome, String> {
    match node_type {
        NodeType::Start => Ok(Outcome::follow(
            json!({"started": true, "inputReceived": ctx.get("input")}),
            "output",
        )),
        NodeType::End => {
            let mut workflow_output = Map::new();
            for p in c
                .get("outputParameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = p.get("name").and_then(Value::as_str) {
                    let value = p
                        .get("sourceVariable")
                        .map(|s| resolve(s, ctx))
                        .unwrap_or(Value::Null);
                    workflow_output.insert(name.to_owned(), value);
                }
            }
            let failed = c.get("status").and_then(Value::as_str) == Some("error");
            let mut outcome = Outcome::follow(
                json!({"status": if failed { "error" } else { "success" }, "workflowOutput": workflow_output}),
                "output",
            );
            outcome.handles.clear();
            outcome
                .patch
                .insert("output".into(), Value::Object(workflow_output));
            outcome.finish = Some(!failed);
            Ok(outcome)
        }
        NodeType::Condition => {
            let default = c
                .get("defaultBranch")
                .and_then(Value::as_str)
                .unwrap_or("default");
            for b in c
                .get("branches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                let conds: Vec<&Value> = b
                    .get("conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .collect();
                let any = b.get("conditionLogic").and_then(Value::as_str) == Some("OR");
                let results = conds.iter().map(|cond| {
                    let op = cond.get("operator").and_then(Value::as_str).unwrap_or("");
                    if op == "expression" {
                        // Upstream: raw JavaScript `Boolean(<leftValue>)` with `ctx` in scope;
                        // an exception counts as false.
                        let source = cond
                            .get("leftValue")
                            .and_then(Value::as_str)
                            .unwrap_or("false");
                        let limit = timeout.min(Duration::from_secs(5));
                        return super::sandbox::eval(&format!("Boolean({source})"), ctx, limit)
                            == Ok(Value::Bool(true));
                    }
                    let left = resolve(cond.get("leftValue").unwrap_or(&Value::Null), ctx);
                    let right = resolve(cond.get("rightValue").unwrap_or(&Value::Null), ctx);
                    compare(op, &left, &right)
                });
                let matched = if any {
                    results.into_iter().any(|r| r)
                } else {
                    !conds.is_empty() && results.into_iter().all(|r| r)
                };
                if matched {
                    let label = b.get("label").cloned().unwrap_or(Value::Null);
                    return Ok(Outcome::follow(
                        json!({"matched": id, "label": label, "success": true}),
                        id,
                    ));
                }
            }
            Ok(Outcome::follow(
                json!({"matched": default, "label": null, "success": true}),
                default,
            ))
        }
        NodeType::Switch => {
            let value = resolve(c.get("switchValue").unwrap_or(&Value::Null), ctx);
            for case in c
                .get("cases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let op = case
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or("equals");
                let target = resolve(case.get("matchValue").unwrap_or(&Value::Null), ctx);
                if compare(op, &value, &target) {
                    let id = case.get("id").and_then(Value::as_str).unwrap_or_default();
                    return Ok(Outcome::follow(json!({"matched": id, "value": value}), id));
                }
            }
            Ok(Outcome::follow(
                json!({"matched": "default", "value": value}),
                "default",
            ))
        }
        NodeType::Delay => {
            let delay = match c
                .get("delayType")
                .and_then(Value::as_str)
                .unwrap_or("fixed")
            {
                "dynamic" => {
                    let ms = resolve(c.get("delayVariable").unwrap_or(&Value::Null), ctx);
                    let ms = ms
                        .as_f64()
                        .or_else(|| ms.as_str().and_then(|s| s.trim().parse().ok()))
                        .ok_or("delayVariable did not resolve to a number of milliseconds")?;
                    Duration::from_millis(ms.max(0.0) as u64)
                }
                "until" => {
                    let when = resolve(c.get("untilTime").unwrap_or(&Value::Null), ctx);
                    let when = when
                        .as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                        .ok_or("untilTime did not resolve to an RFC 3339 time")?;
                    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
                        .to_std()
                        .unwrap_or_default()
                }
                _ => super::node_config::fixed_delay(c)?,
            };
            if delay > MAX_RESOLVED_DELAY {
                return Err(format!(
                    "the delay resolved to {} s, longer than the longest delay ({} days)",
                    delay.as_secs(),
                    MAX_RESOLVED_DELAY.as_secs() / 86_400
                ));
            }
            let mut outcome = Outcome::follow(
                json!({"delayedMs": delay.as_millis() as u64, "delayType": c.get("delayType").cloned().unwrap_or(json!("fixed")), "success": true}),
                "output",
            );
            outcome.delay = Some(delay);
            Ok(outcome)
        }
        NodeType::Loop => super::loop_node::run(node_id, c, ctx),
        NodeType::Fanout => {
            let handles: Vec<String> = c
                .get("branches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|b| b.get("id").and_then(Value::as_str).map(String::from))
                .collect();
            let mut outcome =
                Outcome::follow(json!({"__fanout": true, "handles": handles}), "output");
            outcome.handles = handles;
            Ok(outcome)
        }
        NodeType::Join => Ok(Outcome::follow(json!({"joined": true}), "output")),
        NodeType::DataCollection | NodeType::Approval => {
            let mut request = c.as_object().cloned().unwrap_or_default();
            for key in ["title", "description"] {
                if let Some(text) = c.get(key) {
                    request.insert(key.into(), resolve(text, ctx));
                }
            }
            let kind = if node_type == NodeType::Approval {
                "approval"
            } else {
                "form"
            };
            request.insert("collectionType".into(), json!(kind));
            let mut outcome = Outcome::follow(Value::Object(request.clone()), "output");
            outcome.handles.clear();
            outcome.suspend = Some(Value::Object(request));
            Ok(outcome)
        }
        NodeType::Javascript => {
            let code = c.get("code").and_then(Value::as_str).unwrap_or_default();
            let value = super::sandbox::run_node_code(code, ctx, timeout)?;
            let out_var = c
                .get("outputVariable")
                .and_then(Value::as_str)
                .unwrap_or("jsResult");
            Ok(Outcome::follow(
                json!({out_var: value, "success": true}),
                "success",
            ))
        }
        // Starting and awaiting a child instance writes to the database, which a pure run
        // cannot: the worker runs these nodes through `subworkflow::start` and `collect`.
        NodeType::SubWorkflow => Err("subWorkflow nodes run through the sub-workflow step".into()),
        // Running a query reaches a datasource; the worker runs these through `dataquery`.
        NodeType::DataQuery => Err("dataQuery nodes run through the data runtime".into()),
    }
}

/// Upstream's comparisons; anything that cannot be compared is false.
pub fn compare(op: &str, left: &Value, right: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    let numeric = |f: fn(f64, f64) -> bool| matches!((number(left), number(right)), (Some(a), Some(b)) if f(a, b));
    match op {
        "equals" => left == right || text(left) == text(right),
        "not_equals" => !(left == right || text(left) == text(right)),
        "contains" => match left {
            Value::Array(items) => {
                items.contains(right) || items.iter().any(|i| text(i) == text(right))
            }
            _ => text(left).contains(&text(right)),
        },
        "not_contains" => !compare("contains", left, right),
        "starts_with" => text(left).starts_with(&text(right)),
        "ends_with" => text(left).ends_with(&text(right)),
        "greater_than" => numeric(|a, b| a > b),
        "less_than" => numeric(|a, b| a < b),
        "greater_or_equal" => numeric(|a, b| a >= b),
        "less_or_equal" => numeric(|a, b| a <= b),
        "is_empty" => empty(left),
        "is_not_empty" => !empty(left),
        "matches_regex" => regex_match(&text(right), &text(left)),
        _ => false,
    }
}

/// `matches_regex`: the `regex` crate runs in linear time, so a user pattern cannot hang a
/// worker; compiled size is capped and an invalid pattern simply does not match.
fn regex_match(pattern: &str, text: &str) -> bool {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(|re| re.is_match(text))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::node_config::validate_config;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn javascript_nodes_return_their_value_under_the_output_variable() {
        let c = json!({"code": "return ctx.input.items.reduce((a, b) => a + b, 0)", "outputVariable": "sum"});
        let out = run(
            NodeType::Javascript,
            "j",
            &c,
            &json!({"input": {"items": [1, 2, 3]}}),
            SEC,
        )
        .expect("runs");
        assert_eq!(out.output["sum"], json!(6));
        assert_eq!(out.handles, ["success"]);
        assert!(
            run(
                NodeType::Javascript,
                "j",
                &json!({"code": "throw new Error('no')"}),
                &json!({}),
                SEC
            )
            .is_err()
        );
    }

    #[test]
    fn expression_conditions_evaluate_javascript_and_errors_are_false() {
        let c = json!({"branches": [
            {"id": "js", "conditions": [{"leftValue": "ctx.input.n % 2 === 0", "operator": "expression"}]}]});
        let route = |ctx: Value| {
            run(NodeType::Condition, "c", &c, &ctx, SEC)
                .expect("runs")
                .handles
        };
        assert_eq!(route(json!({"input": {"n": 4}})), ["js"]);
        assert_eq!(route(json!({"input": {"n": 3}})), ["default"]);
        assert_eq!(route(json!({})), ["default"], "a thrown TypeError is false");
        assert!(NodeType::Condition.needs_sandbox(&c));
    }

    #[test]
    fn operators_follow_upstream() {
        assert!(compare("equals", &json!(1), &json!("1")));
        assert!(compare("greater_than", &json!("10"), &json!(9)));
        assert!(!compare("greater_than", &json!("x"), &json!(9)));
        assert!(compare("contains", &json!(["a", "b"]), &json!("b")));
        assert!(compare("is_empty", &json!([]), &Value::Null));
        assert!(compare("starts_with", &json!("hello"), &json!("he")));
        assert!(compare("matches_regex", &json!("hello"), &json!("^h.l+o$")));
        assert!(!compare(
            "matches_regex",
            &json!("hello"),
            &json!("(unclosed")
        ));
        assert!(!compare("nonsense", &json!(1), &json!(1)));
    }

    #[test]
    fn condition_routes_to_the_first_matching_branch_or_default() {
        let c = json!({"branches": [
            {"id": "big", "conditions": [{"leftValue": "{{ctx.input.n}}", "operator": "greater_than", "rightValue": 10}]},
            {"id": "any", "conditionLogic": "OR", "conditions": [
                {"leftValue": "{{ctx.input.n}}", "operator": "equals", "rightValue": 5},
                {"leftValue": "{{ctx.input.n}}", "operator": "equals", "rightValue": 6}]}
        ]});
        let route = |n: i64| {
            run(
                NodeType::Condition,
                "c",
                &c,
                &json!({"input": {"n": n}}),
                SEC,
            )
            .expect("runs")
            .handles
        };
        assert_eq!(route(11), ["big"]);
        assert_eq!(route(6), ["any"]);
        assert_eq!(route(1), ["default"]);
    }

    #[test]
    fn delays_are_summed_and_capped_by_validation() {
        let c = json!({"delayType": "fixed", "delaySeconds": 2, "delayMs": 500});
        assert_eq!(
            run(NodeType::Delay, "d", &c, &json!({}), SEC)
                .expect("runs")
                .delay,
            Some(Duration::from_millis(2500))
        );
        assert!(validate_config(NodeType::Delay, &json!({"delayMinutes": 60 * 25})).is_err());
        assert!(validate_config(NodeType::Delay, &json!({"delaySeconds": -1})).is_err());
    }

    #[test]
    fn resolved_delays_are_honoured_in_full_or_fail() {
        let two_days = json!({"delayType": "dynamic", "delayVariable": "{{ctx.ms}}"});
        let ctx = json!({"ms": 48 * 3_600_000_u64});
        let out = run(NodeType::Delay, "d", &two_days, &ctx, SEC).expect("runs");
        assert_eq!(out.delay, Some(Duration::from_secs(48 * 3600)));
        let until = json!({"delayType": "until", "untilTime": "{{ctx.at}}"});
        let at = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        let out = run(NodeType::Delay, "d", &until, &json!({"at": at}), SEC).expect("runs");
        assert!(
            out.delay > Some(Duration::from_secs(29 * 86_400)),
            "{:?}",
            out.delay
        );
        let err = run(NodeType::Delay, "d", &two_days, &json!({"ms": 1e15}), SEC)
            .expect_err("beyond the bound");
        assert!(err.contains("longest delay"), "{err}");
    }

    #[test]
    fn end_sets_the_workflow_output_and_finishes() {
        let c = json!({"status": "success", "outputParameters": [{"name": "total", "sourceVariable": "{{ctx.input.n}}"}]});
        let out = run(NodeType::End, "e", &c, &json!({"input": {"n": 3}}), SEC).expect("runs");
        assert_eq!(out.finish, Some(true));
        assert!(out.handles.is_empty());
        assert_eq!(out.patch["output"], json!({"total": 3}));
    }

    #[test]
    fn unknown_types_say_so() {
        assert!(
            "teleport"
                .parse::<NodeType>()
                .expect_err("unknown")
                .contains("unknown")
        );
    }
}
