//! `{{ctx.path}}` templates resolved against the instance context (upstream's expression
//! engine with `allowedRoots: ['ctx']`; data queries use the root `inputs`): a string that is
//! exactly one template keeps the value's JSON type; otherwise every template is interpolated
//! as text.

use serde_json::Value;

/// Resolves every template inside `value` (strings, arrays and objects, recursively).
pub fn resolve(value: &Value, ctx: &Value) -> Value {
    resolve_in(value, "ctx", ctx)
}

/// [`resolve`] with templates rooted at `root` (`{{<root>.path}}`) instead of `ctx`.
pub fn resolve_in(value: &Value, root: &str, scope: &Value) -> Value {
    match value {
        Value::String(s) => resolve_str_in(s, root, scope),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve_in(v, root, scope)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve_in(v, root, scope)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Resolves one string: a lone template returns the typed value, otherwise text.
pub fn resolve_str(s: &str, ctx: &Value) -> Value {
    resolve_str_in(s, "ctx", ctx)
}

fn resolve_str_in(s: &str, root: &str, ctx: &Value) -> Value {
    let trimmed = s.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        return lookup_in(inner.trim(), root, ctx)
            .cloned()
            .unwrap_or(Value::Null);
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
                match lookup_in(after[..end].trim(), root, ctx) {
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
    lookup_in(path, "ctx", ctx)
}

/// The value at `<root>.a.b[0]` in `scope`; `None` when the path has another root.
pub fn lookup_in<'a>(path: &str, root: &str, scope: &'a Value) -> Option<&'a Value> {
    let rest = path.strip_prefix(root)?;
    if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
        return None; // `ctxx.a` is not rooted at `ctx`
    }
    let ctx = scope;
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
