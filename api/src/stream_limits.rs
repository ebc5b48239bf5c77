//! Bounds on concurrent Server-Sent Event streams (instance events and app pages, one budget),
//! per API process and per tenant.
//!
//! Each open stream costs a connection and, for instance streams, a poll of the database
//! every few hundred milliseconds; without a bound a client (or many) could open them until
//! the pool starves. A stream holds a [`StreamPermit`] for as long as it lives: the permit is
//! released when the stream ends (its instance ended) or is dropped (the client went away).
//!
//! When the process stops, [`StreamLimits::close`] ends every stream cleanly (the response
//! body finishes), so the server's drain is not held for the length of a stream; a client
//! reconnects to another replica and resumes with `Last-Event-ID`.

use crate::error::ErrorBody;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Open streams, in total and per tenant.
#[derive(Default)]
struct Open {
    total: usize,
    per_tenant: HashMap<Uuid, usize>,
}

/// Which bound refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `JET_SSE_MAX_STREAMS` streams are open in this process.
    Process,
    /// `JET_SSE_MAX_STREAMS_PER_TENANT` streams of this tenant are open in this process.
    Tenant,
}

impl Refused {
    /// The 429 body: code `too_many_streams`, saying which bound was reached.
    pub fn body(self) -> ErrorBody {
        let whose = match self {
            Refused::Process => "this server",
            Refused::Tenant => "this tenant",
        };
        ErrorBody {
            code: "too_many_streams".into(),
            message: format!("too many event streams are open for {whose}; retry later"),
        }
    }
}

/// Cheaply cloneable handle to the process's stream counts.
#[derive(Clone)]
pub struct StreamLimits {
    max_total: usize,
    max_per_tenant: usize,
    open: Arc<Mutex<Open>>,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl StreamLimits {
    /// Limits of `max_total` streams per process and `max_per_tenant` per tenant.
    pub fn new(max_total: usize, max_per_tenant: usize) -> Self {
        Self {
            max_total,
            max_per_tenant,
            open: Arc::default(),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Ends every open stream (and any opened later): the process is stopping.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// `stream`, ended early when [`Self::close`] is called.
    pub fn until_closed<T: Send + 'static>(
        &self,
        stream: futures::stream::BoxStream<'static, T>,
    ) -> futures::stream::BoxStream<'static, T> {
        use futures::StreamExt as _;
        let mut closing = self.closing.subscribe();
        let closed = async move {
            // An error means the limits are gone, which also ends the stream.
            let _ = closing.wait_for(|closed| *closed).await;
        };
        stream.take_until(Box::pin(closed)).boxed()
    }

    /// A permit for one more stream of `tenant`, or which bound it would exceed.
    pub fn try_open(&self, tenant: Uuid) -> Result<StreamPermit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.max_total {
            return Err(Refused::Process);
        }
        let mine = open.per_tenant.entry(tenant).or_default();
        if *mine >= self.max_per_tenant {
            return Err(Refused::Tenant);
        }
        *mine += 1;
        open.total += 1;
        Ok(StreamPermit {
            open: self.open.clone(),
            tenant,
        })
    }
}

/// One open stream; dropping it frees its place.
pub struct StreamPermit {
    open: Arc<Mutex<Open>>,
    tenant: Uuid,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.per_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_ends_open_streams() {
        use futures::StreamExt as _;
        let limits = StreamLimits::new(3, 2);
        let endless = limits.until_closed(futures::stream::pending::<u8>().boxed());
        limits.close();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            endless.collect::<Vec<_>>(),
        )
        .await;
        assert_eq!(
            ended.ok(),
            Some(vec![]),
            "the stream ended when the limits closed"
        );
    }

    #[test]
    fn tenant_and_process_bounds_apply_and_permits_free_their_place() {
        let limits = StreamLimits::new(3, 2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = limits.try_open(a).expect("first");
        let _second = limits.try_open(a).expect("second");
        assert_eq!(limits.try_open(a).err(), Some(Refused::Tenant));
        let _other = limits.try_open(b).expect("another tenant");
        assert_eq!(limits.try_open(b).err(), Some(Refused::Process));
        drop(first);
        assert!(
            limits.try_open(a).is_ok(),
            "a dropped stream frees its place"
        );
    }
}
