//! The sandpit engine: environments and images, executions, the HTTP API and the command line,
//! all on top of the isolation core in the `sandbox` crate. The README's "Architecture"
//! section maps the modules.

pub mod app;
pub mod auth;
pub mod callbacks;
pub mod cli;
pub mod clock;
pub mod config;
pub mod env;
pub mod error;
pub mod exec;
pub mod files;
pub mod ids;
pub mod image;
pub mod judge;
pub mod runspec;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod units;
