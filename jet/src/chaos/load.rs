//! The steady load: runs started through the API at a fixed rate (each keyed, so its effects
//! are countable), a harness that answers every human step through the API, and the probe
//! that measures recovery.

use super::site::Site;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The load generator and the human-step answerer, running until [`Load::stop_starting`] and
/// [`Load::stop`].
pub struct Load {
    starting: tokio::task::JoinHandle<()>,
    answering: tokio::task::JoinHandle<()>,
    /// Runs the API accepted, and requests it refused or never answered.
    pub started: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
}

impl Load {
    /// Starts `rate` runs a second, each request on its own task so a hung API does not
    /// slow the rate; answers pending human steps every 200 ms.
    pub fn start(site: Arc<Site>, rate: u32) -> Self {
        let started = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, r) = (started.clone(), refused.clone());
        let gen_site = site.clone();
        let starting = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            for n in 0usize.. {
                tick.tick().await;
                let site = gen_site.clone();
                let workflow = site.workflows[n % site.workflows.len()].clone();
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let key = uuid::Uuid::new_v4().to_string();
                    match site.execute(&workflow, &key).await {
                        Ok(_) => s.fetch_add(1, Ordering::Relaxed),
                        Err(_) => r.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
        });
        let answering = tokio::spawn(async move {
            loop {
                answer_pending(&site).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            starting,
            answering,
            started,
            refused,
        }
    }

    /// Stops starting runs (human steps are still answered).
    pub fn stop_starting(&self) {
        self.starting.abort();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.starting.abort();
        self.answering.abort();
    }
}

/// Answers every pending human step (approve) through the API; errors are left for the next
/// round (the database or the API may be down: that is the point).
async fn answer_pending(site: &Site) {
    let pending: Vec<uuid::Uuid> = sqlx::query_scalar(
        r#"SELECT "collectionRequestID" FROM "tblWorkflowDataCollectionRequests"
           WHERE "status" = 'PENDING' ORDER BY "createdAt" LIMIT 200"#,
    )
    .fetch_all(&site.pool)
    .await
    .unwrap_or_default();
    for id in pending {
        let _ = site
            .post(
                &format!("workflows/data-collection/{id}/submit"),
                &serde_json::json!({"data": {"approved": true}}),
            )
            .await;
    }
}

/// Time from `healed` until a new start→end run is accepted by the API and completed by a
/// worker; `None` if that does not happen within `limit`.
pub async fn probe(site: &Site, healed: Instant, limit: Duration) -> Option<Duration> {
    let deadline = healed + limit;
    let instance = loop {
        if let Ok(id) = site
            .execute(&site.probe, &uuid::Uuid::new_v4().to_string())
            .await
        {
            break id;
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        let status: Option<String> = sqlx::query_scalar(
            r#"SELECT "status" FROM "tblWorkflowInstances" WHERE "instanceID" = $1"#,
        )
        .bind(instance)
        .fetch_optional(&site.pool)
        .await
        .ok()
        .flatten();
        if status.as_deref() == Some("COMPLETED") {
            return Some(healed.elapsed());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Time from `healed` until no run is left RUNNING; `None` if some still are after `limit`.
pub async fn drained(site: &Site, healed: Instant, limit: Duration) -> Option<Duration> {
    let deadline = healed + limit;
    loop {
        let running: Option<i64> = sqlx::query_scalar(
            r#"SELECT count(*) FROM "tblWorkflowInstances" WHERE "status" = 'RUNNING'"#,
        )
        .fetch_one(&site.pool)
        .await
        .ok();
        if running == Some(0) {
            return Some(healed.elapsed());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
