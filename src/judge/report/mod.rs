//! A submission's grade: its final status and why, time and memory, the score, and the report
//! shaped as Railgun's HwScore (`accepted`, `result`, `compile_error`, `partials` of
//! HwPartialScore: `name`, `typeName`, `score` 0–100, `weight`, `time`, `brief`, `detail`;
//! texts as GetTextString `{text, kwargs}`), so that Σ weight × score is the score. Also Sphere's
//! tests report: an array of `{name, status, time, classname, error|failure}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::state::Status;
use super::verdict::{StageRecord, TestResult, Verdict};
use crate::exec::result::Timeout;

/// Railgun's GetTextString: a text with `%(name)s` placeholders, and their values (`kwargs`
/// is always there, `{}` when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub text: String,
    pub kwargs: Map<String, Value>,
}

impl Text {
    pub fn new(text: &str) -> Text {
        Text {
            text: text.to_string(),
            kwargs: Map::new(),
        }
    }

    pub fn arg(mut self, name: &str, value: impl Into<Value>) -> Text {
        self.kwargs.insert(name.to_string(), value.into());
        self
    }

    /// The text with its values put in (`%(name)s`, `%%`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some((name, tail)) =
                after.strip_prefix('(').and_then(|a| a.split_once(")s"))
            {
                match self.kwargs.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v) => out.push_str(&v.to_string()),
                    None => out.push_str(&format!("%({name})s")),
                }
                rest = tail;
            } else {
                out.push('%');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

/// Railgun's HwPartialScore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialScore {
    pub name: Text,
    #[serde(rename = "typeName")]
    pub type_name: String,
    /// 0 to 100.
    pub score: f64,
    /// Its share of the whole: the partials' weights add up to 1.
    pub weight: f64,
    /// Seconds.
    pub time: f64,
    pub brief: Text,
    pub detail: Vec<Text>,
}

/// Railgun's HwScore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwScore {
    pub accepted: bool,
    pub result: Text,
    /// The build's output when the build failed, else null.
    pub compile_error: Option<String>,
    pub partials: Vec<PartialScore>,
}

/// A graded submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Final {
    pub status: Status,
    /// Why, in a sentence (the report's `result`, rendered).
    pub reason: String,
    /// CPU seconds: the slowest test (or the run stage without tests).
    pub time: Option<f64>,
    /// Peak bytes: the largest test (or the run stage).
    pub memory: Option<u64>,
    /// 0 to 100; none when the grade could not be made (20, 22).
    pub score: Option<f64>,
    pub report: HwScore,
}

impl Final {
    /// A grade with no score: a build error, a project or internal error.
    pub fn early(status: Status, result: Text, compile_error: Option<String>) -> Final {
        Final {
            status,
            reason: result.render(),
            time: None,
            memory: None,
            score: (status == Status::BuildError).then_some(0.0),
            report: HwScore {
                accepted: false,
                result,
                compile_error,
                partials: Vec::new(),
            },
        }
    }

    pub fn internal(message: impl Into<String>) -> Final {
        Final::early(
            Status::InternalError,
            Text::new("Internal error: %(message)s").arg("message", message.into()),
            None,
        )
    }

    pub fn project_error(message: impl Into<String>) -> Final {
        Final::early(
            Status::ProjectError,
            Text::new("Project error: %(message)s").arg("message", message.into()),
            None,
        )
    }

    pub fn scored(mut self, score: f64) -> Final {
        self.score = Some(score);
        self
    }

    /// Takes time and memory from a stage (a project without test cases).
    pub fn measured_by(mut self, stage: Option<&StageRecord>) -> Final {
        if let Some(s) = stage {
            self.time = Some(s.time);
            self.memory = Some(s.memory);
        }
        self
    }
}

/// One entry of Sphere's tests report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub name: String,
    /// `ok`, `failure`, `error` (or `skipped`).
    pub status: String,
    #[serde(default)]
    pub time: f64,
    #[serde(default)]
    pub classname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Reads a tests report a project's stage wrote; the error says what is wrong with it.
pub fn parse_tests_report(bytes: &[u8]) -> Result<Vec<ReportEntry>, String> {
    let entries: Vec<ReportEntry> = serde_json::from_slice(bytes).map_err(|e| {
        format!("the tests report is not an array of {{name, status, time, classname}}: {e}")
    })?;
    for e in &entries {
        if !matches!(e.status.as_str(), "ok" | "failure" | "error" | "skipped") {
            return Err(format!(
                "the tests report gives test '{}' the status '{}' (ok, failure, error or skipped)",
                e.name, e.status
            ));
        }
    }
    Ok(entries)
}

/// The tests report of a project's test cases: accepted `ok`, a wrong output `failure`, a run
/// that failed `error`.
pub fn tests_report_of(project: &str, tests: &[TestResult]) -> Vec<ReportEntry> {
    tests
        .iter()
        .map(|t| {
            let text = match &t.checker_message {
                Some(m) => format!("{}: {m}", t.verdict.describe()),
                None => match &t.message {
                    Some(m) => format!("{}: {m}", t.verdict.describe()),
                    None => t.verdict.describe().to_string(),
                },
            };
            let (status, error, failure) = match t.verdict {
                Verdict::Accepted => ("ok", None, None),
                Verdict::WrongAnswer | Verdict::PresentationError | Verdict::Partial => {
                    ("failure", None, Some(text))
                }
                _ => ("error", Some(text), None),
            };
            ReportEntry {
                name: t.name.clone(),
                status: status.into(),
                time: t.time,
                classname: t.group.clone().unwrap_or_else(|| project.to_string()),
                error,
                failure,
            }
        })
        .collect()
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// What a test's verdict makes of the submission, with the reason.
fn status_of(t: &TestResult) -> (Status, Text) {
    let on = |text: &str| Text::new(text).arg("test", t.name.clone());
    match t.verdict {
        Verdict::Accepted => (Status::Ok, on("Accepted.")),
        Verdict::WrongAnswer => (Status::Fail, on("Wrong answer on test %(test)s.")),
        Verdict::PresentationError => (Status::Fail, on("Presentation error on test %(test)s.")),
        Verdict::Partial => (Status::Fail, on("Partially correct on test %(test)s.")),
        Verdict::TimeLimit => (
            Status::TimeLimitExceeded,
            on("Time limit exceeded on test %(test)s (%(which)s time).").arg(
                "which",
                match t.timeout {
                    Some(Timeout::Wall) => "wall",
                    _ => "CPU",
                },
            ),
        ),
        Verdict::MemoryLimit => (
            Status::RuntimeError,
            on("Memory limit exceeded on test %(test)s (the OOM killer ended it at %(memory)s bytes); \
                memory-limit has no status code of its own, 12 (runtime error) is the closest.")
                .arg("memory", t.memory),
        ),
        Verdict::OutputLimit => (
            Status::RuntimeError,
            on("Output limit exceeded on test %(test)s; output-limit has no status code of its \
                own, 12 (runtime error) is the closest."),
        ),
        Verdict::RuntimeError => (
            Status::RuntimeError,
            on("Runtime error on test %(test)s (%(how)s).").arg(
                "how",
                super::verdict::how(
                    t.end_reason,
                    t.exit_code,
                    t.signal_name.as_deref(),
                    t.timeout,
                ),
            ),
        ),
        Verdict::CheckerError => (
            Status::ProjectError,
            on("The checker failed on test %(test)s (see debug_log); the submission is not to blame."),
        ),
        Verdict::InternalError => (
            Status::InternalError,
            on("The sandbox failed on test %(test)s: %(message)s.")
                .arg("message", t.message.clone().unwrap_or_default()),
        ),
        Verdict::Stopped => (
            Status::InternalError,
            on("The submission was stopped on test %(test)s."),
        ),
    }
}

/// The grade of a project's test cases: internal and checker errors first (the grade can't be
/// trusted), else the first test that was not accepted, in the project's order; the score
/// adds up the tests' points, a group (subtask) scoring only when all its tests pass.
pub fn of_tests(tests: &[TestResult]) -> Final {
    let total_weight: f64 = tests.iter().map(|t| t.weight).sum();
    let blocking = tests
        .iter()
        .find(|t| t.verdict == Verdict::InternalError || t.verdict == Verdict::Stopped)
        .or_else(|| tests.iter().find(|t| t.verdict == Verdict::CheckerError));
    let decisive = blocking.or_else(|| tests.iter().find(|t| t.verdict != Verdict::Accepted));
    let (status, result) = match decisive {
        Some(t) => status_of(t),
        None if tests.is_empty() => (
            Status::Ok,
            Text::new("Accepted (the project has no tests)."),
        ),
        None => (
            Status::Ok,
            Text::new("Your submission is accepted: %(total)s of %(total)s tests passed.")
                .arg("total", tests.len()),
        ),
    };
    // Groups in the order they first appear; tests without one form the "tests" partial.
    let mut order: Vec<Option<&str>> = Vec::new();
    let mut members: BTreeMap<Option<&str>, Vec<&TestResult>> = BTreeMap::new();
    for t in tests {
        let g = t.group.as_deref();
        if !members.contains_key(&g) {
            order.push(g);
        }
        members.entry(g).or_default().push(t);
    }
    let mut earned_total = 0.0;
    let mut partials = Vec::new();
    for g in order {
        let group = &members[&g];
        let weight: f64 = group.iter().map(|t| t.weight).sum();
        let earned = match g {
            // A subtask: all or nothing (the smallest share of any of its tests).
            Some(_) => {
                let least = group
                    .iter()
                    .map(|t| {
                        if t.weight > 0.0 {
                            t.score / t.weight
                        } else {
                            1.0
                        }
                    })
                    .fold(1.0f64, f64::min);
                least * weight
            }
            None => group.iter().map(|t| t.score).sum(),
        };
        earned_total += earned;
        let passed = group
            .iter()
            .filter(|t| t.verdict == Verdict::Accepted)
            .count();
        let (name, type_name) = match g {
            Some(name) => (Text::new("Group %(group)s").arg("group", name), "TestGroup"),
            None => (Text::new("Tests"), "TestCases"),
        };
        partials.push(PartialScore {
            name,
            type_name: type_name.into(),
            score: round(if weight > 0.0 {
                100.0 * earned / weight
            } else {
                0.0
            }),
            weight: round(if total_weight > 0.0 {
                weight / total_weight
            } else {
                0.0
            }),
            time: round(group.iter().map(|t| t.time).sum()),
            brief: Text::new("%(passed)s of %(total)s tests accepted")
                .arg("passed", passed)
                .arg("total", group.len()),
            detail: group
                .iter()
                .map(|t| match &t.checker_message {
                    Some(m) => Text::new("%(test)s: %(verdict)s: %(message)s")
                        .arg("test", t.name.clone())
                        .arg("verdict", t.verdict.describe())
                        .arg("message", m.clone()),
                    None => Text::new("%(test)s: %(verdict)s")
                        .arg("test", t.name.clone())
                        .arg("verdict", t.verdict.describe()),
                })
                .collect(),
        });
    }
    let score = (!matches!(status, Status::InternalError | Status::ProjectError)).then(|| {
        round(if total_weight > 0.0 {
            100.0 * earned_total / total_weight
        } else {
            100.0
        })
    });
    Final {
        status,
        reason: result.render(),
        time: tests.iter().map(|t| t.time).reduce(f64::max),
        memory: tests.iter().map(|t| t.memory).max(),
        score,
        report: HwScore {
            accepted: status == Status::Ok,
            result,
            compile_error: None,
            partials,
        },
    }
}

/// The grade a tests report gives (a project whose test stage reports unit tests): ok when
/// every test is `ok` (or skipped), else fail; the score is the share of tests passed.
pub fn of_tests_report(entries: &[ReportEntry]) -> Final {
    let counted: Vec<&ReportEntry> = entries.iter().filter(|e| e.status != "skipped").collect();
    let passed = counted.iter().filter(|e| e.status == "ok").count();
    let total = counted.len();
    let status = if passed == total {
        Status::Ok
    } else {
        Status::Fail
    };
    let result = if status == Status::Ok {
        Text::new("Your submission is accepted: %(passed)s of %(total)s unit tests passed.")
    } else {
        Text::new("%(passed)s of %(total)s unit tests passed.")
    }
    .arg("passed", passed)
    .arg("total", total);
    let score = round(if total > 0 {
        100.0 * passed as f64 / total as f64
    } else {
        100.0
    });
    let detail = entries
        .iter()
        .filter(|e| e.status != "ok")
        .map(|e| {
            Text::new("%(test)s: %(status)s: %(message)s")
                .arg(
                    "test",
                    if e.classname.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{}.{}", e.classname, e.name)
                    },
                )
                .arg("status", e.status.clone())
                .arg(
                    "message",
                    e.failure
                        .clone()
                        .or_else(|| e.error.clone())
                        .unwrap_or_default(),
                )
        })
        .collect();
    Final {
        status,
        reason: result.render(),
        time: None,
        memory: None,
        score: Some(score),
        report: HwScore {
            accepted: status == Status::Ok,
            result,
            compile_error: None,
            partials: vec![PartialScore {
                name: Text::new("Unit tests"),
                type_name: "UnitTests".into(),
                score,
                weight: 1.0,
                time: round(entries.iter().map(|e| e.time).sum()),
                brief: Text::new("%(passed)s of %(total)s tests passed")
                    .arg("passed", passed)
                    .arg("total", total),
                detail,
            }],
        },
    }
}

#[cfg(test)]
mod tests;
