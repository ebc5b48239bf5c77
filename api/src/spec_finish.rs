//! The last touches poem-openapi cannot express, applied to the generated spec so that client
//! generators read it right:
//!
//! - JSON media types are plain `application/json`: the `; charset=utf-8` parameter poem adds
//!   makes some generators treat the body as opaque text.
//! - Server-Sent Events are `text/event-stream` whose schema is the payload of *one* event
//!   (what each `data:` line holds), not poem's `type: array` that generators type as a JSON
//!   array; the payload schemas of the free-form streams are declared as components.
//! - A field of an enum or `oneOf` type is its `$ref` with a sibling `description`, not
//!   poem's `allOf: [{$ref}, {description}]`: generators (openapi-python-client) take `allOf`
//!   only of objects with properties and drop the whole schema otherwise.
//! - `format: email` where the handler checks an address itself, and `nullable` where null
//!   and absent mean the same (the type stays `Option<T>`).
//!
//! Status and type fields are not here: they are Rust enums (`routes::enums`), so poem lists
//! their values itself.

use serde_json::{Value, json};

const JSON_WITH_CHARSET: &str = "application/json; charset=utf-8";

/// The event payload of each SSE operation, by operation id: its schema and what to say.
fn sse_payloads() -> [(&'static str, Value, &'static str); 3] {
    [
        (
            "streamInstanceEvents",
            json!({"$ref": "#/components/schemas/InstanceEvent"}),
            "Server-Sent Events: each event's `data` is one JSON `InstanceEvent` (a `log` row, \
             or, last, the final `status` after which the stream closes).",
        ),
        (
            "streamAppPage",
            json!({"$ref": "#/components/schemas/AppPageStreamEvent"}),
            "Server-Sent Events: each `message` event's `data` is one JSON value a listener \
             action pushed to the page, or a `StreamLagNotice`. Comment lines keep the \
             connection alive every 15 s.",
        ),
        (
            "tailListener",
            json!({"$ref": "#/components/schemas/ListenerTailMessage"}),
            "Server-Sent Events: each `message` event's `data` is one JSON `ListenerTailEvent`, \
             or a `StreamLagNotice`. Comment lines keep the connection alive every 15 s.",
        ),
    ]
}

/// Payload schemas of the free-form streams, which poem cannot derive (their Rust type is a
/// JSON value built by the hub).
fn stream_components() -> [(&'static str, Value); 4] {
    [
        (
            "StreamLagNotice",
            json!({
                "type": "object",
                "title": "StreamLagNotice",
                "description": "Sent instead of the events a slow client missed.",
                "required": ["lagged"],
                "properties": {"lagged": {"type": "integer", "format": "int64", "minimum": 1,
                    "description": "How many events this client missed."}}
            }),
        ),
        (
            "AppPageStreamEvent",
            json!({
                "title": "AppPageStreamEvent",
                "description": "Whatever JSON a `push_to_app_page` action sent (free-form), or a \
                                `StreamLagNotice`."
            }),
        ),
        (
            "ListenerTailEvent",
            json!({
                "type": "object",
                "title": "ListenerTailEvent",
                "description": "One event the listener's pipeline processed.",
                "required": ["listenerID", "eventID", "filtered", "truncated", "timestamp"],
                "properties": {
                    "listenerID": {"type": "string", "format": "uuid"},
                    "eventID": {"type": "string", "format": "uuid"},
                    "rawEvent": {"description": "The event as received (absent when truncated)."},
                    "transformedEvent": {"description": "After the transform, if any."},
                    "transformError": {"type": "string"},
                    "filtered": {"type": "boolean", "description": "The filter dropped it."},
                    "truncated": {"type": "boolean",
                        "description": "Too large to publish: read the inbox row by `eventID`."},
                    "timestamp": {"type": "string", "format": "date-time"}
                }
            }),
        ),
        (
            "ListenerTailMessage",
            json!({
                "title": "ListenerTailMessage",
                "description": "A `ListenerTailEvent` or a `StreamLagNotice`.",
                "oneOf": [
                    {"$ref": "#/components/schemas/ListenerTailEvent"},
                    {"$ref": "#/components/schemas/StreamLagNotice"}
                ]
            }),
        ),
    ]
}

/// `(schema, property, format)`: string formats poem cannot say. The handler checks the
/// value itself (an email without `@` is a 422).
const FORMATS: &[(&str, &str, &str)] = &[("AddMember", "email", "email")];

/// `(schema, property, what null means)`: fields that take `null` without being
/// `Nullable<T>` in Rust because null and absent mean the same. The Jet Admin editor (React
/// Flow) sends `sourceHandle: null` on every edge that leaves a node's default handle.
const NULL_IS_ABSENT: &[(&str, &str, &str)] = &[
    (
        "WorkflowEdge",
        "sourceHandle",
        "null or absent: the source node's default route",
    ),
    (
        "WorkflowEdge",
        "targetHandle",
        "null or absent: the target's only input",
    ),
];

/// Applies the touches to a spec as poem-openapi generated it.
pub fn finish(spec: &str) -> String {
    let Ok(mut spec) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    strip_charset(&mut spec);
    let not_objects: Vec<String> = spec["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, schema)| schema.get("enum").is_some() || schema.get("oneOf").is_some())
        .map(|(name, _)| format!("#/components/schemas/{name}"))
        .collect();
    unwrap_refs(&mut spec, &not_objects);
    let payloads = sse_payloads();
    if let Some(paths) = spec["paths"].as_object_mut() {
        for operation in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in operation.values_mut() {
                let Some((_, schema, description)) =
                    payloads.iter().find(|(id, _, _)| op["operationId"] == *id)
                else {
                    continue;
                };
                if let Some(content) = op["responses"]["200"]["content"].as_object_mut() {
                    content.insert("text/event-stream".into(), json!({"schema": schema}));
                }
                let response = &mut op["responses"]["200"]["description"];
                let said = response.as_str().unwrap_or_default();
                *response = Value::String(format!("{said} {description}").trim().to_owned());
            }
        }
    }
    if let Some(schemas) = spec["components"]["schemas"].as_object_mut() {
        for (name, schema) in stream_components() {
            schemas.insert(name.into(), schema);
        }
        for (schema, property, meaning) in NULL_IS_ABSENT {
            if let Some(field) = schemas
                .get_mut(*schema)
                .and_then(|s| s["properties"].get_mut(*property))
                .and_then(Value::as_object_mut)
            {
                field.insert("nullable".into(), json!(true));
                let said = field
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let described = format!("{said} {meaning}.").trim().to_owned();
                field.insert("description".into(), json!(described));
            }
        }
        for (schema, property, format) in FORMATS {
            if let Some(field) = schemas
                .get_mut(*schema)
                .and_then(|s| s["properties"].get_mut(*property))
                .and_then(Value::as_object_mut)
            {
                field.insert("format".into(), json!(format));
            }
        }
    }
    let mut out = serde_json::to_string_pretty(&spec).unwrap_or_default();
    out.push('\n');
    out
}

/// Rewrites each `{allOf: [{$ref: <one of targets>}, {description}…], description}` to
/// `{$ref, description}`. A wrapper that says more (`nullable`, a type, a second `$ref`) stays.
fn unwrap_refs(value: &mut Value, targets: &[String]) {
    match value {
        Value::Object(map) => {
            let target = map
                .get("allOf")
                .and_then(Value::as_array)
                .and_then(|parts| {
                    let refs: Vec<&str> = parts.iter().filter_map(|p| p["$ref"].as_str()).collect();
                    let described_only = parts.iter().all(|p| {
                        p.as_object()
                            .is_some_and(|o| o.keys().all(|k| k == "$ref" || k == "description"))
                    });
                    (refs.len() == 1 && described_only && targets.iter().any(|e| e == refs[0]))
                        .then(|| refs[0].to_owned())
                });
            let plain = map.keys().all(|k| k == "allOf" || k == "description");
            match target {
                Some(target) if plain => {
                    map.remove("allOf");
                    map.insert("$ref".into(), Value::String(target));
                }
                _ => map.values_mut().for_each(|v| unwrap_refs(v, targets)),
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| unwrap_refs(v, targets)),
        _ => {}
    }
}

/// Renames every `application/json; charset=utf-8` content key to `application/json`.
fn strip_charset(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(content) = map.remove(JSON_WITH_CHARSET) {
                map.insert("application/json".into(), content);
            }
            map.values_mut().for_each(strip_charset);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_charset),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::finish;
    use serde_json::Value;

    #[test]
    fn charset_goes_and_event_streams_carry_one_payload() {
        let raw = r#"{"paths": {"/e": {"get": {"operationId": "tailListener", "responses": {
            "200": {"description": "Live.", "content": {"text/event-stream":
                {"schema": {"type": "array", "format": "event-stream", "items": {}}}}},
            "429": {"description": "Busy.", "content": {"application/json; charset=utf-8":
                {"schema": {"type": "string"}}}}}}}},
            "components": {"schemas": {}}}"#;
        let spec: Value = serde_json::from_str(&finish(raw)).expect("JSON");
        let op = &spec["paths"]["/e"]["get"]["responses"];
        assert_eq!(
            op["200"]["content"]["text/event-stream"]["schema"]["$ref"],
            "#/components/schemas/ListenerTailMessage"
        );
        assert!(op["429"]["content"]["application/json"].is_object());
        assert!(
            op["429"]["content"]
                .get("application/json; charset=utf-8")
                .is_none()
        );
        assert!(spec["components"]["schemas"]["ListenerTailEvent"].is_object());
    }

    #[test]
    fn an_enum_or_union_field_is_its_ref_with_a_description() {
        let raw = r##"{"paths": {}, "components": {"schemas": {
            "Mode": {"type": "string", "enum": ["a", "b"]},
            "Child": {"type": "object", "properties": {}},
            "Either": {"type": "object", "oneOf": [{"$ref": "#/components/schemas/Child"}]},
            "Parent": {"type": "object", "properties": {
                "mode": {"allOf": [{"$ref": "#/components/schemas/Mode"},
                    {"description": "How."}], "description": "How."},
                "either": {"allOf": [{"$ref": "#/components/schemas/Either"},
                    {"description": "Which."}], "description": "Which."},
                "maybe": {"allOf": [{"$ref": "#/components/schemas/Mode"}], "nullable": true},
                "child": {"allOf": [{"$ref": "#/components/schemas/Child"},
                    {"description": "Who."}], "description": "Who."}
            }}}}}"##;
        let spec: Value = serde_json::from_str(&finish(raw)).expect("JSON");
        let parent = &spec["components"]["schemas"]["Parent"]["properties"];
        assert_eq!(
            parent["mode"],
            serde_json::json!({"$ref": "#/components/schemas/Mode", "description": "How."})
        );
        assert_eq!(parent["either"]["$ref"], "#/components/schemas/Either");
        assert!(
            parent["maybe"]["allOf"].is_array(),
            "nullable stays wrapped"
        );
        assert!(parent["child"]["allOf"].is_array(), "objects stay wrapped");
    }
}
