//! The `restapi` driver: a base URL with default headers and auth on the datasource; the query
//! names the endpoint, method, headers, query parameters and body, all templated with
//! `{{inputs.x}}`. One HTTP client per process, with connect and request timeouts, a redirect
//! limit and a cap on the response size.

use super::driver::{Driver, DriverError, Limits, QueryOutput};
use super::network::{CheckError, DenyList, HostDenied};
use super::secrets::SecretAt;
use crate::workflow::template::resolve_in;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Where this driver reads credentials: every `auth` value it sends, the datasource's
/// credential headers, and the base URL's password and query.
pub const SECRETS: &[SecretAt] = &[
    SecretAt::Field(&["auth", "password"]),
    SecretAt::Field(&["auth", "token"]),
    SecretAt::Field(&["auth", "value"]),
    SecretAt::Field(&["auth", "apiKey"]),
    SecretAt::Headers(&["headers"]),
    SecretAt::Url(&["baseUrl"]),
    SecretAt::Url(&["baseURL"]),
    SecretAt::Url(&["url"]),
];

/// Connecting to the API gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

pub struct RestApiDriver {
    client: reqwest::Client,
    deny: Arc<DenyList>,
}

impl RestApiDriver {
    /// A driver whose every connection, redirects included, goes only where `deny` allows:
    /// names resolve through the deny-list, address literals are checked before sending and
    /// at each redirect. Proxy settings from the environment are ignored, since a proxy would
    /// resolve and connect on our behalf, out of the deny-list's reach.
    pub fn new(deny: Arc<DenyList>) -> Self {
        let redirect_deny = deny.clone();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                // `previous` holds the first URL too: the same count as Policy::limited.
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match attempt
                    .url()
                    .host_str()
                    .map(|h| redirect_deny.check_name(h))
                {
                    Some(Err(denied)) => attempt.error(denied),
                    _ => attempt.follow(),
                }
            }))
            .dns_resolver(CheckedResolver { deny: deny.clone() })
            .no_proxy()
            .user_agent("jet-fleet")
            .build()
            .expect("a client with static settings builds");
        Self { client, deny }
    }
}

impl Default for RestApiDriver {
    fn default() -> Self {
        Self::new(Arc::new(DenyList::allow_all()))
    }
}

/// Name resolution that refuses names with a denied address, so the client connects only to
/// addresses that were checked.
struct CheckedResolver {
    deny: Arc<DenyList>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let deny = self.deny.clone();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in.
            let addrs = deny.check_host(name.as_str(), 0).await.map_err(
                |e| -> Box<dyn std::error::Error + Send + Sync> {
                    match e {
                        CheckError::Denied(d) => Box::new(d),
                        CheckError::Unresolved(m) => m.into(),
                    }
                },
            )?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// What the options name as the place to connect: the base URL's scheme, host, port and path.
/// Stored secrets may only be sent where this is unchanged.
fn target(options: &Value) -> Option<String> {
    let url = base_url(options).ok()?;
    Some(format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
        url.path()
    ))
}

/// The datasource's base URL (`baseUrl`, or upstream variants `baseURL` / `url`).
fn base_url(options: &Value) -> Result<reqwest::Url, String> {
    let raw = ["baseUrl", "baseURL", "url"]
        .iter()
        .find_map(|k| options.get(*k).and_then(Value::as_str))
        .filter(|u| !u.trim().is_empty())
        .ok_or("baseUrl is required")?;
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| format!("baseUrl is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("baseUrl must be http or https".into());
    }
    Ok(url)
}

/// Header or parameter pairs from upstream's `[{key, value}]` lists or a plain object.
fn pairs(value: Option<&Value>) -> Vec<(String, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| {
                let key = i.get("key").and_then(Value::as_str)?.trim();
                (!key.is_empty())
                    .then(|| (key.to_owned(), text(i.get("value").unwrap_or(&Value::Null))))
            })
            .collect(),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        _ => vec![],
    }
}

/// Percent-encodes a value interpolated into a URL path, so an input cannot add segments,
/// queries or fragments.
fn encode_path_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `apiEndpoint` with its templates filled in, each value percent-encoded.
fn endpoint(template: &str, inputs: &Value) -> String {
    let encoded: Map<String, Value> = inputs
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(encode_path_value(&text)))
        })
        .collect();
    match resolve_in(
        &Value::String(template.to_owned()),
        "inputs",
        &Value::Object(encoded),
    ) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl RestApiDriver {
    /// A request with the datasource's default headers and auth applied.
    fn request(
        &self,
        method: reqwest::Method,
        mut url: reqwest::Url,
        options: &Value,
    ) -> Result<reqwest::RequestBuilder, DriverError> {
        let auth = options.get("auth").cloned().unwrap_or(Value::Null);
        let field = |k: &str| {
            auth.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let key_name = auth
            .get("key")
            .or_else(|| auth.get("headerName"))
            .and_then(Value::as_str)
            .unwrap_or("X-API-Key")
            .to_owned();
        let key_value = field("value") + &field("apiKey");
        let key_in_query = auth.get("in").and_then(Value::as_str) == Some("query");
        let kind = auth.get("type").and_then(Value::as_str).unwrap_or("none");
        if kind == "apiKey" && key_in_query {
            url.query_pairs_mut().append_pair(&key_name, &key_value);
        }
        let mut req = self.client.request(method, url);
        for (k, v) in pairs(options.get("headers")) {
            req = req.header(k, v);
        }
        match kind {
            "none" => {}
            "basic" => req = req.basic_auth(field("username"), Some(field("password"))),
            "bearer" => req = req.bearer_auth(field("token")),
            "apiKey" if key_in_query => {}
            "apiKey" => req = req.header(key_name, key_value),
            other => {
                return Err(DriverError::Options(format!(
                    "auth.type must be none, basic, bearer or apiKey, not `{other}`"
                )));
            }
        }
        Ok(req)
    }
}

/// Sorts a client error. Its text never includes the URL: an API key sent as a query
/// parameter would travel with it into responses, logs and the audit trail.
fn transport(err: reqwest::Error) -> DriverError {
    let err = err.without_url();
    if let Some(denied) = find_cause::<HostDenied>(&err) {
        DriverError::Denied(denied.to_string())
    } else if err.is_timeout() {
        DriverError::Timeout
    } else if err.is_connect() || err.is_redirect() {
        DriverError::Unreachable(format!("{err}: {}", source_chain(&err)))
    } else {
        DriverError::Failed(format!("{err}: {}", source_chain(&err)))
    }
}

fn find_cause<T: std::error::Error + 'static>(err: &dyn std::error::Error) -> Option<&T> {
    let mut cause = err.source();
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<T>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

impl RestApiDriver {
    /// `Err` when the URL's host is denied as it is written (an address literal, a listed
    /// name); names are checked again, by address, as they resolve.
    fn check_url(&self, url: &reqwest::Url) -> Result<(), DriverError> {
        match url.host_str() {
            Some(host) => self
                .deny
                .check_name(host)
                .map_err(|e| DriverError::Denied(e.to_string())),
            None => Err(DriverError::Options("baseUrl has no host".into())),
        }
    }
}

/// The causes under an error, which carry the useful part (connection refused, DNS, TLS).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = err.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

impl Driver for RestApiDriver {
    fn validate_options(&self, options: &Value) -> Result<(), String> {
        base_url(options).map(|_| ())
    }

    fn target(&self, options: &Value) -> Option<String> {
        target(options)
    }

    fn test<'a>(
        &'a self,
        _datasource_id: Option<Uuid>,
        options: &'a Value,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            let url = base_url(options).map_err(DriverError::Options)?;
            self.check_url(&url)?;
            // Any HTTP answer proves the API is reachable with these settings.
            self.request(reqwest::Method::GET, url, options)?
                .timeout(timeout)
                .send()
                .await
                .map_err(transport)?;
            Ok(())
        })
    }

    fn execute<'a>(
        &'a self,
        _datasource_id: Option<Uuid>,
        options: &'a Value,
        query: &'a Value,
        inputs: &'a Value,
        limits: Limits,
    ) -> BoxFuture<'a, Result<QueryOutput, DriverError>> {
        Box::pin(async move {
            let base = base_url(options).map_err(DriverError::Options)?;
            let path = endpoint(
                query
                    .get("apiEndpoint")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                inputs,
            );
            let mut url = reqwest::Url::parse(&format!(
                "{}/{}",
                base.as_str().trim_end_matches('/'),
                path.trim_start_matches('/')
            ))
            .map_err(|e| DriverError::Options(format!("apiEndpoint does not form a URL: {e}")))?;
            let resolved = resolve_in(query, "inputs", inputs);
            let params = pairs(resolved.get("queryParams"));
            if !params.is_empty() {
                url.query_pairs_mut().extend_pairs(&params);
            }
            let method = query
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("GET")
                .to_ascii_uppercase();
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| DriverError::Options(format!("unknown HTTP method `{method}`")))?;
            self.check_url(&url)?;
            let mut req = self.request(method, url, options)?.timeout(limits.timeout);
            for (k, v) in pairs(resolved.get("headers")) {
                req = req.header(k, v);
            }
            req = match resolved.get("body") {
                None | Some(Value::Null) => req,
                Some(Value::String(text)) if text.is_empty() => req,
                Some(Value::String(text)) => req.body(text.clone()),
                Some(json) => req.json(json),
            };
            let mut response = req.send().await.map_err(transport)?;
            let status = response.status();
            let is_json = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.contains("json"));
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > limits.max_bytes {
                    return Err(DriverError::TooLarge(format!(
                        "the response is larger than {} bytes",
                        limits.max_bytes
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            let data = match serde_json::from_slice::<Value>(&body) {
                Ok(json) if is_json || !text.trim().is_empty() => json,
                _ => Value::String(text.clone()),
            };
            if !status.is_success() {
                let excerpt: String = text.chars().take(500).collect();
                return Err(DriverError::Failed(format!("HTTP {status}: {excerpt}")));
            }
            Ok(QueryOutput {
                data,
                columns: None,
                row_count: None,
                truncated: false,
                status: Some(status.as_u16()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_inputs_are_encoded_so_they_stay_one_segment() {
        assert_eq!(
            endpoint(
                "/users/{{inputs.id}}/posts",
                &json!({"id": "7/../admin?x=1"})
            ),
            "/users/7%2F..%2Fadmin%3Fx%3D1/posts"
        );
        assert_eq!(endpoint("/n/{{inputs.n}}", &json!({"n": 5})), "/n/5");
    }

    #[test]
    fn headers_come_from_lists_or_objects() {
        assert_eq!(
            pairs(Some(
                &json!([{"key": "A", "value": "1"}, {"key": " ", "value": "x"}])
            )),
            [("A".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            pairs(Some(&json!({"B": 2}))),
            [("B".to_owned(), "2".to_owned())]
        );
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(base_url(&json!({"baseUrl": "http://localhost:8080/api"})).is_ok());
        assert!(base_url(&json!({"baseUrl": "file:///etc/passwd"})).is_err());
        assert!(base_url(&json!({})).is_err());
    }
}
