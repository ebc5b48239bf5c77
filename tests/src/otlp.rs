//! An in-process OTLP/HTTP receiver: decodes the protobuf `ExportTraceServiceRequest`s that
//! exporters POST to `/v1/traces` and keeps every span they carry.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use poem::{Body, EndpointExt, Request, Response, Route, Server};
use prost::Message as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One received span, ids as lowercase hex (a root's `parent` is empty).
#[derive(Debug, Clone)]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's span id; empty for a root.
    pub parent: String,
    /// The `tracing` span's name (`request`, `node`, …).
    pub name: String,
    /// The exporting process's `service.name`.
    pub service: String,
    /// Attributes, numbers and booleans written as text.
    pub attributes: HashMap<String, String>,
}

impl Span {
    /// An attribute, or `""`.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// A running receiver; stops with the test's runtime.
pub struct Receiver {
    /// Where it listens; exporters get `http://{addr}` as their endpoint.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Listens on `addr` (`127.0.0.1:0` for any free port).
    pub async fn start(addr: &str) -> Self {
        let (addr, acceptor) = jet_api::bind(addr.parse().expect("an address"))
            .await
            .unwrap_or_else(|e| panic!("the OTLP receiver cannot listen: {e}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (store, count) = (spans.clone(), requests.clone());
        let endpoint = poem::endpoint::make(move |mut req: Request| {
            let (store, count) = (store.clone(), count.clone());
            async move {
                let body = req.take_body().into_bytes().await?;
                *count.lock().expect("count") += 1;
                let export = ExportTraceServiceRequest::decode(body).map_err(|e| {
                    poem::Error::from_string(e.to_string(), poem::http::StatusCode::BAD_REQUEST)
                })?;
                store.lock().expect("spans").extend(spans_of(export));
                // An empty ExportTraceServiceResponse: everything accepted.
                Ok::<_, poem::Error>(
                    Response::builder()
                        .content_type("application/x-protobuf")
                        .body(Body::empty()),
                )
            }
        });
        let app = Route::new().at("/v1/traces", endpoint.map_to_response());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self {
            addr,
            spans,
            requests,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }

    /// How many export requests arrived (with or without spans).
    pub fn requests(&self) -> usize {
        *self.requests.lock().expect("count")
    }
}

fn spans_of(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(text_of)
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Span {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent: hex::encode(&span.parent_span_id),
                name: span.name,
                service: service.clone(),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text_of(kv)))
                    .collect(),
            });
        }
    }
    out
}

fn text_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
