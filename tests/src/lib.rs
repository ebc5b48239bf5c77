//! Test harness: a fresh PostgreSQL database per test (cloned from a migrated template), the
//! real HTTP service on a random port, JWT signing, and the built binaries for process tests.
//!
//! Run everything with `cargo run -p jet -- test`, which prepares PostgreSQL and sets
//! `JET_TEST_DATABASE_URL`.

pub mod app;
pub mod bins;
pub mod capture;
pub mod cluster;
pub mod db;
pub mod flow;
pub mod jwt;
pub mod otlp;
pub mod wait;

pub use app::{Resp, TestApp};
pub use db::TestDb;
