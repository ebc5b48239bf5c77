//! JSON request bodies are checked against the spec's own schema before any operation sees
//! them: a field takes exactly the JSON type the spec gives it, one of its values where the
//! spec lists them (`enum`), and `null` only where the spec says `nullable`.
//!
//! Why here and not in the types: poem-openapi parses a `String` field from a JSON number or
//! boolean (`{"roleTitle": true}` became the title `"true"`) and an `Option<T>` field from
//! `null` whatever the spec says. Checking every body against the generated spec fixes that
//! for every field of every operation at once, and keeps the server and the spec from
//! disagreeing: the spec is the rule that is enforced.

use serde_json::{Map, Value};

/// A body that breaks its schema: the field (a JSON path such as `nodes[0].data`) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct TypeMismatch {
    pub field: String,
    pub reason: String,
}

impl TypeMismatch {
    /// The stable error code: `missing_field` for an absent required field, else
    /// `invalid_type` (a wrong JSON type, or a value its enum does not list: to a client both
    /// are a value outside the field's type).
    pub fn code(&self) -> &'static str {
        if self.reason == REQUIRED {
            "missing_field"
        } else {
            "invalid_type"
        }
    }
}

const REQUIRED: &str = "is required";

impl std::fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "the body {}", self.reason)
        } else {
            write!(f, "field `{}` {}", self.field, self.reason)
        }
    }
}

/// Checks `value` against `schema`, resolving `$ref`s in `components`.
pub fn check(
    value: &Value,
    schema: &Value,
    components: &Map<String, Value>,
) -> Result<(), TypeMismatch> {
    Checker { components }.check(value, schema, &mut String::new(), 0)
}

struct Checker<'a> {
    components: &'a Map<String, Value>,
}

/// Deeper than any schema of ours; a self-referencing schema stops here instead of looping.
const MAX_DEPTH: usize = 64;

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        let mut schema = schema;
        for _ in 0..8 {
            let Some(name) = schema["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            else {
                break;
            };
            match self.components.get(name) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn check(
        &self,
        value: &Value,
        schema: &Value,
        path: &mut String,
        depth: usize,
    ) -> Result<(), TypeMismatch> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let schema = self.resolve(schema);
        let fail = |path: &String, reason: String| {
            Err(TypeMismatch {
                field: path.clone(),
                reason,
            })
        };
        if value.is_null() {
            // A schema with no type says nothing about null (a free-form value takes it).
            return if self.allows_null(schema, depth) {
                Ok(())
            } else {
                fail(path, "must not be null".into())
            };
        }
        if let Some(all) = schema["allOf"].as_array() {
            for part in all {
                self.check(value, part, path, depth + 1)?;
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema[key].as_array()
                && !options.is_empty()
                && !options
                    .iter()
                    .any(|o| self.check(value, o, &mut path.clone(), depth + 1).is_ok())
            {
                return fail(path, "matches none of the shapes the spec allows".into());
            }
        }
        let Some(expected) = schema["type"].as_str() else {
            return Ok(());
        };
        let ok = match expected {
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !ok {
            return fail(
                path,
                format!("must be {}, not {}", article(expected), kind(value)),
            );
        }
        if let Some(values) = schema["enum"].as_array()
            && !values.contains(value)
        {
            let listed: Vec<String> = values.iter().map(ToString::to_string).collect();
            let mut shown = value.to_string();
            if shown.len() > 64 {
                shown = format!("{}…", shown.chars().take(64).collect::<String>());
            }
            return fail(
                path,
                format!("must be one of {}, not {shown}", listed.join(", ")),
            );
        }
        match value {
            Value::Array(items) if schema.get("items").is_some() => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.check(item, &schema["items"], path, depth + 1)?;
                    path.truncate(len);
                }
            }
            Value::Object(fields) => {
                let properties = schema["properties"].as_object();
                for (name, field) in fields {
                    let field_schema = properties
                        .and_then(|p| p.get(name))
                        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                    if let Some(field_schema) = field_schema {
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(name);
                        self.check(field, field_schema, path, depth + 1)?;
                        path.truncate(len);
                    }
                }
                // After the types: a wrong type is the more precise message.
                let required = schema["required"].as_array().into_iter().flatten();
                if let Some(missing) = required
                    .filter_map(Value::as_str)
                    .find(|name| !fields.contains_key(*name))
                {
                    let mut field = path.clone();
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(missing);
                    return fail(&field, REQUIRED.into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Null is allowed by `nullable: true`, by a schema with no type (free-form), or through
    /// an `allOf` whose every part allows it.
    fn allows_null(&self, schema: &Value, depth: usize) -> bool {
        if schema["nullable"] == Value::Bool(true) {
            return true;
        }
        if depth > MAX_DEPTH {
            return false;
        }
        if let Some(all) = schema["allOf"].as_array() {
            return schema.get("type").is_none()
                && all
                    .iter()
                    .all(|p| self.allows_null(self.resolve(p), depth + 1));
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema[key].as_array() {
                return options
                    .iter()
                    .any(|o| self.allows_null(self.resolve(o), depth + 1));
            }
        }
        schema.get("type").is_none() && schema.get("$ref").is_none()
    }
}

fn article(expected: &str) -> &'static str {
    match expected {
        "string" => "a string",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" => "a number",
        "array" => "an array",
        "object" => "an object",
        _ => "a value",
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::{Map, Value, json};

    fn components() -> Map<String, Value> {
        json!({
            "Role": {"type": "object", "required": ["title"], "properties": {
                "title": {"type": "string"},
                "note": {"type": "string", "nullable": true},
                "count": {"type": "integer"},
                "config": {},
                "tags": {"type": "array", "items": {"type": "string"}},
                "child": {"$ref": "#/components/schemas/Child"},
                "mode": {"$ref": "#/components/schemas/Mode"},
                "wrapped": {"allOf": [{"$ref": "#/components/schemas/Child"}], "nullable": true}
            }},
            "Child": {"type": "object", "properties": {"on": {"type": "boolean"}}},
            "Mode": {"type": "string", "enum": ["fast", "slow"]}
        })
        .as_object()
        .cloned()
        .expect("an object")
    }

    fn error(body: Value) -> Option<String> {
        let schema = json!({"$ref": "#/components/schemas/Role"});
        check(&body, &schema, &components())
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn each_field_takes_only_its_own_type() {
        let table = [
            (
                json!({"title": true}),
                Some("field `title` must be a string, not a boolean"),
            ),
            (json!({"count": 1}), Some("field `title` is required")),
            (
                json!({"title": 5}),
                Some("field `title` must be a string, not a number"),
            ),
            (
                json!({"title": null}),
                Some("field `title` must not be null"),
            ),
            (
                json!({"title": "t", "count": "5"}),
                Some("field `count` must be an integer, not a string"),
            ),
            (
                json!({"title": "t", "count": 1.5}),
                Some("field `count` must be an integer, not a fractional number"),
            ),
            (
                json!({"title": "t", "tags": ["a", 1]}),
                Some("field `tags[1]` must be a string, not a number"),
            ),
            (
                json!({"title": "t", "child": {"on": "yes"}}),
                Some("field `child.on` must be a boolean, not a string"),
            ),
            (
                json!({"title": "t", "child": null}),
                Some("field `child` must not be null"),
            ),
            (
                json!({"title": "t", "wrapped": {"on": 1}}),
                Some("field `wrapped.on` must be a boolean, not a number"),
            ),
            (json!([]), Some("the body must be an object, not an array")),
            (
                json!({"title": "t", "mode": "FAST"}),
                Some(r#"field `mode` must be one of "fast", "slow", not "FAST""#),
            ),
            (
                json!({"title": "t", "mode": 1}),
                Some("field `mode` must be a string, not a number"),
            ),
            (json!({"title": "t", "mode": "slow"}), None),
            (
                json!({"title": "t", "note": null, "config": null, "wrapped": null}),
                None,
            ),
            (
                json!({"title": "t", "count": 3, "tags": [], "child": {"on": true}, "unknown": 1}),
                None,
            ),
        ];
        for (body, expected) in table {
            assert_eq!(error(body.clone()).as_deref(), expected, "{body}");
        }
    }
}
