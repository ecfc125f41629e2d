//! One request to a subscriber: signed, with a timeout, through the guarded resolver, its
//! response read up to [`RESPONSE_CAP`] (the rest is not waited for) and kept as an excerpt.

use std::time::{Duration, Instant};

use colloquy_projections::webhooks::deliveries::EXCERPT_BYTES;

use super::safety;
use super::sign;

/// The most of a response's body read.
pub const RESPONSE_CAP: usize = 64 * 1024;

/// What the process's webhook requests share.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

/// A message to send.
#[derive(Debug)]
pub struct Message<'a> {
    /// The subscription's URL.
    pub url: &'a str,
    /// `webhook-id`: the same on every attempt of the same events.
    pub id: &'a str,
    /// Its content type.
    pub content_type: &'static str,
    /// Its body.
    pub body: Vec<u8>,
    /// The secrets that sign it.
    pub secrets: Vec<&'a str>,
}

/// What an attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The response's status, if one came.
    pub status: Option<u16>,
    /// Why it failed, if it did (a status outside 2xx included).
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: i64,
    /// The response body's start.
    pub excerpt: Option<String>,
}

impl Attempt {
    /// Whether the subscriber took it (a 2xx answer).
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

impl Sender {
    /// A sender whose requests take at most `timeout`.
    pub fn new(allow_private: bool, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(safety::redirects())
            .dns_resolver(safety::resolver(allow_private))
            .user_agent(concat!("Colloquy-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { client, allow_private })
    }

    /// Sends `message`, signed now, and counts what came of it ([`super::stats`]).
    pub async fn send(&self, message: Message<'_>) -> Attempt {
        let attempt = self.send_uncounted(message).await;
        super::stats::request(&attempt);
        attempt
    }

    async fn send_uncounted(&self, message: Message<'_>) -> Attempt {
        let started = Instant::now();
        let failed = |error: String, status: Option<u16>, excerpt: Option<String>| Attempt {
            status,
            error: Some(error),
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            excerpt,
        };
        // A literal address is not resolved, so the resolver does not see it.
        if let Some(refusal) = literal_refusal(message.url, self.allow_private) {
            return failed(refusal, None, None);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign::header(&message.secrets, message.id, timestamp, &message.body);
        let sent = self
            .client
            .post(message.url)
            .header(reqwest::header::CONTENT_TYPE, message.content_type)
            .header("webhook-id", message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return failed(describe(&error), None, None),
        };
        let status = response.status();
        let mut body = Vec::new();
        let mut read_error = None;
        while body.len() < RESPONSE_CAP {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => {
                    read_error = Some(describe(&error));
                    break;
                }
            }
        }
        let excerpt = (!body.is_empty()).then(|| excerpt(&body));
        if !status.is_success() {
            return failed(format!("answered {status}"), Some(status.as_u16()), excerpt);
        }
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        // A 2xx whose body broke off was still taken.
        let _ = read_error;
        Attempt { status: Some(status.as_u16()), error: None, latency_ms, excerpt }
    }
}

fn literal_refusal(url: &str, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    let ip = match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    safety::is_internal(ip).then(|| format!("{ip} is an internal address, which webhooks may not reach"))
}

/// The start of a body, as text (cut at a character boundary).
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).into_owned();
    text.chars().take(EXCERPT_BYTES).collect()
}

/// A request error with its causes (reqwest's own text names only the outermost).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
