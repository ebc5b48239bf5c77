//! The OpenAPI security scheme: the `Authorization` header carries either
//! `api_key <64 hex>` (upstream's API-key form) or `Bearer <JWT>` (users).

use crate::edge::BodyTypeMismatch;
use crate::error::AuthFailure;
use crate::state::AppState;
use jet_shared::auth::{AuthError, Principal, authenticate};
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;
use std::sync::{Arc, OnceLock};

/// Authenticated caller of an operation.
#[derive(SecurityScheme)]
#[oai(
    rename = "JetAuth",
    ty = "api_key",
    key_name = "Authorization",
    key_in = "header",
    checker = "check"
)]
/// `Authorization: api_key <64 hex chars>` for API keys, or `Authorization: Bearer <JWT>` for
/// users (subject = the user's firebaseID).
pub struct JetAuth(pub Principal);

/// Where the checker leaves the principal for the audit middleware, which runs outside the
/// operation and cannot see its extractors.
#[derive(Clone, Default)]
pub struct PrincipalSlot(pub Arc<OnceLock<Principal>>);

async fn check(req: &Request, header: ApiKey) -> poem::Result<Principal> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| poem::Error::from(AuthFailure(AuthError::Backend)))?;
    let principal = authenticate(&state.pool, &state.jwt, Some(&header.key))
        .await
        .map_err(|e| poem::Error::from(AuthFailure(e)))?;
    if let Some(slot) = req.data::<PrincipalSlot>() {
        let _ = slot.0.set(principal.clone());
    }
    // Checked at the edge against the spec; refused here so that it comes after a 401.
    if let Some(mismatch) = req.data::<BodyTypeMismatch>() {
        return Err(poem::Error::from(mismatch.clone()));
    }
    Ok(principal)
}
