//! The daemon's configuration file: the operator's sinks, how messages are delivered to
//! them, and relays (subscriptions that forward events to a sink with no plugin). Given by
//! `--config PATH` or `EVENTHOST_CONFIG`; without one the daemon has no sinks and no relays.
//! `examples/eventhost.toml` is a commented example.
//!
//! ```toml
//! [deliveries]
//! poll_ms = 1000               # the longest a worker waits before looking for messages again
//! keep_delivered_hours = 168   # delivered messages are listed for this long, then pruned
//!
//! [sinks.billing-webhook]      # see `eventhost_deliveries::config`
//! kind = "http"
//! url = "https://billing.example.com/hooks/orders"
//! signing_secret_env = "BILLING_WEBHOOK_SECRET"
//!
//! [relays.orders]              # subscription `relay.orders`
//! sink = "order-events"
//! aggregate_types = ["order"]
//!
//! [http]                       # the HTTP API (`--http` and EVENTHOST_HTTP override address)
//! address = "0.0.0.0:7070"
//! max_body_bytes = 16777216
//! ready_max_lag_seconds = 300  # /health/ready fails while a subscription lags this long
//! cors_origins = ["https://ops.example.com"]  # pages that may call the API (default: none)
//!
//! [http.tokens.deploy]         # a bearer token: its scopes, and where its secret is
//! scopes = ["append"]
//! secret_env = "EVENTHOST_DEPLOY_TOKEN"
//! ```
//!
//! The file holds no secret: settings ending in `_env` name the environment variable that
//! holds one. Anything wrong stops start-up with one line naming the file, the place and the
//! setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use eventhost_deliveries::{DeliverySettings, SinkConfig, Sinks};
use eventhost_dispatch::plugins::SinkNames;
use eventhost_dispatch::relay::RelaySpec;
use eventhost_runtime::StartFrom;

use axum::http::HeaderValue;

use crate::http::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_FEEDS, Listen, Scope, Tokens};

/// The most bytes of a configuration file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What the configuration file says, checked, with its secrets read.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub sinks: Sinks,
    pub deliveries: DeliverySettings,
    pub relays: Vec<RelaySpec>,
    pub http: HttpConfig,
}

/// The `[http]` section, checked, with its tokens' secrets read.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `None` when the file does not say (the command line's default applies).
    pub address: Option<Listen>,
    pub max_body_bytes: usize,
    pub max_feeds: usize,
    /// Not ready while a subscription's oldest unhandled event is older than this.
    pub ready_max_lag: Option<Duration>,
    /// Origins whose pages may call the API (CORS); none by default.
    pub cors_origins: Vec<HeaderValue>,
    pub tokens: Tokens,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            address: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_feeds: DEFAULT_MAX_FEEDS,
            ready_max_lag: None,
            cors_origins: Vec::new(),
            tokens: Tokens::default(),
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    deliveries: DeliveriesSection,
    #[serde(default)]
    sinks: BTreeMap<String, SinkConfig>,
    #[serde(default)]
    relays: BTreeMap<String, RelayConfig>,
    #[serde(default)]
    http: HttpSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    address: Option<String>,
    max_body_bytes: Option<usize>,
    max_feeds: Option<usize>,
    ready_max_lag_seconds: Option<u64>,
    #[serde(default)]
    cors_origins: Vec<String>,
    #[serde(default)]
    tokens: BTreeMap<String, TokenConfig>,
}

/// A `[http.tokens.NAME]` table as written: the secret lives in the environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenConfig {
    scopes: Vec<Scope>,
    secret_env: String,
}

/// A `[relays.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayConfig {
    sink: String,
    #[serde(default)]
    aggregate_types: Vec<String>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    start_from: Start,
    #[serde(default = "default_relay_batch")]
    batch_size: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Start {
    #[default]
    Beginning,
    Now,
}

/// A relay's batch size when its table gives none.
fn default_relay_batch() -> u32 {
    100
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesSection {
    poll_ms: Option<u64>,
    keep_delivered_hours: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is over {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("invalid configuration file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// The configuration of `--config`: the file's when one is given, else none (no sinks,
    /// no relays, default delivery settings).
    pub fn load_given(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    /// The names of the configured sinks: the only ones a plugin's sidecar can grant.
    pub fn sink_names(&self) -> SinkNames {
        self.sinks.names().map(str::to_owned).collect()
    }

    /// Reads and checks the file at `path`, secrets from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        Self::parse(path, &text, |name| std::env::var(name).ok())
    }

    /// Checks the configuration in `text` (read from `path`), secrets read through `env`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: ConfigFile =
            toml::from_str(text).map_err(|error| invalid(located(text, &error)))?;
        let sinks = Sinks::build(file.sinks, &env).map_err(|error| invalid(error.to_string()))?;
        let relays = relays(file.relays, &sinks).map_err(invalid)?;
        let defaults = DeliverySettings::default();
        let deliveries = DeliverySettings {
            poll: match file.deliveries.poll_ms {
                Some(0) => return Err(invalid("deliveries.poll_ms must be at least 1".to_owned())),
                Some(ms) => Duration::from_millis(ms),
                None => defaults.poll,
            },
            keep_delivered: file
                .deliveries
                .keep_delivered_hours
                .map_or(defaults.keep_delivered, |hours| {
                    Duration::from_secs(hours.saturating_mul(3600))
                }),
        };
        let http = http(file.http, &env).map_err(invalid)?;
        Ok(Self {
            sinks,
            deliveries,
            relays,
            http,
        })
    }
}

/// The `[http]` section: its address, body cap and tokens (secrets read through `env`).
fn http(section: HttpSection, env: impl Fn(&str) -> Option<String>) -> Result<HttpConfig, String> {
    let address = section
        .address
        .map(|text| {
            text.parse::<Listen>()
                .map_err(|error| format!("http.address: {error}"))
        })
        .transpose()?;
    let max_body_bytes = match section.max_body_bytes {
        Some(0) => return Err("http.max_body_bytes must be at least 1".to_owned()),
        Some(bytes) => bytes,
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let max_feeds = match section.max_feeds {
        Some(0) => return Err("http.max_feeds must be at least 1".to_owned()),
        Some(feeds) => feeds,
        None => DEFAULT_MAX_FEEDS,
    };
    let ready_max_lag = match section.ready_max_lag_seconds {
        Some(0) => return Err("http.ready_max_lag_seconds must be at least 1".to_owned()),
        seconds => seconds.map(Duration::from_secs),
    };
    let cors_origins = section
        .cors_origins
        .iter()
        .map(|origin| cors_origin(origin))
        .collect::<Result<_, _>>()?;
    let mut tokens = Tokens::default();
    for (name, token) in section.tokens {
        let secret = env(&token.secret_env).ok_or_else(|| {
            format!(
                "http.tokens.{name}: secret_env: the environment variable {} is not set",
                token.secret_env
            )
        })?;
        tokens
            .add(&name, &secret, &token.scopes)
            .map_err(|error| format!("http.tokens.{name}: {error}"))?;
    }
    Ok(HttpConfig {
        address,
        max_body_bytes,
        max_feeds,
        ready_max_lag,
        cors_origins,
        tokens,
    })
}

/// The relays, each sending to a sink of the configuration; their names and filters are
/// checked when the daemon installs them, as a plugin's are.
fn relays(configs: BTreeMap<String, RelayConfig>, sinks: &Sinks) -> Result<Vec<RelaySpec>, String> {
    configs
        .into_iter()
        .map(|(name, config)| {
            if !sinks.names().any(|sink| sink == config.sink) {
                return Err(format!(
                    "relay `{name}`: sink `{}` is not defined in [sinks]",
                    config.sink
                ));
            }
            Ok(RelaySpec {
                name,
                sink: config.sink,
                aggregate_types: config.aggregate_types,
                event_types: config.event_types,
                start_from: match config.start_from {
                    Start::Beginning => StartFrom::Beginning,
                    Start::Now => StartFrom::Now,
                },
                batch_size: config.batch_size,
            })
        })
        .collect()
}

/// An origin as browsers send it: `https://host` or `http://host:port`, nothing after.
fn cors_origin(origin: &str) -> Result<HeaderValue, String> {
    let invalid = || {
        format!(
            "http.cors_origins: {origin:?} is not an origin (scheme://host[:port], e.g. \"https://ops.example.com\")"
        )
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(invalid)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// Where a TOML error is and what was expected, on one line.
fn located(text: &str, error: &toml::de::Error) -> String {
    let at = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|byte| **byte == b'\n').count() + 1;
    let message = error.message().lines().next().unwrap_or_default();
    format!("line {line}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("eventhost.toml"), text, |name| {
            (name == "SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned())
        })
    }

    #[test]
    fn the_commented_example_is_a_valid_configuration() {
        let text = include_str!("../../examples/eventhost.toml");
        let env = |name: &str| {
            let values = [
                (
                    "BILLING_WEBHOOK_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
                ("BILLING_API_TOKEN", "Bearer t"),
            ];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let config = Config::parse(Path::new("examples/eventhost.toml"), text, env).unwrap();
        let names: Vec<&str> = config.sinks.names().collect();
        assert_eq!(names, ["billing-webhook", "order-events"]);
        assert_eq!(config.relays.len(), 1);
        assert_eq!(config.relays[0].sink, "order-events");
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_file_and_the_place() {
        let message = parse(
            "[sinks.a]\nkind = \"http\"\nurl = \"https://x/\"\nsigning_secret_env = \"NOPE\"\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "invalid configuration file eventhost.toml: sink `a`: signing_secret_env: the environment variable NOPE is not set"
        );
        let message = parse("[sinks.a]\nkind = \"http\"\nurl = \"https://x/\"\n\n[other]\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 5") && message.contains("unknown field"),
            "{message}"
        );
        assert!(parse("").unwrap().sinks.is_empty());
        let message = parse("[relays.r]\nsink = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("relay `r`: sink `nope` is not defined"),
            "{message}"
        );
    }

    #[test]
    fn the_http_section_reads_its_address_cap_and_tokens() {
        let config = parse(
            "[http]\naddress = \"0.0.0.0:8080\"\nmax_body_bytes = 10\n\n[http.tokens.ops]\nscopes = [\"admin\"]\nsecret_env = \"SECRET\"\n",
        )
        .unwrap();
        let address = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(config.http.address, Some(Listen::At(address)));
        assert_eq!(config.http.max_body_bytes, 10);
        assert_eq!(config.http.ready_max_lag, None);
        let lagging = parse("[http]\nready_max_lag_seconds = 300\n").unwrap();
        assert_eq!(lagging.http.ready_max_lag, Some(Duration::from_secs(300)));
        assert!(!config.http.tokens.is_empty());
        assert_eq!(
            parse("[http]\naddress = \"off\"\n").unwrap().http.address,
            Some(Listen::Off)
        );
        let refusals = [
            ("[http]\naddress = \"nope\"\n", "http.address: expected"),
            ("[http]\nmax_body_bytes = 0\n", "at least 1"),
            ("[http]\nready_max_lag_seconds = 0\n", "at least 1"),
            ("[http]\ncors_origins = [\"*\"]\n", "is not an origin"),
            (
                "[http]\ncors_origins = [\"https://a.example/path\"]\n",
                "is not an origin",
            ),
            (
                "[http.tokens.ops]\nscopes = [\"admin\"]\nsecret_env = \"MISSING\"\n",
                "http.tokens.ops: secret_env: the environment variable MISSING is not set",
            ),
            (
                "[http.tokens.ops]\nscopes = [\"root\"]\nsecret_env = \"SECRET\"\n",
                "unknown variant",
            ),
            (
                "[http.tokens.ops]\nscopes = []\nsecret_env = \"SECRET\"\n",
                "at least one scope",
            ),
        ];
        for (text, expected) in refusals {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
    }
}
