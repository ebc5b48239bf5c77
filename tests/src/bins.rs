//! The built binaries, for tests that start real processes.

use std::path::PathBuf;

/// Path of a workspace binary (`jet`, `jet-api`, `jet-worker`), built by `jet test`.
#[allow(clippy::disallowed_methods)] // test harness configuration
pub fn path(name: &str) -> PathBuf {
    let dir = std::env::var_os("JET_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo run -p jet -- test`",
        path.display()
    );
    path
}

/// A child process whose stdout is read line by line.
pub struct Running {
    pub child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Running {
    /// Starts `program args` in `dir` with `env` added (and `DATABASE_URL` removed unless given).
    pub fn start(
        program: &str,
        args: &[&str],
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(path(program));
        cmd.args(args)
            .current_dir(dir)
            .env_remove("DATABASE_URL")
            .env("JET_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `needle`; panics after `secs` seconds or at EOF.
    pub async fn wait_for(&mut self, needle: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            match next {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(Ok(None)) => panic!(
                    "process ended before `{needle}`; output:\n{}",
                    self.seen.join("\n")
                ),
                Ok(Err(e)) => panic!("reading output: {e}"),
                Err(_) => panic!(
                    "no `{needle}` within {secs}s; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM and waits (up to `secs`) for the exit status.
    pub async fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running child has a pid");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.wait(secs).await
    }

    /// Waits (up to `secs`) for the exit status, draining output meanwhile.
    pub async fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
        let drain = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                self.seen.push(line);
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(secs), drain).await;
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {secs}s; output:\n{}", self.seen.join("\n")))
            .expect("wait")
    }
}

/// Runs a command to completion in the temp folder; returns (success, stdout + stderr).
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(path(program));
    cmd.current_dir(std::env::temp_dir())
        .args(args)
        .env_remove("DATABASE_URL")
        .env("JET_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A free TCP port on 127.0.0.1 (released before returning; racy but fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
