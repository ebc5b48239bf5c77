//! The request boundary around every route: bounded body reading (413), JSON errors for
//! everything that fails before or outside an operation, and one audit row per mutating
//! request by an authenticated caller.

use crate::error::ApiError;
use crate::routes::webhooks;
use crate::security::PrincipalSlot;
use crate::state::AppState;
use crate::strict_body;
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
    // Webhook deliveries: their own body limit, their endpoint path made one segment, and
    // their body's NUL check left to the handler, after the sender's proof and on the exact
    // bytes the signature covers (a binary body may hold NUL bytes; it is stored as base64).
    let webhook = webhooks::is_ingress(req.uri().path());
    if let Some(uri) = webhook.then(|| webhooks::routable_uri(req.uri())).flatten() {
        *req.uri_mut() = uri;
    }
    let limit = if webhook {
        state.config.webhook_max_body_bytes
    } else {
        state.config.max_body_bytes
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let routes = req.data::<Routes>().cloned().unwrap_or_default();

    // A declared length over the limit is refused before a byte of the body is read.
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(too_large());
    }
    // Read the body once, bounded; chunked bodies without Content-Length are bounded too.
    let body = match req.take_body().into_bytes_limit(limit).await {
        Ok(bytes) => bytes,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => return Ok(too_large()),
        Err(err) => return Ok(ApiError::from_poem(poem::Error::from(err)).into_response()),
    };
    if let Some(problem) = nul_character(&req, (!webhook).then_some(&body[..])) {
        return Ok(ApiError::bad_request("invalid_character", problem).into_response());
    }
    // A body of the wrong types: refused by the security checker right after it
    // authenticates (401s first, and the refusal is audited), or here when nothing
    // authenticates the operation.
    if !webhook
        && !body.is_empty()
        && let Ok(json) = serde_json::from_slice::<Value>(&body)
        && let Some((mismatch, secured)) = routes.check_body(&method, &path, &json)
    {
        if !secured {
            return Ok(ApiError::bad_request(mismatch.code(), mismatch.to_string()).into_response());
        }
        req.set_data(BodyTypeMismatch {
            code: mismatch.code(),
            message: mismatch.to_string(),
        });
    }
    req.set_body(Body::from_bytes(body.clone()));
    let slot = PrincipalSlot::default();
    req.set_data(slot.clone());

    let (mut response, operation) = match ep.call(req).await {
        Ok(output) => {
            let resp = output.into_response();
            let op = resp.data::<OperationId>().map(|o| o.0);
            (resp, op)
        }
        Err(err) if err.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = routes.allowed(&path).join(", ");
            let resp = ApiError::bad_request(
                "method_not_allowed",
                format!("{method} is not allowed on this route; allowed: {allowed}"),
            )
            .into_response();
            let mut resp = resp;
            resp.set_status(poem::http::StatusCode::METHOD_NOT_ALLOWED);
            if let Ok(value) = poem::http::HeaderValue::from_str(&allowed) {
                resp.headers_mut().insert(poem::http::header::ALLOW, value);
            }
            (resp, None)
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

    // An error response was rebuilt from its error: carry the operation over for `metrics`.
    if let Some(op) = operation {
        response.set_data(OperationId(op));
    }
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

/// A body whose types break the operation's schema, for the security checker to refuse.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct BodyTypeMismatch {
    pub code: &'static str,
    pub message: String,
}

impl poem::error::ResponseError for BodyTypeMismatch {
    fn status(&self) -> poem::http::StatusCode {
        poem::http::StatusCode::BAD_REQUEST
    }
}

fn too_large() -> Response {
    ApiError::from_poem(poem::Error::from_status(
        poem::http::StatusCode::PAYLOAD_TOO_LARGE,
    ))
    .into_response()
}

/// Every path template of the spec with its methods and their JSON body schemas: for the
/// `Allow` header of a 405, and for checking a body's types against the spec.
#[derive(Clone, Default)]
pub struct Routes(std::sync::Arc<RouteTable>);

/// One operation of a path template.
struct Operation {
    method: String,
    /// The schema of its JSON request body, if it takes one.
    body: Option<Value>,
    /// Whether it authenticates its caller (its body errors then come after the 401s).
    secured: bool,
}

#[derive(Default)]
struct RouteTable {
    /// Path template split on `/`, then its operations.
    paths: Vec<(Vec<String>, Vec<Operation>)>,
    components: serde_json::Map<String, Value>,
}

impl Routes {
    /// Reads the paths, methods and body schemas of an OpenAPI document.
    pub fn from_spec(spec: &str) -> Self {
        let spec: Value = serde_json::from_str(spec).unwrap_or_default();
        let paths = spec["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(template, ops)| {
                let segments = template.split('/').map(str::to_owned).collect();
                let methods: Vec<Operation> = ops
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(m, op)| Operation {
                        method: m.to_ascii_uppercase(),
                        body: json_body_schema(op),
                        secured: op["security"].as_array().is_some_and(|s| !s.is_empty()),
                    })
                    .collect();
                (segments, methods)
            })
            .collect();
        let components = spec["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        Self(std::sync::Arc::new(RouteTable { paths, components }))
    }

    fn matching<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = &'a (Vec<String>, Vec<Operation>)> + 'a {
        let segments: Vec<&str> = path.split('/').collect();
        self.0.paths.iter().filter(move |(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                })
        })
    }

    /// The methods `path` answers to (`{param}` segments match any segment).
    fn allowed(&self, path: &str) -> Vec<String> {
        let mut methods: Vec<String> = self
            .matching(path)
            .flat_map(|(_, ops)| ops.iter().map(|op| op.method.clone()))
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }

    /// Checks a JSON body against the schema of the operation `method path` routes to. Like
    /// the router, a literal segment wins over a `{param}` (`/queries/queryTest` is not a
    /// query id).
    /// Returns the mismatch and whether the operation is secured.
    fn check_body(
        &self,
        method: &Method,
        path: &str,
        body: &Value,
    ) -> Option<(strict_body::TypeMismatch, bool)> {
        let literal_segments = |t: &Vec<String>| t.iter().filter(|s| !s.starts_with('{')).count();
        let op = self
            .matching(path)
            .filter_map(|(template, ops)| {
                ops.iter()
                    .find(|op| op.method == method.as_str())
                    .map(|op| (literal_segments(template), op))
            })
            .max_by_key(|(literals, _)| *literals)
            .map(|(_, op)| op)?;
        let schema = op.body.as_ref()?;
        strict_body::check(body, schema, &self.0.components)
            .err()
            .map(|mismatch| (mismatch, op.secured))
    }
}

/// The schema of an operation's JSON request body, if it takes one.
fn json_body_schema(op: &Value) -> Option<Value> {
    op["requestBody"]["content"]
        .as_object()?
        .iter()
        .find(|(media, _)| media.starts_with("application/json"))
        .map(|(_, content)| content["schema"].clone())
}

/// Where a request carries a NUL character, if it does: PostgreSQL can store none in `text`
/// or `jsonb`, so it is refused here, for every route, before anything (the audit row
/// included) tries to store it. A URI carries one percent-encoded; a JSON body as `\u0000`.
/// `body` is `None` where the handler checks it itself.
fn nul_character(req: &Request, body: Option<&[u8]>) -> Option<&'static str> {
    let encoded_nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    if encoded_nul(req.uri().path()) {
        return Some("the path contains a NUL character (%00)");
    }
    if req.uri().query().is_some_and(encoded_nul) {
        return Some("a query parameter contains a NUL character (%00)");
    }
    let body = body?;
    if body.contains(&0) {
        return Some("the body contains a NUL byte");
    }
    let json = serde_json::from_slice::<Value>(body).ok()?;
    jet_shared::workflow::storable::contains_nul(&json)
        .then_some("the body contains a NUL character (\\u0000) in a string or a key")
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
    use super::{Routes, tenant_in_path};

    #[test]
    fn allowed_methods_match_templates_segment_by_segment() {
        let routes = Routes::from_spec(
            r#"{"paths": {"/api/v1/tenants/{tenantID}/roles": {"get": {}, "post": {}},
                          "/api/v1/tenants/{tenantID}/roles/{roleID}": {"delete": {}}}}"#,
        );
        assert_eq!(routes.allowed("/api/v1/tenants/x/roles"), ["GET", "POST"]);
        assert_eq!(routes.allowed("/api/v1/tenants/x/roles/y"), ["DELETE"]);
        assert!(routes.allowed("/api/v1/tenants//roles").is_empty());
    }

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
