//! `jet test`: the one command that runs every test. It prepares PostgreSQL itself — a private
//! throwaway cluster under ./.jet/test-pg with `wal_level = logical`, unless
//! `JET_TEST_DATABASE_URL` names a server to use — builds the binaries the process tests
//! start, then runs `cargo test --workspace` with the extra arguments given.

use crate::pg::{Access, Cluster, Durability};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
            let mut cluster = Cluster::prepare(
                &workspace.join(".jet/test-pg"),
                Durability::Throwaway,
                Access::Trust,
                None,
            )?;
            cluster.start()?;
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let status = (|| -> anyhow::Result<std::process::ExitStatus> {
        let build = Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args(["build", "--workspace", "--bins"])
            .status()?;
        anyhow::ensure!(build.success(), "building the binaries failed");
        let mut child = Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args(["test", "--workspace"])
            .args(args)
            .env("JET_TEST_DATABASE_URL", &url)
            .env("JET_BIN_DIR", &bin_dir)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut totals = Totals::default();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            totals.add(&line);
        }
        let status = child.wait()?;
        // One closing line over every test binary, so nobody has to add them up.
        println!(
            "total: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        Ok(status)
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

/// Sums of the `test result:` lines cargo prints per test binary.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |label: &str| {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(label)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        self.passed += count("passed");
        self.failed += count("failed");
        self.ignored += count("ignored");
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_add_up_cargo_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.68s");
        t.add("test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        t.add("running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 11,
                failed: 2,
                ignored: 1
            }
        );
    }
}
