//! `/health` (the process is up) and `/ready` (the database answers and its schema is current).

use super::ApiTags;
use super::enums::wire_enum;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

/// Liveness.
#[derive(Debug, Object)]
pub struct Health {
    pub status: HealthStatus,
    pub timestamp: DateTime<Utc>,
}

/// Readiness detail.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Readiness {
    pub status: ReadyStatus,
    /// Why the service is not ready.
    pub reason: Option<String>,
}

wire_enum! {
    /// Always `ok`: the process answers.
    pub enum HealthStatus {
        Ok = "ok",
    }
}

wire_enum! {
    /// `ready` with a 200, `not_ready` with a 503.
    pub enum ReadyStatus {
        Ready = "ready",
        NotReady = "not_ready",
    }
}

/// `/ready` answers.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database is reachable and every migration is applied.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// The database is unreachable, migrations are pending, or a worker role of this process
    /// (`jet dev`) is down and restarting.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

/// Health routes.
pub struct HealthApi {
    pub state: AppState,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process answers
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: HealthStatus::Ok,
            timestamp: Utc::now(),
        })
    }

    /// Readiness: the database answers and migrations are current
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self) -> ReadyResponse {
        let not_ready = |reason: String| {
            ReadyResponse::NotReady(Json(Readiness {
                status: ReadyStatus::NotReady,
                reason: Some(reason),
            }))
        };
        if let Some(reason) = self.state.worker_roles.unready_reason() {
            return not_ready(reason);
        }
        match jet_shared::db::pending_migrations(&self.state.pool).await {
            Ok(pending) if pending.is_empty() => ReadyResponse::Ready(Json(Readiness {
                status: ReadyStatus::Ready,
                reason: None,
            })),
            Ok(pending) => not_ready(format!(
                "{} migrations pending; run `jet migrate`",
                pending.len()
            )),
            Err(err) => {
                tracing::warn!(error = %err, "readiness check failed");
                not_ready("database unreachable".into())
            }
        }
    }
}
