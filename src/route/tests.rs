use super::*;
use crate::config::{RuleConfig, RuleKind};

fn rule(kind: RuleKind, route: &str) -> RuleConfig {
    RuleConfig {
        kind,
        route: route.into(),
    }
}

fn basic(name: &str, route: &str) -> RuleConfig {
    rule(RuleKind::Basic(name.into()), route)
}

/// Route name (and rule index) a line goes to.
fn check(table: &RouteTable, line: &str) -> (String, Option<u32>) {
    let scanned = parse::scan_line(line.as_bytes()).expect("test line must be valid");
    let mut scratch = table.scratch();
    let m = table.lookup(&scanned, &mut scratch);
    (table.routes()[m.route as usize].clone(), m.rule)
}

#[test]
fn basic_compares_unescaped_measurement() {
    let t = RouteTable::compile(&[basic("hell o", "a"), basic("cpu", "b")], "junk").unwrap();
    assert_eq!(check(&t, r"hell\ o,foo=bar x=1"), ("a".into(), Some(0)));
    assert_eq!(check(&t, "cpu,host=a v=1"), ("b".into(), Some(1)));
    assert_eq!(check(&t, "cpu2 v=1"), ("junk".into(), None));
    // A tag key or field named like the rule does not match.
    assert_eq!(check(&t, "mem,cpu=1 cpu=1"), ("junk".into(), None));
}

#[test]
fn first_match_wins_across_types() {
    let t = RouteTable::compile(
        &[
            rule(RuleKind::Regex("host=db".into()), "re"),
            basic("cpu", "basic"),
            rule(RuleKind::Tags(vec![("dc".into(), "nyc".into())]), "tags"),
        ],
        "junk",
    )
    .unwrap();
    assert_eq!(check(&t, "cpu,host=db01 v=1").0, "re");
    assert_eq!(check(&t, "cpu,host=web01,dc=nyc v=1").0, "basic");
    assert_eq!(check(&t, "mem,dc=nyc v=1").0, "tags");
    assert_eq!(check(&t, "mem,dc=sfo v=1").0, "junk");
}

#[test]
fn duplicate_basic_names_first_wins() {
    let t = RouteTable::compile(&[basic("cpu", "a"), basic("cpu", "b")], "junk").unwrap();
    assert_eq!(check(&t, "cpu v=1"), ("a".into(), Some(0)));
}

#[test]
fn tags_rule_needs_every_pair_any_order_duplicates_allowed() {
    let t = RouteTable::compile(
        &[rule(
            RuleKind::Tags(vec![
                ("host".into(), "db01".into()),
                ("dc".into(), "nyc".into()),
            ]),
            "t",
        )],
        "junk",
    )
    .unwrap();
    assert_eq!(check(&t, "foo,dc=nyc,host=db01 v=1").0, "t");
    assert_eq!(check(&t, "foo,host=db01,zone=a,dc=nyc v=1").0, "t");
    assert_eq!(check(&t, "foo,host=db01 v=1").0, "junk");
    assert_eq!(check(&t, "foo v=1").0, "junk");
    // Values are exact bytes, not globs.
    assert_eq!(check(&t, "foo,dc=nyc,host=db0* v=1").0, "junk");
}

#[test]
fn tags_compare_unescaped() {
    let t = RouteTable::compile(
        &[rule(
            RuleKind::Tags(vec![("a b".into(), "c,d".into())]),
            "t",
        )],
        "junk",
    )
    .unwrap();
    assert_eq!(check(&t, r"m,a\ b=c\,d v=1").0, "t");
}

#[test]
fn regex_sees_line_without_newline_so_anchors_work() {
    let t = RouteTable::compile(
        &[
            rule(RuleKind::Regex("^cpu".into()), "start"),
            rule(RuleKind::Regex(r"1$".into()), "end"),
        ],
        "junk",
    )
    .unwrap();
    assert_eq!(check(&t, "cpu v=2").0, "start");
    assert_eq!(check(&t, "mem v=1").0, "end");
    assert_eq!(check(&t, "mem v=2").0, "junk");
}

#[test]
fn regex_sees_spout_unescaped_line() {
    let t = RouteTable::compile(&[rule(RuleKind::Regex("hell +o".into()), "r")], "junk").unwrap();
    assert_eq!(check(&t, r"foo hell\ o=1").0, "r");
}

#[test]
fn negregex_matches_when_pattern_does_not() {
    let t = RouteTable::compile(
        &[
            rule(RuleKind::NegRegex("^(cpu|mem)".into()), "other"),
            basic("cpu", "cpu"),
        ],
        "junk",
    )
    .unwrap();
    assert_eq!(check(&t, "disk v=1").0, "other");
    assert_eq!(check(&t, "cpu v=1").0, "cpu");
    assert_eq!(check(&t, "mem v=1").0, "junk");
}

#[test]
fn no_rules_everything_to_junkyard() {
    let t = RouteTable::compile(&[], "junk").unwrap();
    assert_eq!(t.routes(), &["junk".to_string()]);
    assert_eq!(check(&t, "cpu v=1"), ("junk".into(), None));
}

#[test]
fn routes_are_shared_by_rules() {
    let t = RouteTable::compile(
        &[basic("a", "x"), basic("b", "x"), basic("c", "junk")],
        "junk",
    )
    .unwrap();
    assert_eq!(t.routes(), &["x".to_string(), "junk".to_string()]);
    assert_eq!(t.junkyard(), 1);
    assert_eq!(check(&t, "c v=1"), ("junk".into(), Some(2)));
}
