//! A private PostgreSQL cluster started from the server binaries found on the machine
//! (`initdb`, `pg_ctl`), for when `DATABASE_URL` is unset: the demo's database, and the
//! test suite's. Blocking code (it runs processes): call it from `spawn_blocking` or at
//! start-up before the runtime is busy.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "DATABASE_URL is not set and no PostgreSQL server binaries (initdb, pg_ctl) were found; \
         install PostgreSQL (e.g. `apt-get install postgresql`) or set DATABASE_URL"
    )]
    NoBinaries,
    #[error(
        "running as root, PostgreSQL needs an unprivileged account to run the private cluster \
         and there is no `postgres` user; create one or set DATABASE_URL"
    )]
    NoServiceAccount,
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// Port to listen on; `None` reuses the port of a running cluster or picks a free one.
    pub port: Option<u16>,
    /// `false` turns fsync off (tests: much faster, and a crash only loses a test run).
    pub durable: bool,
}

/// A running private cluster.
#[derive(Debug)]
pub struct PrivateCluster {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    durable: bool,
    account: Option<(u32, u32)>,
}

impl PrivateCluster {
    /// Starts the cluster in `options.data_dir`, creating it on first use. When a cluster
    /// is already running there (a previous run, another test process), it is reused.
    pub fn start(options: &ClusterOptions) -> Result<PrivateCluster, PostgresError> {
        let bin_dir = find_bin_dir()?;
        let account = service_account()?;
        let data_dir = absolute(&options.data_dir)?;
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
            port: options.port.unwrap_or(0),
            durable: options.durable,
            account,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        if let Some(port) = cluster.running_port() {
            cluster.port = port;
            tracing::info!(data_dir = %cluster.data_dir.display(), port, "reusing running private PostgreSQL cluster");
            return Ok(cluster);
        }
        if cluster.port == 0 {
            cluster.port = super::free_port().map_err(|source| PostgresError::Io {
                path: cluster.data_dir.clone(),
                source,
            })?;
        }
        cluster.pg_ctl_start()?;
        tracing::info!(
            data_dir = %cluster.data_dir.display(),
            port = cluster.port,
            "DATABASE_URL not set: started a private PostgreSQL cluster from {}",
            cluster.bin_dir.display()
        );
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:{port}/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
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
        if let Some((uid, gid)) = self.account {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid)).map_err(|source| {
                PostgresError::Io {
                    path: self.data_dir.clone(),
                    source,
                }
            })?;
        }
        let mut command = self.command("initdb");
        command.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
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

    fn pg_ctl_start(&self) -> Result<(), PostgresError> {
        let mut server_options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200",
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

    /// The port of the server running in the data directory, from `postmaster.pid`, if its
    /// process is alive.
    fn running_port(&self) -> Option<u16> {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(&self.data_dir).arg("status");
        let status = command.output().ok()?;
        if !status.status.success() {
            return None;
        }
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
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

/// The newest `…/bin` holding both `initdb` and `pg_ctl`: Debian's
/// `/usr/lib/postgresql/<version>/bin`, then `$PATH`.
pub fn find_bin_dir() -> Result<PathBuf, PostgresError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
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

/// PostgreSQL refuses to run as root: when we are root, run it as the `postgres` account.
fn service_account() -> Result<Option<(u32, u32)>, PostgresError> {
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

/// Waits until the server answers TCP connections (after a restart).
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
