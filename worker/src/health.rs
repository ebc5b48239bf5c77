//! `/health`, `/ready` and `/metrics` of a worker process, for probes, operators and
//! Prometheus: `/ready` is 503 and names the roles that are down while any role is restarting
//! after a failure; `/metrics` is the process's Prometheus text (`jet_shared::metrics`).

use jet_shared::lifecycle::{RoleHealth, Shutdown};
use jet_shared::metrics::Scrape;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{EndpointExt, IntoResponse, Response, Route, Server, get, handler, http::StatusCode};
use serde_json::json;
use std::net::SocketAddr;

#[handler]
fn liveness() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[handler]
fn readiness(health: Data<&RoleHealth>) -> Response {
    let roles: serde_json::Map<String, serde_json::Value> = health
        .snapshot()
        .into_iter()
        .map(|(role, s)| {
            let state =
                json!({"running": s.running, "restarts": s.restarts, "lastError": s.last_error});
            (role, state)
        })
        .collect();
    match health.unready_reason() {
        None => Json(json!({"status": "ready", "roles": roles})).into_response(),
        Some(reason) => Json(json!({"status": "not_ready", "reason": reason, "roles": roles}))
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response(),
    }
}

#[handler]
async fn metrics(scrape: Data<&Scrape>) -> Response {
    scrape
        .render()
        .await
        .with_content_type(jet_shared::metrics::CONTENT_TYPE)
        .into_response()
}

/// Binds `addr` now (so a taken port fails the start) and serves until shutdown: `/health`
/// and `/ready` when given the roles' health, `/metrics` when given a scrape.
pub async fn serve(
    addr: SocketAddr,
    roles: Option<RoleHealth>,
    scrape: Option<Scrape>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    let mut app = Route::new();
    let mut serves = Vec::new();
    if let Some(roles) = roles {
        app = app
            .at("/health", get(liveness))
            .at("/ready", get(readiness).data(roles));
        serves.extend(["/health", "/ready"]);
    }
    if let Some(scrape) = scrape {
        app = app.at("/metrics", get(metrics).data(scrape));
        serves.push("/metrics");
    }
    if let Some(local) = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
    {
        let paths = serves.join(" ");
        tracing::info!(addr = %local, paths, "worker endpoint listening");
    }
    tokio::spawn(async move {
        let stop = async move { shutdown.wait().await };
        if let Err(err) = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, stop, None)
            .await
        {
            tracing::error!(error = %err, "worker endpoint failed");
        }
    });
    Ok(())
}
