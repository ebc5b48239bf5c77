//! The `loop` node: walks the items of an array, one dispatch per item (its body's back edge
//! re-dispatches it), then completes on `completed` with the collected results.
//!
//! Its state lives in the run's context, and each step writes only what is new, so a loop over
//! `n` items stores O(n) in all rather than O(n²):
//! - `__loop_<id>_items`: the items, written once by the first step;
//! - `__loop_<id>`: the cursor `{next, total}`, a few bytes per step;
//! - `__loop_<id>_r<k>`: with `resultVariable`, what iteration `k` left there, one per step.
//!
//! The last step gathers the results and clears every key, so the loop can run again.

use super::nodes::Outcome;
use super::template::{resolve, resolve_str};
use serde_json::{Value, json};

fn cursor_key(node_id: &str) -> String {
    format!("__loop_{node_id}")
}

fn items_key(node_id: &str) -> String {
    format!("__loop_{node_id}_items")
}

fn result_key(node_id: &str, k: usize) -> String {
    format!("__loop_{node_id}_r{k}")
}

/// One step of loop `node_id` with configuration `c` in context `ctx`.
pub(super) fn run(node_id: &str, c: &Value, ctx: &Value) -> Result<Outcome, String> {
    let item_var = c
        .get("itemVariable")
        .and_then(Value::as_str)
        .unwrap_or("item");
    let index_var = c
        .get("indexVariable")
        .and_then(Value::as_str)
        .unwrap_or("index");
    let result_var = c.get("resultVariable").and_then(Value::as_str);
    let max = c
        .get("maxIterations")
        .and_then(Value::as_u64)
        .unwrap_or(1000) as usize;
    let cursor = ctx.get(cursor_key(node_id)).filter(|s| !s.is_null());
    let mut patch = serde_json::Map::new();
    let (items, next) = match cursor {
        Some(cursor) => {
            let next = cursor.get("next").and_then(Value::as_u64).unwrap_or(0) as usize;
            if let Some(var) = result_var {
                // What the iteration that just ended left in the result variable.
                let result = ctx.get(var).cloned().unwrap_or(Value::Null);
                patch.insert(result_key(node_id, next.saturating_sub(1)), result);
            }
            // Loops started before this layout kept their items in the cursor.
            let items = ctx
                .get(items_key(node_id))
                .or_else(|| cursor.get("items"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            (items, next)
        }
        None => {
            let source = match c.get("sourceVariable") {
                Some(Value::String(s)) => resolve_str(s, ctx),
                Some(other) => resolve(other, ctx),
                None => Value::Null,
            };
            let items = source
                .as_array()
                .cloned()
                .ok_or("sourceVariable did not resolve to an array")?;
            patch.insert(items_key(node_id), Value::Array(items.clone()));
            (items, 0)
        }
    };
    let total = items.len().min(max);
    if next < total {
        let item = items[next].clone();
        let mut outcome = Outcome::follow(
            json!({"currentItem": item, "currentIndex": next, "totalItems": total, "remainingItems": total - next - 1}),
            "loop",
        );
        outcome.patch = patch;
        outcome.patch.insert(item_var.to_owned(), item);
        outcome.patch.insert(index_var.to_owned(), json!(next));
        outcome.patch.insert(
            cursor_key(node_id),
            json!({"next": next + 1, "total": total}),
        );
        return Ok(outcome);
    }
    let results: Vec<Value> = match result_var {
        Some(_) => (0..total)
            .map(|k| {
                let key = result_key(node_id, k);
                patch
                    .get(&key)
                    .or_else(|| ctx.get(&key))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect(),
        None => items.into_iter().take(total).collect(),
    };
    let out_var = c
        .get("outputVariable")
        .and_then(Value::as_str)
        .unwrap_or("loopResults");
    let mut outcome = Outcome::follow(json!({out_var: results, "totalItems": total}), "completed");
    // Clear the loop's state, so it can run again from scratch.
    outcome.patch.insert(cursor_key(node_id), Value::Null);
    outcome.patch.insert(items_key(node_id), Value::Null);
    if result_var.is_some() {
        for k in 0..total {
            outcome.patch.insert(result_key(node_id, k), Value::Null);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the loop to completion, applying each step's patch as the settle would, with
    /// `body` playing the loop body (it may set the result variable). Returns the completed
    /// output, the items seen, and the bytes each step wrote.
    fn drive(
        c: &Value,
        ctx: &mut Value,
        body: impl Fn(&Value) -> Option<Value>,
    ) -> (Value, Vec<Value>, Vec<usize>) {
        let (mut seen, mut written) = (Vec::new(), Vec::new());
        loop {
            let out = run("l", c, ctx).expect("runs");
            written.push(serde_json::to_vec(&out.patch).expect("json").len());
            for (k, v) in &out.patch {
                ctx[k] = v.clone();
            }
            if out.handles == ["completed"] {
                return (out.output, seen, written);
            }
            seen.push(ctx["item"].clone());
            if let Some(result) = body(ctx) {
                ctx["doubled"] = result;
            }
        }
    }

    #[test]
    fn loop_walks_items_then_completes_and_resets() {
        let c = json!({"sourceVariable": "{{ctx.input.items}}"});
        let mut ctx = json!({"input": {"items": ["a", "b"]}});
        let (output, seen, _) = drive(&c, &mut ctx, |_| None);
        assert_eq!(output["loopResults"], json!(["a", "b"]));
        assert_eq!(seen, [json!("a"), json!("b")]);
        for key in ["__loop_l", "__loop_l_items"] {
            assert!(ctx[key].is_null(), "{key} resets so the loop can run again");
        }
    }

    #[test]
    fn results_are_collected_in_item_order() {
        let c = json!({"sourceVariable": "{{ctx.input.items}}", "resultVariable": "doubled"});
        let mut ctx = json!({"input": {"items": [1, 2, 3]}});
        let (output, _, _) = drive(&c, &mut ctx, |ctx| {
            ctx["item"].as_i64().map(|n| json!(n * 2))
        });
        assert_eq!(output["loopResults"], json!([2, 4, 6]));
        assert!(ctx["__loop_l_r2"].is_null());
    }

    #[test]
    fn each_step_writes_only_what_is_new() {
        let items: Vec<Value> = (0..400).map(|i| json!(format!("item-{i:04}"))).collect();
        let c = json!({"sourceVariable": "{{ctx.input.items}}", "resultVariable": "doubled"});
        let mut ctx = json!({"input": {"items": items}});
        let (_, seen, written) = drive(&c, &mut ctx, |ctx| Some(ctx["item"].clone()));
        assert_eq!(seen.len(), 400);
        let first = written[0];
        let steps = &written[1..written.len() - 1];
        let largest_step = steps.iter().copied().max().unwrap_or(0);
        assert!(
            first > 400 * 11,
            "the first step stores the items once: {first}"
        );
        assert!(
            largest_step < 200,
            "a middle step writes a few bytes, not the items: {largest_step}"
        );
    }
}
