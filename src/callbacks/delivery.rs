//! One delivery attempt over HTTP, on hyper-util's legacy client, and the retry schedule.
//!
//! Before anything is sent, the URL's host is checked against the allow-list as it is now,
//! and a name is resolved here, once: only the addresses the allow-list allows are handed to
//! the connector (its resolver returns exactly those), so what was checked is what is
//! connected to. Redirects are not followed (a redirect could point anywhere).

use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::allow::{AllowList, Host};
use super::seal::{content_type, SIGNATURE_HEADER};
use super::target::{CallbackUrl, Mode};
use super::Settings;

/// The most of a failed answer's body kept in the attempt's error.
const EXCERPT: usize = 200;

/// What to send.
pub struct Request<'a> {
    pub url: &'a str,
    pub mode: Mode,
    pub body: Bytes,
    pub signature: Option<&'a str>,
    /// `X-Sandpit-Callback`: the same on every retry, for the receiver to drop repeats.
    pub callback_id: &'a str,
    /// `X-Sandpit-Event`.
    pub event: &'a str,
    /// `X-Sandpit-Attempt`: 1, 2, …
    pub attempt: i64,
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Worth another try: no answer, or an answer other than 2xx.
    Failed {
        status: Option<u16>,
        error: String,
        /// The receiver's `Retry-After` (seconds), when it gave one.
        retry_after: Option<Duration>,
    },
    /// The allow-list refuses the receiver: never retried.
    Refused { error: String },
}

/// One attempt, at most `timeout` from resolving to the answer's status line.
pub async fn attempt(allow: &AllowList, timeout: Duration, req: Request<'_>) -> Outcome {
    match tokio::time::timeout(timeout, send(allow, req)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed {
            status: None,
            error: format!("no answer within {} s", timeout.as_secs_f64()),
            retry_after: None,
        },
    }
}

fn failed(error: String) -> Outcome {
    Outcome::Failed {
        status: None,
        error,
        retry_after: None,
    }
}

async fn send(allow: &AllowList, req: Request<'_>) -> Outcome {
    let url = match CallbackUrl::parse(req.url) {
        Ok(u) => u,
        Err(e) => return Outcome::Refused { error: e },
    };
    let addrs = match checked_addresses(allow, &url).await {
        Ok(a) => a,
        Err(outcome) => return outcome,
    };
    let uri: hyper::Uri = match req.url.parse() {
        Ok(u) => u,
        Err(e) => {
            return Outcome::Refused {
                error: e.to_string(),
            }
        }
    };
    let mut http = HttpConnector::new_with_resolver(CheckedAddrs(addrs));
    http.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(http);
    let mut builder = hyper::Request::post(uri)
        .header(CONTENT_TYPE, content_type(req.mode))
        .header(USER_AGENT, concat!("sandpit/", env!("CARGO_PKG_VERSION")))
        .header("x-sandpit-callback", req.callback_id)
        .header("x-sandpit-event", req.event)
        .header("x-sandpit-attempt", req.attempt);
    if let Some(sig) = req.signature {
        builder = builder.header(SIGNATURE_HEADER, sig);
    }
    let request = match builder.body(Full::new(req.body)) {
        Ok(r) => r,
        Err(e) => return failed(format!("building the request: {e}")),
    };
    let resp = match client.request(request).await {
        Ok(r) => r,
        Err(e) => return failed(error_chain(&e)),
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Delivered {
            status: status.as_u16(),
        };
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let error = if status.is_redirection() {
        format!("HTTP {}: redirects are not followed", status.as_u16())
    } else {
        let excerpt = excerpt(resp.into_body()).await;
        if excerpt.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {excerpt}", status.as_u16())
        }
    };
    Outcome::Failed {
        status: Some(status.as_u16()),
        error,
        retry_after,
    }
}

/// The addresses an attempt may connect to: an address written in the URL (its entry was
/// matched), or those of a name that the allow-list allows. A refusal is final.
async fn checked_addresses(
    allow: &AllowList,
    url: &CallbackUrl,
) -> Result<Vec<SocketAddr>, Outcome> {
    if !allow.allows_host(&url.host, url.port) {
        return Err(Outcome::Refused {
            error: "refused: the host is no longer on the callback allow-list".into(),
        });
    }
    let name = match &url.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, url.port)]),
        Host::Name(name) => name,
    };
    let found: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), url.port)).await {
        Ok(found) => found.collect(),
        Err(e) => return Err(failed(format!("resolving {name}: {e}"))),
    };
    let allowed: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| allow.allows_resolved(*a))
        .collect();
    if allowed.is_empty() {
        let shown: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
        return Err(Outcome::Refused {
            error: format!(
                "refused: {name} resolves to {}, which the callback allow-list does not allow \
                 (internal addresses need an address entry)",
                shown.join(", ")
            ),
        });
    }
    Ok(allowed)
}

/// The connector's resolver: the addresses checked above, whatever the name.
#[derive(Clone)]
struct CheckedAddrs(Vec<SocketAddr>);

impl tower_service::Service<Name> for CheckedAddrs {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        ready(Ok(self.0.clone().into_iter()))
    }
}

/// "client error (Connect): tcp connect error: Connection refused (os error 111)".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The first bytes of a failed answer, as one printable line.
async fn excerpt(mut body: hyper::body::Incoming) -> String {
    let mut buf = Vec::new();
    while buf.len() < EXCERPT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    buf.truncate(EXCERPT);
    String::from_utf8_lossy(&buf)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// How long after failed attempt `attempt` (1, 2, …) the next one is due: `backoff_first`,
/// doubled per attempt, at most `backoff_max`; longer when the receiver asked for it
/// (`Retry-After`, also at most `backoff_max`).
pub fn retry_delay(s: &Settings, attempt: i64, retry_after: Option<Duration>) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(31);
    let delay = s
        .backoff_first
        .checked_mul(1u32 << doublings)
        .unwrap_or(s.backoff_max)
        .min(s.backoff_max);
    match retry_after {
        Some(asked) => delay.max(asked.min(s.backoff_max)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Settings {
            backoff_first: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            ..Settings::default()
        };
        let secs: Vec<u64> = (1..=8)
            .map(|n| retry_delay(&s, n, None).as_secs())
            .collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(&s, 1000, None).as_secs(), 60);
        assert_eq!(
            retry_delay(&s, 1, Some(Duration::from_secs(30))).as_secs(),
            30
        );
        assert_eq!(
            retry_delay(&s, 1, Some(Duration::from_secs(9999))).as_secs(),
            60
        );
        assert_eq!(
            retry_delay(&s, 5, Some(Duration::from_secs(1))).as_secs(),
            32
        );
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let url = CallbackUrl::parse("http://localhost:9/").unwrap();
        // The name is allowed; its addresses (loopback) are not.
        let allow = AllowList::parse(&["localhost:9"]).unwrap();
        match checked_addresses(&allow, &url).await {
            Err(Outcome::Refused { error }) => {
                assert!(error.contains("127.0.0.1"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        // With the address listed too, it may be reached.
        let allow = AllowList::parse(&["localhost:9", "127.0.0.1:9"]).unwrap();
        let addrs = checked_addresses(&allow, &url).await.unwrap();
        assert_eq!(addrs, ["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
        // Off the list now: refused before resolving.
        let allow = AllowList::parse(&["localhost:10"]).unwrap();
        assert!(matches!(
            checked_addresses(&allow, &url).await,
            Err(Outcome::Refused { .. })
        ));
    }
}
