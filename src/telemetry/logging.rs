//! The process's log, on stderr: human-readable text, or JSON lines (`--log-format json`)
//! for a log collector, one object per event with its fields at the top level (`request_id`,
//! `execution_id`, …) and the span it happened in. `SANDPIT_LOG` (an `EnvFilter`, e.g.
//! `debug` or `warn,sandpit=info`) sets what is written. Tokens are never logged: the request
//! line names the route and the path, never the query string or a header.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the log for the process (a second call does nothing). `default_filter` applies
/// when `SANDPIT_LOG` is not set.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env("SANDPIT_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, never into a file or a collector.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
