//! `/metrics` of the API process and the HTTP figures behind it: every request counted by
//! OpenAPI operation id and status, with its latency.
//!
//! The label is the operation id poem-openapi attaches to the response (the request
//! boundary, `edge`, keeps it on error responses too), never the raw path: a path carries
//! ids, and one series per id would grow without bound. Requests no operation answered are
//! `unmatched`, except the few fixed routes outside the spec, named after what they serve.

use crate::state::AppState;
use jet_shared::metrics::{self, Scrape};
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, get, handler};
use poem_openapi::OperationId;
use std::time::{Duration, Instant};

#[handler]
async fn scrape(scrape: Data<&Scrape>) -> Response {
    scrape
        .render()
        .await
        .with_content_type(metrics::CONTENT_TYPE)
        .into_response()
}

/// The `/metrics` endpoint over `state`'s pool; marks the process as an API (`jet_api_info`).
pub fn endpoint(state: &AppState) -> impl Endpoint + use<> {
    metrics::set_api_info();
    let every = Duration::from_secs(state.config.metrics_sample_seconds.max(1));
    get(scrape).data(Scrape::new(state.pool.clone(), every))
}

/// Middleware: records every request's operation, status and latency.
pub async fn track<E: Endpoint>(ep: std::sync::Arc<E>, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let result = ep.call(req).await.map(IntoResponse::into_response);
    let (operation, status) = match &result {
        Ok(resp) => (resp.data::<OperationId>().map(|o| o.0), resp.status()),
        Err(err) => (err.data::<OperationId>().map(|o| o.0), err.status()),
    };
    metrics::record_http_request(
        operation.unwrap_or_else(|| unnamed_route(&path)),
        status.as_u16(),
        started.elapsed(),
    );
    result
}

/// The label of a request no OpenAPI operation answered.
fn unnamed_route(path: &str) -> &'static str {
    match path {
        "/metrics" => "metrics",
        "/openapi.json" => "openapi_spec",
        p if p == "/docs" || p.starts_with("/docs/") => "docs",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::unnamed_route;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(unnamed_route("/api/v1/nope/123"), "unmatched");
        assert_eq!(unnamed_route("/metrics/x"), "unmatched");
        assert_eq!(unnamed_route("/docs/index.css"), "docs");
        assert_eq!(unnamed_route("/docsx"), "unmatched");
        assert_eq!(unnamed_route("/metrics"), "metrics");
    }
}
