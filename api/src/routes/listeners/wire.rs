//! Request and response types of the listener routes, and the checks a saved listener or
//! action must pass.

use crate::error::{ApiError, ApiResult};
use crate::routes::enums::{ActionType, ListenerType, UnknownStored, wire_enum};
use chrono::{DateTime, Utc};
use jet_shared::listener::actions::ActionSpec;
use jet_shared::listener::config::ConfigError;
use jet_shared::listener::store::{self, ActionFields, BufferEvent, Connection, ListenerSpec};
use jet_shared::listener::{Action, Kind, Listener};
use jet_shared::rbac::Grants;
use jet_shared::rbac::permissions::DATASOURCE_READ;
use jet_shared::references;
use poem_openapi::Object;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// Longest `endpointPath`.
const MAX_ENDPOINT_PATH: usize = 255;

/// A listener.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ListenerOut {
    #[oai(rename = "listenerID")]
    pub listener_id: Uuid,
    #[oai(rename = "tenantID")]
    pub tenant_id: Uuid,
    #[oai(rename = "datasourceID")]
    pub datasource_id: Uuid,
    pub listener_title: String,
    pub listener_description: Option<String>,
    /// `postgresql` (NOTIFY, or CDC with `listenerConfig.mode: "cdc"`) or `webhook`.
    pub listener_type: ListenerType,
    pub listener_config: Value,
    pub status: ListenerStatus,
    pub last_error: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub event_count: i64,
    /// Webhook listeners: the path under `/webhooks/v1/inbound/{tenantID}/`.
    pub endpoint_path: Option<String>,
    #[oai(rename = "creatorID")]
    pub creator_id: Option<Uuid>,
    #[oai(rename = "createdByApiKeyID")]
    pub created_by_api_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The listener's actions in pipeline order (on get and clone; absent in lists).
    pub actions: Option<Vec<ActionOut>>,
}

wire_enum! {
    /// A listener's status: `error` is active, but its source is failing (see `lastError`).
    pub enum ListenerStatus {
        Inactive = "inactive",
        Active = "active",
        Error = "error",
    }
}

wire_enum! {
    /// A running listener's status: `error` while its source is failing.
    pub enum ConnectionStatus {
        Active = "active",
        Error = "error",
    }
}

impl TryFrom<Listener> for ListenerOut {
    type Error = UnknownStored;

    fn try_from(l: Listener) -> Result<Self, UnknownStored> {
        Ok(Self {
            listener_id: l.listener_id,
            tenant_id: l.tenant_id.0,
            datasource_id: l.datasource_id,
            listener_title: l.title,
            listener_description: l.description,
            listener_type: ListenerType::from_stored(&l.listener_type)?,
            listener_config: l.config,
            status: ListenerStatus::from_stored(&l.status)?,
            last_error: l.last_error,
            last_event_at: l.last_event_at,
            event_count: l.event_count,
            endpoint_path: l.endpoint_path,
            creator_id: l.creator_id,
            created_by_api_key_id: l.created_by_api_key_id,
            created_at: l.created_at,
            updated_at: l.updated_at,
            actions: None,
        })
    }
}

impl ListenerOut {
    /// The listener with its actions.
    pub fn with_actions(listener: Listener, actions: Vec<Action>) -> Result<Self, UnknownStored> {
        let mut out = Self::try_from(listener)?;
        out.actions = Some(
            actions
                .into_iter()
                .map(ActionOut::try_from)
                .collect::<Result<_, _>>()?,
        );
        Ok(out)
    }
}

/// A pipeline action of a listener.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ActionOut {
    #[oai(rename = "actionID")]
    pub action_id: Uuid,
    #[oai(rename = "listenerID")]
    pub listener_id: Uuid,
    pub action_type: ActionType,
    pub action_config: Value,
    pub is_enabled: bool,
    pub order_index: i32,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<Action> for ActionOut {
    type Error = UnknownStored;

    fn try_from(a: Action) -> Result<Self, UnknownStored> {
        Ok(Self {
            action_id: a.action_id,
            listener_id: a.listener_id,
            action_type: ActionType::from_stored(&a.action_type)?,
            action_config: a.config,
            is_enabled: a.is_enabled,
            order_index: a.order_index,
            created_at: a.created_at,
        })
    }
}

/// Body of `createListener` and `updateListener`. An update replaces every field (PUT): an
/// absent optional field is cleared. `status` is not set here: use activate and deactivate.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SaveListener {
    #[oai(rename = "datasourceID")]
    pub datasource_id: Uuid,
    #[oai(validator(min_length = 1, max_length = 255))]
    pub listener_title: String,
    #[oai(validator(max_length = 10000))]
    pub listener_description: Option<String>,
    /// The datasource must be of the same type.
    pub listener_type: ListenerType,
    /// `postgresql`: `{channels: "a,b"}` (NOTIFY) or `{mode: "cdc", tables: [...],
    /// operations?, maxRetainedWalMb?, heartbeatSeconds?}`. Default `{}`.
    pub listener_config: Option<Value>,
    /// Required for `webhook` listeners, refused for others: 1–255 characters of
    /// `A-Z a-z 0-9 . _ ~ -` in segments separated by single `/`, no `.`/`..` segment.
    /// Unique in the tenant (409 `endpoint_path_taken`).
    #[oai(validator(max_length = 255))]
    pub endpoint_path: Option<String>,
}

impl SaveListener {
    /// The spec this body describes, trimmed and defaulted.
    pub fn into_spec(self) -> ListenerSpec {
        ListenerSpec {
            datasource_id: self.datasource_id,
            title: self.listener_title.trim().to_owned(),
            description: self.listener_description,
            listener_type: self.listener_type.as_str().to_owned(),
            config: match self.listener_config {
                None | Some(Value::Null) => json!({}),
                Some(v) => v,
            },
            endpoint_path: self.endpoint_path,
        }
    }
}

/// Body of `createListenerAction` and `updateListenerAction` (which replaces every field).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SaveAction {
    pub action_type: ActionType,
    /// What the action does; see each type. Default `{}`.
    pub action_config: Option<Value>,
    /// Default true.
    pub is_enabled: Option<bool>,
    /// Pipeline position, lowest first (ties: creation order). Default 0.
    #[oai(validator(minimum(value = "0")))]
    pub order_index: Option<i32>,
}

impl SaveAction {
    pub fn into_fields(self) -> ActionFields {
        ActionFields {
            action_type: self.action_type.as_str().to_owned(),
            config: match self.action_config {
                None | Some(Value::Null) => json!({}),
                Some(v) => v,
            },
            is_enabled: self.is_enabled.unwrap_or(true),
            order_index: self.order_index.unwrap_or(0),
        }
    }
}

/// Body of `testListener`.
#[derive(Debug, Object)]
pub struct TestEvent {
    /// The sample event, as the source would deliver it.
    pub event: Value,
}

/// A page of a ring buffer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct BufferPage {
    /// Events after `afterSeqNo`, oldest first.
    pub items: Vec<BufferEventOut>,
    /// The buffer's newest `seqNo` (absent while empty); caught up when the last item has it.
    pub max_seq_no: Option<i64>,
    /// Pass as `afterSeqNo` to read on.
    pub next_after_seq_no: i64,
}

/// An event of a ring buffer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct BufferEventOut {
    #[oai(rename = "eventID")]
    pub event_id: Uuid,
    pub seq_no: i64,
    pub event_data: Value,
    pub event_meta: Option<Value>,
    pub received_at: DateTime<Utc>,
}

impl From<BufferEvent> for BufferEventOut {
    fn from(e: BufferEvent) -> Self {
        Self {
            event_id: e.event_id,
            seq_no: e.seq_no,
            event_data: e.data,
            event_meta: e.meta,
            received_at: e.received_at,
        }
    }
}

/// A running listener and who holds it.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct ConnectionOut {
    #[oai(rename = "listenerID")]
    pub listener_id: Uuid,
    pub listener_title: String,
    pub listener_type: ListenerType,
    pub status: ConnectionStatus,
    /// The worker holding it; absent while nobody does (starting up, or a webhook listener,
    /// which needs no holder).
    #[oai(rename = "workerID")]
    pub worker_id: Option<String>,
    /// The holder's host, from the worker registry.
    pub host: Option<String>,
    pub held_since: Option<DateTime<Utc>>,
    /// When the source connection last came up (absent while connecting).
    pub connected_at: Option<DateTime<Utc>>,
    /// When the hold's lease runs out unless renewed.
    pub expires_at: Option<DateTime<Utc>>,
    /// The lease has run out: the holder is gone or stuck and another worker takes over.
    pub lease_expired: Option<bool>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub event_count: i64,
    /// CDC: WAL the slot retains on the source, in bytes.
    pub retained_wal_bytes: Option<i64>,
    /// CDC: how far the committed checkpoint trails the source's WAL position, in bytes.
    pub lag_bytes: Option<i64>,
    /// When the holder sampled the two figures above.
    pub sampled_at: Option<DateTime<Utc>>,
    /// CDC: the committed checkpoint LSN.
    pub checkpoint_lsn: Option<String>,
}

impl TryFrom<Connection> for ConnectionOut {
    type Error = UnknownStored;

    fn try_from(c: Connection) -> Result<Self, UnknownStored> {
        Ok(Self {
            listener_id: c.listener_id,
            listener_title: c.title,
            listener_type: ListenerType::from_stored(&c.listener_type)?,
            status: ConnectionStatus::from_stored(&c.status)?,
            worker_id: c.worker_id,
            host: c.host,
            held_since: c.held_since,
            connected_at: c.connected_at,
            expires_at: c.expires_at,
            lease_expired: c.lease_expired,
            last_event_at: c.last_event_at,
            last_error: c.last_error,
            event_count: c.event_count,
            retained_wal_bytes: c.retained_wal_bytes,
            lag_bytes: c.lag_bytes,
            sampled_at: c.sampled_at,
            checkpoint_lsn: c.checkpoint_lsn,
        })
    }
}

/// A 422 `invalid_config` naming the field at fault.
pub fn config_error(err: ConfigError) -> ApiError {
    ApiError::unprocessable_as("invalid_config", err.to_string())
}

/// Checks a listener spec on its own: a title, a type and config that parse, and an
/// `endpointPath` exactly when the type takes one. Answers the parsed kind.
pub fn check(spec: &ListenerSpec) -> ApiResult<Kind> {
    if spec.title.is_empty() {
        return Err(ApiError::unprocessable("listenerTitle must not be blank"));
    }
    let kind = Kind::parse(&spec.listener_type, &spec.config).map_err(config_error)?;
    match (&kind, &spec.endpoint_path) {
        (Kind::Webhook, None) => Err(ApiError::unprocessable_as(
            "invalid_endpoint_path",
            "endpointPath: is required for webhook listeners",
        )),
        (Kind::Webhook, Some(path)) => check_endpoint_path(path).map(|()| kind),
        (_, Some(_)) => Err(ApiError::unprocessable_as(
            "invalid_endpoint_path",
            "endpointPath: only webhook listeners have one",
        )),
        (_, None) => Ok(kind),
    }
}

/// `endpointPath`: URL-safe segments (RFC 3986 unreserved characters) separated by single
/// `/`, so that the path a sender calls is exactly the stored one, with no escaping.
fn check_endpoint_path(path: &str) -> ApiResult<()> {
    let bad = |why: &str| {
        Err(ApiError::unprocessable_as(
            "invalid_endpoint_path",
            format!("endpointPath: {why}"),
        ))
    };
    if path.is_empty() || path.len() > MAX_ENDPOINT_PATH {
        return bad("must be 1 to 255 characters");
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return bad("must not start or end with `/` or contain `//`");
        }
        if segment == "." || segment == ".." {
            return bad("must not contain `.` or `..` segments");
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return bad(&format!(
                "{c:?} is not allowed; use letters, digits, `-`, `.`, `_`, `~` and `/`"
            ));
        }
    }
    Ok(())
}

/// The datasource must be the tenant's (422 `invalid_datasource`), readable by the caller
/// (403), and of the listener's type (a `postgresql` listener reads a `postgresql`
/// datasource; a `webhook` listener's datasource holds its token and secret).
pub async fn check_datasource(
    conn: &mut PgConnection,
    grants: &Grants,
    spec: &ListenerSpec,
) -> ApiResult<()> {
    let id = spec.datasource_id;
    let found = store::datasource_type(&mut *conn, grants.tenant_id, id).await?;
    let Some(datasource_type) = found else {
        return Err(ApiError::unprocessable_as(
            "invalid_datasource",
            format!("datasourceID: datasource {id} is not in this tenant"),
        ));
    };
    grants.require(DATASOURCE_READ, Some(id))?;
    if datasource_type != spec.listener_type {
        return Err(ApiError::unprocessable_as(
            "invalid_datasource",
            format!(
                "datasourceID: a {} listener needs a {} datasource; this one is {datasource_type}",
                spec.listener_type, spec.listener_type
            ),
        ));
    }
    Ok(())
}

/// Checks an action: its config parses (422 `invalid_action` naming the field) and the
/// workflow or data query it names is the tenant's (422 `invalid_reference`) and executable
/// by the caller (403).
pub async fn check_action(
    conn: &mut PgConnection,
    grants: &Grants,
    fields: &ActionFields,
) -> ApiResult<ActionSpec> {
    let spec = ActionSpec::parse(&fields.action_type, &fields.config)
        .map_err(|e| ApiError::unprocessable_as("invalid_action", e.to_string()))?;
    if let Some((kind, id)) = spec.reference() {
        let field = match kind {
            references::Kind::DataQuery => "actionConfig.dataQueryID",
            _ => "actionConfig.workflowID",
        };
        references::require(conn, grants, kind, id)
            .await
            .map_err(|err| match err {
                jet_shared::Error::Invalid(m) => {
                    ApiError::unprocessable_as("invalid_reference", format!("{field}: {m}"))
                }
                other => other.into(),
            })?;
    }
    Ok(spec)
}

/// Maps the endpoint-path uniqueness violation to its own 409 code.
pub fn save_error(err: jet_shared::Error) -> ApiError {
    match err {
        jet_shared::Error::Conflict { constraint }
            if constraint == "uq_tblListeners_tenantID_endpointPath" =>
        {
            ApiError::Conflict(poem_openapi::payload::Json(crate::error::ErrorBody {
                code: "endpoint_path_taken".into(),
                message: "endpointPath: another listener of this tenant has this path".into(),
            }))
        }
        other => other.into(),
    }
}
