//! `/health` and `/ready` of a worker process, for probes and operators: `/ready` is 503 and
//! names the roles that are down while any role is restarting after a failure.

use jet_shared::lifecycle::{RoleHealth, Shutdown};
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

/// Binds `addr` now (so a taken port fails the start) and serves until shutdown.
pub async fn serve(
    addr: SocketAddr,
    roles: RoleHealth,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    if let Some(local) = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
    {
        tracing::info!(addr = %local, "worker health endpoint listening");
    }
    let app = Route::new()
        .at("/health", get(liveness))
        .at("/ready", get(readiness))
        .data(roles);
    tokio::spawn(async move {
        let stop = async move { shutdown.wait().await };
        if let Err(err) = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, stop, None)
            .await
        {
            tracing::error!(error = %err, "worker health endpoint failed");
        }
    });
    Ok(())
}
