//! The execution domain, without HTTP: what an execution is ([`request`], [`result`],
//! [`state`]) and the JSON every face reads it from ([`parse`]), who may run what
//! ([`admission`]), its files on disk ([`workdir`]), one run of one program or a group
//! ([`runner`]), its output as written ([`log`]), the only code that changes its status
//! ([`lifecycle`]), who hears of its end and its output ([`events`]), and the service the
//! faces call ([`Service`]).

pub mod admission;
pub mod events;
pub mod lifecycle;
pub mod log;
pub mod parse;
pub mod request;
pub mod result;
pub mod runner;
pub mod service;
pub mod state;
pub mod workdir;

pub use events::{Ended, Events};
pub use request::{
    ExecutionRequest, GroupRequest, InputFile, Limits, NewExecution, NewProgram, ProgramRequest,
    RequestedLimits,
};
pub use result::{ExecutionResult, ProgramResult};
pub use service::{Parts, Service, UploadTarget};
pub use state::{EndReason, Ending, Status};
