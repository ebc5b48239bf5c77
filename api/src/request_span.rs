//! One span per request (what poem's `Tracing` middleware logs), made a child of the caller's
//! span when the request carries a W3C `traceparent`: the span's context is what a new
//! instance stores, so a run joins its caller's trace.

use poem::web::RealIp;
use poem::{Endpoint, FromRequest as _, IntoResponse, Middleware, Request, Response, Result};
use std::time::Instant;
use tracing::Instrument as _;

/// The middleware; wraps the whole application.
pub struct RequestSpan;

impl<E: Endpoint> Middleware<E> for RequestSpan {
    type Output = RequestSpanEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestSpanEndpoint { inner: ep }
    }
}

/// The endpoint [`RequestSpan`] makes.
pub struct RequestSpanEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RequestSpanEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let remote_addr = RealIp::from_request_without_body(&req)
            .await
            .ok()
            .and_then(|ip| ip.0)
            .map_or_else(|| req.remote_addr().to_string(), |ip| ip.to_string());
        // A request is a root of the log context whatever the server's task was in.
        let span = tracing::info_span!(
            parent: None,
            "request",
            %remote_addr,
            method = %req.method(),
            uri = %req.original_uri(),
        );
        let traceparent = req
            .header("traceparent")
            .filter(|_| jet_shared::telemetry::exporting());
        jet_shared::telemetry::set_remote_parent(&span, traceparent);
        async move {
            let started = Instant::now();
            let result = self.inner.call(req).await;
            let duration = started.elapsed();
            match result {
                Ok(resp) => {
                    let resp = resp.into_response();
                    tracing::info!(status = %resp.status(), ?duration, "response");
                    Ok(resp)
                }
                Err(err) => {
                    tracing::info!(status = %err.status(), error = %err, ?duration, "error");
                    Err(err)
                }
            }
        }
        .instrument(span)
        .await
    }
}
