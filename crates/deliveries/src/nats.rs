//! Sending a message to a NATS JetStream sink: a publish to the sink's subject with
//! `Nats-Msg-Id` set to the message's idempotency key, so that the stream's duplicate window
//! drops a copy a retry brings, and a wait for the stream's acknowledgement.
//!
//! The connection is made on the first send and kept; the client reconnects by itself. Every
//! failure is worth retrying (a server away, no stream for the subject yet, no ack in time):
//! an operator can fix each without touching the message.

use tokio::sync::OnceCell;

use super::config::{DeliveryPolicy, NatsAuth, NatsTarget, is_subject};
use super::send::Failure;
use eventhost_domain::Message;

pub(crate) struct NatsSender {
    target: NatsTarget,
    policy: DeliveryPolicy,
    context: OnceCell<async_nats::jetstream::Context>,
}

impl NatsSender {
    pub(crate) fn new(target: NatsTarget, policy: &DeliveryPolicy) -> Self {
        Self {
            target,
            policy: policy.clone(),
            context: OnceCell::new(),
        }
    }

    pub(crate) async fn send(&self, message: &Message) -> Result<(), Failure> {
        let subject = self
            .target
            .subject
            .render(message, str::to_owned)
            .map_err(Failure::permanent)?;
        if !is_subject(&subject) {
            return Err(Failure::permanent(format!(
                "the message makes {subject:?}, which is not a subject to publish to"
            )));
        }
        let context = self.context.get_or_try_init(|| self.connect()).await?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &message.headers {
            headers.append(name.as_str(), value.as_str());
        }
        headers.insert("Nats-Msg-Id", message.id.as_str());
        let publish = async {
            let ack = context
                .publish_with_headers(subject, headers, message.body.clone().into())
                .await
                .map_err(|error| Failure::retry(format!("cannot publish: {error}")))?;
            ack.await
                .map_err(|error| Failure::retry(format!("no acknowledgement: {error}")))
        };
        match tokio::time::timeout(self.policy.timeout, publish).await {
            Ok(Ok(_ack)) => Ok(()),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(Failure::retry(format!(
                "no acknowledgement within {} ms",
                self.policy.timeout.as_millis()
            ))),
        }
    }

    async fn connect(&self) -> Result<async_nats::jetstream::Context, Failure> {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(self.policy.timeout)
            .request_timeout(Some(self.policy.timeout));
        let options = match &self.target.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token.expose().to_owned()),
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
        };
        let client = options
            .connect(self.target.url.as_str())
            .await
            .map_err(|error| Failure::retry(format!("cannot connect to NATS: {error}")))?;
        Ok(async_nats::jetstream::new(client))
    }
}
