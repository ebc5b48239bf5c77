//! The built binaries, for tests that start real processes.

use std::path::PathBuf;

/// Path of a workspace binary (`jet`, `jet-api`, `jet-worker`), built by `jet test`.
#[allow(clippy::disallowed_methods)] // test harness configuration
pub fn path(name: &str) -> PathBuf {
    let dir = std::env::var_os("JET_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built: run the tests with `cargo run -p jet -- test`", path.display());
    path
}
