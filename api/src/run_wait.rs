//! Run-and-wait: holds an `executeWorkflow?waitSeconds=` request until its instance ends or
//! the wait runs out, without polling the database in a loop and without holding a
//! connection while it waits.
//!
//! A run's end arrives as a NOTIFY (`jet_instance_ended`, sent by a trigger when an instance's
//! status becomes final) through [`crate::notify_hub`]. The waiter subscribes *before* it
//! reads the status, so a run that ends between the two is seen by the read; a notification
//! lost while the hub's LISTEN connection reconnects is caught by a slow re-read.
//!
//! The answer's status (200) and headers go out at once and the instance follows as the body
//! ([`WaitedJson`]): the request is audited like any other when it is answered, and the
//! spaces written while waiting are how a client that went away is noticed (a server learns
//! of a closed connection when a write fails), which drops the wait and frees its place.

use crate::error::ApiResult;
use crate::routes::instances::{self, InstanceDetail};
use crate::state::AppState;
use crate::stream_limits::StreamPermit;
use futures::StreamExt;
use jet_shared::ids::TenantId;
use jet_shared::workflow::instance;
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

/// The longest wait a request may ask for (`waitSeconds`); a longer run is polled.
pub const MAX_WAIT_SECONDS: u32 = 60;

/// How often a waiting answer writes a space: at most this long passes before a departed
/// client is noticed (the first write after it left may still succeed; the next fails).
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// How long a waiter trusts the NOTIFY before reading the status again anyway.
const RECHECK: Duration = Duration::from_secs(5);

/// The re-read interval when the hub cannot LISTEN (its connection cannot be opened).
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// Returns once `instance_id` has ended or `wait` has passed, whichever comes first. The
/// caller holds the request's place under the stream bounds for as long as this runs; a
/// client that goes away drops this future, and with it the subscription.
pub async fn until_ended(
    state: &AppState,
    tenant: TenantId,
    instance_id: Uuid,
    wait: Duration,
) -> ApiResult<()> {
    let deadline = Instant::now() + wait;
    let mut subscription = match state.ended.subscribe_once(instance_id).await {
        Ok(subscription) => Some(subscription),
        Err(err) => {
            tracing::warn!(error = %err, "run-and-wait cannot LISTEN; re-reading the status instead");
            None
        }
    };
    loop {
        // A short read on a pooled connection, returned before the next wait.
        let status = instance::get(&state.pool, tenant, instance_id)
            .await?
            .status;
        let now = Instant::now();
        if instance::has_ended(&status) || now >= deadline {
            return Ok(());
        }
        match subscription.as_mut() {
            Some(sub) => {
                let look_again = (now + RECHECK).min(deadline);
                // A message, a lag notice or the timeout: each means "read the status again".
                if let Ok(Err(RecvError::Closed)) =
                    tokio::time::timeout_at(look_again, sub.recv()).await
                {
                    subscription = None;
                }
            }
            None => tokio::time::sleep_until((now + FALLBACK_POLL).min(deadline)).await,
        }
    }
}

/// The answer to a run-and-wait request: waits (holding `permit`, its place under the stream
/// bounds) until the run ends or `wait` passes, then the instance's detail.
pub fn answer(
    state: AppState,
    tenant: TenantId,
    instance_id: Uuid,
    wait: Duration,
    permit: StreamPermit,
) -> WaitedJson<InstanceDetail> {
    WaitedJson::new(async move {
        let _permit = permit;
        let detail = async {
            until_ended(&state, tenant, instance_id, wait).await?;
            let row = instance::get(&state.pool, tenant, instance_id).await?;
            instances::detail(&state.pool, row).await
        };
        // A failure is logged where it becomes an `ApiError`; the body is then cut short.
        detail.await.ok()
    })
}

/// A JSON body written once its value is ready; until then a space every [`KEEP_ALIVE`]
/// (whitespace before a JSON value is insignificant, so any JSON parser reads the answer).
/// `None` ends the body with an error: the client sees a cut connection, never a wrong body.
pub struct WaitedJson<T> {
    body: poem::Body,
    of: PhantomData<fn() -> T>,
}

impl<T: ToJSON + 'static> WaitedJson<T> {
    /// The body that writes `value`'s result when it resolves.
    pub fn new(value: impl Future<Output = Option<T>> + Send + 'static) -> Self {
        let value = Box::pin(value);
        let chunks = futures::stream::unfold(Some(value), |pending| async move {
            let mut value = pending?;
            tokio::select! {
                done = &mut value => Some((
                    done.map(|v| v.to_json_string().into_bytes())
                        .ok_or_else(|| std::io::Error::other("the waited answer could not be read")),
                    None,
                )),
                () = tokio::time::sleep(KEEP_ALIVE) => Some((Ok(b" ".to_vec()), Some(value))),
            }
        });
        Self {
            body: poem::Body::from_bytes_stream(chunks.boxed()),
            of: PhantomData,
        }
    }
}

impl<T: Type> Payload for WaitedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> poem::IntoResponse for WaitedJson<T> {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .content_type(<Self as Payload>::CONTENT_TYPE)
            .body(self.body)
    }
}
