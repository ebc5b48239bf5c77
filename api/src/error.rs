//! The one error type of the API: `{code, message}` bodies with stable snake_case codes.
//!
//! Every variant documents its status (the doc comment becomes the OpenAPI description).
//! 5xx bodies never carry internal text; the cause is logged once, here.

use jet_shared::auth::AuthError;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

/// The body of every error response.
#[derive(Debug, Clone, Object, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `permission_denied`.
    pub code: String,
    /// Human-readable explanation, safe to show to the caller.
    pub message: String,
}

/// Every error an operation can return.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "from_request_error")]
pub enum ApiError {
    /// Malformed input: unparsable JSON, a wrong type, or an invalid path or query parameter.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, malformed, unknown, expired or disabled credentials.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// Authenticated, but not allowed: a missing permission, a disabled tenant.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource in this tenant (other tenants' resources are never revealed).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (a duplicate, the last admin).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is larger than the configured limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// Well-formed input that is semantically invalid (an unknown role id, a blank title).
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// An internal failure; the body says nothing more.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        code: code.to_owned(),
        message: message.into(),
    })
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest(body(code, message))
    }

    /// A 422 with code `validation_failed`.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::Unprocessable(body("validation_failed", message))
    }

    /// A 422 with its own stable code (a failed query, an unreachable datasource, …).
    pub fn unprocessable_as(code: &str, message: impl Into<String>) -> Self {
        ApiError::Unprocessable(body(code, message))
    }

    /// A 403 with the given code.
    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        ApiError::Forbidden(body(code, message))
    }

    /// A 500 whose cause is logged here and not shown.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %ErrorChain(cause), "internal error");
        ApiError::Internal(body("internal_error", "internal error"))
    }

    /// The status and body, for middleware that renders errors itself.
    pub fn parts(&self) -> (StatusCode, &ErrorBody) {
        match self {
            ApiError::BadRequest(b) => (StatusCode::BAD_REQUEST, &b.0),
            ApiError::Unauthorized(b) => (StatusCode::UNAUTHORIZED, &b.0),
            ApiError::Forbidden(b) => (StatusCode::FORBIDDEN, &b.0),
            ApiError::NotFound(b) => (StatusCode::NOT_FOUND, &b.0),
            ApiError::Conflict(b) => (StatusCode::CONFLICT, &b.0),
            ApiError::PayloadTooLarge(b) => (StatusCode::PAYLOAD_TOO_LARGE, &b.0),
            ApiError::Unprocessable(b) => (StatusCode::UNPROCESSABLE_ENTITY, &b.0),
            ApiError::Internal(b) => (StatusCode::INTERNAL_SERVER_ERROR, &b.0),
        }
    }

    /// Maps any poem error that reached the edge (a routing miss, a parse failure, an auth
    /// failure) to a JSON error with a stable code. Used for both operation input errors and
    /// the service-wide catch-all.
    pub fn from_poem(err: poem::Error) -> Self {
        if let Some(auth) = err.downcast_ref::<AuthFailure>() {
            return ApiError::Unauthorized(body(auth.0.code(), auth.0.to_string()));
        }
        if let Some(mismatch) = err.downcast_ref::<crate::edge::BodyTypeMismatch>() {
            return ApiError::BadRequest(body(mismatch.code, mismatch.message.clone()));
        }
        if err.is::<poem_openapi::error::AuthorizationError>() {
            return ApiError::Unauthorized(body(
                AuthError::Missing.code(),
                AuthError::Missing.to_string(),
            ));
        }
        if let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
            return ApiError::BadRequest(body(
                "invalid_parameter",
                format!("invalid parameter {}: {}", param.name, param.reason),
            ));
        }
        if let Some(path) = err.downcast_ref::<poem_openapi::error::ParsePathError>() {
            // Path parameters are renamed `param0…` inside poem-openapi; do not show that name.
            return ApiError::BadRequest(body(
                "invalid_parameter",
                format!("invalid path parameter: {}", path.reason),
            ));
        }
        let status = err.status();
        let message = err.to_string();
        match status {
            StatusCode::NOT_FOUND => ApiError::NotFound(body("route_not_found", "no such route")),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::BadRequest(body(
                "method_not_allowed",
                "method not allowed on this route",
            )),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body(
                "payload_too_large",
                "request body exceeds the configured limit",
            )),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(body("unauthorized", message)),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::BadRequest(body(
                "unsupported_media_type",
                "send the body as application/json",
            )),
            s if s.is_server_error() => {
                tracing::error!(error = %message, "internal error");
                ApiError::Internal(body("internal_error", "internal error"))
            }
            _ => ApiError::BadRequest(body("invalid_request", message)),
        }
    }
}

fn from_request_error(err: poem::Error) -> ApiError {
    ApiError::from_poem(err)
}

/// An authentication failure carried through poem's error type from the security checker.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthFailure(pub AuthError);

impl poem::error::ResponseError for AuthFailure {
    fn status(&self) -> StatusCode {
        match self.0 {
            AuthError::Backend => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<jet_shared::Error> for ApiError {
    fn from(err: jet_shared::Error) -> Self {
        use jet_shared::Error;
        match err {
            Error::NotFound(what) => {
                ApiError::NotFound(body("not_found", format!("{what} not found")))
            }
            Error::Conflict { constraint } => {
                let (code, message) = conflict_message(&constraint);
                ApiError::Conflict(body(code, message))
            }
            Error::Invalid(message) => ApiError::unprocessable(message),
            Error::Forbidden { code, message } => ApiError::forbidden(code, message),
            Error::Database(source) => ApiError::internal(&source),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        jet_shared::Error::from(err).into()
    }
}

/// Conflict codes by constraint name, as the migrations name them.
fn conflict_message(constraint: &str) -> (&'static str, String) {
    match constraint {
        "pktblUsersTenantsRelationship" | "uniquetblUsersTenantsRelationship" => (
            "already_member",
            "the user is already a member of this tenant".into(),
        ),
        "request_not_pending" => ("request_not_pending", "this request was already answered, expired or cancelled".into()),
        "not_a_test_instance" => ("not_a_test_instance", "only test instances can be deleted; cancel a real run instead".into()),
        "request_expired" => ("request_expired", "this request has expired".into()),
        "pkTblWorkflowNodes" => (
            "node_id_taken",
            "a node id is already used by another workflow; node ids are global UUIDs (clone a workflow to copy it)".into(),
        ),
        "dlq_not_replayable" => ("dlq_not_replayable", "only PENDING and PARKED rows can be replayed".into()),
        "dlq_not_discardable" => ("dlq_not_discardable", "only PENDING and PARKED rows can be discarded".into()),
        other if other.starts_with("dlq_source_not_replayable:") => (
            "dlq_source_not_replayable",
            format!("rows of source {} cannot be replayed yet", &other["dlq_source_not_replayable:".len()..]),
        ),
        "datasource_captured" => (
            "datasource_in_use",
            "a CDC listener captures changes from this datasource: delete the listener first, which drops its replication slot on the source".into(),
        ),
        "fkTblCronJobsWorkflowID" => ("workflow_in_use", "cron jobs still run this workflow; delete them first".into()),
        "uq_tblUsers_firebaseID" => (
            "firebase_id_taken",
            "another user has this firebaseID".into(),
        ),
        "last_admin" => (
            "last_admin",
            "a tenant must keep at least one ADMIN member".into(),
        ),
        "fkUserTenantRoleRole" | "fkTblAPIKeyRoleMappingsRoleID" => (
            "role_in_use",
            "the role was changed concurrently; retry".into(),
        ),
        other => (
            "conflict",
            format!("the change conflicts with existing data ({other})"),
        ),
    }
}

/// Displays an error with its whole `source()` chain, for logs.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
