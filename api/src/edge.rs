//! The request boundary around every route: bounded body reading (413), JSON errors for
//! everything that fails before or outside an operation, and one audit row per mutating
//! request by an authenticated caller.

use crate::error::ApiError;
use crate::security::PrincipalSlot;
use crate::state::AppState;
use jet_shared::audit::{self, AuditEntry};
use jet_shared::auth::Principal;
use jet_shared::ids::TenantId;
use poem::http::Method;
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use serde_json::{Value, json};

/// Runs `ep` for `req` inside the boundary.
pub async fn around<E: Endpoint>(
    ep: std::sync::Arc<E>,
    mut req: Request,
) -> poem::Result<Response> {
    let Some(state) = req.data::<AppState>().cloned() else {
        return Err(poem::Error::from_status(
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        ));
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    // Read the body once, bounded; chunked bodies without Content-Length are bounded too.
    let body = match req
        .take_body()
        .into_bytes_limit(state.config.max_body_bytes)
        .await
    {
        Ok(bytes) => bytes,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            return Ok(ApiError::from_poem(poem::Error::from_status(
                poem::http::StatusCode::PAYLOAD_TOO_LARGE,
            ))
            .into_response());
        }
        Err(err) => return Ok(ApiError::from_poem(poem::Error::from(err)).into_response()),
    };
    req.set_body(Body::from_bytes(body.clone()));
    let slot = PrincipalSlot::default();
    req.set_data(slot.clone());

    let (mut response, operation) = match ep.call(req).await {
        Ok(output) => {
            let resp = output.into_response();
            let op = resp.data::<OperationId>().map(|o| o.0);
            (resp, op)
        }
        Err(err) => {
            let op = err.data::<OperationId>().map(|o| o.0);
            let resp = if err.is_from_response() {
                err.into_response()
            } else {
                ApiError::from_poem(err).into_response()
            };
            (resp, op)
        }
    };

    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let (true, Some(principal)) = (mutating, slot.0.get()) {
        let status = response.status();
        let error = if status.is_client_error() || status.is_server_error() {
            let bytes = response.take_body().into_bytes().await.unwrap_or_default();
            let parsed = serde_json::from_slice::<Value>(&bytes).ok();
            response.set_body(bytes);
            parsed
        } else {
            None
        };
        let request_json = serde_json::from_slice::<Value>(&body).ok();
        let entry = AuditEntry {
            user_id: principal.user_id(),
            api_key_id: principal.api_key_id(),
            tenant_id: audit_tenant(
                &state,
                principal,
                tenant_in_path(&path),
                status.is_success(),
            )
            .await,
            kind: operation.unwrap_or("unknown").to_owned(),
            sub_type: Some(format!("{method} {path}")),
            success: status.is_success(),
            metadata: json!({
                "status": status.as_u16(),
                "actor": {"userID": principal.user_id(), "apiKeyID": principal.api_key_id()},
                "request": request_json.as_ref().map(audit::redact),
            }),
            error,
        };
        // The request already happened; a failed audit write is logged, not turned into an
        // error the caller could misread as "not done".
        if let Err(err) = audit::insert(&state.pool, &entry).await {
            tracing::error!(error = ?err, operation = entry.kind, "audit write failed");
        }
    }
    Ok(response)
}

/// The tenant whose trail gets the row: only one the caller belongs to, so a probe of another
/// tenant (answered 404) never writes into that tenant's log. An API key belongs to its own
/// tenant whatever the path names. A user's row goes to the path's tenant when they are a
/// member, or when the request succeeded there (which took membership: a member who just
/// left or deleted the tenant); otherwise to no tenant.
async fn audit_tenant(
    state: &AppState,
    principal: &Principal,
    path_tenant: Option<TenantId>,
    succeeded: bool,
) -> Option<TenantId> {
    match principal {
        Principal::ApiKey { tenant_id, .. } => Some(*tenant_id),
        Principal::User { user_id } => {
            let tenant = path_tenant?;
            if succeeded {
                return Some(tenant);
            }
            match jet_shared::user::membership_role(&state.pool, tenant, *user_id).await {
                Ok(role) => role.map(|_| tenant),
                Err(err) => {
                    tracing::warn!(error = ?err, "audit: membership lookup failed");
                    None
                }
            }
        }
    }
}

/// The tenant a `/api/v1/tenants/{tenantID}/…` or `/api/v1/auth/config/{tenantID}` path names.
fn tenant_in_path(path: &str) -> Option<TenantId> {
    let rest = path
        .strip_prefix("/api/v1/tenants/")
        .or_else(|| path.strip_prefix("/api/v1/auth/config/"))?;
    let id = rest.split('/').next()?;
    uuid::Uuid::parse_str(id).ok().map(TenantId)
}

#[cfg(test)]
mod tests {
    use super::tenant_in_path;

    #[test]
    fn tenant_is_read_from_tenant_and_config_paths() {
        let id = "7f1c2a8e-4a0b-4c1e-9d7e-0b9f4f1a2c3d";
        assert_eq!(
            tenant_in_path(&format!("/api/v1/tenants/{id}/roles")).map(|t| t.to_string()),
            Some(id.to_owned())
        );
        assert_eq!(
            tenant_in_path(&format!("/api/v1/auth/config/{id}")).map(|t| t.to_string()),
            Some(id.to_owned())
        );
        assert!(tenant_in_path("/api/v1/tenants").is_none());
        assert!(tenant_in_path("/api/v1/tenants/not-a-uuid").is_none());
    }
}
