//! What operators watch: the metrics served at `GET /metrics` ([`Metrics`]), the process's
//! log ([`logging`]: text or JSON lines), and the listener that turns every execution end
//! into a count, a latency and a log line ([`ends`]). The HTTP side (one log line, metrics
//! and an audit row per request) is in `server/observe.rs`.

pub mod ends;
pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
