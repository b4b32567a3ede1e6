use super::*;
use crate::config::{CardinalityConfig, Config, SanityConfig};
use crate::parse;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000_000_000;

fn sanity(precision: Precision, stamp_missing: bool) -> SanityConfig {
    SanityConfig {
        max_time_past: Duration::from_secs(600),
        max_time_future: Duration::from_secs(600),
        max_line_length: 100,
        precision,
        stamp_missing,
    }
}

/// (verdict label or reason, forwarded text) for one line.
fn check(precision: Precision, stamp: bool, text: &str) -> (String, String) {
    let table = RouteTable::compile(&[], "junk").unwrap();
    let mut checker = Checker::new(&table, sanity(precision, stamp), None, vec![true], NOW);
    let item = parse::lines(text.as_bytes()).next().unwrap();
    let mut out = Vec::new();
    match checker.judge(item) {
        Verdict::Accept { line, rewrite, .. } => {
            let fwd = if rewritten(&line, rewrite, &mut out) {
                String::from_utf8(out).unwrap()
            } else {
                String::from_utf8(line.raw.to_vec()).unwrap()
            };
            ("accept".into(), fwd)
        }
        Verdict::Reject { reason, .. } => (reason.label().into(), String::new()),
    }
}

#[test]
fn nanoseconds_pass_through_unchanged() {
    let line = format!("cpu value=1 {NOW}");
    assert_eq!(
        check(Precision::Nanoseconds, false, &line),
        ("accept".into(), line)
    );
}

#[test]
fn seconds_as_nanoseconds_are_out_of_range_but_auto_fixes_them() {
    // Conformance N.1 case 69.
    let secs = NOW / 1_000_000_000;
    let line = format!("cpu value=1 {secs}");
    assert_eq!(
        check(Precision::Nanoseconds, false, &line).0,
        "time_out_of_range"
    );
    assert_eq!(
        check(Precision::Auto, false, &line),
        (
            "accept".into(),
            format!("cpu value=1 {}", secs * 1_000_000_000)
        )
    );
}

#[test]
fn auto_infers_ms_and_us() {
    let ms = NOW / 1_000_000;
    let us = NOW / 1_000;
    assert_eq!(
        check(Precision::Auto, false, &format!("cpu v=1 {ms}")).1,
        format!("cpu v=1 {}", ms * 1_000_000)
    );
    assert_eq!(
        check(Precision::Auto, false, &format!("cpu v=1 {us}")).1,
        format!("cpu v=1 {}", us * 1_000)
    );
}

#[test]
fn explicit_precision_scales_and_overflow_is_rejected() {
    let secs = NOW / 1_000_000_000;
    assert_eq!(
        check(Precision::Seconds, false, &format!("cpu v=1 {secs}")).1,
        format!("cpu v=1 {NOW}")
    );
    // Conformance N.1 case 68: out of range after scaling.
    assert_eq!(
        check(Precision::Seconds, false, "b f=1 200000000000000000").0,
        "time_out_of_range"
    );
}

#[test]
fn stamp_missing_appends_receive_time() {
    assert_eq!(
        check(Precision::Nanoseconds, true, "cpu value=1"),
        ("accept".into(), format!("cpu value=1 {NOW}"))
    );
    assert_eq!(
        check(Precision::Nanoseconds, false, "cpu value=1"),
        ("accept".into(), "cpu value=1".into())
    );
}

#[test]
fn far_future_is_rejected() {
    // Conformance N.1 case 70.
    assert_eq!(
        check(
            Precision::Nanoseconds,
            false,
            "cpu value=1 2524608000000000000"
        )
        .0,
        "time_out_of_range"
    );
}

#[test]
fn too_long_and_parse_reasons() {
    let long = format!("cpu,host={} v=1", "x".repeat(200));
    assert_eq!(check(Precision::Nanoseconds, false, &long).0, "too_long");
    assert_eq!(
        check(Precision::Nanoseconds, false, "cpu value=").0,
        "bad_field"
    );
}

#[test]
fn infer_unit_thresholds() {
    assert_eq!(infer_unit(1_700_000_000), Precision::Seconds);
    assert_eq!(infer_unit(1_700_000_000_000), Precision::Milliseconds);
    assert_eq!(infer_unit(1_700_000_000_000_000), Precision::Microseconds);
    assert_eq!(
        infer_unit(1_700_000_000_000_000_000),
        Precision::Nanoseconds
    );
    assert_eq!(infer_unit(-5), Precision::Nanoseconds);
}

#[test]
fn dead_letter_is_valid_line_protocol_carrying_reason_and_text() {
    let mut out = Vec::new();
    dead_letter(
        b"cpu value=\"a\\b",
        Reason::Parse(crate::parse::ParseError::UnterminatedString),
        NOW,
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        format!("sluice_reject,reason=unterminated_string line=\"cpu value=\\\"a\\\\b\" {NOW}")
    );
    let line = crate::parse::scan_line(text.as_bytes()).expect("dead letters are valid");
    let (_, value) = crate::parse::fields(line.fields).next().unwrap();
    let crate::parse::FieldValue::Str(s) = value else {
        panic!("string field")
    };
    let mut unescaped = Vec::new();
    crate::parse::unescape_str_into(s, &mut unescaped);
    assert_eq!(unescaped, b"cpu value=\"a\\b");
}

#[test]
fn no_sink_and_budget_order() {
    let config = Config::parse(
        "[cardinality]\nmax_series = 1\n[[rule]]\ntype = \"basic\"\nmatch = \"cpu\"\nroute = \"cpu\"\n",
        "t",
    )
    .unwrap();
    let table = RouteTable::compile(&config.rules, &config.junkyard).unwrap();
    let budgets = Budgets::new(&config.cardinality, table.routes());
    // cpu has a sink; the junkyard has none.
    let mut checker = Checker::new(
        &table,
        sanity(Precision::Nanoseconds, false),
        budgets,
        vec![true, false],
        NOW,
    );
    let mut verdict =
        |text: &'static str| match checker.judge(parse::lines(text.as_bytes()).next().unwrap()) {
            Verdict::Accept { .. } => "accept".to_string(),
            Verdict::Reject { reason, .. } => reason.label().to_string(),
        };
    assert_eq!(verdict("cpu,host=a v=1"), "accept");
    assert_eq!(verdict("cpu,host=b v=1"), "cardinality");
    assert_eq!(verdict("mem v=1"), "no_sink");
    let _ = CardinalityConfig::default();
}
