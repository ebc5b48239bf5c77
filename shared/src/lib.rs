//! Everything the API and the workers share: configuration, telemetry, the database and its
//! migrations, crypto, RBAC and the domain modules that own their types and SQL.
//!
//! This crate knows no HTTP framework; `jet-api` turns its types into wire types.
#![doc = include_str!("../README.md")]

pub mod api_key;
pub mod app_page;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod commands;
pub mod config;
pub mod cron;
pub mod crypto;
pub mod dataquery;
pub mod datasource;
pub mod db;
pub mod dlq;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod rbac;
pub mod references;
pub mod role;
pub mod telemetry;
pub mod tenant;
pub mod tenant_table;
pub mod user;
pub mod user_config;
pub mod widget;
pub mod workers;
pub mod workflow;

pub use error::{Error, Result};
