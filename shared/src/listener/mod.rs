//! Listeners: events from outside start work. A listener receives events from its source
//! (PostgreSQL NOTIFY, logical-replication CDC, or inbound webhooks), commits each one to the
//! inbox before acknowledging it, and the pipeline runs the listener's actions on it.
//!
//! - [`model`]: the `tblListeners` and `tblListenerActions` rows.
//! - [`actions`]: what each action's `actionConfig` means.
//! - [`config`]: what `listenerType` + `listenerConfig` mean, checked on save.
//! - [`inbox`]: the durable hand-off from a source to the pipeline.
//! - [`store`]: the API's SQL (create, replace, clone, activate, buffers, connections).
//! - [`source`]: what a holder gives the source it runs; [`cdc`] is one such source.
//! - [`webhook`]: inbound HTTP deliveries: the address, the proof, the stored event.

pub mod actions;
pub mod cdc;
pub mod config;
pub mod holds;
pub mod inbox;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod retention;
pub mod source;
pub mod store;
pub mod webhook;

pub use config::{Kind, names};
pub use model::{Action, Listener};
