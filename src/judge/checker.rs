//! Judging one test's output: the built-in checkers (exact, tokens, floats with an absolute or
//! relative tolerance), run in the engine (they are our code, not the project's), and what a
//! testlib checker's exit tells (0 ok, 1 wrong answer, 2 presentation error, 3 fail, 7 points
//! with `points X` on stderr). A checker that fails is never the submission's fault.

use super::verdict::Verdict;
use crate::exec::EndReason;

/// Longest checker message kept per test.
const MAX_MESSAGE: usize = 1024;

/// What a checker decided about one test.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub verdict: Verdict,
    /// Points earned, 0 to the test's weight.
    pub score: f64,
    pub message: Option<String>,
}

impl Checked {
    fn with(verdict: Verdict, weight: f64, message: Option<String>) -> Checked {
        Checked {
            verdict,
            score: if verdict == Verdict::Accepted {
                weight
            } else {
                0.0
            },
            message,
        }
    }
}

fn tokens(b: &[u8]) -> Vec<&[u8]> {
    b.split(|c| c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .collect()
}

fn shown(t: &[u8]) -> String {
    let text = String::from_utf8_lossy(t);
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.into_owned()
    }
}

/// Compares token by token with `same`; the message names the first difference.
fn compare_tokens(
    output: &[u8],
    answer: &[u8],
    same: impl Fn(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let (out, ans) = (tokens(output), tokens(answer));
    for (i, (o, a)) in out.iter().zip(&ans).enumerate() {
        same(o, a).map_err(|why| format!("token {}: {why}", i + 1))?;
    }
    if out.len() != ans.len() {
        return Err(format!(
            "expected {} tokens, found {}",
            ans.len(),
            out.len()
        ));
    }
    Ok(())
}

fn same_text(o: &[u8], a: &[u8]) -> Result<(), String> {
    if o == a {
        Ok(())
    } else {
        Err(format!("expected '{}', found '{}'", shown(a), shown(o)))
    }
}

fn number(t: &[u8]) -> Option<f64> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// Tokens; numbers within `abs` or within `rel` × |answer|.
fn same_float(abs: f64, rel: f64) -> impl Fn(&[u8], &[u8]) -> Result<(), String> {
    move |o, a| match (number(o), number(a)) {
        (Some(x), Some(y)) => {
            let diff = (x - y).abs();
            let equal =
                (x.is_nan() && y.is_nan()) || x == y || diff <= abs || diff <= rel * y.abs();
            if equal {
                Ok(())
            } else {
                Err(format!(
                    "expected {}, found {} (off by {diff:e}; allowed {abs:e} absolute or {rel:e} relative)",
                    shown(a),
                    shown(o)
                ))
            }
        }
        _ => same_text(o, a),
    }
}

/// Exact: byte for byte; the same tokens with other whitespace is a presentation error.
pub fn exact(output: &[u8], answer: &[u8], weight: f64) -> Checked {
    if output == answer {
        return Checked::with(Verdict::Accepted, weight, None);
    }
    match compare_tokens(output, answer, same_text) {
        Ok(()) => Checked::with(
            Verdict::PresentationError,
            weight,
            Some("the output differs from the answer in whitespace only".into()),
        ),
        Err(why) => Checked::with(Verdict::WrongAnswer, weight, Some(why)),
    }
}

/// Tokens: the same whitespace-separated tokens.
pub fn tokens_equal(output: &[u8], answer: &[u8], weight: f64) -> Checked {
    match compare_tokens(output, answer, same_text) {
        Ok(()) => Checked::with(Verdict::Accepted, weight, None),
        Err(why) => Checked::with(Verdict::WrongAnswer, weight, Some(why)),
    }
}

/// Floats: tokens, numbers equal within a tolerance.
pub fn floats(output: &[u8], answer: &[u8], abs: f64, rel: f64, weight: f64) -> Checked {
    match compare_tokens(output, answer, same_float(abs, rel)) {
        Ok(()) => Checked::with(Verdict::Accepted, weight, None),
        Err(why) => Checked::with(Verdict::WrongAnswer, weight, Some(why)),
    }
}

/// How a checker program's run ended.
pub struct CheckerRun<'a> {
    pub end_reason: EndReason,
    pub exit_code: Option<i32>,
    pub signal_name: Option<&'a str>,
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
}

/// Its message: stderr (testlib's verdict line), else stdout, trimmed and capped.
fn message(run: &CheckerRun) -> Option<String> {
    let text = String::from_utf8_lossy(if run.stderr.iter().any(|c| !c.is_ascii_whitespace()) {
        run.stderr
    } else {
        run.stdout
    });
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut out: String = text.chars().take(MAX_MESSAGE).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    Some(out)
}

/// `points X …` on stderr: X, the points earned on this test.
fn points(stderr: &[u8]) -> Option<f64> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let rest = line.trim().strip_prefix("points")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Whether a testlib program (a checker, an interactor) ended with testlib's FAIL, a normal
/// end with exit 3: it found the test itself broken.
pub fn ended_with_fail(
    end_reason: EndReason,
    exit_code: Option<i32>,
    signal_name: Option<&str>,
) -> bool {
    end_reason == EndReason::Normal && signal_name.is_none() && exit_code == Some(3)
}

/// What a testlib checker's run says; `Err(why)` when the checker itself failed.
pub fn testlib(run: &CheckerRun, weight: f64) -> Result<Checked, String> {
    let msg = message(run);
    let failed = |what: String| match &msg {
        Some(m) => Err(format!("{what}: {m}")),
        None => Err(what),
    };
    if ended_with_fail(run.end_reason, run.exit_code, run.signal_name) {
        return failed("the checker failed (exit 3, testlib's FAIL)".into());
    }
    if run.end_reason != EndReason::Normal {
        return failed(format!(
            "the checker did not finish ({})",
            super::verdict::how(run.end_reason, run.exit_code, run.signal_name, None)
        ));
    }
    if let Some(sig) = run.signal_name {
        return failed(format!("the checker was killed by {sig}"));
    }
    match run.exit_code {
        Some(0) => Ok(Checked::with(Verdict::Accepted, weight, msg)),
        Some(1) => Ok(Checked::with(Verdict::WrongAnswer, weight, msg)),
        // 4 is testlib's "dirt" (extra output), 8 an unexpected end of file: both are
        // presentation errors to a judge.
        Some(2 | 4 | 8) => Ok(Checked::with(Verdict::PresentationError, weight, msg)),
        Some(7) => match points(run.stderr) {
            Some(p) if p.is_finite() && (0.0..=weight).contains(&p) => {
                let verdict = if p >= weight {
                    Verdict::Accepted
                } else if p <= 0.0 {
                    Verdict::WrongAnswer
                } else {
                    Verdict::Partial
                };
                Ok(Checked {
                    verdict,
                    score: p,
                    message: msg,
                })
            }
            Some(p) => failed(format!(
                "the checker gave {p} points, outside 0 to the test's weight {weight}"
            )),
            None => failed("the checker exited 7 (points) without 'points X' on its stderr".into()),
        },
        Some(code) => failed(format!("the checker exited {code}, not a testlib verdict")),
        None => failed("the checker ended without an exit status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_checkers() {
        assert_eq!(exact(b"3\n", b"3\n", 1.0).verdict, Verdict::Accepted);
        assert_eq!(exact(b"3", b"3\n", 1.0).verdict, Verdict::PresentationError);
        let wa = exact(b"4\n", b"3\n", 1.0);
        assert_eq!((wa.verdict, wa.score), (Verdict::WrongAnswer, 0.0));
        assert!(wa.message.unwrap().contains("expected '3', found '4'"));
        assert_eq!(tokens_equal(b" 1  2\n3", b"1 2 3\n", 2.0).score, 2.0);
        let short = tokens_equal(b"1 2", b"1 2 3", 1.0);
        assert!(short
            .message
            .unwrap()
            .contains("expected 3 tokens, found 2"));
        assert_eq!(
            floats(b"3.1415927", b"3.14159265", 1e-6, 0.0, 1.0).verdict,
            Verdict::Accepted
        );
        assert_eq!(
            floats(b"1000001", b"1000000", 0.0, 1e-5, 1.0).verdict,
            Verdict::Accepted
        );
        let off = floats(b"3.2", b"3.14159", 1e-6, 1e-6, 1.0);
        assert_eq!(off.verdict, Verdict::WrongAnswer);
        assert!(off.message.unwrap().contains("token 1"));
        assert_eq!(
            floats(b"yes 1.0", b"no 1.0", 1.0, 1.0, 1.0).verdict,
            Verdict::WrongAnswer
        );
        assert_eq!(
            floats(b"nan", b"NaN", 0.0, 0.0, 1.0).verdict,
            Verdict::Accepted
        );
    }

    fn run<'a>(code: Option<i32>, stderr: &'a [u8]) -> CheckerRun<'a> {
        CheckerRun {
            end_reason: EndReason::Normal,
            exit_code: code,
            signal_name: None,
            stdout: b"",
            stderr,
        }
    }

    #[test]
    fn testlib_exit_codes() {
        let ok = testlib(&run(Some(0), b"ok 1 number\n"), 1.0).unwrap();
        assert_eq!((ok.verdict, ok.score), (Verdict::Accepted, 1.0));
        assert_eq!(ok.message.as_deref(), Some("ok 1 number"));
        let wa = testlib(&run(Some(1), b"wrong answer expected 3, found 4"), 1.0).unwrap();
        assert_eq!(wa.verdict, Verdict::WrongAnswer);
        assert_eq!(
            testlib(&run(Some(2), b""), 1.0).unwrap().verdict,
            Verdict::PresentationError
        );
        let p = testlib(&run(Some(7), b"points 2.5 half of it\n"), 5.0).unwrap();
        assert_eq!((p.verdict, p.score), (Verdict::Partial, 2.5));
        assert!(testlib(&run(Some(7), b"points 6\n"), 5.0)
            .unwrap_err()
            .contains("outside"));
        assert!(testlib(&run(Some(7), b"nothing"), 5.0)
            .unwrap_err()
            .contains("points X"));
        let fail = testlib(&run(Some(3), b"FAIL answer file is broken"), 1.0).unwrap_err();
        assert!(fail.contains("exit 3") && fail.contains("broken"), "{fail}");
        assert!(testlib(&run(Some(42), b""), 1.0)
            .unwrap_err()
            .contains("42"));
        let mut crashed = run(None, b"");
        crashed.signal_name = Some("SIGSEGV");
        assert!(testlib(&crashed, 1.0).unwrap_err().contains("SIGSEGV"));
        let mut slow = run(None, b"");
        slow.end_reason = EndReason::Timeout;
        assert!(testlib(&slow, 1.0).unwrap_err().contains("did not finish"));
    }
}
