//! `/webhooks/v1/inbound/…`: deliveries from outside to webhook listeners, committed to the
//! listener's inbox before the 202. No JWT or API key: the sender proves itself with its
//! datasource's token or an HMAC signature (see [`jet_shared::listener::webhook`]).

use super::ApiTags;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use jet_shared::ids::TenantId;
use jet_shared::listener::inbox::MAX_EVENT_BYTES;
use jet_shared::listener::webhook::{self, BodyError, Delivery, Endpoint, Proof};
use poem::Request;
use poem::http::Uri;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
};
use serde_json::Value;
use uuid::Uuid;

/// Where the ingress routes live; the edge reads bodies under this prefix with
/// `JET_WEBHOOK_MAX_BODY_BYTES` and leaves their NUL checks to the handler.
pub const INGRESS_PREFIX: &str = "/webhooks/v1/inbound/";

/// Whether `path` is an ingress route.
pub fn is_ingress(path: &str) -> bool {
    path.starts_with(INGRESS_PREFIX)
}

/// `…/inbound/{tenantID}/a/b` rewritten to `…/inbound/{tenantID}/a%2Fb`: the spec's
/// `{endpointPath}` is one path segment (which a generated client sends with `/` encoded), and
/// a sender's address may spell it with plain slashes. `None` when nothing needs rewriting.
pub fn routable_uri(uri: &Uri) -> Option<Uri> {
    let rest = uri.path().strip_prefix(INGRESS_PREFIX)?;
    let (tenant, endpoint) = rest.split_once('/')?;
    if !endpoint.contains('/') {
        return None;
    }
    let mut path = format!("{INGRESS_PREFIX}{tenant}/{}", endpoint.replace('/', "%2F"));
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The delivery was committed.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct AcceptedEvent {
    /// The inbox event; a repeated `Idempotency-Key` answers the first delivery's.
    #[oai(rename = "eventID")]
    pub event_id: Uuid,
    /// True when this `Idempotency-Key` was delivered before: nothing new was stored.
    pub duplicate: bool,
}

/// 202 once the event is committed.
#[derive(ApiResponse)]
pub enum Received {
    /// Committed to the listener's inbox; the pipeline runs its actions later.
    #[oai(status = 202)]
    Accepted(Json<AcceptedEvent>),
}

/// The body of a delivery exactly as received (the signature covers these bytes), whatever
/// its content type.
pub struct DeliveryBody(pub Vec<u8>);

impl<'a> ApiExtractor<'a> for DeliveryBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Value as Type>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "Any body. JSON (application/json or …+json) is stored parsed; other bodies as \
                 text, or base64 when they are not UTF-8.",
            ),
            content: vec![
                MetaMediaType {
                    content_type: "application/json",
                    schema: <Value as Type>::schema_ref(),
                },
                MetaMediaType {
                    content_type: "application/octet-stream",
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                        format: Some("binary"),
                        ..MetaSchema::new("string")
                    })),
                },
            ],
            required: false,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut poem::RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(body.take()?.into_vec().await?))
    }
}

/// The proof headers of a delivery.
struct ProofHeaders {
    token: Option<String>,
    signature: Option<String>,
    timestamp: Option<String>,
}

impl ProofHeaders {
    /// The token header wins, then `Authorization: Bearer`, then the signature.
    fn proof<'a>(&'a self, req: &'a Request) -> Proof<'a> {
        let bearer = req
            .header(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer "));
        match (&self.token, bearer, &self.signature, &self.timestamp) {
            (Some(token), _, _, _) => Proof::Token(token),
            (None, Some(token), _, _) => Proof::Token(token),
            (None, None, Some(signature), Some(timestamp)) => Proof::Signature {
                signature,
                timestamp,
            },
            _ => Proof::Missing,
        }
    }
}

fn error(
    status: fn(Json<ErrorBody>) -> ApiError,
    code: &str,
    message: impl Into<String>,
) -> ApiError {
    status(Json(ErrorBody {
        code: code.to_owned(),
        message: message.into(),
    }))
}

fn no_listener() -> ApiError {
    error(
        ApiError::NotFound,
        "not_found",
        "no active webhook listener at this address",
    )
}

pub struct WebhooksApi {
    pub state: AppState,
}

impl WebhooksApi {
    /// Checks the proof, stores the event, answers once it is committed.
    async fn receive(
        &self,
        req: &Request,
        endpoint: Option<Endpoint>,
        path: String,
        proof: ProofHeaders,
        idempotency_key: Option<String>,
        body: Vec<u8>,
    ) -> ApiResult<Received> {
        let endpoint = endpoint.ok_or_else(no_listener)?;
        let now = chrono::Utc::now();
        endpoint
            .verify(
                self.state.data.vault().ok(),
                proof.proof(req),
                &body,
                now.timestamp(),
            )
            .map_err(|refused| error(ApiError::Unauthorized, "webhook_unauthorized", refused.0))?;
        let dedupe_key = idempotency_key
            .as_deref()
            .map(webhook::idempotency_key)
            .transpose()
            .map_err(|e| {
                error(
                    ApiError::BadRequest,
                    "invalid_idempotency_key",
                    e.to_string(),
                )
            })?;
        let (decoded, body_encoding) =
            webhook::decode_body(req.content_type(), &body).map_err(|e| match e {
                BodyError::InvalidJson(why) => error(
                    ApiError::BadRequest,
                    "invalid_json",
                    format!("the body is not valid JSON: {why}"),
                ),
                BodyError::Nul => error(
                    ApiError::BadRequest,
                    "invalid_character",
                    "the body contains a NUL character (\\u0000) in a string or a key",
                ),
            })?;
        let raw = webhook::event(Delivery {
            method: req.method().as_str(),
            path: &path,
            headers: req
                .headers()
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
                .collect(),
            body: decoded,
            body_encoding,
            received_at: now,
        });
        let size = raw.to_string().len();
        if size > MAX_EVENT_BYTES {
            return Err(error(
                ApiError::PayloadTooLarge,
                "payload_too_large",
                format!(
                    "the stored event would be {size} bytes; at most {MAX_EVENT_BYTES} are accepted"
                ),
            ));
        }
        let ingested = webhook::accept(&self.state.pool, &endpoint, dedupe_key, raw).await?;
        Ok(Received::Accepted(Json(AcceptedEvent {
            event_id: ingested.event_id,
            duplicate: ingested.duplicate,
        })))
    }
}

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Deliver an event to a webhook listener by its address
    ///
    /// `endpointPath` is the listener's `endpointPath`; it may contain `/` (sent plain or as
    /// `%2F`). Prove the sender with `X-Webhook-Token: <token>` (or `Authorization: Bearer
    /// <token>`), or with `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of
    /// "<timestamp>.<raw body>" keyed with the secret>` and `X-Webhook-Timestamp: <unix
    /// seconds>` within 5 minutes of the server's clock. The token and secret are the listener
    /// datasource's. 401 `webhook_unauthorized` without a valid proof (nothing is stored); 404
    /// for an unknown or inactive listener; 413 over `JET_WEBHOOK_MAX_BODY_BYTES`.
    #[oai(
        path = "/webhooks/v1/inbound/:tenantID/:endpointPath",
        method = "post",
        operation_id = "receiveWebhook"
    )]
    #[allow(clippy::too_many_arguments)] // one per documented header
    async fn receive_at_path(
        &self,
        req: &Request,
        #[oai(name = "tenantID")] tenant_id: Path<String>,
        #[oai(name = "endpointPath")] endpoint_path: Path<String>,
        /// The datasource's webhook token.
        #[oai(name = "X-Webhook-Token")]
        token: Header<Option<String>>,
        /// `sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`, keyed with the secret.
        #[oai(name = "X-Webhook-Signature")]
        signature: Header<Option<String>>,
        /// Unix seconds the signature was made at; refused beyond 5 minutes either way.
        #[oai(name = "X-Webhook-Timestamp")]
        timestamp: Header<Option<String>>,
        /// Makes a retried delivery a no-op that answers the first event's id (1–255 chars).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: DeliveryBody,
    ) -> ApiResult<Received> {
        let endpoint = match Uuid::parse_str(&tenant_id.0) {
            Ok(tenant) => {
                webhook::find_by_path(&self.state.pool, TenantId(tenant), &endpoint_path.0).await?
            }
            Err(_) => None,
        };
        let path = format!("{INGRESS_PREFIX}{}/{}", tenant_id.0, endpoint_path.0);
        let proof = ProofHeaders {
            token: token.0,
            signature: signature.0,
            timestamp: timestamp.0,
        };
        self.receive(req, endpoint, path, proof, idempotency_key.0, body.0)
            .await
    }

    /// Deliver an event to a webhook listener by its id
    ///
    /// Upstream's second address for the same delivery; proof, answers and limits as for
    /// `receiveWebhook`.
    #[oai(
        path = "/webhooks/v1/inbound/:listenerID",
        method = "post",
        operation_id = "receiveWebhookByListener"
    )]
    #[allow(clippy::too_many_arguments)] // one per documented header
    async fn receive_by_listener(
        &self,
        req: &Request,
        #[oai(name = "listenerID")] listener_id: Path<String>,
        /// The datasource's webhook token.
        #[oai(name = "X-Webhook-Token")]
        token: Header<Option<String>>,
        /// `sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`, keyed with the secret.
        #[oai(name = "X-Webhook-Signature")]
        signature: Header<Option<String>>,
        /// Unix seconds the signature was made at; refused beyond 5 minutes either way.
        #[oai(name = "X-Webhook-Timestamp")]
        timestamp: Header<Option<String>>,
        /// Makes a retried delivery a no-op that answers the first event's id (1–255 chars).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: DeliveryBody,
    ) -> ApiResult<Received> {
        let endpoint = match Uuid::parse_str(&listener_id.0) {
            Ok(id) => webhook::find_by_id(&self.state.pool, id).await?,
            Err(_) => None,
        };
        let path = format!("{INGRESS_PREFIX}{}", listener_id.0);
        let proof = ProofHeaders {
            token: token.0,
            signature: signature.0,
            timestamp: timestamp.0,
        };
        self.receive(req, endpoint, path, proof, idempotency_key.0, body.0)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_after_the_tenant_become_one_encoded_segment() {
        let uri: Uri = "/webhooks/v1/inbound/t/a/b/c?x=1".parse().expect("uri");
        assert_eq!(
            routable_uri(&uri).map(|u| u.to_string()),
            Some("/webhooks/v1/inbound/t/a%2Fb%2Fc?x=1".to_owned())
        );
        for plain in [
            "/webhooks/v1/inbound/t/a",
            "/webhooks/v1/inbound/l",
            "/api/v1/x/y/z",
        ] {
            assert!(
                routable_uri(&plain.parse().expect("uri")).is_none(),
                "{plain}"
            );
        }
    }
}
