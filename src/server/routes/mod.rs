//! The handlers, one file per resource: parse the request, call the domain, render.

pub mod api_keys;
pub mod callbacks;
pub mod environments;
pub mod executions;
pub mod files;
pub mod live_log;
pub mod projects;
pub mod submissions;
