//! What a stage's end means for the submission (go on, or its grade), and the grade once
//! every stage and test ran.

use super::Grading;
use crate::exec::EndReason;
use crate::judge::config::Stage;
use crate::judge::report::{of_tests, of_tests_report, parse_tests_report, tests_report_of};
use crate::judge::report::{Final, Text};
use crate::judge::state::Status;
use crate::judge::verdict::{StageRecord, TestResult};
use crate::judge::workspace::TESTS_REPORT;

/// What a stage's end means for the submission.
pub(super) enum After {
    Continue,
    End(Final),
    Stopped,
}

pub(super) fn after_stage(
    g: &Grading,
    r: &StageRecord,
    has_tests: bool,
    test_stage: bool,
) -> After {
    let how = r.how();
    match r.end_reason {
        EndReason::Stopped => return After::Stopped,
        EndReason::InternalError => {
            return After::End(Final::internal(format!(
                "the {} stage: {}",
                r.stage,
                r.message.clone().unwrap_or_default()
            )))
        }
        _ => {}
    }
    let stage = r.stage;
    match stage {
        Stage::Init if !r.succeeded() => {
            g.dir.debug(&format!("the init stage failed ({how})"));
            After::End(Final::project_error(format!(
                "the init stage failed ({how}); see stage_init_error"
            )))
        }
        Stage::Build if !r.succeeded() => After::End(
            Final::early(
                Status::BuildError,
                Text::new("Compilation failed (%(how)s).").arg("how", how),
                Some(stage_text(g, stage)),
            )
            .measured_by(Some(r)),
        ),
        Stage::Run if !has_tests => {
            let end = |status: Status, text: Text| {
                After::End(
                    Final::early(status, text, None)
                        .measured_by(Some(r))
                        .scored(0.0),
                )
            };
            match r.end_reason {
                EndReason::Timeout => end(
                    Status::TimeLimitExceeded,
                    Text::new("Time limit exceeded in the run stage (%(how)s).").arg("how", how),
                ),
                EndReason::OutOfMemory | EndReason::OutputLimit => end(
                    Status::RuntimeError,
                    Text::new(
                        "%(how)s in the run stage; it has no status code of its own, 12 \
                         (runtime error) is the closest.",
                    )
                    .arg("how", capitalised(&how)),
                ),
                _ if r.signal_name.is_some() || (!r.succeeded() && !test_stage) => end(
                    Status::RuntimeError,
                    Text::new("Runtime error in the run stage (%(how)s).").arg("how", how),
                ),
                _ => After::Continue,
            }
        }
        Stage::Test
            if r.end_reason != EndReason::Normal
                || r.signal_name.is_some()
                || !matches!(r.exit_code, Some(0 | 1)) =>
        {
            g.dir.debug(&format!(
                "the test stage failed ({how}): it exits 0 (ok) or 1 (fail)"
            ));
            After::End(Final::project_error(format!(
                "the test stage failed ({how}); see stage_test_error"
            )))
        }
        Stage::Post if !r.succeeded() => {
            g.dir.debug(&format!("the post stage failed ({how})"));
            After::Continue
        }
        _ => After::Continue,
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The grade once every stage ran: the tests' (and the test stage's say), else the tests
/// report's, else the test or run stage's exit status.
pub(super) fn conclude(g: &Grading, stages: &[StageRecord], tests: &[TestResult]) -> Final {
    let def = &g.project.def;
    let stage = |s: Stage| stages.iter().find(|r| r.stage == s);
    let written = std::fs::read(g.dir.stream(TESTS_REPORT)).ok();
    let from_stage = written.as_deref().map(parse_tests_report);
    let test_stage_failed = stage(Stage::Test).is_some_and(|r| r.exit_code == Some(1));
    let fail_by_test_stage = |mut f: Final| {
        if f.status == Status::Ok && test_stage_failed {
            let result = Text::new("The test stage judged the submission unsuccessful.");
            f.status = Status::Fail;
            f.reason = result.render();
            f.report.accepted = false;
            f.report.result = result;
        }
        f
    };
    if !def.tests.is_empty() {
        let mut f = of_tests(tests);
        match from_stage {
            Some(Err(e)) => {
                g.dir.debug(&e);
                return Final::project_error(e);
            }
            Some(Ok(entries)) => {
                if f.status == Status::Ok
                    && entries
                        .iter()
                        .any(|e| e.status != "ok" && e.status != "skipped")
                {
                    let result = Text::new("The tests report has failures.");
                    f.status = Status::Fail;
                    f.reason = result.render();
                    f.report.accepted = false;
                    f.report.result = result;
                }
            }
            None => {
                let report = tests_report_of(&def.name, tests);
                match serde_json::to_vec(&report) {
                    Ok(bytes) => {
                        if let Err(e) = g.dir.write_stream(TESTS_REPORT, &bytes) {
                            return Final::internal(format!("writing the tests report: {e}"));
                        }
                    }
                    Err(e) => return Final::internal(format!("the tests report: {e}")),
                }
            }
        }
        return fail_by_test_stage(f);
    }
    let run = stage(Stage::Run);
    let f = match from_stage {
        Some(Err(e)) => {
            g.dir.debug(&e);
            return Final::project_error(e);
        }
        Some(Ok(entries)) => of_tests_report(&entries),
        None => match stage(Stage::Test) {
            Some(t) if t.exit_code == Some(1) => Final::early(
                Status::Fail,
                Text::new("The test stage judged the submission unsuccessful."),
                None,
            )
            .scored(0.0),
            Some(_) => Final::early(Status::Ok, Text::new("Your submission is accepted."), None)
                .scored(100.0),
            None => Final::early(
                Status::Ok,
                Text::new("Your submission ran successfully."),
                None,
            )
            .scored(100.0),
        },
    };
    fail_by_test_stage(f.measured_by(run))
}

/// A stage's streams as one text: stderr, then stdout.
fn stage_text(g: &Grading, stage: Stage) -> String {
    let read = |name: String| std::fs::read(g.dir.stream(&name)).unwrap_or_default();
    let mut text = String::from_utf8_lossy(&read(stage.error_stream())).into_owned();
    let out = read(stage.output_stream());
    if !out.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&String::from_utf8_lossy(&out));
    }
    text
}
