//! The live tail of listeners for SSE clients: one LISTEN connection per API process (opened
//! on the first subscriber) on [`TAIL_CHANNEL`] fans each processed event out to the
//! subscribers of its listener, as the app-page hub does for pages.

use jet_shared::listener::inbox::TAIL_CHANNEL;
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
pub struct TailHub {
    pool: PgPool,
    senders: Senders,
    listening: Arc<OnceCell<()>>,
}

impl TailHub {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            senders: Arc::default(),
            listening: Arc::new(OnceCell::new()),
        }
    }

    /// The tail payloads (JSON text) of `listener_id` from now on. The LISTEN is registered
    /// before this returns, so nothing published after it is missed.
    pub async fn subscribe(
        &self,
        listener_id: Uuid,
    ) -> anyhow::Result<broadcast::Receiver<String>> {
        self.listening
            .get_or_try_init(|| async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener.listen(TAIL_CHANNEL).await?;
                tokio::spawn(fan_out(listener, self.senders.clone()));
                anyhow::Ok(())
            })
            .await?;
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        Ok(senders
            .entry(listener_id)
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .subscribe())
    }
}

/// Routes each notification to its listener's subscribers; a listener nobody tails any more
/// is forgotten. `recv` reconnects by itself after a lost connection.
async fn fan_out(mut listener: sqlx::postgres::PgListener, senders: Senders) {
    loop {
        let note = match listener.recv().await {
            Ok(note) => note,
            Err(err) => {
                tracing::warn!(error = %err, "listener-tail LISTEN failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(id) = listener_of(note.payload()) else {
            continue;
        };
        let mut senders = senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = senders.get(&id)
            && tx.send(note.payload().to_owned()).is_err()
        {
            senders.remove(&id);
        }
    }
}

/// The `listenerID` of a tail payload; `None` for anything else.
fn listener_of(payload: &str) -> Option<Uuid> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()?
        .get("listenerID")?
        .as_str()?
        .parse()
        .ok()
}
