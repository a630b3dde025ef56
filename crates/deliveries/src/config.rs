//! The operator's sinks, as the `[sinks.NAME]` tables of the daemon's configuration file
//! describe them, checked and with their secrets read from the environment.
//!
//! ```toml
//! [sinks.billing-webhook]
//! kind = "http"
//! url = "https://billing.example.com/hooks/orders"
//! signing_secret_env = "BILLING_WEBHOOK_SECRET"   # Standard Webhooks secret, whsec_...
//!
//! [sinks.order-events]
//! kind = "nats"
//! url = "nats://127.0.0.1:4222"
//! subject = "orders.{key}"
//! ```
//!
//! A secret is only ever named here (`*_env`: the variable that holds it); its value is read
//! once, at start-up, and never printed: [`Secret`]'s `Debug` is redacted, and no error quotes
//! a value.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use eventhost_domain::Message;

/// Every sink of the configuration, by name.
#[derive(Debug, Clone, Default)]
pub struct Sinks(BTreeMap<String, Sink>);

/// One sink, ready to use.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub target: Target,
    pub delivery: DeliveryPolicy,
}

/// Where a sink sends, and how.
#[derive(Debug, Clone)]
pub enum Target {
    Http(HttpTarget),
    Nats(NatsTarget),
}

#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The URL, `{key}` replaced by the message's ordering key (percent-encoded).
    pub url: Template,
    pub method: reqwest::Method,
    /// Headers added to every request: the configuration's own, then those whose value
    /// comes from the environment.
    pub headers: Vec<(String, Secret)>,
    /// The Standard Webhooks signing secret (`whsec_...`); no signature without one.
    pub signing_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// The server(s), comma-separated `nats://host:port` URLs.
    pub url: String,
    /// The subject, `{key}` replaced by the message's ordering key.
    pub subject: Template,
    pub auth: NatsAuth,
}

#[derive(Debug, Clone)]
pub enum NatsAuth {
    None,
    Token(Secret),
    UserPassword { user: String, password: Secret },
}

/// How a sink's messages are sent and retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// The time one attempt may take (connecting, sending, the answer or the ack).
    pub timeout: Duration,
    /// Attempts before a message is dead.
    pub max_attempts: u32,
    /// Age (since it was enqueued) after which a failing message is dead.
    pub max_age: Duration,
    /// The pause after the first failed attempt, doubling up to `backoff_max`, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed attempts that open the sink's circuit: it then sends nothing for
    /// `breaker_cooldown`, then one message, which closes it again or reopens it.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Ordering keys sent to at once.
    pub concurrency: usize,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 25,
            max_age: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            concurrency: 32,
        }
    }
}

/// A value from the environment that must never be shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A URL or subject with placeholders taken from each message: `{key}` (its ordering key),
/// and `{aggregate_type}`, `{aggregate_id}`, `{event_type}` (its `eventhost-aggregate-type`,
/// `eventhost-aggregate-id`, `eventhost-event-type` headers, which relays set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

/// The placeholders a template may use, and the header each comes from (`None`: the key).
const PLACEHOLDERS: [(&str, Option<&str>); 4] = [
    ("{key}", None),
    ("{aggregate_type}", Some("eventhost-aggregate-type")),
    ("{aggregate_id}", Some("eventhost-aggregate-id")),
    ("{event_type}", Some("eventhost-event-type")),
];

impl Template {
    /// A template, if every `{...}` in it is a known placeholder.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .map(|end| start + end + 1)
                .ok_or_else(|| format!("{text:?} opens a `{{` it does not close"))?;
            let placeholder = &rest[start..end];
            if !PLACEHOLDERS.iter().any(|(known, _)| *known == placeholder) {
                return Err(format!(
                    "{text:?} uses {placeholder}; known are {{key}}, {{aggregate_type}}, \
                     {{aggregate_id}} and {{event_type}}"
                ));
            }
            rest = &rest[end..];
        }
        Ok(Self(text.to_owned()))
    }

    /// The text with each placeholder replaced by `encode` of the message's value; an error
    /// names a placeholder the message has no value for.
    pub fn render(
        &self,
        message: &Message,
        encode: impl Fn(&str) -> String,
    ) -> Result<String, String> {
        let mut text = self.0.clone();
        for (placeholder, header) in PLACEHOLDERS {
            if !text.contains(placeholder) {
                continue;
            }
            let value = match header {
                None => message.key.as_deref(),
                Some(header) => message
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(header))
                    .map(|(_, value)| value.as_str()),
            };
            let value = value.ok_or_else(|| {
                format!("the sink's address uses {placeholder} and the message has none")
            })?;
            text = text.replace(placeholder, &encode(value));
        }
        Ok(text)
    }

    /// The text with every placeholder replaced by `sample`: what a configuration is checked
    /// on.
    fn sample(&self, sample: &str) -> String {
        PLACEHOLDERS
            .iter()
            .fold(self.0.clone(), |text, (placeholder, _)| {
                text.replace(placeholder, sample)
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the configuration cannot be used. Messages name the sink and the setting, never a
/// secret's value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sink `{sink}`: {message}")]
pub struct ConfigError {
    pub sink: String,
    pub message: String,
}

/// A `[sinks.NAME]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    Http {
        url: String,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Header name -> the environment variable holding its value.
        #[serde(default)]
        headers_env: BTreeMap<String, String>,
        #[serde(default)]
        signing_secret_env: Option<String>,
        #[serde(flatten)]
        policy: PolicyConfig,
    },
    Nats {
        url: String,
        subject: String,
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(flatten)]
        policy: PolicyConfig,
    },
}

/// The delivery settings every kind takes; each defaults as [`DeliveryPolicy::default`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyConfig {
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    max_age_secs: Option<u64>,
    #[serde(default)]
    backoff_base_ms: Option<u64>,
    #[serde(default)]
    backoff_max_ms: Option<u64>,
    #[serde(default)]
    breaker_failures: Option<u32>,
    #[serde(default)]
    breaker_cooldown_ms: Option<u64>,
    #[serde(default)]
    concurrency: Option<usize>,
}

impl Sinks {
    /// Checks every sink of `configs` and reads its secrets through `env` (the process
    /// environment in the daemon).
    pub fn build(
        configs: BTreeMap<String, SinkConfig>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut sinks = BTreeMap::new();
        for (name, config) in configs {
            let sink = build_sink(&name, config, &env).map_err(|message| ConfigError {
                sink: name.clone(),
                message,
            })?;
            sinks.insert(name, sink);
        }
        Ok(Self(sinks))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sink> {
        self.0.values()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sink named `name` alone (none if there is no such sink).
    pub fn only(&self, name: &str) -> Sinks {
        Sinks(
            self.0
                .iter()
                .filter(|(sink, _)| *sink == name)
                .map(|(sink, config)| (sink.clone(), config.clone()))
                .collect(),
        )
    }
}

fn build_sink(
    name: &str,
    config: SinkConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Sink, String> {
    check_name(name)?;
    let (target, policy) = match config {
        SinkConfig::Http {
            url,
            method,
            headers,
            headers_env,
            signing_secret_env,
            policy,
        } => {
            let target = http_target(url, method, headers, headers_env, signing_secret_env, env)?;
            (Target::Http(target), policy)
        }
        SinkConfig::Nats {
            url,
            subject,
            token_env,
            user,
            password_env,
            policy,
        } => {
            let auth = nats_auth(token_env, user, password_env, env)?;
            let target = nats_target(url, subject, auth)?;
            (Target::Nats(target), policy)
        }
    };
    Ok(Sink {
        name: name.to_owned(),
        target,
        delivery: delivery_policy(policy)?,
    })
}

/// Sink names are what sidecars grant and logs show: short and plain, as plugin names are.
fn check_name(name: &str) -> Result<(), String> {
    match eventhost_domain::name::name_problem("a sink's name", name) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

fn http_target(
    url: String,
    method: Option<String>,
    headers: BTreeMap<String, String>,
    headers_env: BTreeMap<String, String>,
    signing_secret_env: Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<HttpTarget, String> {
    let url = Template::parse(&url).map_err(|error| format!("url: {error}"))?;
    let sample = url.sample("key");
    let parsed =
        reqwest::Url::parse(&sample).map_err(|error| format!("url does not parse: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url must be http:// or https://, not {}://",
            parsed.scheme()
        ));
    }
    if parsed.password().is_some() || !parsed.username().is_empty() {
        return Err(
            "url must not carry credentials: put them in a header from the environment (headers_env)"
                .to_owned(),
        );
    }
    let method = match method {
        None => reqwest::Method::POST,
        Some(method) => reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method {method:?} is not an HTTP method"))?,
    };
    let mut all = Vec::new();
    for (name, value) in headers {
        check_header(&name, &value)?;
        all.push((name, Secret(value)));
    }
    for (name, variable) in headers_env {
        let value = read_env(env, &variable, &format!("headers_env.{name}"))?;
        check_header(&name, value.expose())?;
        all.push((name, value));
    }
    let signing_secret = signing_secret_env
        .map(|variable| {
            let secret = read_env(env, &variable, "signing_secret_env")?;
            standardwebhooks::Webhook::new(secret.expose()).map_err(|_| {
                format!(
                    "signing_secret_env: {variable} does not hold a Standard Webhooks secret \
                     (whsec_ followed by base64)"
                )
            })?;
            Ok::<_, String>(secret)
        })
        .transpose()?;
    Ok(HttpTarget {
        url,
        method,
        headers: all,
        signing_secret,
    })
}

/// A configured header follows the rules a message's headers follow; its value is never
/// quoted (it may come from the environment).
fn check_header(name: &str, value: &str) -> Result<(), String> {
    eventhost_domain::message::check(&[(name.to_owned(), value.to_owned())], None).map_err(
        |error| match error {
            eventhost_domain::MessageError::HeaderValue(_)
            | eventhost_domain::MessageError::LongHeaderValue { .. } => {
                format!("the value of header {name:?} holds a control character or is too long")
            }
            other => other.to_string(),
        },
    )
}

fn nats_target(url: String, subject: String, auth: NatsAuth) -> Result<NatsTarget, String> {
    for server in url.split(',') {
        let server = server.trim();
        let parsed = reqwest::Url::parse(server)
            .map_err(|error| format!("url {server:?} does not parse: {error}"))?;
        if !matches!(parsed.scheme(), "nats" | "tls") {
            return Err(format!(
                "url must be nats:// or tls://, not {}://",
                parsed.scheme()
            ));
        }
        if parsed.password().is_some() || !parsed.username().is_empty() {
            return Err(
                "url must not carry credentials: use token_env, or user and password_env"
                    .to_owned(),
            );
        }
    }
    let template = Template::parse(&subject).map_err(|error| format!("subject: {error}"))?;
    if !is_subject(&template.sample("key")) {
        return Err(format!(
            "subject {subject:?} is not a NATS subject to publish to (dot-separated tokens, \
             no wildcards or spaces)"
        ));
    }
    Ok(NatsTarget {
        url,
        subject: template,
        auth,
    })
}

/// Whether `subject` is one a message can be published to: dot-separated tokens, no
/// wildcards, spaces or control characters.
pub(crate) fn is_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject
            .split('.')
            .all(|token| !token.is_empty() && !token.contains(['*', '>']))
        && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn nats_auth(
    token_env: Option<String>,
    user: Option<String>,
    password_env: Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<NatsAuth, String> {
    match (token_env, user, password_env) {
        (None, None, None) => Ok(NatsAuth::None),
        (Some(variable), None, None) => Ok(NatsAuth::Token(read_env(env, &variable, "token_env")?)),
        (None, Some(user), Some(variable)) => Ok(NatsAuth::UserPassword {
            user,
            password: read_env(env, &variable, "password_env")?,
        }),
        _ => Err("give either token_env, or user and password_env, or none of them".to_owned()),
    }
}

fn read_env(
    env: &impl Fn(&str) -> Option<String>,
    variable: &str,
    setting: &str,
) -> Result<Secret, String> {
    match env(variable) {
        Some(value) if !value.is_empty() => Ok(Secret(value)),
        Some(_) => Err(format!(
            "{setting}: the environment variable {variable} is empty"
        )),
        None => Err(format!(
            "{setting}: the environment variable {variable} is not set"
        )),
    }
}

fn delivery_policy(config: PolicyConfig) -> Result<DeliveryPolicy, String> {
    let defaults = DeliveryPolicy::default();
    let millis = |value: Option<u64>, default: Duration, setting: &str| match value {
        Some(0) => Err(format!("{setting} must be at least 1")),
        Some(value) => Ok(Duration::from_millis(value)),
        None => Ok(default),
    };
    let policy = DeliveryPolicy {
        timeout: millis(config.timeout_ms, defaults.timeout, "timeout_ms")?,
        max_attempts: match config.max_attempts {
            Some(0) => return Err("max_attempts must be at least 1".to_owned()),
            Some(attempts) => attempts,
            None => defaults.max_attempts,
        },
        max_age: millis(
            config.max_age_secs.map(|secs| secs.saturating_mul(1000)),
            defaults.max_age,
            "max_age_secs",
        )?,
        backoff_base: millis(
            config.backoff_base_ms,
            defaults.backoff_base,
            "backoff_base_ms",
        )?,
        backoff_max: millis(
            config.backoff_max_ms,
            defaults.backoff_max,
            "backoff_max_ms",
        )?,
        breaker_failures: match config.breaker_failures {
            Some(0) => return Err("breaker_failures must be at least 1".to_owned()),
            Some(failures) => failures,
            None => defaults.breaker_failures,
        },
        breaker_cooldown: millis(
            config.breaker_cooldown_ms,
            defaults.breaker_cooldown,
            "breaker_cooldown_ms",
        )?,
        concurrency: match config.concurrency {
            Some(0) => return Err("concurrency must be at least 1".to_owned()),
            Some(concurrency) => concurrency.min(1024),
            None => defaults.concurrency,
        },
    };
    if policy.backoff_base > policy.backoff_max {
        return Err("backoff_base_ms must not be above backoff_max_ms".to_owned());
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml_text: &str, env: &[(&str, &str)]) -> Result<Sinks, ConfigError> {
        let configs: BTreeMap<String, SinkConfig> = toml::from_str(toml_text).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Sinks::build(configs, |name| env.get(name).cloned())
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_valid_configuration_builds_every_sink_with_its_defaults() {
        let sinks = build(
            r#"
            [hooks]
            kind = "http"
            url = "https://example.com/hooks/{key}"
            signing_secret_env = "HOOK_SECRET"
            headers_env = { authorization = "HOOK_AUTH" }
            max_attempts = 3
            [events]
            kind = "nats"
            url = "nats://127.0.0.1:4222"
            subject = "orders.{key}"
            "#,
            &[("HOOK_SECRET", SECRET), ("HOOK_AUTH", "Bearer TOPSECRET")],
        )
        .unwrap();
        let names: Vec<&str> = sinks.names().collect();
        assert_eq!(names, ["events", "hooks"]);
        let hooks = sinks.iter().find(|sink| sink.name == "hooks").unwrap();
        assert_eq!(hooks.delivery.max_attempts, 3);
        assert_eq!(hooks.delivery.timeout, Duration::from_secs(10));
        let shown = format!("{sinks:?}");
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains(SECRET),
            "{shown}"
        );
    }

    #[test]
    fn each_bad_setting_is_one_clear_error_that_quotes_no_secret() {
        let cases = [
            (
                r#"[a]
kind = "smtp"
url = "x""#,
                &[][..],
                "unknown variant",
            ),
            (
                r#"[a]
kind = "http"
url = "not a url""#,
                &[][..],
                "url does not parse",
            ),
            (
                r#"[a]
kind = "http"
url = "ftp://x/""#,
                &[][..],
                "http:// or https://",
            ),
            (
                r#"[a]
kind = "http"
url = "https://x/"
signing_secret_env = "MISSING""#,
                &[][..],
                "MISSING is not set",
            ),
            (
                r#"[a]
kind = "http"
url = "https://x/"
signing_secret_env = "BAD""#,
                &[("BAD", "TOPSECRET")][..],
                "does not hold a Standard Webhooks secret",
            ),
            (
                r#"[a]
kind = "http"
url = "https://x/"
headers_env = { authorization = "AUTH" }"#,
                &[("AUTH", "TOPSECRET\r\nx: y")][..],
                "control character",
            ),
            (
                r#"[a]
kind = "nats"
url = "nats://x:4222"
subject = "orders.*""#,
                &[][..],
                "not a NATS subject",
            ),
            (
                r#"[A]
kind = "nats"
url = "nats://x:4222"
subject = "s""#,
                &[][..],
                "lowercase",
            ),
        ];
        for (text, env, expected) in cases {
            let message = match toml::from_str::<BTreeMap<String, SinkConfig>>(text) {
                Err(error) => error.to_string(),
                Ok(_) => build(text, env).unwrap_err().to_string(),
            };
            assert!(message.contains(expected), "{text}: {message}");
            assert!(!message.contains("TOPSECRET"), "{message}");
        }
    }

    fn message(key: Option<&str>, headers: &[(&str, &str)]) -> Message {
        Message {
            id: "m".to_owned(),
            sink: "s".to_owned(),
            key: key.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn a_template_takes_the_key_and_the_event_headers_a_message_has() {
        let fixed = Template::parse("orders.paid").unwrap();
        assert_eq!(
            fixed.render(&message(None, &[]), str::to_owned).as_deref(),
            Ok("orders.paid")
        );
        let keyed = Template::parse("orders.{key}").unwrap();
        let missing = keyed
            .render(&message(None, &[]), str::to_owned)
            .unwrap_err();
        assert!(missing.contains("{key}"), "{missing}");
        assert_eq!(
            keyed
                .render(&message(Some("o-1"), &[]), str::to_owned)
                .as_deref(),
            Ok("orders.o-1")
        );
        let relay = Template::parse("events.{aggregate_type}.{event_type}").unwrap();
        let event = message(
            Some("o-1"),
            &[
                ("eventhost-aggregate-type", "order"),
                ("eventhost-event-type", "order.paid"),
            ],
        );
        assert_eq!(
            relay.render(&event, str::to_owned).as_deref(),
            Ok("events.order.order.paid")
        );
        assert!(Template::parse("x.{nope}").unwrap_err().contains("{nope}"));
        assert!(Template::parse("x.{key").is_err());
    }
}
