//! The instance context: the shallow merge, in `logID` order, of the payloads of `INPUT_SET`,
//! `NODE_COMPLETED` and `SYSTEM_SET` log rows. Keys starting with `__` never reach clients.
//!
//! The engine does not fold the log on each read: a trigger keeps the result beside it, one
//! row per key in `tblWorkflowInstanceContext` (migration `20261204100000`), in the
//! transaction that writes the log row. [`fold`] is the definition that table must equal at
//! every commit; the test harness checks it for every instance a test leaves behind.

use serde_json::{Map, Value};

/// Folds payloads (already in `logID` order) into one context object.
pub fn fold<'a>(payloads: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut acc = Map::new();
    for payload in payloads {
        if let Value::Object(map) = payload {
            for (k, v) in map {
                acc.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(acc)
}

/// The context without internal (`__`-prefixed) keys, for clients.
pub fn public(ctx: &Value) -> Value {
    match ctx {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_payloads_win_per_top_level_key() {
        let rows = [
            json!({"input": {"a": 1}}),
            json!({"x": {"deep": 1}, "__node_a": {}}),
            json!({"x": {"other": 2}}),
        ];
        let ctx = fold(rows.iter());
        assert_eq!(
            ctx,
            json!({"input": {"a": 1}, "x": {"other": 2}, "__node_a": {}})
        );
        assert_eq!(public(&ctx), json!({"input": {"a": 1}, "x": {"other": 2}}));
    }
}
