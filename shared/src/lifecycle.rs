//! Process lifecycle: the shutdown signal every binary and loop observes.

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM, whichever comes first.
///
/// The handlers are installed when this is called, not when the future is first polled, so
/// a signal that arrives between a "ready" message and the first poll is not lost (and does
/// not kill the process with the default action). Call it before announcing readiness.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let wait = |installed: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match installed {
                Ok(mut sig) => {
                    sig.recv().await;
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(interrupt, "SIGINT") => tracing::info!("SIGINT received, shutting down"),
            () = wait(terminate, "SIGTERM") => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}

/// SIGINT and SIGTERM, counted: the first starts a drain, a second one cuts it short.
///
/// The handlers are installed by [`Signals::install`], so a signal that arrives before the
/// first [`Signals::recv`] is kept (and does not kill the process with the default action).
pub struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers now; a handler that cannot be installed is logged and never fires.
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let installed = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(sig) => Some(sig),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for {name}");
                None
            }
        };
        Self {
            interrupt: installed(SignalKind::interrupt(), "SIGINT"),
            terminate: installed(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves at the next SIGINT or SIGTERM with the signal's name.
    pub async fn recv(&mut self) -> &'static str {
        async fn next(sig: &mut Option<tokio::signal::unix::Signal>) {
            let received = match sig {
                Some(sig) => sig.recv().await.is_some(),
                None => false,
            };
            if !received {
                // No handler, or its stream ended: this signal never comes.
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = next(&mut self.interrupt) => "SIGINT",
            () = next(&mut self.terminate) => "SIGTERM",
        }
    }
}

/// A cancellation signal every long-running loop observes, in two stages: *drain* (stop
/// taking new work, finish what is held) and then *abort* (the grace period is over or a
/// second signal came: stop what still runs and hand it back). Cloning shares it.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<Stage>);

/// Where a process is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Running,
    Draining,
    Aborting,
}

/// Triggers the paired [`Shutdown`]; dropping it begins the drain, so a crashed owner never
/// leaves loops running (but never aborts: only a deliberate [`ShutdownTrigger::abort`] stops
/// work that is running).
pub struct ShutdownTrigger(tokio::sync::watch::Sender<Stage>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(Stage::Running);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Whether shutdown has begun (draining or aborting).
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() >= Stage::Draining
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped, which also means shutdown.
        let _ = self.0.wait_for(|stage| *stage >= Stage::Draining).await;
    }

    /// Resolves once the drain is over: what still runs must stop and be handed back now.
    pub async fn wait_abort(&mut self) {
        if self
            .0
            .wait_for(|stage| *stage >= Stage::Aborting)
            .await
            .is_err()
        {
            // The trigger is gone without an abort: none will come.
            std::future::pending::<()>().await;
        }
    }
}

impl ShutdownTrigger {
    /// Begins shutdown: loops stop taking work and finish what they hold.
    pub fn trigger(&self) {
        self.0.send_if_modified(|stage| {
            let begins = *stage < Stage::Draining;
            if begins {
                *stage = Stage::Draining;
            }
            begins
        });
    }

    /// Ends the drain: loops stop what still runs and hand it back (implies [`Self::trigger`]).
    pub fn abort(&self) {
        let _ = self.0.send(Stage::Aborting);
    }
}

/// Whether each role of a process is running, for `/ready` and for operators: a role that
/// keeps failing makes its process unready instead of dying silently. Cloning shares it.
#[derive(Clone, Default)]
pub struct RoleHealth(
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, RoleState>>>,
);

/// One role's state as its supervisor last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    /// True while the role runs; false between a failure and its next successful start.
    pub running: bool,
    /// How many times the role was restarted after a failure.
    pub restarts: u64,
    /// The last failure, for the readiness answer and the logs.
    pub last_error: Option<String>,
}

impl RoleHealth {
    fn update(&self, role: &str, change: impl FnOnce(&mut RoleState)) {
        let mut roles = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = roles.entry(role.to_owned()).or_insert(RoleState {
            running: false,
            restarts: 0,
            last_error: None,
        });
        change(state);
    }

    /// The role started (or restarted) and runs.
    pub fn running(&self, role: &str) {
        self.update(role, |s| s.running = true);
    }

    /// The role failed with `error`; its supervisor will restart it.
    pub fn failed(&self, role: &str, error: &str) {
        self.update(role, |s| {
            s.running = false;
            s.restarts += 1;
            s.last_error = Some(error.to_owned());
        });
    }

    /// Every role's state, by name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, RoleState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `None` when every registered role runs; otherwise why not, naming each stopped role.
    pub fn unready_reason(&self) -> Option<String> {
        let down: Vec<String> = self
            .snapshot()
            .into_iter()
            .filter(|(_, s)| !s.running)
            .map(|(role, s)| match s.last_error {
                Some(error) => format!("role {role} is restarting after: {error}"),
                None => format!("role {role} has not started"),
            })
            .collect();
        (!down.is_empty()).then(|| down.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::{RoleHealth, Shutdown};

    #[tokio::test]
    async fn shutdown_drains_first_and_aborts_second() {
        let (trigger, shutdown) = Shutdown::new();
        let mut draining = shutdown.clone();
        let mut aborting = shutdown.clone();
        assert!(!shutdown.is_triggered());
        trigger.trigger();
        draining.wait().await;
        assert!(shutdown.is_triggered());
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), aborting.wait_abort()).await;
        assert!(pending.is_err(), "a drain is not an abort");
        trigger.abort();
        aborting.wait_abort().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_drains_but_never_aborts() {
        let (trigger, shutdown) = Shutdown::new();
        drop(trigger);
        shutdown.clone().wait().await;
        let abort = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            shutdown.clone().wait_abort(),
        )
        .await;
        assert!(abort.is_err(), "only a deliberate abort stops running work");
    }

    #[test]
    fn a_failed_role_makes_the_process_unready_until_it_runs_again() {
        let health = RoleHealth::default();
        health.running("nodes");
        health.running("commands");
        assert_eq!(health.unready_reason(), None);
        health.failed("commands", "pool timed out");
        let reason = health.unready_reason().expect("unready");
        assert!(
            reason.contains("commands") && reason.contains("pool timed out"),
            "{reason}"
        );
        health.running("commands");
        assert_eq!(health.unready_reason(), None);
        assert_eq!(health.snapshot()["commands"].restarts, 1);
    }
}
