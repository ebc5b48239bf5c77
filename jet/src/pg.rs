//! A private PostgreSQL cluster run from the machine's server binaries, for `jet dev` and
//! `jet test`: created on first use under a folder of the project, started with
//! `wal_level = logical`, listening on 127.0.0.1 and a private Unix socket. The dev cluster
//! requires a generated superuser password ([`Access::Password`]); the test cluster trusts
//! local connections.
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

/// Who may connect to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The `postgres` superuser has a generated password, required over TCP and the socket
    /// alike. The dev cluster holds the platform's own data: trusting local connections would
    /// let anything on the machine, a tenant's datasource included, connect as superuser.
    Password,
    /// Every local connection is trusted. Only for the test cluster, which holds throwaway
    /// databases that the tests' datasources reach without a password.
    Trust,
}

/// A cluster directory and how to run it.
pub struct Cluster {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    durability: Durability,
    port: u16,
    /// The superuser's password, with [`Access::Password`].
    password: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// The superuser password file inside the cluster folder (mode 0600).
const PASSWORD_FILE: &str = "superuser.password";

/// `pg_hba.conf` of a password cluster: no connection without the password.
const PASSWORD_HBA: &str = "\
# Written by jet: every connection needs the superuser password.
local   all             all                     scram-sha-256
host    all             all     127.0.0.1/32    scram-sha-256
host    all             all     ::1/128         scram-sha-256
local   replication     all                     scram-sha-256
host    replication     all     127.0.0.1/32    scram-sha-256
host    replication     all     ::1/128         scram-sha-256
";

impl Cluster {
    /// Prepares (but does not start) a cluster under `root`, initialising it on first use.
    pub fn prepare(
        root: &Path,
        durability: Durability,
        access: Access,
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
        let mut cluster = Self {
            root,
            bin_dir,
            run_as,
            durability,
            port,
            password: None,
        };
        cluster.init_if_needed(access)?;
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

    /// `postgres://postgres[:<password>]@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        let password = self
            .password
            .as_ref()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!(
            "postgres://postgres{password}@127.0.0.1:{}/{database}",
            self.port
        )
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

    fn init_if_needed(&mut self, access: Access) -> Result<()> {
        let data = self.data_dir();
        for dir in [&data, &self.socket_dir()] {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            self.own(dir)?;
        }
        self.own(&self.root)?;
        let password_file = self.root.join(PASSWORD_FILE);
        let initialised = data.join("PG_VERSION").exists();
        if access == Access::Password {
            let had_password = password_file.exists();
            self.password = Some(self.password_from(&password_file)?);
            if initialised && !had_password {
                // A cluster made before passwords were required still trusts every local
                // connection: give the superuser its password and close the door.
                self.require_password()?;
            }
        }
        if initialised {
            return Ok(());
        }
        let auth: Vec<std::ffi::OsString> = match access {
            Access::Password => vec![
                "--auth=scram-sha-256".into(),
                format!("--pwfile={}", password_file.display()).into(),
            ],
            Access::Trust => vec!["--auth=trust".into()],
        };
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(auth)
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The superuser password kept in `path`, generated (32 random hex chars, mode 0600) on
    /// first use. The postgres user must read it for `initdb --pwfile`.
    fn password_from(&self, path: &Path) -> Result<String> {
        if let Ok(kept) = fs::read_to_string(path) {
            return Ok(kept.trim().to_owned());
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the OS random source: {e}"))?;
        let password = hex::encode(bytes);
        fs::write(path, &password).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        self.own(path)?;
        Ok(password)
    }

    /// Sets the superuser password of an existing cluster (single-user mode, so no connection
    /// is needed) and makes `pg_hba.conf` require it.
    fn require_password(&self) -> Result<()> {
        use std::io::Write;
        let password = self
            .password
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no password to set"))?;
        if self.is_running() {
            self.stop()?;
        }
        let mut child = self
            .command("postgres")
            .args(["--single", "-D"])
            .arg(self.data_dir())
            .arg("postgres")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running postgres --single")?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?
            // The password is hex: nothing to quote.
            .write_all(format!("ALTER ROLE postgres PASSWORD '{password}';\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "setting the superuser password failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let hba = self.data_dir().join("pg_hba.conf");
        fs::write(&hba, PASSWORD_HBA).with_context(|| format!("writing {}", hba.display()))?;
        self.own(&hba)?;
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
