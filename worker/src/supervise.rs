//! Keeps every role alive. A role whose loop ends before shutdown — an error such as a lost
//! connection, a pool timeout or a database restart, or a panic — is restarted with capped
//! exponential backoff, and the process reports itself unready (`RoleHealth`) until the role
//! runs again. No role can die silently while its process stays up.

use crate::Role;
use jet_shared::lifecycle::{RoleHealth, Shutdown};
use std::future::Future;
use std::time::Duration;

/// First wait before a restart; doubled per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A role that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `start(generation)` until shutdown, restarting it whenever it ends early. Each start
/// gets a new `generation`, so a role can register under a fresh name when the old one may
/// still be held by a connection that has not noticed it is dead.
pub async fn supervise<F, Fut>(
    role: Role,
    health: RoleHealth,
    mut shutdown: Shutdown,
    mut start: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let name = role.to_string();
    let mut backoff = FIRST_BACKOFF;
    let mut generation = 0u64;
    loop {
        health.running(&name);
        let started = tokio::time::Instant::now();
        // A task of its own, so a panic is caught here like an error.
        let ended = tokio::spawn(start(generation)).await;
        generation += 1;
        if shutdown.is_triggered() {
            return match ended {
                Ok(result) => result,
                Err(join) => Err(anyhow::anyhow!("role {name} panicked: {join}")),
            };
        }
        let error = match ended {
            Ok(Ok(())) => "the role stopped on its own".to_owned(),
            Ok(Err(err)) => format!("{err:#}"),
            Err(join) => format!("panicked: {join}"),
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        health.failed(&name, &error);
        tracing::error!(role = %name, %error, restart_in_ms = backoff.as_millis() as u64, "worker role failed; restarting it");
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_role_is_restarted_and_reported_until_it_runs() {
        let (trigger, shutdown) = Shutdown::new();
        let health = RoleHealth::default();
        let starts = Arc::new(AtomicU64::new(0));
        let counted = starts.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(supervise(
            Role::Commands,
            health.clone(),
            shutdown,
            move |generation| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut stop = stop.clone();
                async move {
                    if generation < 3 {
                        anyhow::bail!("connection reset by peer (try {generation})");
                    }
                    stop.wait().await;
                    Ok(())
                }
            },
        ));
        // Three failures: 250 + 500 + 1000 ms of backoff, then the role stays up.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 4);
        assert_eq!(health.unready_reason(), None);
        assert_eq!(health.snapshot()["commands"].restarts, 3);
        trigger.trigger();
        task.await.expect("joins").expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_role_is_restarted_too() {
        let (trigger, shutdown) = Shutdown::new();
        let health = RoleHealth::default();
        let stop = shutdown.clone();
        let task = tokio::spawn(supervise(Role::Nodes, health.clone(), shutdown, move |g| {
            let mut stop = stop.clone();
            async move {
                assert!(g > 0, "first start panics");
                stop.wait().await;
                Ok(())
            }
        }));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = &health.snapshot()["nodes"];
        assert!(state.running && state.restarts == 1, "{state:?}");
        assert!(
            state
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("panicked"))
        );
        trigger.trigger();
        task.await.expect("joins").expect("clean shutdown");
    }
}
