//! `{{ctx.path}}` templates resolved against the instance context (upstream's expression
//! engine with `allowedRoots: ['ctx']`): a string that is exactly one template keeps the
//! value's JSON type; otherwise every template is interpolated as text.

use serde_json::Value;

/// Resolves every template inside `value` (strings, arrays and objects, recursively).
pub fn resolve(value: &Value, ctx: &Value) -> Value {
    match value {
        Value::String(s) => resolve_str(s, ctx),
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, ctx)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve(v, ctx)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Resolves one string: a lone template returns the typed value, otherwise text.
pub fn resolve_str(s: &str, ctx: &Value) -> Value {
    let trimmed = s.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        return lookup(inner.trim(), ctx).cloned().unwrap_or(Value::Null);
    }
    if !s.contains("{{") {
        return Value::String(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                match lookup(after[..end].trim(), ctx) {
                    Some(Value::String(text)) => out.push_str(text),
                    Some(Value::Null) | None => {}
                    Some(other) => out.push_str(&other.to_string()),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Value::String(out)
}

/// The value at `ctx.a.b[0].c` (or `ctx.a.b.0.c`); `None` when the root is not `ctx` or a
/// step is missing.
pub fn lookup<'a>(path: &str, ctx: &'a Value) -> Option<&'a Value> {
    let rest = path.strip_prefix("ctx")?;
    let mut current = ctx;
    let normalized = rest.replace('[', ".").replace(']', "");
    for step in normalized.split('.').filter(|s| !s.is_empty()) {
        let step = step.trim_matches(|c| c == '"' || c == '\'');
        current = match current {
            Value::Object(map) => map.get(step)?,
            Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lone_template_keeps_the_json_type() {
        let ctx = json!({"input": {"n": 3, "list": [1, 2], "obj": {"a": true}}});
        assert_eq!(resolve_str("{{ctx.input.n}}", &ctx), json!(3));
        assert_eq!(resolve_str(" {{ ctx.input.list }} ", &ctx), json!([1, 2]));
        assert_eq!(resolve_str("{{ctx.input.obj}}", &ctx), json!({"a": true}));
        assert_eq!(resolve_str("{{ctx.input.missing}}", &ctx), Value::Null);
    }

    #[test]
    fn mixed_text_interpolates() {
        let ctx = json!({"input": {"name": "Ada", "n": 2, "o": {"k": 1}}});
        assert_eq!(
            resolve_str("Hi {{ctx.input.name}} x{{ctx.input.n}}", &ctx),
            json!("Hi Ada x2")
        );
        assert_eq!(resolve_str("{{ctx.input.o}}!", &ctx), json!("{\"k\":1}!"));
        assert_eq!(resolve_str("a {{ctx.nope}} b", &ctx), json!("a  b"));
        assert_eq!(
            resolve_str("open {{ctx.input.name", &ctx),
            json!("open {{ctx.input.name")
        );
    }

    #[test]
    fn paths_index_arrays_and_refuse_other_roots() {
        let ctx = json!({"rows": [{"id": 7}]});
        assert_eq!(lookup("ctx.rows[0].id", &ctx), Some(&json!(7)));
        assert_eq!(lookup("ctx.rows.0.id", &ctx), Some(&json!(7)));
        assert_eq!(lookup("process.env", &ctx), None);
        assert_eq!(
            resolve(&json!({"x": ["{{ctx.rows[0].id}}"]}), &ctx),
            json!({"x": [7]})
        );
    }
}
