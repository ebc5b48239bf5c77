//! Keeps this process in the worker registry (`tblWorkers`): registered at start, a heartbeat
//! every [`workers::HEARTBEAT`], and marked stopped on a clean shutdown. A failed write is
//! retried on the next beat; it never stops the process.

use jet_shared::lifecycle::Shutdown;
use jet_shared::workers;
use sqlx::PgPool;

/// Registers and heartbeats until shutdown, then records the stop.
pub async fn keep_registered(
    pool: PgPool,
    worker_id: String,
    roles: Vec<String>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut registered = false;
    while !shutdown.is_triggered() {
        let written = if registered {
            workers::heartbeat(&pool, &worker_id).await
        } else {
            workers::register(&pool, &worker_id, &roles).await
        };
        match written {
            Ok(()) => registered = true,
            Err(err) => tracing::warn!(error = %err, "worker registry heartbeat failed"),
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(workers::HEARTBEAT) => {}
        }
    }
    if registered && let Err(err) = workers::stopped(&pool, &worker_id).await {
        tracing::warn!(error = %err, "could not record this worker's stop");
    }
    Ok(())
}
