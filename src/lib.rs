//! The sandpit engine: environments and images, executions, the HTTP API and the command line,
//! all on top of the isolation core in the `sandbox` crate.

pub mod bundle;
pub mod cli;
pub mod env;
pub mod image;
pub mod rootsource;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod units;
