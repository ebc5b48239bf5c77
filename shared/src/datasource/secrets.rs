//! Secret fields of datasource options: masked in every response, redacted in the audit trail,
//! scrubbed from error text, and restored from the stored value when an update sends the mask
//! back (upstream's `MASK_PLACEHOLDER`).
//!
//! What is secret comes first from the drivers: each declares where it reads credentials
//! ([`SecretAt`]), so a shape such as `auth: {type: "apiKey", headerName, value}` is covered
//! because the driver sends `auth.value`, not because of the key's name. A key-name rule
//! (`dbPassword`, `clientSecret`, `{key: "Authorization", value}` pairs) backs it up for shapes
//! no driver declares.

use serde_json::{Map, Value};

/// What a secret value looks like in a response. An update that sends it keeps the stored
/// secret.
pub const MASK: &str = "********";

/// Where a driver reads a secret in its options.
#[derive(Debug, Clone, Copy)]
pub enum SecretAt {
    /// The value at this path of object keys.
    Field(&'static [&'static str]),
    /// A header list at this path (`[{key, value}]` or `{name: value}`): the values of headers
    /// whose name carries credentials ([`is_credential_name`]).
    Headers(&'static [&'static str]),
    /// A URL at this path: its password and every query value.
    Url(&'static [&'static str]),
}

/// The secrets of a datasource type; an unknown type (or none) gets every driver's.
fn declared(datasource_type: Option<&str>) -> Vec<SecretAt> {
    use super::{postgres, restapi};
    match datasource_type {
        Some("postgresql") => postgres::SECRETS.to_vec(),
        Some("restapi") => restapi::SECRETS.to_vec(),
        _ => [postgres::SECRETS, restapi::SECRETS].concat(),
    }
}

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

/// Parts that mark a header or parameter name as carrying credentials: `Authorization`,
/// `X-API-Key`, `Cookie`, `X-Auth-Token`, `X-Signature`; `Accept` or `X-Tenant` do not.
const CREDENTIAL_PARTS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "key",
    "cookie",
    "session",
    "signature",
    "password",
    "credential",
];

fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let normalized = normalized(key);
    SECRET_ENDINGS.iter().any(|e| normalized.ends_with(e))
}

/// Whether a header (or parameter) name carries credentials.
pub fn is_credential_name(name: &str) -> bool {
    let normalized = normalized(name);
    CREDENTIAL_PARTS.iter().any(|p| normalized.contains(p))
}

/// Whether `key` of the object `map` holds a secret by the key-name rule: a secret key, or the
/// `value` of a `{key|name: "Authorization", value}` pair (upstream's header lists).
pub fn is_secret_field(map: &Map<String, Value>, key: &str) -> bool {
    is_secret_key(key)
        || (key == "value"
            && ["key", "name"].iter().any(|k| {
                map.get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(is_credential_name)
            }))
}

fn is_present(v: &Value) -> bool {
    !matches!(v, Value::Null) && v.as_str() != Some("")
}

/// The options of a `datasource_type` datasource with every secret replaced by
/// `replacement` (inside a URL, by [`MASK`]). With no type, every driver's secrets count.
pub fn hide(options: &Value, datasource_type: Option<&str>, replacement: &str) -> Value {
    let mut out = by_key_name(options, replacement);
    for at in declared(datasource_type) {
        match at {
            SecretAt::Field(path) => {
                if let Some(v) = at_path(&mut out, path).filter(|v| is_present(v)) {
                    *v = Value::String(replacement.into());
                }
            }
            SecretAt::Headers(path) => {
                if let Some(headers) = at_path(&mut out, path) {
                    hide_headers(headers, replacement);
                }
            }
            SecretAt::Url(path) => {
                if let Some(v) = at_path(&mut out, path)
                    && let Some(masked) = v.as_str().and_then(mask_url)
                {
                    *v = Value::String(masked);
                }
            }
        }
    }
    out
}

/// The options with every secret replaced by [`MASK`], for responses.
pub fn mask(options: &Value, datasource_type: &str) -> Value {
    hide(options, Some(datasource_type), MASK)
}

fn by_key_name(value: &Value, replacement: &str) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let shown = if is_secret_field(map, k) && is_present(v) {
                        Value::String(replacement.into())
                    } else {
                        by_key_name(v, replacement)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| by_key_name(v, replacement)).collect())
        }
        other => other.clone(),
    }
}

fn at_path<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_object_mut()?.get_mut(*key))
}

fn hide_headers(headers: &mut Value, replacement: &str) {
    match headers {
        Value::Array(items) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                let named = ["key", "name"].iter().any(|k| {
                    item.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(is_credential_name)
                });
                if named && item.get("value").is_some_and(is_present) {
                    item.insert("value".into(), Value::String(replacement.into()));
                }
            }
        }
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                if is_credential_name(name) && is_present(v) {
                    *v = Value::String(replacement.into());
                }
            }
        }
        _ => {}
    }
}

/// `url` with its password and query values masked; `None` when it is not a URL or has
/// nothing to mask.
fn mask_url(url: &str) -> Option<String> {
    let mut parsed = reqwest::Url::parse(url).ok()?;
    let has_password = parsed.password().is_some_and(|p| !p.is_empty());
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if !has_password && pairs.is_empty() {
        return None;
    }
    if has_password {
        parsed.set_password(Some(MASK)).ok()?;
    }
    if !pairs.is_empty() {
        parsed
            .query_pairs_mut()
            .clear()
            .extend_pairs(pairs.iter().map(|(k, _)| (k.as_str(), MASK)));
    }
    Some(parsed.into())
}

/// Every secret string in the options (the values [`hide`] replaces, and the password and
/// query values of URLs), in the forms error text may carry them: as they are and
/// URL-encoded. For scrubbing messages.
pub fn values(options: &Value, datasource_type: &str) -> Vec<String> {
    let hidden = hide(options, Some(datasource_type), MASK);
    let mut found = Vec::new();
    collect_differences(options, &hidden, &mut found);
    let encoded: Vec<String> = found
        .iter()
        .flat_map(|s| {
            let query: String = url_encode_component(s);
            [query.clone(), query.replace("%20", "+")]
        })
        .collect();
    found.extend(encoded);
    found.retain(|s| !s.is_empty());
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

fn url_encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn collect_differences(original: &Value, hidden: &Value, found: &mut Vec<String>) {
    match (original, hidden) {
        (Value::Object(o), Value::Object(h)) => {
            for (k, v) in o {
                if let Some(hv) = h.get(k) {
                    collect_differences(v, hv, found);
                }
            }
        }
        (Value::Array(o), Value::Array(h)) => {
            for (v, hv) in o.iter().zip(h) {
                collect_differences(v, hv, found);
            }
        }
        (Value::String(o), Value::String(h)) if o != h => {
            if h != MASK && h.contains(MASK) {
                if let Ok(url) = reqwest::Url::parse(o) {
                    found.extend(url.password().map(str::to_owned));
                    found.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
                }
            } else {
                found.push(o.clone());
            }
        }
        (original, Value::String(h)) if h == MASK => found.push(original.to_string()),
        _ => {}
    }
}

/// `incoming` options with their masks filled in from `stored`.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub options: Value,
    /// How many stored values filled a mask.
    pub filled: usize,
}

/// `incoming` with every [`MASK`] replaced by the stored value of the same identity: the
/// same object key, the list entry with the same `key`/`name` (header names compare
/// case-insensitively), the same part of the same URL. Never by array position, so a mask
/// cannot pull a secret into a different field. A mask with no stored counterpart becomes
/// null (in a URL, empty) rather than the literal mask.
pub fn restore(incoming: &Value, stored: &Value) -> Restored {
    let mut filled = 0;
    let options = restore_value(incoming, Some(stored), &mut filled);
    Restored { options, filled }
}

fn restore_value(incoming: &Value, stored: Option<&Value>, filled: &mut usize) -> Value {
    match incoming {
        Value::String(s) if s == MASK => match stored.filter(|v| !v.is_null()) {
            Some(v) => {
                *filled += 1;
                v.clone()
            }
            None => Value::Null,
        },
        Value::String(s) if s.contains(MASK) => {
            let before = stored.and_then(Value::as_str).unwrap_or("");
            restore_url(s, before, filled).map_or_else(|| incoming.clone(), Value::String)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let before = stored.and_then(|s| s.get(k));
                    (k.clone(), restore_value(v, before, filled))
                })
                .collect(),
        ),
        Value::Array(items) => {
            let stored_items = stored.and_then(Value::as_array);
            Value::Array(
                items
                    .iter()
                    .map(|v| {
                        let before = identity(v).and_then(|id| {
                            stored_items?.iter().find(|s| {
                                identity(s).is_some_and(|sid| sid.eq_ignore_ascii_case(id))
                            })
                        });
                        restore_value(v, before, filled)
                    })
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// What names a list entry: its `key` (upstream's header and parameter lists) or `name`.
fn identity(item: &Value) -> Option<&str> {
    ["key", "name"]
        .iter()
        .find_map(|k| item.get(*k).and_then(Value::as_str))
}

/// A URL whose masked password or query values take the stored URL's password and the stored
/// value of the same parameter.
fn restore_url(incoming: &str, stored: &str, filled: &mut usize) -> Option<String> {
    let mut url = reqwest::Url::parse(incoming).ok()?;
    let before = reqwest::Url::parse(stored).ok();
    if url.password() == Some(MASK) {
        let password = before.as_ref().and_then(|b| b.password()).unwrap_or("");
        *filled += usize::from(!password.is_empty());
        url.set_password(Some(password)).ok()?;
    }
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if pairs.iter().any(|(_, v)| v == MASK) {
        let stored_pairs: Vec<(String, String)> = before
            .map(|b| b.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let restored: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                if v != MASK {
                    return (k, v);
                }
                let value = stored_pairs
                    .iter()
                    .find(|(sk, _)| *sk == k)
                    .map(|(_, sv)| sv.clone())
                    .unwrap_or_default();
                *filled += usize::from(!value.is_empty());
                (k, value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(restored);
    }
    Some(url.into())
}

/// `message` with every secret of `options` and every URL's credentials and query replaced,
/// for error text shown to callers or stored (logs, instance context, the audit trail).
pub fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = strip_url_credentials(message);
    for secret in secrets {
        out = out.replace(secret.as_str(), crate::audit::FILTERED);
    }
    out
}

/// Cuts the user info and query out of every `scheme://…` in `text`: an HTTP client's error
/// names the URL it called, API key parameters included.
fn strip_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        let without_userinfo = match (url.find('@'), url.find('/')) {
            (Some(at), Some(slash)) if at < slash => &url[at + 1..],
            (Some(at), None) => &url[at + 1..],
            _ => url,
        };
        match without_userinfo.split_once('?') {
            Some((before, _)) => {
                out.push_str(before);
                out.push_str("?[FILTERED]");
            }
            None => out.push_str(without_userinfo),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_secret_a_driver_reads_is_masked() {
        let rest = json!({
            "baseUrl": "https://u:pw1@api.example.com/v1?api_key=k1",
            "headers": [{"key": "Authorization", "value": "Bearer t"}, {"key": "Accept", "value": "json"}],
            "auth": {"type": "apiKey", "headerName": "X-API-Key", "value": "S", "in": "header"}
        });
        let masked = mask(&rest, "restapi");
        assert_eq!(masked["auth"]["value"], MASK);
        assert_eq!(masked["auth"]["headerName"], "X-API-Key");
        assert_eq!(masked["headers"][0]["value"], MASK);
        assert_eq!(masked["headers"][1]["value"], "json");
        assert_eq!(
            masked["baseUrl"],
            "https://u:********@api.example.com/v1?api_key=********"
        );
        for auth in [
            json!({"type": "basic", "username": "u", "password": "S"}),
            json!({"type": "bearer", "token": "S"}),
            json!({"type": "apiKey", "key": "api_key", "apiKey": "S", "in": "query"}),
        ] {
            let shown = mask(&json!({"baseUrl": "http://h", "auth": auth}), "restapi");
            assert!(!shown.to_string().contains("\"S\""), "{shown}");
        }
        let pg = json!({"connectionDetails": {"host": "db", "password": "pw", "user": "u"}, "connectionString": "postgres://u:pw@h/db"});
        let masked = mask(&pg, "postgresql");
        assert_eq!(masked["connectionDetails"]["password"], MASK);
        assert_eq!(masked["connectionDetails"]["host"], "db");
        assert_eq!(masked["connectionString"], MASK);
        assert_eq!(
            mask(&json!({"auth": {"token": ""}}), "restapi")["auth"]["token"],
            "",
            "an empty secret shows as empty"
        );
    }

    #[test]
    fn a_returned_mask_keeps_the_stored_secret_and_new_values_win() {
        let stored = json!({"connectionDetails": {"host": "db", "password": "old"}, "headers": [{"key": "X-Token", "value": "keep"}]});
        let incoming = json!({"connectionDetails": {"host": "db2", "password": MASK}, "headers": [{"key": "X-Token", "value": MASK}]});
        let merged = restore(&incoming, &stored);
        assert_eq!(
            merged.options,
            json!({"connectionDetails": {"host": "db2", "password": "old"}, "headers": [{"key": "X-Token", "value": "keep"}]})
        );
        assert_eq!(merged.filled, 2);
        let changed = json!({"connectionDetails": {"password": "new"}});
        assert_eq!(
            restore(&changed, &stored).options["connectionDetails"]["password"],
            "new"
        );
        assert_eq!(
            restore(&json!({"password": MASK}), &json!({})).options,
            json!({"password": null})
        );
    }

    #[test]
    fn masks_are_restored_by_identity_never_by_position() {
        let stored = json!({"headers": [{"key": "Authorization", "value": "Bearer s"}, {"key": "X-Token", "value": "t"}]});
        let moved = restore(
            &json!({"headers": [{"key": "X-Foo", "value": MASK}]}),
            &stored,
        );
        assert_eq!(
            moved.options,
            json!({"headers": [{"key": "X-Foo", "value": null}]})
        );
        assert_eq!(moved.filled, 0);
        let reordered = restore(
            &json!({"headers": [{"key": "x-token", "value": MASK}, {"key": "Authorization", "value": MASK}]}),
            &stored,
        );
        assert_eq!(reordered.options["headers"][0]["value"], "t");
        assert_eq!(reordered.options["headers"][1]["value"], "Bearer s");
        let url = restore(
            &json!({"baseUrl": "https://u:********@h/v1?v=2&api_key=********"}),
            &json!({"baseUrl": "https://u:pw@h/v1?api_key=k&v=1"}),
        );
        assert_eq!(url.options["baseUrl"], "https://u:pw@h/v1?v=2&api_key=k");
        assert_eq!(url.filled, 2);
    }

    #[test]
    fn error_text_loses_secrets_and_url_credentials() {
        let options = json!({"baseUrl": "http://h/?token=a b", "auth": {"type": "apiKey", "in": "query", "key": "k", "value": "S3CRET"}});
        let secrets = values(&options, "restapi");
        let message = "error sending request for url (http://u:p@h:9/x?k=S3CRET&y=1): S3CRET a+b";
        let scrubbed = scrub(message, &secrets);
        assert!(!scrubbed.contains("S3CRET"), "{scrubbed}");
        assert!(!scrubbed.contains("u:p@"), "{scrubbed}");
        assert!(!scrubbed.contains("a+b"), "{scrubbed}");
        assert!(scrubbed.contains("http://h:9/x?[FILTERED]"), "{scrubbed}");
    }
}
