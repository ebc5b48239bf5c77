//! Process control: `jet-api` and `jet-worker` started as real processes, their output in a
//! log file per process, and the signals the cells send (SIGKILL, SIGSTOP, SIGCONT).

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A signal a cell sends to a process.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Kill => "-KILL",
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        }
    }
}

/// A started binary that can be signalled, killed and started again with the same settings.
pub struct Process {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `bin` with `env` (nothing inherited but `PATH`), appending its output to `log`.
    pub fn start(bin: &Path, env: Vec<(String, String)>, log: PathBuf) -> anyhow::Result<Self> {
        let mut process = Self {
            bin: bin.to_owned(),
            env,
            log,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id of the running child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal`; after SIGKILL the child is reaped.
    pub fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("the process is not running")?;
        let sent = Command::new("kill")
            .args([signal.flag(), &pid.to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(sent.success(), "kill {} {pid} failed", signal.flag());
        if let Signal::Kill = signal
            && let Some(mut child) = self.child.take()
        {
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the process again after it was killed.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.signal(Signal::Kill)?;
        }
        self.spawn()
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A stopped process ignores SIGKILL only until continued; continue it first.
        let _ = self.signal(Signal::Cont);
        let _ = self.signal(Signal::Kill);
    }
}

/// A free TCP port on 127.0.0.1 (released before returning; fine for a local harness).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
