//! NOTIFY fan-out for SSE clients: one LISTEN connection per API process and channel (opened
//! on the first subscriber) routes each notification to the subscribers of the id it names.
//! App pages ([`app_page`]: `jet_shared::app_page::push`), the listener tail
//! ([`listener_tail`]: the pipeline's processed events) and run ends ([`instance_ended`]:
//! run-and-wait) each have one hub.

use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, broadcast};
use uuid::Uuid;

/// Events a slow subscriber may fall behind by before it misses some (it is told how many).
const BACKLOG: usize = 256;

type Senders = Arc<Mutex<HashMap<Uuid, broadcast::Sender<String>>>>;

/// Which subscribers a notification's payload is for, and what they receive; `None` skips it.
pub type Route = fn(&str) -> Option<(Uuid, String)>;

/// Cheaply cloneable handle to a hub.
#[derive(Clone)]
pub struct NotifyHub {
    pool: PgPool,
    channel: &'static str,
    route: Route,
    senders: Senders,
    listening: Arc<OnceCell<()>>,
}

impl NotifyHub {
    pub fn new(pool: PgPool, channel: &'static str, route: Route) -> Self {
        Self {
            pool,
            channel,
            route,
            senders: Arc::default(),
            listening: Arc::new(OnceCell::new()),
        }
    }

    /// What is published for `id` from now on. The LISTEN is registered before this returns,
    /// so nothing published after it is missed.
    pub async fn subscribe(&self, id: Uuid) -> anyhow::Result<broadcast::Receiver<String>> {
        self.listening
            .get_or_try_init(|| async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener.listen(self.channel).await?;
                tokio::spawn(fan_out(listener, self.route, self.senders.clone()));
                anyhow::Ok(())
            })
            .await?;
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        Ok(senders
            .entry(id)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe())
    }
}

impl NotifyHub {
    /// Like [`NotifyHub::subscribe`], but the id's channel is forgotten when the last such
    /// subscription is dropped, even if nothing was ever published for it: for ids that may
    /// never be published (a run that never ends), which must not stay in the map.
    pub async fn subscribe_once(&self, id: Uuid) -> anyhow::Result<Subscription> {
        Ok(Subscription {
            receiver: Some(self.subscribe(id).await?),
            id,
            senders: self.senders.clone(),
        })
    }
}

/// A subscription from [`NotifyHub::subscribe_once`].
pub struct Subscription {
    receiver: Option<broadcast::Receiver<String>>,
    id: Uuid,
    senders: Senders,
}

impl Subscription {
    /// The next message for this id (`Err` when messages were missed or the hub is gone).
    pub async fn recv(&mut self) -> Result<String, broadcast::error::RecvError> {
        match self.receiver.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first, then look under the lock `subscribe` creates receivers
        // under, so a subscriber arriving meanwhile keeps its channel.
        drop(self.receiver.take());
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if senders
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            senders.remove(&self.id);
        }
    }
}

/// Routes each notification to its subscribers; an id nobody watches any more is forgotten.
/// `recv` reconnects by itself after a lost connection.
async fn fan_out(mut listener: sqlx::postgres::PgListener, route: Route, senders: Senders) {
    loop {
        let note = match listener.recv().await {
            Ok(note) => note,
            Err(err) => {
                tracing::warn!(error = %err, "SSE fan-out LISTEN failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some((id, message)) = route(note.payload()) else {
            continue;
        };
        let mut senders = senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = senders.get(&id)
            && tx.send(message).is_err()
        {
            senders.remove(&id);
        }
    }
}

fn uuid_at(payload: &serde_json::Value, key: &str) -> Option<Uuid> {
    payload.get(key)?.as_str()?.parse().ok()
}

/// An app-page push `{appPageID, event}`: the page's subscribers receive the event.
pub fn app_page(payload: &str) -> Option<(Uuid, String)> {
    let payload: serde_json::Value = serde_json::from_str(payload).ok()?;
    let page = uuid_at(&payload, "appPageID")?;
    Some((
        page,
        payload
            .get("event")
            .cloned()
            .unwrap_or_default()
            .to_string(),
    ))
}

/// A run's end: the payload is the instance id; its subscribers receive it.
pub fn instance_ended(payload: &str) -> Option<(Uuid, String)> {
    Some((payload.parse().ok()?, payload.to_owned()))
}

/// A listener-tail message: the listener's subscribers receive it whole.
pub fn listener_tail(payload: &str) -> Option<(Uuid, String)> {
    let parsed: serde_json::Value = serde_json::from_str(payload).ok()?;
    Some((uuid_at(&parsed, "listenerID")?, payload.to_owned()))
}

impl NotifyHub {
    /// The SSE events of `id` from now on, each message as JSON (text that is not JSON as a
    /// string; `{"lagged": n}` when a slow client missed `n`). `permit` travels with the stream
    /// and frees its place when the client goes away.
    pub async fn events(
        &self,
        id: Uuid,
        permit: crate::stream_limits::StreamPermit,
    ) -> anyhow::Result<futures::stream::BoxStream<'static, serde_json::Value>> {
        use broadcast::error::RecvError;
        use futures::StreamExt;
        let receiver = self.subscribe(id).await?;
        Ok(
            futures::stream::unfold((receiver, permit), |(mut rx, permit)| async move {
                let event = match rx.recv().await {
                    Ok(text) => {
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                    }
                    Err(RecvError::Lagged(missed)) => serde_json::json!({"lagged": missed}),
                    Err(RecvError::Closed) => return None,
                };
                Some((event, (rx, permit)))
            })
            .boxed(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(senders: &Senders, id: Uuid) -> Subscription {
        let receiver = senders
            .lock()
            .expect("lock")
            .entry(id)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe();
        Subscription {
            receiver: Some(receiver),
            id,
            senders: senders.clone(),
        }
    }

    #[test]
    fn the_last_subscription_dropped_forgets_its_id_even_if_nothing_was_published() {
        let senders = Senders::default();
        let id = Uuid::new_v4();
        let first = subscription(&senders, id);
        let second = subscription(&senders, id);
        drop(first);
        assert!(
            senders.lock().expect("lock").contains_key(&id),
            "another subscriber still listens"
        );
        drop(second);
        assert!(senders.lock().expect("lock").is_empty());
    }
}
