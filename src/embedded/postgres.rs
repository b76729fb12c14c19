//! A private PostgreSQL cluster started from the server binaries found on the machine
//! (`initdb`, `pg_ctl`, `postgres`), for when `DATABASE_URL` is unset: the demo's database,
//! and the test suite's. Blocking code (it runs processes): call it from `spawn_blocking` or
//! at start-up before the runtime is busy.
//!
//! The cluster outlives forewarn (the next run reuses it), so it must not be open to other
//! local users: it listens on no TCP address, only on a Unix socket inside its own data
//! directory (mode 0700, so only its owner and root can reach the socket), and it asks for
//! the superuser's password (scram-sha-256), which is generated once and kept in
//! `forewarn.password` (mode 0600) in the data directory. `pg_hba.conf` holds a single
//! `local … scram-sha-256` line. A data directory in any other state — one an earlier
//! version left with `trust` on 127.0.0.1 — is secured the same way before the server
//! starts (a running server there is stopped first).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "DATABASE_URL is not set and no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found; \
         install PostgreSQL (e.g. `apt-get install postgresql`) or set DATABASE_URL"
    )]
    NoBinaries,
    #[error(
        "running as root, PostgreSQL needs an unprivileged account to run the private cluster \
         and there is no `postgres` user; create one or set DATABASE_URL"
    )]
    NoServiceAccount,
    #[error(
        "the private cluster's socket {path} would be longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket path may have, \
         or is not UTF-8; set embedded.data_dir to a shorter path"
    )]
    SocketPath { path: PathBuf },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Names the socket when no port is asked for. No conflict with a system server on 5432:
/// the socket is in the data directory, and nothing listens on TCP.
const DEFAULT_SOCKET_PORT: u16 = 5432;
/// The superuser's password, in this file of the data directory (mode 0600).
pub const PASSWORD_FILE: &str = "forewarn.password";
/// The role forewarn connects as (`initdb -U`).
const SUPERUSER: &str = "postgres";
/// `sockaddr_un.sun_path` holds 108 bytes on Linux, the last one a NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;
/// The longest socket file name PostgreSQL creates in the socket directory.
const LONGEST_SOCKET_NAME: &str = "/.s.PGSQL.65535";
/// `pg_hba.conf` of a secured cluster: the socket only, with the password. A data directory
/// whose `pg_hba.conf` differs is secured again before its server starts.
const SECURED_HBA: &str = "\
# Written by forewarn, which rewrites this file whenever it differs. The private cluster
# listens on no TCP address, only on its Unix socket inside this directory (mode 0700), and
# asks for the superuser's password, kept in forewarn.password (mode 0600).
local all all scram-sha-256
";

/// A secret that `Debug` does not show.
#[derive(Clone, Default)]
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// The number in the socket's name (`.s.PGSQL.{port}`; the server listens on no TCP
    /// port). `None`: a running cluster's, else 5432, so that
    /// `psql "host=<data_dir> user=postgres"` finds the socket without a port.
    pub port: Option<u16>,
    /// `false` turns fsync off (tests: much faster, and a crash only loses a test run).
    pub durable: bool,
}

/// A running private cluster.
#[derive(Debug)]
pub struct PrivateCluster {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    /// Names the socket (`.s.PGSQL.{port}`); the server listens on no TCP port.
    port: u16,
    durable: bool,
    account: Option<(u32, u32)>,
    password: Password,
}

/// What `postmaster.pid` says about a running server.
#[derive(Debug)]
struct RunningServer {
    port: u16,
    /// Its first socket directory and first TCP listen address (empty: none).
    socket_directory: String,
    listen_address: String,
}

impl RunningServer {
    /// Started by this module: the socket in the data directory, no TCP.
    fn is_socket_only(&self) -> bool {
        self.socket_directory == "." && self.listen_address.is_empty()
    }
}

impl PrivateCluster {
    /// Starts the cluster in `options.data_dir`, creating it on first use and securing it
    /// (socket only, password) when it is not yet. When a secured cluster is already running
    /// there (a previous run, another test process), it is reused; one running in any other
    /// way (an earlier version's, on TCP with `trust`) is stopped, secured and started again.
    pub fn start(options: &ClusterOptions) -> Result<PrivateCluster, PostgresError> {
        let bin_dir = find_bin_dir()?;
        let account = service_account()?;
        let data_dir = absolute(&options.data_dir)?;
        let socket_path_bytes = data_dir.as_os_str().len() + LONGEST_SOCKET_NAME.len();
        if data_dir.to_str().is_none() || socket_path_bytes > MAX_SOCKET_PATH_BYTES {
            return Err(PostgresError::SocketPath {
                path: data_dir.join(&LONGEST_SOCKET_NAME[1..]),
            });
        }
        if let Some(parent) = data_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| PostgresError::Io {
                path: parent.into(),
                source,
            })?;
        }
        // Serialise concurrent starters (parallel test processes) on a lock file beside the
        // data directory.
        let lock_path = data_dir.with_extension("lock");
        let lock = File::create(&lock_path).map_err(|source| PostgresError::Io {
            path: lock_path.clone(),
            source,
        })?;
        lock.lock().map_err(|source| PostgresError::Io {
            path: lock_path.clone(),
            source,
        })?;

        let mut cluster = PrivateCluster {
            data_dir,
            bin_dir,
            port: options.port.unwrap_or(DEFAULT_SOCKET_PORT),
            durable: options.durable,
            account,
            password: Password::default(),
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        let secured = cluster.is_secured();
        match cluster.running_server() {
            Some(server) if secured && server.is_socket_only() => {
                cluster.port = server.port;
                cluster.password = cluster.read_password()?;
                tracing::info!(data_dir = %cluster.data_dir.display(), "reusing running private PostgreSQL cluster");
                return Ok(cluster);
            }
            Some(server) => {
                tracing::warn!(
                    data_dir = %cluster.data_dir.display(),
                    listen_address = %server.listen_address,
                    "the running private PostgreSQL cluster is not secured (an earlier version opened it to every local user): stopping it to secure it"
                );
                cluster.port = server.port;
                cluster.stop()?;
            }
            None => {}
        }
        if !secured {
            cluster.secure()?;
        }
        cluster.password = cluster.read_password()?;
        cluster.pg_ctl_start()?;
        tracing::info!(
            data_dir = %cluster.data_dir.display(),
            "DATABASE_URL not set: started a private PostgreSQL cluster (Unix socket in its data directory, password in {PASSWORD_FILE}) from {}",
            cluster.bin_dir.display()
        );
        Ok(cluster)
    }

    /// `postgres://postgres:{password}@localhost:{port}/{database}?host={data_dir}`: sqlx
    /// (like libpq) takes a `host` that starts with `/` as the directory of the socket.
    pub fn url(&self, database: &str) -> String {
        let mut url = url::Url::parse("postgres://localhost").expect("literal URL");
        // A postgres:// URL with a host takes a user, password and port.
        let _ = url.set_username(SUPERUSER);
        let _ = url.set_password(Some(&self.password.0));
        let _ = url.set_port(Some(self.port));
        url.set_path(&format!("/{database}"));
        url.query_pairs_mut()
            .append_pair("host", &self.data_dir.to_string_lossy());
        url.to_string()
    }

    /// The number in the socket's name (`.s.PGSQL.{port}`); nothing listens on it over TCP.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory, which is also the socket's directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (fast shutdown: active sessions are disconnected).
    pub fn stop(&self) -> Result<(), PostgresError> {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]);
        run(command).map(drop)
    }

    /// Starts the server again on the same port after [`stop`](Self::stop).
    pub fn restart(&self) -> Result<(), PostgresError> {
        self.pg_ctl_start()
    }

    fn initdb(&self) -> Result<(), PostgresError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| PostgresError::Io {
            path: self.data_dir.clone(),
            source,
        })?;
        self.give_to_account(&self.data_dir)?;
        // Every connection is refused until `secure` has set the password and written
        // pg_hba.conf; the server is never started before that.
        let mut command = self.command("initdb");
        command.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "-A",
            "reject",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        if !self.durable {
            command.arg("--no-sync");
        }
        run(command).map(drop)
    }

    /// Whether `pg_hba.conf` is the secured one and the password file is there. `secure`
    /// writes `pg_hba.conf` last, so a directory secured half-way is secured again.
    fn is_secured(&self) -> bool {
        let hba = std::fs::read_to_string(self.data_dir.join("pg_hba.conf")).unwrap_or_default();
        hba == SECURED_HBA && self.read_password().is_ok()
    }

    /// Sets the superuser's password (the one in the password file, or a new one), then
    /// writes pg_hba.conf (socket only, scram-sha-256). Runs PostgreSQL in single-user
    /// mode, which opens no socket at all, so nobody can connect meanwhile.
    fn secure(&self) -> Result<(), PostgresError> {
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| PostgresError::Io {
                path: self.data_dir.clone(),
                source,
            },
        )?;
        let password = match self.read_password() {
            Ok(password) => password,
            Err(_) => {
                let password =
                    Password(super::random_secret().map_err(|source| PostgresError::Io {
                        path: self.password_path(),
                        source,
                    })?);
                self.write_private_file(&self.password_path(), &password.0)?;
                password
            }
        };
        // The password is 64 hex digits: nothing in it needs quoting.
        debug_assert!(password.0.bytes().all(|b| b.is_ascii_hexdigit()));
        self.single_user(
            &format!(
                "set password_encryption = 'scram-sha-256';\nalter role {SUPERUSER} password '{}';\n",
                password.0
            ),
            &password,
        )?;
        self.write_private_file(&self.data_dir.join("pg_hba.conf"), SECURED_HBA)?;
        tracing::info!(data_dir = %self.data_dir.display(), "private PostgreSQL cluster secured: Unix socket only, password in {PASSWORD_FILE}");
        Ok(())
    }

    fn password_path(&self) -> PathBuf {
        self.data_dir.join(PASSWORD_FILE)
    }

    fn read_password(&self) -> Result<Password, PostgresError> {
        let path = self.password_path();
        let text = std::fs::read_to_string(&path).map_err(|source| PostgresError::Io {
            path: path.clone(),
            source,
        })?;
        let password = text.trim();
        if password.len() < 32 || !password.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PostgresError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a password forewarn wrote (at least 32 hex digits)",
                ),
            });
        }
        Ok(Password(password.to_string()))
    }

    /// Writes `contents` to `path` with mode 0600, owned by the cluster's account: a new
    /// file beside it, renamed over it, so that a crash leaves the old file or the new one.
    fn write_private_file(&self, path: &Path, contents: &str) -> Result<(), PostgresError> {
        let io_error = |source| PostgresError::Io {
            path: path.into(),
            source,
        };
        let partial = path.with_extension("forewarn-new");
        let _ = std::fs::remove_file(&partial);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_error)?;
        file.write_all(contents.as_bytes()).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        self.give_to_account(&partial)?;
        std::fs::rename(&partial, path).map_err(io_error)
    }

    /// Hands `path` to the account the server runs as (when we are root).
    fn give_to_account(&self, path: &Path) -> Result<(), PostgresError> {
        if let Some((uid, gid)) = self.account {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
                PostgresError::Io {
                    path: path.into(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Runs `sql` (one statement per line) in single-user mode. Statements are not logged
    /// (`log_min_error_statement=panic`), and `secret` is cut out of any error shown.
    fn single_user(&self, sql: &str, secret: &Password) -> Result<(), PostgresError> {
        let mut command = self.command("postgres");
        command.arg("--single").arg("-D").arg(&self.data_dir).args([
            "-c",
            "exit_on_error=true",
            "-c",
            "log_min_error_statement=panic",
        ]);
        if !self.durable {
            command.arg("-F");
        }
        command
            .arg("postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = format!("{command:?}");
        let command_error = |detail: String| PostgresError::Command {
            command: program.clone(),
            detail: detail.replace(&secret.0, "***"),
        };
        let mut child = command.spawn().map_err(|e| command_error(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .map_err(|e| command_error(e.to_string()))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| command_error(e.to_string()))?;
        // Single-user mode exits 0 after an error unless exit_on_error turns it FATAL;
        // check its output too.
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() || stderr.contains("ERROR") || stderr.contains("FATAL") {
            return Err(command_error(format!("{}{stderr}", output.status)));
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), PostgresError> {
        // No TCP (`listen_addresses=''`); the socket in the data directory (`.` is relative
        // to it: the server runs there), readable by its owner only.
        let mut server_options = format!(
            "-p {} -c listen_addresses='' -c unix_socket_directories=. -c unix_socket_permissions=0700 -c max_connections=200",
            self.port
        );
        if !self.durable {
            server_options
                .push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.data_dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &server_options, "start"]);
        run(command).map(drop)
    }

    /// The server running in the data directory, from `postmaster.pid` (lines: pid, data
    /// directory, start time, port, first socket directory, first listen address, …), if
    /// its process is alive.
    fn running_server(&self) -> Option<RunningServer> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data_dir).arg("status");
        let status = command.output().ok()?;
        if !status.status.success() {
            return None;
        }
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = pid_file.lines().collect();
        Some(RunningServer {
            port: lines.get(3)?.trim().parse().ok()?,
            socket_directory: lines.get(4).map_or("", |l| l.trim()).to_string(),
            listen_address: lines.get(5).map_or("", |l| l.trim()).to_string(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.account {
            command.uid(uid).gid(gid);
        }
        command.env_remove("PGDATA").env_remove("PGPORT");
        command
    }
}

fn run(mut command: Command) -> Result<Output, PostgresError> {
    let program = format!("{command:?}");
    let output = command.output().map_err(|e| PostgresError::Command {
        command: program.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(PostgresError::Command {
            command: program,
            detail: format!(
                "{}{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(output)
}

fn absolute(path: &Path) -> Result<PathBuf, PostgresError> {
    std::path::absolute(path).map_err(|source| PostgresError::Io {
        path: path.into(),
        source,
    })
}

/// The newest `…/bin` holding `initdb`, `pg_ctl` and `postgres`: Debian's
/// `/usr/lib/postgresql/<version>/bin`, then `$PATH`.
pub fn find_bin_dir() -> Result<PathBuf, PostgresError> {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/pgsql/bin")])
        .find(|dir| has_tools(dir))
        .ok_or(PostgresError::NoBinaries)
}

/// PostgreSQL refuses to run as root: when we are root, the `postgres` account's uid and
/// gid, which the private cluster runs as (`None`: run it as ourselves).
pub fn service_account() -> Result<Option<(u32, u32)>, PostgresError> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == "postgres")
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .map(Some)
        .ok_or(PostgresError::NoServiceAccount)
}

/// Waits until something answers TCP connections on the loopback `port` (Mosquitto).
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
