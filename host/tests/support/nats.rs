//! A NATS server with JetStream of the test's own, on a free loopback port, with its store in
//! a temporary folder; killed when dropped. Needs the `nats-server` binary (Debian's package
//! `nats-server`; `.ci/run` installs it). Include it with `#[path = "support/nats.rs"] mod nats;`.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    pub url: String,
    child: Child,
    _store: tempfile::TempDir,
}

impl NatsServer {
    pub async fn start() -> Self {
        let store = tempfile::tempdir().expect("a folder for JetStream");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("these tests need nats-server (apt install nats-server): {error}")
            });
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            url,
            child,
            _store: store,
        }
    }

    /// A JetStream context on this server.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(&self.url)
            .await
            .expect("connect to nats-server");
        async_nats::jetstream::new(client)
    }

    /// Creates a stream `name` over `subjects`.
    pub async fn stream(
        &self,
        name: &str,
        subjects: &[&str],
    ) -> async_nats::jetstream::stream::Stream {
        self.jetstream()
            .await
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.to_owned(),
                subjects: subjects
                    .iter()
                    .map(|subject| (*subject).to_owned())
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("create the stream")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
