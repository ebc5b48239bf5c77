//! A private PostgreSQL cluster run from the machine's server binaries, for `jet dev` and
//! `jet test`: created on first use under a folder of the project, started with
//! `wal_level = logical`, listening on 127.0.0.1 and a private Unix socket.
//!
//! PostgreSQL refuses to run as root; when we are root the cluster is owned by and run as the
//! `postgres` system user instead.

use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings that differ between a dev cluster (durable) and a test cluster (fast).
#[derive(Debug, Clone, Copy)]
pub enum Durability {
    /// Default durability: data survives a crash of the machine.
    Durable,
    /// `fsync = off` and friends: tests recreate everything anyway.
    Throwaway,
}

/// A cluster directory and how to run it.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    durability: Durability,
    port: u16,
}

impl Cluster {
    /// Prepares (but does not start) a cluster under `root`, initialising it on first use.
    pub fn prepare(
        root: &Path,
        durability: Durability,
        preferred_port: Option<u16>,
    ) -> Result<Self> {
        let bin_dir = find_bin_dir()?;
        let run_as = if running_as_root()? {
            Some(postgres_user()?)
        } else {
            None
        };
        let root = usable_root(root, run_as)?;
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let port = choose_port(&root, preferred_port)?;
        let cluster = Self {
            root,
            bin_dir,
            run_as,
            durability,
            port,
        };
        cluster.init_if_needed()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        cmd
    }

    fn own(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to the postgres user", path.display()))?;
        }
        Ok(())
    }

    fn init_if_needed(&self) -> Result<()> {
        let data = self.data_dir();
        for dir in [&data, &self.socket_dir()] {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            self.own(dir)?;
        }
        self.own(&self.root)?;
        if data.join("PG_VERSION").exists() {
            return Ok(());
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Whether a server is already running on this data directory (e.g. left behind by a
    /// killed `jet dev`); it is then reused.
    pub fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Starts the server and waits until it accepts connections. A server already running on
    /// this directory is adopted (its port is read from `postmaster.pid`).
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            if let Some(port) = running_port(&self.data_dir()) {
                self.port = port;
            }
            return Ok(());
        }
        let mut options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
             -c wal_level=logical -c max_replication_slots=32 -c max_wal_senders=32 \
             -c max_connections=300",
            self.port,
            self.socket_dir().display()
        );
        if let Durability::Throwaway = self.durability {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = self.log_file();
        if !log.exists() {
            fs::write(&log, b"")?;
        }
        self.own(&log)?;
        let out = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            bail!(
                "PostgreSQL did not start:\n{}\nlast log lines ({}):\n{}",
                String::from_utf8_lossy(&out.stderr),
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        fs::write(self.root.join("port"), self.port.to_string())?;
        Ok(())
    }

    /// Stops and starts the server on the same port: every connection is terminated
    /// (`57P01`), as in a real database restart.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// Stops the server (fast mode: in-flight transactions are rolled back).
    pub fn stop(&self) -> Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60"])
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() && self.is_running() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Creates `database` if it does not exist.
pub async fn ensure_database(cluster: &Cluster, database: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Identifiers cannot be bound; the name is ours and quoted.
        let sql = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

const INSTALL_HINT: &str = "Install them: Debian/Ubuntu `sudo apt-get install postgresql`, Fedora \
     `sudo dnf install postgresql-server`, macOS `brew install postgresql@16`; or point \
     JET_PG_BIN_DIR at their folder, or set DATABASE_URL to use an existing server.";

/// Where initdb, pg_ctl and postgres live: `JET_PG_BIN_DIR`, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`, or the `PATH`.
#[allow(clippy::disallowed_methods)] // a tool path, not service configuration
fn find_bin_dir() -> Result<PathBuf> {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|t| dir.join(t).is_file())
    };
    if let Some(dir) = std::env::var_os("JET_PG_BIN_DIR").map(PathBuf::from) {
        if has_tools(&dir) {
            return Ok(dir);
        }
        bail!(
            "JET_PG_BIN_DIR={} has no initdb, pg_ctl and postgres.\n{INSTALL_HINT}",
            dir.display()
        );
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                return Ok(dir);
            }
        }
    }
    bail!("PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.\n{INSTALL_HINT}")
}

fn running_as_root() -> Result<bool> {
    // /proc/self is owned by the process's effective uid; no unsafe libc call needed.
    Ok(fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false))
}

/// uid and gid of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == "postgres")
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "running as root, and PostgreSQL refuses to run as root: create a `postgres` \
                 system user (the Debian package does) or run jet as a normal user"
            )
        })
}

/// The cluster folder, or, when we run as root and the postgres user could not reach it
/// (a parent folder closed to others), a folder under /var/tmp named after it.
fn usable_root(root: &Path, run_as: Option<(u32, u32)>) -> Result<PathBuf> {
    let root = std::path::absolute(root)?;
    let Some((uid, _)) = run_as else {
        return Ok(root);
    };
    let reachable = root.ancestors().skip(1).all(|dir| match fs::metadata(dir) {
        Ok(m) => m.uid() == uid || m.mode() & 0o001 != 0,
        Err(_) => true, // not created yet: we create it open enough
    });
    if reachable {
        return Ok(root);
    }
    let name: String = root
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let fallback = PathBuf::from("/var/tmp").join(format!("jet{name}"));
    eprintln!(
        "note: {} is not reachable by the postgres user; using {} for the cluster",
        root.display(),
        fallback.display()
    );
    Ok(fallback)
}

/// The preferred port, else the port used last time, else any free port.
fn choose_port(root: &Path, preferred: Option<u16>) -> Result<u16> {
    if let Some(port) = preferred {
        return Ok(port);
    }
    let last: Option<u16> = fs::read_to_string(root.join("port"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if let Some(port) = last.filter(|p| port_is_free(*p)) {
        return Ok(port);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Line 4 of `postmaster.pid` is the port of the running server.
fn running_port(data_dir: &Path) -> Option<u16> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .nth(3)?
        .trim()
        .parse()
        .ok()
}
