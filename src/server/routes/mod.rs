//! The handlers, one file per resource: parse the request, call the domain, render.

pub mod api_keys;
pub mod audit;
pub mod callbacks;
pub mod console;
pub mod environments;
pub mod executions;
pub mod files;
pub mod live_log;
pub mod metrics;
pub mod projects;
pub mod submissions;
