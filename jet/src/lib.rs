//! The `jet` composition root's reusable part: the private PostgreSQL cluster that `jet dev`
//! and `jet test` run, also used by the chaos tests to restart a database of their own, and
//! the chaos suite (`jet chaos` and its short form in the tests).

pub mod chaos;
pub mod pg;
