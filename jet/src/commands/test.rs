//! `jet test`: the one command that runs every test. It prepares PostgreSQL itself — a private
//! throwaway cluster under ./.jet/test-pg with `wal_level = logical`, unless
//! `JET_TEST_DATABASE_URL` names a server to use — builds the binaries the process tests
//! start, then runs `cargo test --workspace` with the extra arguments given.

use crate::pg::{Cluster, Durability};
use std::path::PathBuf;
use std::process::Command;

#[allow(clippy::disallowed_methods)] // reads the test-only override, not service config
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("jet has no parent directory"))?;
    let (url, cluster) = match std::env::var("JET_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let mut cluster = Cluster::prepare(&workspace.join(".jet/test-pg"), Durability::Throwaway, None)?;
            cluster.start()?;
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let status = (|| -> anyhow::Result<std::process::ExitStatus> {
        let build = Command::new(env!("CARGO")).current_dir(&workspace).args(["build", "--workspace", "--bins"]).status()?;
        anyhow::ensure!(build.success(), "building the binaries failed");
        Ok(Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args(["test", "--workspace"])
            .args(args)
            .env("JET_TEST_DATABASE_URL", &url)
            .env("JET_BIN_DIR", &bin_dir)
            .env_remove("DATABASE_URL")
            .status()?)
    })();
    if let Some(cluster) = cluster {
        cluster.stop()?;
    }
    let status = status?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
