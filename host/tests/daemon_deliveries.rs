//! Deliveries end to end: the real daemon, a real NATS server with JetStream and a real HTTP
//! receiver, both started by the test. Every message a committed batch asked for arrives,
//! once after de-duplication by its idempotency key, in order per key, signed; nothing of a
//! failed batch is sent; failures are retried, refusals die and can be retried; kill -9 loses
//! nothing; secrets never show.

#[macro_use]
mod support;
#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/nats.rs"]
mod nats;
#[path = "support/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use daemon::{Daemon, Deployment, TestDatabase};
use nats::NatsServer;
use rand::Rng;
use receiver::{Received, Receiver, Reply};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "Bearer tok-3c1f9e-NEVER-SHOWN";

/// A deployment running hostile-deliver (`deliver.wasm`, granted `grants`) against `config`.
fn deployment(database: &TestDatabase, grants: &str) -> Deployment {
    let mut deployment = Deployment::new(database.url());
    deployment.env("EH_TEST_HOOK_SECRET", SECRET);
    deployment.env("EH_TEST_HOOK_TOKEN", TOKEN);
    deployment.install("hostile/hostile-deliver.wasm", "deliver.wasm");
    deployment.sidecar("deliver.wasm", &format!("sinks = [{grants}]\n"));
    deployment
}

fn hooks_sink(receiver: &Receiver) -> String {
    format!(
        r#"
[sinks.hooks]
kind = "http"
url = "{}/hooks/{{key}}"
signing_secret_env = "EH_TEST_HOOK_SECRET"
headers_env = {{ authorization = "EH_TEST_HOOK_TOKEN" }}
timeout_ms = 2000
backoff_base_ms = 50
backoff_max_ms = 400
breaker_failures = 1000
"#,
        receiver.url
    )
}

/// Appends one `probe` event per line of `events` (aggregate id, payload) from a file.
async fn append(deployment: &Deployment, events: &[(String, Value)]) {
    let lines: Vec<String> = events
        .iter()
        .map(|(id, payload)| {
            json!({"aggregate_type": "probe", "aggregate_id": id, "event_type": "probe.asked", "payload": payload})
                .to_string()
        })
        .collect();
    let file = deployment.path(&format!("events-{}.jsonl", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, lines.join("\n")).unwrap();
    deployment
        .cli_ok(&["append", "--file", &file.display().to_string()])
        .await;
}

/// Events for `keys` keys, `per_key` each, bodies `{"key":K,"n":N}`, alternating between the
/// sinks in `sinks`.
fn keyed_events(keys: usize, per_key: usize, sinks: &[&str]) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for n in 0..per_key {
        for k in 0..keys {
            let key = format!("k{k}");
            let sink = sinks[(n + k) % sinks.len()];
            let body = json!({"key": key, "n": n}).to_string();
            events.push((key, json!({"sink": sink, "body": body})));
        }
    }
    events
}

/// The bodies' `n` per key, in the order first received, after dropping copies by
/// idempotency key.
fn first_copies<'a>(
    messages: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, Vec<u64>> {
    let mut seen = HashSet::new();
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, body) in messages {
        if !seen.insert(id.to_owned()) {
            continue;
        }
        let body: Value = serde_json::from_slice(body).expect("a JSON body");
        let key = body["key"].as_str().expect("a key").to_owned();
        by_key
            .entry(key)
            .or_default()
            .push(body["n"].as_u64().expect("an n"));
    }
    by_key
}

fn in_order(by_key: &BTreeMap<String, Vec<u64>>, per_key: usize) {
    for (key, ns) in by_key {
        let expected: Vec<u64> = (0..per_key as u64).filter(|n| ns.contains(n)).collect();
        assert_eq!(ns, &expected, "key {key}: received out of order");
    }
}

fn id_of(received: &Received) -> &str {
    received
        .header("idempotency-key")
        .expect("an idempotency key")
}

async fn nats_messages(
    stream: &mut async_nats::jetstream::stream::Stream,
) -> Vec<(String, String, Vec<u8>)> {
    let count = stream.info().await.expect("stream info").state.messages;
    let mut messages = Vec::new();
    for sequence in 1..=count {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("a stored message");
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.to_string())
            .expect("a Nats-Msg-Id");
        messages.push((message.subject.to_string(), id, message.payload.to_vec()));
    }
    messages
}

async fn wait_for<F, Fut>(daemon: &mut Daemon, what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    daemon
        .wait_until(what, Duration::from_secs(60), probe)
        .await;
}

#[tokio::test]
async fn every_message_of_a_committed_batch_arrives_once_per_key_in_order_signed() {
    let database = TestDatabase::postgres().await;
    let receiver = Receiver::start().await;
    let nats = NatsServer::start().await;
    let mut stream = nats.stream("EVENTS", &["events.>"]).await;
    let mut deployment = deployment(&database, r#""hooks", "events""#);
    let config = deployment.config(&format!(
        "{}\n[sinks.events]\nkind = \"nats\"\nurl = \"{}\"\nsubject = \"events.{{key}}\"\n",
        hooks_sink(&receiver),
        nats.url
    ));
    let mut daemon = deployment.start(&["--config", &config, "--max-attempts", "2"]);
    let (keys, per_key) = (5, 20);
    let mut events = keyed_events(keys, per_key, &["hooks", "events"]);
    // A batch that fails after asking for messages: none of them may ever be sent.
    events.push((
        "k-failing".to_owned(),
        json!({"sink": "hooks", "body": "{\"key\":\"from-a-failed-batch\",\"n\":0}", "fail": true}),
    ));
    append(&deployment, &events).await;
    let half = keys * per_key / 2;
    wait_for(&mut daemon, "every message delivered", || async {
        let delivered = deployment
            .cli_ok(&[
                "deliveries",
                "list",
                "--status",
                "delivered",
                "--json",
                "--limit",
                "1000",
            ])
            .await
            .json_lines()
            .len();
        let parked = deployment.parked().await.len();
        if delivered == 2 * half && parked == 1 {
            Ok(())
        } else {
            Err(format!("{delivered} delivered, {parked} parked"))
        }
    })
    .await;

    let accepted = receiver.accepted();
    let http = first_copies(accepted.iter().map(|r| (id_of(r), r.body.as_slice())));
    assert_eq!(
        http.values().map(Vec::len).sum::<usize>(),
        half,
        "each HTTP message once"
    );
    assert!(
        !http.contains_key("from-a-failed-batch"),
        "nothing of a failed batch is sent"
    );
    in_order(&http, per_key);
    let webhook = standardwebhooks::Webhook::new(SECRET).unwrap();
    for request in &accepted {
        assert_eq!(request.header("webhook-id"), Some(id_of(request)));
        webhook
            .verify(&request.body, &request.headers)
            .unwrap_or_else(|error| panic!("a bad signature on {}: {error:?}", id_of(request)));
        assert_eq!(request.header("authorization"), Some(TOKEN));
        let key = request.path.trim_start_matches("/hooks/");
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["key"], key, "the url template took the message's key");
    }

    let published = nats_messages(&mut stream).await;
    assert_eq!(published.len(), half, "JetStream holds each message once");
    let on_nats = first_copies(
        published
            .iter()
            .map(|(_, id, body)| (id.as_str(), body.as_slice())),
    );
    in_order(&on_nats, per_key);
    for (subject, _, body) in &published {
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            subject,
            &format!("events.{}", body["key"].as_str().unwrap())
        );
    }

    // Secrets never show: not in the log, the listings, or errors.
    let listings = [
        deployment
            .cli_ok(&["deliveries", "list", "--limit", "1000"])
            .await
            .to_string(),
        deployment
            .cli_ok(&["deliveries", "list", "--json", "--limit", "1000"])
            .await
            .to_string(),
        deployment
            .cli_ok(&["plugins", "list", "--json"])
            .await
            .to_string(),
        deployment.cli_ok(&["parked", "list"]).await.to_string(),
    ];
    daemon.stop().await;
    for text in listings.iter().chain([&daemon.log()]) {
        assert!(!text.contains("tok-3c1f9e"), "a secret leaked:\n{text}");
        assert!(
            !text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "a secret leaked:\n{text}"
        );
    }
}

#[tokio::test]
async fn failures_are_retried_after_retry_after_and_a_refused_message_dies_until_retried() {
    let database = TestDatabase::sqlite();
    let receiver = Receiver::start().await;
    // A 500, an answer later than the sink's 2 s time-out, a 429: each is retried.
    receiver.script([
        Reply::Status(500),
        Reply::Hang(Duration::from_millis(2500)),
        Reply::RetryAfter(1),
    ]);
    receiver.rule("refuse-me", Reply::Status(400));
    let mut deployment = deployment(&database, r#""hooks""#);
    let config = deployment.config(&hooks_sink(&receiver));
    let mut daemon = deployment.start(&["--config", &config]);
    append(
        &deployment,
        &[("a".to_owned(), json!({"body": "{\"key\":\"a\",\"n\":0}"}))],
    )
    .await;
    wait_for(&mut daemon, "the message accepted", || async {
        match receiver.accepted().len() {
            1 => Ok(()),
            n => Err(format!(
                "{n} accepted of {} requests",
                receiver.received().len()
            )),
        }
    })
    .await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 4, "500, time-out, 429, then success");
    let ids: HashSet<&str> = requests.iter().map(id_of).collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt carries the same idempotency key"
    );
    let waited = requests[3].at - requests[2].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured ({waited:?})"
    );

    append(
        &deployment,
        &[(
            "b".to_owned(),
            json!({"body": "{\"key\":\"b\",\"n\":0,\"note\":\"refuse-me\"}"}),
        )],
    )
    .await;
    let dead = loop_until_dead(&mut daemon, &deployment).await;
    assert_eq!(dead["attempts"], 1, "a 400 is final: no retry");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("400 Bad Request: scripted 400"),
        "{dead}"
    );
    let table = deployment
        .cli_ok(&["deliveries", "list", "--status", "dead"])
        .await;
    assert!(table.stdout.contains("400 Bad Request"), "{table}");

    receiver.clear_rule();
    let id = dead["id"].as_i64().unwrap().to_string();
    let retried = deployment.cli_ok(&["deliveries", "retry", &id]).await;
    assert!(
        retried.stdout.contains("1 message(s) pending again"),
        "{retried}"
    );
    wait_for(&mut daemon, "the retried message accepted", || async {
        match receiver.accepted().len() {
            2 => Ok(()),
            n => Err(format!("{n} accepted")),
        }
    })
    .await;
    let again = deployment.cli(&["deliveries", "retry", &id]).await;
    assert!(
        !again.status.success(),
        "a delivered message is not retried: {again}"
    );
    assert!(
        again.stderr.contains("dead or skipped message") && again.stderr.contains("not found"),
        "{again}"
    );

    // A redirect is never followed: the message is dead at once, and an operator can skip it.
    receiver.rule("redirect-me", Reply::Redirect);
    append(
        &deployment,
        &[(
            "c".to_owned(),
            json!({"body": "{\"key\":\"c\",\"n\":0,\"note\":\"redirect-me\"}"}),
        )],
    )
    .await;
    let dead = loop_until_dead(&mut daemon, &deployment).await;
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("307 Temporary Redirect"),
        "{dead}"
    );
    assert!(receiver.received().iter().all(|r| r.path != "/elsewhere"));
    let id = dead["id"].as_i64().unwrap().to_string();
    let skipped = deployment.cli_ok(&["deliveries", "skip", &id]).await;
    assert!(
        skipped.stdout.contains(&format!("message {id} skipped")),
        "{skipped}"
    );
    let listed = deployment
        .cli_ok(&["deliveries", "list", "--status", "skipped", "--json"])
        .await
        .json_lines();
    assert_eq!(listed.len(), 1, "{listed:?}");
    daemon.stop().await;
}

async fn loop_until_dead(daemon: &mut Daemon, deployment: &Deployment) -> Value {
    daemon
        .wait_until("a dead message", Duration::from_secs(30), || async {
            let dead = deployment
                .cli_ok(&["deliveries", "list", "--status", "dead", "--json"])
                .await
                .json_lines();
            match dead.as_slice() {
                [one] => Ok(one.clone()),
                other => Err(format!("{} dead", other.len())),
            }
        })
        .await
}

#[tokio::test]
async fn sinks_are_the_operator_s_a_plugin_gets_only_what_it_is_granted() {
    let database = TestDatabase::sqlite();
    let receiver = Receiver::start().await;
    let mut deployment = deployment(&database, r#""hooks""#);
    deployment.sidecar(
        "deliver.wasm",
        "sinks = [\"hooks\"]\n[limits]\nmessage_bytes = 1000\n",
    );
    // A second copy whose sidecar grants a sink the configuration does not define.
    deployment.install("hostile/hostile-deliver.wasm", "rogue.wasm");
    deployment.sidecar("rogue.wasm", "sinks = [\"payroll\"]\n");
    let config = deployment.config(&hooks_sink(&receiver));
    let mut daemon = deployment.start(&["--config", &config, "--max-attempts", "1"]);
    append(
        &deployment,
        &[
            ("a".to_owned(), json!({"sink": "elsewhere"})),
            (
                "b".to_owned(),
                json!({"headers": [["x-note", "one\r\nx-injected: 1"]]}),
            ),
            ("c".to_owned(), json!({"body": "x".repeat(2000)})),
            ("d".to_owned(), json!({"copies": 1001})),
        ],
    )
    .await;
    wait_for(&mut daemon, "four parked events", || async {
        match deployment.parked().await.len() {
            4 => Ok(()),
            n => Err(format!("{n} parked")),
        }
    })
    .await;
    let parked = deployment.parked().await;
    let errors: Vec<&str> = parked
        .iter()
        .map(|p| p["error"].as_str().unwrap())
        .collect();
    let expected = [
        "sink `elsewhere` is not granted to this plugin: it is granted hooks",
        "the value of header \\\"x-note\\\" holds a line break",
        "over the cap of 1000 bytes",
        "more than 1000 messages in one batch",
    ];
    for needle in expected {
        assert!(
            errors.iter().any(|error| error.contains(needle)),
            "{needle:?} in {errors:#?}"
        );
    }
    let pending = deployment.cli_ok(&["deliveries", "list", "--json"]).await;
    assert!(
        pending.json_lines().is_empty(),
        "nothing enqueued: {pending}"
    );
    assert!(receiver.received().is_empty());

    let plugins = deployment.cli_ok(&["plugins", "list", "--json"]).await;
    let rogue = plugins
        .json_lines()
        .into_iter()
        .find(|record| record["file"].as_str().unwrap().ends_with("rogue.wasm"))
        .expect("the rogue plugin is listed");
    assert_eq!(rogue["status"], "rejected", "{rogue}");
    assert!(
        rogue["error"].as_str().unwrap().contains(
            "its sidecar grants sink `payroll`, which is not configured: the daemon's configuration defines hooks"
        ),
        "{rogue}"
    );
    let check = deployment
        .cli_ok(&[
            "plugins",
            "check",
            &deployment.plugin_path("deliver.wasm").display().to_string(),
            "--config",
            &config,
            "--cache-dir",
            &daemon::compile_cache().display().to_string(),
        ])
        .await;
    assert!(check.stdout.contains("sinks granted: hooks"), "{check}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_bad_configuration_stops_start_up_with_one_line_and_no_secret() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.env("EH_TEST_BAD_SECRET", "not-a-whsec-tok-3c1f9e");
    let config = deployment.config(
        "[sinks.hooks]\nkind = \"http\"\nurl = \"https://x.example/\"\nsigning_secret_env = \"EH_TEST_BAD_SECRET\"\n",
    );
    let mut daemon = deployment.start(&["--config", &config]);
    let status = daemon.exit_status(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1));
    let log = daemon.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("sink `hooks`: signing_secret_env: EH_TEST_BAD_SECRET does not hold a Standard Webhooks secret"),
        "{log}"
    );
    assert!(!log.contains("tok-3c1f9e"), "{log}");
    let missing = deployment.config("[sinks.hooks]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nsubject = \"s\"\ntoken_env = \"EH_TEST_UNSET\"\n");
    let mut daemon = deployment.start(&["--config", &missing]);
    assert_eq!(
        daemon.exit_status(Duration::from_secs(10)).await.code(),
        Some(1)
    );
    assert!(
        daemon
            .log()
            .contains("token_env: the environment variable EH_TEST_UNSET is not set")
    );
}

#[tokio::test]
async fn kill_9_during_deliveries_loses_nothing_and_keeps_each_key_in_order() {
    let database = TestDatabase::postgres().await;
    let receiver = Receiver::start().await;
    // A slow receiver, so that deliveries span the kills: 25 messages per key take 5 s.
    receiver.default_reply(Reply::Slow(Duration::from_millis(200)));
    let mut deployment = deployment(&database, r#""hooks""#);
    let config = deployment.config(&hooks_sink(&receiver));
    let (keys, per_key) = (8, 25);
    append(&deployment, &keyed_events(keys, per_key, &["hooks"])).await;
    for _ in 0..20 {
        let daemon = deployment.start(&["--config", &config]);
        let pause = rand::rng().random_range(150..450);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        daemon.kill9();
    }
    let mut daemon = deployment.start(&["--config", &config]);
    wait_for(&mut daemon, "every message accepted", || async {
        let accepted = receiver.accepted();
        let unique: HashSet<&str> = accepted.iter().map(id_of).collect();
        if unique.len() == keys * per_key {
            Ok(())
        } else {
            Err(format!("{} of {}", unique.len(), keys * per_key))
        }
    })
    .await;
    let accepted = receiver.accepted();
    let by_key = first_copies(accepted.iter().map(|r| (id_of(r), r.body.as_slice())));
    in_order(&by_key, per_key);
    assert!(by_key.values().all(|ns| ns.len() == per_key), "{by_key:?}");
    let copies = accepted.len() - keys * per_key;
    eprintln!("{copies} copies re-sent after kills, each under its first idempotency key");
    daemon.stop().await;
}

#[tokio::test]
async fn a_receiver_away_for_30_s_rests_its_sink_and_gets_every_message_when_it_returns() {
    let database = TestDatabase::sqlite();
    let mut receiver = Receiver::start().await;
    let mut deployment = deployment(&database, r#""hooks""#);
    let config = deployment.config(&format!(
        "{}breaker_cooldown_ms = 1000\nmax_attempts = 1000\n",
        hooks_sink(&receiver).replace("breaker_failures = 1000", "breaker_failures = 3")
    ));
    let mut daemon = deployment.start(&["--config", &config]);
    receiver.go_away();
    let (keys, per_key) = (3, 10);
    append(&deployment, &keyed_events(keys, per_key, &["hooks"])).await;
    daemon
        .wait_for_log(
            "the sink keeps failing: resting it",
            1,
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let pending = deployment
        .cli_ok(&["deliveries", "list", "--status", "pending", "--json"])
        .await
        .json_lines();
    assert_eq!(
        pending.len(),
        keys * per_key,
        "nothing lost or given up while it was away"
    );
    let attempts: u64 = pending
        .iter()
        .map(|d| d["attempts"].as_u64().unwrap())
        .sum();
    assert!(
        attempts < 60,
        "a rested sink is not hammered: {attempts} attempts in 30 s"
    );
    receiver.restart().await;
    wait_for(&mut daemon, "every message accepted", || async {
        let unique: HashSet<String> = receiver
            .accepted()
            .iter()
            .map(|r| id_of(r).to_owned())
            .collect();
        if unique.len() == keys * per_key {
            Ok(())
        } else {
            Err(format!("{} of {}", unique.len(), keys * per_key))
        }
    })
    .await;
    let accepted = receiver.accepted();
    in_order(
        &first_copies(accepted.iter().map(|r| (id_of(r), r.body.as_slice()))),
        per_key,
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_relay_forwards_its_filtered_events_to_a_subject_of_their_own_as_a_subscription() {
    let database = TestDatabase::postgres().await;
    let nats = NatsServer::start().await;
    let mut stream = nats.stream("EVENTS", &["events.>"]).await;
    let mut deployment = Deployment::new(database.url());
    let config = deployment.config(&format!(
        "[sinks.events]\nkind = \"nats\"\nurl = \"{}\"\nsubject = \"events.{{aggregate_type}}.{{event_type}}\"\n\
         [relays.orders]\nsink = \"events\"\naggregate_types = [\"order\"]\nbatch_size = 7\n",
        nats.url
    ));
    let mut daemon = deployment.start(&["--config", &config]);
    let mut events = Vec::new();
    for n in 0..20 {
        let (aggregate_type, event_type) = if n % 4 == 3 {
            ("invoice", "invoice.sent")
        } else {
            (
                "order",
                if n % 2 == 0 {
                    "order.created"
                } else {
                    "order.paid"
                },
            )
        };
        events.push(json!({"aggregate_type": aggregate_type, "aggregate_id": format!("{aggregate_type}-{}", n % 3),
                           "event_type": event_type, "payload": {"n": n}}).to_string());
    }
    let file = deployment.path("relay.jsonl");
    std::fs::write(&file, events.join("\n")).unwrap();
    deployment
        .cli_ok(&["append", "--file", &file.display().to_string()])
        .await;
    wait_for(
        &mut daemon,
        "the relay's 15 order events delivered",
        || async {
            let delivered = deployment
                .cli_ok(&["deliveries", "list", "--status", "delivered", "--json"])
                .await
                .json_lines()
                .len();
            if delivered == 15 {
                Ok(())
            } else {
                Err(format!("{delivered} delivered"))
            }
        },
    )
    .await;
    let published = nats_messages(&mut stream).await;
    assert_eq!(published.len(), 15, "only the order events, each once");
    for (subject, id, body) in &published {
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["aggregate_type"], "order");
        assert_eq!(
            subject,
            &format!("events.order.{}", event["event_type"].as_str().unwrap())
        );
        assert_eq!(
            id,
            event["id"].as_str().unwrap(),
            "the event's id is the idempotency key"
        );
    }
    let relay = deployment
        .subscriptions()
        .await
        .into_iter()
        .find(|subscription| subscription["name"] == "relay.orders")
        .expect("subscriptions list shows the relay");
    assert_eq!(relay["plugin"], "relay", "{relay}");
    assert_eq!(relay["lag"], 0, "{relay}");

    // A reset runs the events again; the outbox holds their messages already, and JetStream
    // would drop copies by Nats-Msg-Id anyway: nothing is published twice.
    deployment
        .cli_ok(&["subscriptions", "reset", "relay.orders"])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(nats_messages(&mut stream).await.len(), 15);
    daemon.stop().await;
}

#[tokio::test]
async fn a_receiver_that_answers_garbage_leaves_a_dead_message_with_the_reason() {
    let database = TestDatabase::sqlite();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&answered);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(b"\x00\xffNOT HTTP AT ALL\r\n\r\n").await;
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut deployment = deployment(&database, r#""hooks""#);
    let config = deployment.config(&format!(
        "[sinks.hooks]\nkind = \"http\"\nurl = \"http://{address}/hooks\"\n\
         max_attempts = 3\nbackoff_base_ms = 20\nbackoff_max_ms = 40\n"
    ));
    let mut daemon = deployment.start(&["--config", &config]);
    append(
        &deployment,
        &[("g".to_owned(), json!({"body": "{\"key\":\"g\",\"n\":0}"}))],
    )
    .await;
    let dead = loop_until_dead(&mut daemon, &deployment).await;
    assert_eq!(
        dead["attempts"], 3,
        "garbage is retried like a broken connection: {dead}"
    );
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 3 attempts: request failed"),
        "{error}"
    );
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 3);
    daemon.stop().await;
}

/// Two daemons on one PostgreSQL database with the same sink: one sends while the other
/// waits, so no message is sent twice and each key keeps its order; killed, the sender's
/// sink moves to the other daemon, which sends what comes next.
#[tokio::test]
async fn two_daemons_with_one_sink_send_each_message_once_and_hand_over_when_one_dies() {
    let database = TestDatabase::postgres().await;
    let receiver = Receiver::start().await;
    // A slow receiver: each key's messages take longer than a daemon's poll to send, so the
    // waiting daemon's worker looks while messages are pending.
    receiver.default_reply(Reply::Slow(Duration::from_millis(60)));
    let mut deployment = deployment(&database, r#""hooks""#);
    let config = deployment.config(&hooks_sink(&receiver));
    let mut first = deployment.start(&["--config", &config]);
    let second = deployment.start(&["--config", &config]);
    let (keys, per_key) = (4, 25);
    let unique = || {
        receiver
            .accepted()
            .iter()
            .map(|r| id_of(r).to_owned())
            .collect::<HashSet<String>>()
            .len()
    };
    append(&deployment, &keyed_events(keys, per_key, &["hooks"])).await;
    wait_for(&mut first, "every message accepted", || async {
        match unique() {
            done if done == keys * per_key => Ok(()),
            done => Err(format!("{done} of {}", keys * per_key)),
        }
    })
    .await;
    assert_eq!(
        receiver.accepted().len(),
        keys * per_key,
        "no message sent twice while both daemons run"
    );
    let waiting = "another daemon delivers this sink";
    let (mut sender, mut other) = if first.log().contains(waiting) {
        (second, first)
    } else {
        (first, second)
    };
    other
        .wait_for_log(waiting, 1, Duration::from_secs(10))
        .await;

    // Killed once every send is recorded, the sender leaves nothing to send again.
    wait_for(
        &mut other,
        "every message recorded as delivered",
        || async {
            let delivered = deployment
                .cli_ok(&["deliveries", "list", "--status", "delivered", "--json"])
                .await
                .json_lines()
                .len();
            match delivered {
                done if done == keys * per_key => Ok(()),
                done => Err(format!("{done} recorded")),
            }
        },
    )
    .await;
    sender.assert_running();
    sender.kill9();
    let next: Vec<(String, Value)> = (0..per_key)
        .flat_map(|n| {
            (0..keys).map(move |k| {
                let key = format!("w{k}");
                let body = json!({"key": key, "n": n}).to_string();
                (key, json!({"sink": "hooks", "body": body}))
            })
        })
        .collect();
    append(&deployment, &next).await;
    wait_for(&mut other, "every message accepted", || async {
        match unique() {
            done if done == 2 * keys * per_key => Ok(()),
            done => Err(format!("{done} of {}", 2 * keys * per_key)),
        }
    })
    .await;
    other
        .wait_for_log("this daemon delivers the sink", 1, Duration::from_secs(10))
        .await;
    let accepted = receiver.accepted();
    let by_key = first_copies(accepted.iter().map(|r| (id_of(r), r.body.as_slice())));
    assert_eq!(by_key.len(), 2 * keys);
    in_order(&by_key, per_key);
    assert_eq!(
        accepted.len(),
        2 * keys * per_key,
        "no copies: the kill came between waves"
    );
    other.stop().await;
}
