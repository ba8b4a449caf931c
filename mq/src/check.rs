//! `mq topology check`: what the services declare ([`shared::contracts::services`]) against
//! what the broker has.
//!
//! Over AMQP: a passive declare finds a missing queue and a queue's consumers; an active
//! declare with the expected arguments, on a throwaway channel and only for a queue that
//! exists, is refused (`PRECONDITION_FAILED`) when the queue has other arguments, and changes
//! nothing when it has the same. The events exchange likewise. Bindings cannot be listed over
//! AMQP: with `--management-url` they are read from the management API, otherwise they are
//! reported as not checked.

use std::time::Duration;

use lapin::{
    Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    RetryPolicy,
    asyncapi::arguments_json,
    config::BrokerSettings,
    contracts::services::{DeclaredBinding, DeclaredQueue, DeclaredTopology},
    topology::DlqLimits,
};

use crate::{error::MqError, outcome::Outcome};

/// The management API's patience.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A variable as the services read it: unset or blank is the default.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|value| value.trim().to_owned()).filter(|value| !value.is_empty())
}

/// One retry schedule for every service when any `RETRY_*` variable is set.
fn retry_override() -> Result<Option<RetryPolicy>, MqError> {
    let names = ["RETRY_MAX_ATTEMPTS", "RETRY_INITIAL_DELAY_MS", "RETRY_MULTIPLIER", "RETRY_MAX_DELAY_MS"];
    if names.iter().all(|name| var(name).is_none()) {
        return Ok(None);
    }
    let number = |name: &str| -> Result<Option<u64>, MqError> {
        var(name)
            .map(|value| value.parse::<u64>().map_err(|_| MqError::Usage(format!("{name}={value:?} is not a number"))))
            .transpose()
    };
    let mut policy = RetryPolicy::default();
    if let Some(n) = number("RETRY_MAX_ATTEMPTS")? {
        policy.max_attempts = u32::try_from(n).unwrap_or(u32::MAX).max(1);
    }
    if let Some(ms) = number("RETRY_INITIAL_DELAY_MS")? {
        policy.initial_delay = Duration::from_millis(ms);
    }
    if let Some(n) = number("RETRY_MULTIPLIER")? {
        policy.multiplier = u32::try_from(n).unwrap_or(u32::MAX).max(1);
    }
    if let Some(ms) = number("RETRY_MAX_DELAY_MS")? {
        policy.max_delay = Duration::from_millis(ms);
    }
    Ok(Some(policy))
}

/// The dead-letter queues' bounds, `DLQ_MAX_LENGTH` and `DLQ_MAX_BYTES` as the services read them.
fn dlq_limits() -> Result<DlqLimits, MqError> {
    let mut limits = DlqLimits::default();
    if let Some(value) = var("DLQ_MAX_LENGTH") {
        limits.max_length =
            value.parse().map_err(|_| MqError::Usage(format!("DLQ_MAX_LENGTH={value:?} is not a number")))?;
    }
    if let Some(value) = var("DLQ_MAX_BYTES") {
        limits.max_bytes =
            value.parse().map_err(|_| MqError::Usage(format!("DLQ_MAX_BYTES={value:?} is not a number")))?;
    }
    Ok(limits)
}

/// One difference between the services' declarations and the broker.
#[derive(Debug)]
struct Finding {
    kind: &'static str,
    subject: String,
    detail: String,
}

impl Finding {
    fn new(kind: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { kind, subject: subject.into(), detail: detail.into() }
    }

    fn json(&self) -> Value {
        json!({"kind": self.kind, "subject": self.subject, "detail": self.detail})
    }
}

pub async fn run(broker: &BrokerSettings, management_url: Option<&str>) -> Result<Outcome, MqError> {
    let expected = DeclaredTopology::of(var, broker.amqp_queue_type, retry_override()?.as_ref(), dlq_limits()?);
    let connected = shared::connection::connect(&broker.broker_config("mq")).await?;
    let connection = &connected.connection;
    let mut findings = Vec::new();
    let mut queues = Vec::new();
    for queue in &expected.queues {
        let (state, finding) = check_queue(connection, queue).await?;
        queues.push(state);
        findings.extend(finding);
    }
    let exchange_finding = check_exchange(connection, &expected.exchange).await?;
    let exchange_exists = exchange_finding.as_ref().is_none_or(|finding| finding.kind != "missing-exchange");
    findings.extend(exchange_finding);
    let _ = connection.close(200, "done".into()).await;
    let bindings = match management_url {
        Some(url) => {
            let vhost = vhost_of(broker);
            let found = check_bindings(url, &vhost, &expected.bindings, exchange_exists).await?;
            findings.extend(found);
            json!({"checked": true, "expected": expected.bindings.len()})
        }
        None => {
            json!({"checked": false, "reason": "AMQP cannot list bindings: pass --management-url (RABBITMQ_MANAGEMENT_URL)"})
        }
    };
    let mut text = format!(
        "{} queues, exchange {:?}, {} bindings expected on {}\n",
        expected.queues.len(),
        expected.exchange,
        expected.bindings.len(),
        connected.node
    );
    for finding in &findings {
        text.push_str(&format!("DRIFT {:<16} {}: {}\n", finding.kind, finding.subject, finding.detail));
    }
    if bindings["checked"] == false {
        text.push_str("bindings not checked: AMQP cannot list them; pass --management-url (RABBITMQ_MANAGEMENT_URL)\n");
    }
    text.push_str(&if findings.is_empty() {
        "no drift\n".to_owned()
    } else {
        format!("{} findings\n", findings.len())
    });
    let json = json!({
        "ok": findings.is_empty(),
        "node": connected.node,
        "exchange": expected.exchange,
        "queues": queues,
        "bindings": bindings,
        "findings": findings.iter().map(Finding::json).collect::<Vec<_>>(),
    });
    Ok(if findings.is_empty() { Outcome::ok(json, text) } else { Outcome::failed(json, text) })
}

/// Checks one queue: that it exists, has the expected arguments and, if a service consumes
/// it, a consumer. Returns its state and the finding, if any.
async fn check_queue(connection: &Connection, queue: &DeclaredQueue) -> Result<(Value, Option<Finding>), MqError> {
    let mut state =
        json!({"name": queue.name, "service": queue.service, "expectedArguments": arguments_json(&queue.arguments)});
    let channel = connection.create_channel().await.map_err(MqError::broker("opening a channel"))?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = match channel.queue_declare(queue.name.as_str().into(), passive, FieldTable::default()).await {
        Ok(declared) => declared,
        Err(_not_found) => {
            state["exists"] = json!(false);
            let detail = format!("missing (declared by {})", queue.service);
            return Ok((state, Some(Finding::new("missing-queue", &queue.name, detail))));
        }
    };
    state["exists"] = json!(true);
    state["messages"] = json!(declared.message_count());
    state["consumers"] = json!(declared.consumer_count());
    let _ = channel.close(200, "done".into()).await;
    // The same declaration the service makes: a no-op when equal, refused when not.
    let channel = connection.create_channel().await.map_err(MqError::broker("opening a channel"))?;
    let options = QueueDeclareOptions { durable: queue.durable, ..QueueDeclareOptions::default() };
    if let Err(error) = channel.queue_declare(queue.name.as_str().into(), options, queue.arguments.clone()).await {
        state["argumentsMatch"] = json!(false);
        let detail = format!("declared with other arguments or durability than {} expects: {error}", queue.service);
        return Ok((state, Some(Finding::new("queue-arguments", &queue.name, detail))));
    }
    let _ = channel.close(200, "done".into()).await;
    state["argumentsMatch"] = json!(true);
    if queue.consumed && declared.consumer_count() == 0 {
        let detail = format!("no consumer: {} is not consuming it", queue.service);
        return Ok((state, Some(Finding::new("no-consumer", &queue.name, detail))));
    }
    Ok((state, None))
}

async fn check_exchange(connection: &Connection, exchange: &str) -> Result<Option<Finding>, MqError> {
    let channel = connection.create_channel().await.map_err(MqError::broker("opening a channel"))?;
    let passive = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
    let found = channel.exchange_declare(exchange.into(), ExchangeKind::Topic, passive, FieldTable::default()).await;
    if found.is_err() {
        return Ok(Some(Finding::new("missing-exchange", exchange, "missing (declared by every service)")));
    }
    let _ = channel.close(200, "done".into()).await;
    let channel = connection.create_channel().await.map_err(MqError::broker("opening a channel"))?;
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    if let Err(error) =
        channel.exchange_declare(exchange.into(), ExchangeKind::Topic, options, FieldTable::default()).await
    {
        return Ok(Some(Finding::new("exchange-type", exchange, format!("not a durable topic exchange: {error}"))));
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(None)
}

/// The virtual host of the first broker URL (`/` by default).
fn vhost_of(broker: &BrokerSettings) -> String {
    use secrecy::ExposeSecret as _;
    let first = broker.amqp_url.expose_secret().split(',').next().unwrap_or_default().trim().to_owned();
    first.parse::<lapin::uri::AMQPUri>().map(|uri| uri.vhost).unwrap_or_else(|_| "/".to_owned())
}

#[derive(Debug, Deserialize)]
struct ManagementBinding {
    destination: String,
    destination_type: String,
    routing_key: String,
}

/// Reads the events exchange's bindings from the management API and reports the missing ones.
/// `exchange_exists` is what AMQP found: the API not knowing (404) an exchange the broker has
/// means the URL is not this broker's management API (or not one at all), an error rather
/// than drift; so is any other answer but a list of bindings.
async fn check_bindings(
    url: &str,
    vhost: &str,
    expected: &[DeclaredBinding],
    exchange_exists: bool,
) -> Result<Vec<Finding>, MqError> {
    let Some(first) = expected.first() else { return Ok(Vec::new()) };
    let fail = |reason: String| MqError::Management { url: redacted(url), reason };
    let mut base = reqwest::Url::parse(url).map_err(|error| fail(format!("not a URL: {error}")))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(fail(format!("not an http(s) URL (scheme {:?})", base.scheme())));
    }
    let (user, password) = (base.username().to_owned(), base.password().map(str::to_owned));
    let _ = base.set_username("");
    let _ = base.set_password(None);
    base.path_segments_mut().map_err(|()| fail("not a base URL".to_owned()))?.pop_if_empty().extend([
        "api",
        "exchanges",
        vhost,
        &first.exchange,
        "bindings",
        "source",
    ]);
    let client = reqwest::Client::builder().timeout(MANAGEMENT_TIMEOUT).build().map_err(|error| fail(chain(&error)))?;
    let mut request = client.get(base);
    if !user.is_empty() {
        request = request.basic_auth(user, password);
    }
    let response = request.send().await.map_err(|error| fail(chain(&error)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND && !exchange_exists {
        // No such exchange: every binding is missing (the exchange itself is reported apart).
        return Ok(expected.iter().map(missing_binding).collect());
    }
    if matches!(status, reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN) {
        return Err(fail(format!(
            "the credentials were refused (HTTP {status}): check the user and password in the URL"
        )));
    }
    if !status.is_success() {
        // Not the root of this broker's management API (RabbitMQ 3.10 answers 400 for the API
        // under another path prefix; for an exchange it does not have it lists no bindings).
        return Err(fail(format!(
            "HTTP {status} for the bindings of exchange {:?} in vhost {vhost:?}: is the URL the management \
             API's root of this broker (http://user:password@host:15672)?",
            first.exchange
        )));
    }
    let bindings: Vec<ManagementBinding> = response
        .json()
        .await
        .map_err(|error| fail(format!("not a list of bindings from the management API: {}", chain(&error))))?;
    Ok(expected
        .iter()
        .filter(|wanted| {
            !bindings.iter().any(|found| {
                found.destination_type == "queue"
                    && found.destination == wanted.queue
                    && found.routing_key == wanted.routing_key
            })
        })
        .map(missing_binding)
        .collect())
}

fn missing_binding(binding: &DeclaredBinding) -> Finding {
    Finding::new(
        "missing-binding",
        &binding.queue,
        format!("not bound to exchange {:?} for {:?}", binding.exchange, binding.routing_key),
    )
}

/// An error with its causes (`error sending request: client error (Connect): tcp connect error:
/// Connection refused`): reqwest's own message names none of them.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The URL without its password, for error messages.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
