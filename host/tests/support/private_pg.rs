//! A PostgreSQL server of the test's own, for tests that stop, restart or cut it off: made
//! with `initdb` in a temporary directory and run with `pg_ctl` on a free loopback port (the
//! binaries from `pg_config --bindir`). Never the shared server. Run as root, the server runs
//! as the `postgres` user, as PostgreSQL requires. Stopped and removed when dropped. Include
//! it with `#[path = "support/private_pg.rs"] mod private_pg;`.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::{Connection, PgConnection};

pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The user the server runs as when the test runs as root.
    run_as: Option<&'static str>,
}

impl PrivatePostgres {
    /// Makes a cluster and starts it; a failure says what is missing.
    pub fn start() -> Self {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .unwrap_or_else(|error| {
                panic!("this test needs PostgreSQL's server binaries (pg_config): {error}")
            });
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir =
            std::env::temp_dir().join(format!("eventhost-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.trim_ascii() == b"0");
        let run_as = root.then_some("postgres");
        if let Some(user) = run_as {
            let chown = Command::new("chown")
                .arg(user)
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(chown.success(), "chown {user} {}", dir.display());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            bin,
            dir,
            port,
            run_as,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "root",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.start_server();
        server
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// One of the server's programs, to run as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        command.current_dir(&self.dir);
        command
    }

    /// Runs one of the server's programs, or fails with its output.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// A database of this server (made by [`Self::create_database`], or `postgres`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://root@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the database");
        self.url(name)
    }

    /// A fast shutdown (sessions are ended, transactions rolled back) and a start.
    pub fn restart(&self) {
        self.stop();
        self.start_server();
    }

    /// A fast shutdown: the server is down until [`Self::resume`].
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn resume(&self) {
        self.start_server();
    }

    /// Ends every session of `database` but the caller's (`pg_terminate_backend`); how many.
    pub async fn terminate_sessions(&self, database: &str) -> u64 {
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private server");
        let ended: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_all(&mut admin)
        .await
        .expect("terminate the sessions");
        ended.iter().filter(|(ended,)| *ended).count() as u64
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
