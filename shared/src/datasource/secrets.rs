//! Secret fields of datasource options: masked in every response, and restored from the
//! stored value when an update sends the mask back (upstream's `MASK_PLACEHOLDER`). The same
//! rule for what counts as secret redacts the audit log (`audit::redact`).

use serde_json::{Map, Value};

/// What a secret value looks like in a response. An update that sends it keeps the stored
/// secret.
pub const MASK: &str = "********";

/// Endings that mark a key as secret (compared lowercase, without `_` and `-`): `dbPassword`,
/// `clientSecret`, `accessToken`, `api_key`, `connectionString` are secret; `apiKeyTitle` is not.
const SECRET_ENDINGS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "credential",
    "credentials",
    "connectionstring",
    "authorization",
    "accesskey",
];

/// Whether a key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_ENDINGS.iter().any(|e| normalized.ends_with(e))
}

/// Whether `key` of the object `map` holds a secret: a secret key, or the `value` of a
/// `{key: "Authorization", value}` pair (upstream's header lists).
pub fn is_secret_field(map: &Map<String, Value>, key: &str) -> bool {
    is_secret_key(key)
        || (key == "value"
            && map
                .get("key")
                .and_then(Value::as_str)
                .is_some_and(is_secret_key))
}

/// The options with every secret value replaced by [`MASK`], recursively. Header lists in
/// upstream's `[{key, value}]` shape count too: `{key: "Authorization", value}` masks `value`.
pub fn mask(options: &Value) -> Value {
    match options {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let shown = if is_secret_field(map, k) && is_present(v) {
                        Value::String(MASK.into())
                    } else {
                        mask(v)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        other => other.clone(),
    }
}

fn is_present(v: &Value) -> bool {
    !matches!(v, Value::Null) && v.as_str() != Some("")
}

/// `incoming` with every [`MASK`] replaced by the value at the same place in `stored`, so a
/// client that edits a masked form without retyping its secrets keeps them. A mask with no
/// stored counterpart becomes null rather than the literal mask.
pub fn restore(incoming: &Value, stored: &Value) -> Value {
    match incoming {
        Value::String(s) if s == MASK => stored.clone(),
        Value::Object(map) => {
            let empty = Map::new();
            let stored_map = stored.as_object().unwrap_or(&empty);
            Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let before = stored_map.get(k).unwrap_or(&Value::Null);
                        (k.clone(), restore(v, before))
                    })
                    .collect(),
            )
        }
        Value::Array(items) => {
            let stored_items = stored.as_array();
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let before = stored_items.and_then(|s| s.get(i)).unwrap_or(&Value::Null);
                        restore(v, before)
                    })
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_wherever_they_nest() {
        let options = json!({
            "connectionDetails": {"host": "db", "password": "pw", "user": "u"},
            "headers": [{"key": "Authorization", "value": "Bearer t"}, {"key": "Accept", "value": "json"}],
            "auth": {"type": "bearer", "token": "t", "api_key": ""}
        });
        let masked = mask(&options);
        assert_eq!(masked["connectionDetails"]["password"], MASK);
        assert_eq!(masked["connectionDetails"]["host"], "db");
        assert_eq!(masked["headers"][0]["value"], MASK);
        assert_eq!(masked["headers"][1]["value"], "json");
        assert_eq!(masked["auth"]["token"], MASK);
        assert_eq!(
            masked["auth"]["api_key"], "",
            "an empty secret shows as empty"
        );
        assert!(!masked.to_string().contains("pw"));
    }

    #[test]
    fn a_returned_mask_keeps_the_stored_secret_and_new_values_win() {
        let stored = json!({"connectionDetails": {"host": "db", "password": "old"}, "headers": [{"key": "X-Token", "value": "keep"}]});
        let incoming = json!({"connectionDetails": {"host": "db2", "password": MASK}, "headers": [{"key": "X-Token", "value": MASK}]});
        let merged = restore(&incoming, &stored);
        assert_eq!(
            merged,
            json!({"connectionDetails": {"host": "db2", "password": "old"}, "headers": [{"key": "X-Token", "value": "keep"}]})
        );
        let changed = json!({"connectionDetails": {"password": "new"}});
        assert_eq!(
            restore(&changed, &stored)["connectionDetails"]["password"],
            "new"
        );
        assert_eq!(
            restore(&json!({"password": MASK}), &json!({})),
            json!({"password": null})
        );
    }
}
