//! A local HTTP server that records every request it receives, for tests that prove where a
//! secret went (or did not go). `/redirect?to=<url>` answers 302 to `<url>`; `/echo-401`
//! answers 401 with the request's query and `Authorization` in its body, as a careless API
//! would; everything else answers 200 with `{"ok": true}`.

use poem::http::StatusCode;
use poem::{EndpointExt, Request, Response, Route, Server, handler, listener::TcpListener};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A running capture server.
#[derive(Clone)]
pub struct Capture {
    /// `http://<ip>:<port>`.
    pub base: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Capture {
    /// Starts a server on `ip` (e.g. `127.0.0.1`, or `127.0.0.2` for a second loopback
    /// address) and a free port.
    pub async fn start(ip: &str) -> Self {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = Route::new()
            .at("/*path", record)
            .at("/", record)
            .data(seen.clone());
        tokio::spawn(Server::new(TcpListener::bind(addr.to_string())).run(app));
        let base = format!("http://{addr}");
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        // Ready when it answers; the probe itself is forgotten.
        for _ in 0..100 {
            if client.get(format!("{base}/ready")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        seen.lock().expect("lock").clear();
        Self { base, seen }
    }

    /// Every request received so far: method, path, query and headers.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().expect("lock").clone()
    }

    /// Whether any received request carried `needle` anywhere (path, query, headers).
    pub fn received(&self, needle: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| r.to_string().contains(needle))
    }
}

#[handler]
fn record(req: &Request, seen: poem::web::Data<&Arc<Mutex<Vec<Value>>>>) -> Response {
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(v.to_str().unwrap_or_default().to_owned()),
            )
        })
        .collect();
    let query = req.uri().query().unwrap_or_default().to_owned();
    seen.0.lock().expect("lock").push(json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": query,
        "headers": headers,
    }));
    let path = req.uri().path();
    if path.ends_with("/redirect") {
        let to = reqwest::Url::parse(&format!("http://query/?{query}"))
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "to")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_else(|| "/".to_owned());
        return Response::builder()
            .status(StatusCode::FOUND)
            .header("Location", to)
            .finish();
    }
    if path.ends_with("/echo-401") {
        let auth = req.header("authorization").unwrap_or_default();
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(format!("bad credentials in {query} / {auth}"));
    }
    Response::builder()
        .content_type("application/json")
        .body(r#"{"ok": true}"#)
}
