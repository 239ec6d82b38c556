//! The report's shapes (HwScore, tests_report), checked without a sandbox.

use super::*;
use crate::exec::EndReason;

fn test(index: usize, verdict: Verdict, weight: f64, group: Option<&str>) -> TestResult {
    TestResult {
        index,
        name: format!("{index:02}"),
        group: group.map(str::to_string),
        weight,
        verdict,
        score: if verdict == Verdict::Accepted {
            weight
        } else {
            0.0
        },
        time: 0.01 * index as f64,
        wall_time: 0.02,
        memory: 1000 * index as u64,
        timeout: None,
        exit_code: Some(0),
        signal_name: None,
        checker_message: None,
        end_reason: EndReason::Normal,
        message: None,
        evidence: None,
    }
}

fn weighted_sum(f: &Final) -> f64 {
    f.report.partials.iter().map(|p| p.weight * p.score).sum()
}

#[test]
fn texts_render_like_railgun() {
    let t = Text::new("%(rate)s%% of %(n)s, %(missing)s")
        .arg("rate", 50)
        .arg("n", "ten");
    assert_eq!(t.render(), "50% of ten, %(missing)s");
    assert_eq!(
        serde_json::to_value(Text::new("x")).unwrap(),
        serde_json::json!({"text": "x", "kwargs": {}})
    );
}

#[test]
fn all_accepted_is_ok_with_full_score() {
    let tests: Vec<TestResult> = (1..=10)
        .map(|i| test(i, Verdict::Accepted, 1.0, None))
        .collect();
    let f = of_tests(&tests);
    assert_eq!(f.status, Status::Ok);
    assert_eq!(f.score, Some(100.0));
    assert!(f.report.accepted);
    assert_eq!(f.time, Some(0.1));
    assert_eq!(f.memory, Some(10_000));
    assert_eq!(f.report.partials.len(), 1);
    assert!((weighted_sum(&f) - 100.0).abs() < 1e-6);
    assert!(f.reason.contains("10 of 10"), "{}", f.reason);
}

#[test]
fn the_first_failing_test_decides_and_groups_are_all_or_nothing() {
    let tests = vec![
        test(1, Verdict::Accepted, 1.0, Some("a")),
        test(2, Verdict::WrongAnswer, 1.0, Some("a")),
        test(3, Verdict::Accepted, 2.0, Some("b")),
        test(4, Verdict::MemoryLimit, 1.0, None),
        test(5, Verdict::Accepted, 1.0, None),
    ];
    let f = of_tests(&tests);
    assert_eq!(f.status, Status::Fail, "{}", f.reason);
    assert!(f.reason.contains("Wrong answer on test 02"));
    // a: 0 of 2 (all or nothing), b: 2 of 2, ungrouped: 1 of 2 → 3 of 6.
    assert_eq!(f.score, Some(50.0));
    assert!(
        (weighted_sum(&f) - 50.0).abs() < 1e-3,
        "{}",
        weighted_sum(&f)
    );
    let names: Vec<String> = f.report.partials.iter().map(|p| p.name.render()).collect();
    assert_eq!(names, ["Group a", "Group b", "Tests"]);
    // Memory limit: its own verdict, the closest status, said why.
    let f = of_tests(&[test(1, Verdict::MemoryLimit, 1.0, None)]);
    assert_eq!(f.status, Status::RuntimeError);
    assert!(f.reason.contains("Memory limit") && f.reason.contains("closest"));
    let mut tle = test(1, Verdict::TimeLimit, 1.0, None);
    tle.timeout = Some(Timeout::Wall);
    let f = of_tests(&[test(1, Verdict::Accepted, 1.0, None), tle]);
    assert_eq!(f.status, Status::TimeLimitExceeded);
    assert!(f.reason.contains("wall"));
}

#[test]
fn checker_and_internal_errors_win_and_leave_no_score() {
    let f = of_tests(&[
        test(1, Verdict::WrongAnswer, 1.0, None),
        test(2, Verdict::CheckerError, 1.0, None),
    ]);
    assert_eq!(f.status, Status::ProjectError);
    assert_eq!(f.score, None);
    let f = of_tests(&[
        test(1, Verdict::CheckerError, 1.0, None),
        test(2, Verdict::InternalError, 1.0, None),
    ]);
    assert_eq!(f.status, Status::InternalError);
}

#[test]
fn tests_reports_both_ways() {
    let tests = vec![
        test(1, Verdict::Accepted, 1.0, None),
        test(2, Verdict::WrongAnswer, 1.0, None),
        test(3, Verdict::RuntimeError, 1.0, None),
    ];
    let r = tests_report_of("aplusb", &tests);
    let statuses: Vec<&str> = r.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(statuses, ["ok", "failure", "error"]);
    assert!(r[1].failure.is_some() && r[2].error.is_some());
    let text = serde_json::to_string(&r).unwrap();
    let back = parse_tests_report(text.as_bytes()).unwrap();
    let f = of_tests_report(&back);
    assert_eq!(f.status, Status::Fail);
    assert_eq!(f.score, Some(33.333333));
    assert!(parse_tests_report(b"{}").is_err());
    assert!(parse_tests_report(br#"[{"name": "a", "status": "great"}]"#)
        .unwrap_err()
        .contains("great"));
    let ok = of_tests_report(&parse_tests_report(br#"[{"name": "a", "status": "ok"}]"#).unwrap());
    assert_eq!((ok.status, ok.score), (Status::Ok, Some(100.0)));
}
