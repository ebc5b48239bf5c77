//! The graphs of published workflow versions a node worker runs, cached per process.

use jet_shared::workflow::definition;
use jet_shared::workflow::graph::Graph;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Graphs of published workflow versions. A version never changes, so an entry never goes
/// stale; loading and validating happen outside the lock, so one big graph cannot stall the
/// other claim loops. Loads are single-flight: the nodes of a batch that all miss the same
/// version wait for one read instead of each taking a pooled connection for it.
#[derive(Default)]
pub(crate) struct GraphCache(std::sync::Mutex<HashMap<(Uuid, i32), Arc<GraphCell>>>);

/// One version's graph, loaded once by whichever caller gets there first.
type GraphCell = tokio::sync::OnceCell<Arc<Graph>>;

/// Versions kept; past this the cache starts afresh (cheap: a miss is one indexed read).
const GRAPH_CACHE_LIMIT: usize = 1024;

impl GraphCache {
    /// The cell of `key`, created empty on first use.
    fn cell(&self, key: (Uuid, i32)) -> Arc<GraphCell> {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= GRAPH_CACHE_LIMIT && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.entry(key).or_default().clone()
    }

    /// The graph of `version` of `workflow_id`, loaded on first use. A failed load leaves the
    /// cell empty, so the next caller tries again.
    pub(crate) async fn get(
        &self,
        pool: &PgPool,
        workflow_id: Uuid,
        version: i32,
    ) -> anyhow::Result<Arc<Graph>> {
        let cell = self.cell((workflow_id, version));
        let graph = cell
            .get_or_try_init(|| async {
                let mut conn = pool.acquire().await?;
                let stored = definition::load_version(&mut conn, workflow_id, version).await?;
                drop(conn);
                let graph = tokio::task::spawn_blocking(move || stored.graph()).await??;
                anyhow::Ok(Arc::new(graph))
            })
            .await?;
        Ok(graph.clone())
    }
}
