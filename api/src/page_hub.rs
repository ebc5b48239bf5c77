//! App-page events for SSE clients: one LISTEN connection per API process (opened on the first
//! subscriber) fans `jet_shared::app_page::push` notifications out to each page's subscribers.

use jet_shared::app_page::CHANNEL;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, broadcast};
use uuid::Uuid;

/// Events a slow subscriber may fall behind by before it misses some (it is told how many).
const BACKLOG: usize = 256;

type Senders = Arc<Mutex<HashMap<Uuid, broadcast::Sender<String>>>>;

/// Cheaply cloneable handle to the hub.
#[derive(Clone)]
pub struct PageHub {
    pool: PgPool,
    senders: Senders,
    listening: Arc<OnceCell<()>>,
}

impl PageHub {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            senders: Arc::default(),
            listening: Arc::new(OnceCell::new()),
        }
    }

    /// Events pushed to `app_page_id` from now on. The LISTEN is registered before this
    /// returns, so nothing pushed after it is missed.
    pub async fn subscribe(
        &self,
        app_page_id: Uuid,
    ) -> anyhow::Result<broadcast::Receiver<String>> {
        self.listening
            .get_or_try_init(|| async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener.listen(CHANNEL).await?;
                tokio::spawn(fan_out(listener, self.senders.clone()));
                anyhow::Ok(())
            })
            .await?;
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        Ok(senders
            .entry(app_page_id)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe())
    }
}

/// Routes each notification to its page's subscribers; a page nobody watches any more is
/// forgotten. `recv` reconnects by itself after a lost connection.
async fn fan_out(mut listener: sqlx::postgres::PgListener, senders: Senders) {
    loop {
        let note = match listener.recv().await {
            Ok(note) => note,
            Err(err) => {
                tracing::warn!(error = %err, "app-page listener failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(payload) = serde_json::from_str::<serde_json::Value>(note.payload()) else {
            continue;
        };
        let Some(page) = payload
            .get("appPageID")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            continue;
        };
        let event = payload
            .get("event")
            .cloned()
            .unwrap_or_default()
            .to_string();
        let mut senders = senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = senders.get(&page)
            && tx.send(event).is_err()
        {
            senders.remove(&page);
        }
    }
}
