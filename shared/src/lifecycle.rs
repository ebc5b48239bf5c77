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

/// A cancellation signal every long-running loop observes. Cloning shares it.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

/// Triggers the paired [`Shutdown`]; dropping it triggers too, so a crashed owner never
/// leaves loops running.
pub struct ShutdownTrigger(tokio::sync::watch::Sender<bool>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped, which also means shutdown.
        let _ = self.0.wait_for(|triggered| *triggered).await;
    }
}

impl ShutdownTrigger {
    /// Begins shutdown.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}
