//! Grading: projects (an environment, files, Sphere's stages, test cases, a checker) and
//! submissions (a user's source put into a project, the stages run in order, each test's
//! output judged), with Sphere Engine's status codes and Railgun's HwScore report. One
//! pipeline grades for the server and for `sandpit judge`.
//!
//! | concern | where |
//! |---|---|
//! | Sphere's `config.json`: scenarios, stages | [`config`] |
//! | a project: directory layout, definition (`def.rs`), the one loader (`load.rs`), limits | [`project`] |
//! | uploaded archives (tar or zip), unpacked safely | [`archive`] |
//! | a submission's source into the workspace | [`submission`] |
//! | a submission's files on disk | [`workspace`] |
//! | the stages, the tests, the checker | [`pipeline`] |
//! | running one test (fresh, prepared ahead; later a pool or a group) | [`testrun`] |
//! | verdicts, a test's row, a stage's record | [`verdict`] |
//! | built-in checkers, testlib's exit codes | [`checker`] |
//! | status, score, HwScore, tests report | [`report`] |
//! | statuses and transitions; the only code that changes them | [`state`], [`lifecycle`] |
//! | ends and progress | [`events`] |
//! | projects and submissions for a face | [`service`] |
//! | the JSON of a grade | [`view`] |

pub mod archive;
pub mod checker;
pub mod config;
pub mod events;
pub mod lifecycle;
pub mod pipeline;
pub mod project;
pub mod report;
pub mod service;
pub mod state;
pub mod submission;
pub mod testrun;
pub mod verdict;
pub mod view;
pub mod workspace;

pub use service::Service;
pub use state::Status;
