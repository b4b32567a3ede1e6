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

#[test]
fn tags_pair_search_respects_tag_boundaries() {
    let rule = TagsRule::new(vec![(b"region".to_vec(), b"us-east-1".to_vec())]);
    assert!(rule.needles.is_some());
    for (section, want) in [
        ("region=us-east-1", true),
        ("host=a,region=us-east-1", true),
        ("region=us-east-1,host=a", true),
        ("host=a,region=us-east-1,cpu=0", true),
        // Inside a longer key or value, or straddling a value's `=`: no.
        ("xregion=us-east-1", false),
        ("region=us-east-10", false),
        ("host=region=us-east-1", false),
        ("region=us-east-1=x", false),
        ("host=xregion=us-east-1,region=us-east-2", false),
        // A first occurrence that is not a whole tag, then one that is.
        ("k=aregion=us-east-1,region=us-east-1", true),
        // A backslash anywhere: the splitting path decides.
        (r"region=us\-east-1", false),
        (r"h\,x=1,region=us-east-1", true),
    ] {
        // As a `Line` would say (`escaped`), and conservatively (`true`).
        let escaped = section.contains('\\');
        assert_eq!(rule.matches(section.as_bytes(), escaped), want, "{section}");
        assert_eq!(rule.matches(section.as_bytes(), true), want, "{section}");
        assert_eq!(
            tags_match_split(section.as_bytes(), &rule.pairs),
            want,
            "{section}"
        );
    }
    // A key or value with a separator or an escapable byte: no needles.
    assert!(TagsRule::new(vec![(b"a b".to_vec(), b"c".to_vec())])
        .needles
        .is_none());
    assert!(TagsRule::new(vec![(b"a".to_vec(), b"c,d".to_vec())])
        .needles
        .is_none());
}

#[test]
fn anchored_literals_are_decided_by_a_prefix_compare() {
    assert_eq!(anchored_literal("^disk"), Some("disk"));
    assert_eq!(anchored_literal("^app_x-1,a=b"), Some("app_x-1,a=b"));
    assert_eq!(anchored_literal("^"), Some(""));
    for not in [
        "disk",
        "^disk$",
        "^d.sk",
        "^(cpu|mem)",
        "^a+",
        r"^a\.b",
        "^[ab]",
        "^(?i)cpu",
        "^é",
    ] {
        assert_eq!(anchored_literal(not), None, "{not}");
    }
    // Every pattern `^literal`: the table uses prefixes; regex and negregex
    // in rule order, and an escaped line is compared unescaped.
    let t = RouteTable::compile(
        &[
            rule(RuleKind::NegRegex("^cpu".into()), "not-cpu"),
            rule(RuleKind::Regex("^cpu,host=b".into()), "cpu-b"),
            rule(RuleKind::Regex("^hell o".into()), "hello"),
        ],
        "junk",
    )
    .unwrap();
    assert!(t.prefixes.is_some());
    assert_eq!(check(&t, "mem v=1"), ("not-cpu".into(), Some(0)));
    assert_eq!(check(&t, "cpu,host=b v=1"), ("cpu-b".into(), Some(1)));
    assert_eq!(check(&t, "cpu,host=a v=1"), ("junk".into(), None));
    let t =
        RouteTable::compile(&[rule(RuleKind::Regex("^hell o".into()), "hello")], "junk").unwrap();
    assert!(t.prefixes.is_some());
    assert_eq!(check(&t, r"hell\ o v=1"), ("hello".into(), Some(0)));
    // One pattern that is not a literal: the automaton for all of them.
    let t = RouteTable::compile(
        &[
            rule(RuleKind::Regex("^cpu".into()), "a"),
            rule(RuleKind::Regex("^m.m".into()), "b"),
        ],
        "junk",
    )
    .unwrap();
    assert!(t.prefixes.is_none());
    assert_eq!(check(&t, "mem v=1"), ("b".into(), Some(1)));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn an_anchored_literal_matches_as_its_regex_does(
            literal in proptest::string::string_regex(r"[ab_=, :-]{0,5}").unwrap(),
            haystack in proptest::string::string_regex(r"[ab_=, :\n-]{0,10}").unwrap(),
        ) {
            let pattern = format!("^{literal}");
            let lit = anchored_literal(&pattern).expect("a literal");
            let regex = regex_automata::meta::Regex::new(&pattern).unwrap();
            prop_assert_eq!(
                haystack.as_bytes().starts_with(lit.as_bytes()),
                regex.is_match(haystack.as_bytes())
            );
        }
    }

    /// Tag sections and rule pairs over a small alphabet, separators and
    /// backslashes included, so needles hit, nearly hit and straddle tags.
    fn token() -> impl Strategy<Value = String> {
        proptest::string::string_regex(r"[ab=,\\ ]{0,4}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn tags_rule_agrees_with_splitting_every_tag(
            section in proptest::string::string_regex(r"[ab=,\\ ]{0,80}").unwrap(),
            pairs in proptest::collection::vec((token(), token()), 1..3),
        ) {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                pairs.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect();
            let rule = TagsRule::new(pairs.clone());
            let want = tags_match_split(section.as_bytes(), &pairs);
            prop_assert_eq!(rule.matches(section.as_bytes(), section.contains('\\')), want);
            prop_assert_eq!(rule.matches(section.as_bytes(), true), want);
        }
    }
}

/// The quick path (every tags rule plain, every regex `^literal`) answers
/// what the general path answers, for rule tables of every kind in any
/// order and lines that hit, nearly hit and miss.
mod quick {
    use super::*;
    use proptest::prelude::*;

    fn rule_strategy() -> impl Strategy<Value = RuleConfig> {
        let word = || proptest::string::string_regex(r"[ab]{1,3}").unwrap();
        prop_oneof![
            word().prop_map(|m| basic(&m, "b")),
            proptest::collection::vec((word(), word()), 1..3)
                .prop_map(|pairs| rule(RuleKind::Tags(pairs), "t")),
            (
                proptest::string::string_regex(r"[ab,=]{0,4}").unwrap(),
                any::<bool>()
            )
                .prop_map(|(lit, negated)| {
                    let pattern = format!("^{lit}");
                    rule(
                        if negated {
                            RuleKind::NegRegex(pattern)
                        } else {
                            RuleKind::Regex(pattern)
                        },
                        if negated { "n" } else { "r" },
                    )
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn quick_path_agrees_with_the_general_path(
            rules in proptest::collection::vec(rule_strategy(), 1..6),
            measurement in proptest::string::string_regex(r"[ab]{1,3}").unwrap(),
            tags in proptest::collection::vec(
                (proptest::string::string_regex(r"[ab]{1,3}").unwrap(),
                 proptest::string::string_regex(r"[ab]{1,3}").unwrap()), 0..4),
        ) {
            let mut line = measurement;
            for (k, v) in &tags {
                line.push_str(&format!(",{k}={v}"));
            }
            line.push_str(" f=1");
            let Ok(scanned) = parse::scan_line(line.as_bytes()) else {
                // A duplicate tag key: not a line.
                return Ok(());
            };
            let table = RouteTable::compile(&rules, "junk").unwrap();
            prop_assert!(table.quick.is_some() || rules.iter().all(|r| matches!(r.kind, RuleKind::Basic(_))));
            let mut general = RouteTable::compile(&rules, "junk").unwrap();
            general.quick = None;
            let (mut a, mut b) = (table.scratch(), general.scratch());
            prop_assert_eq!(table.lookup(&scanned, &mut a), general.lookup(&scanned, &mut b), "{}", line);
        }
    }

    #[test]
    fn quick_path_only_for_plain_tags_and_literal_regexes() {
        let quick =
            |rules: &[RuleConfig]| RouteTable::compile(rules, "junk").unwrap().quick.is_some();
        let tags = |k: &str, v: &str| rule(RuleKind::Tags(vec![(k.into(), v.into())]), "t");
        assert!(quick(&[
            tags("a", "b"),
            rule(RuleKind::Regex("^cpu".into()), "r")
        ]));
        assert!(!quick(&[tags("a", "b,c")]));
        assert!(!quick(&[
            tags("a", "b"),
            rule(RuleKind::Regex("cpu".into()), "r")
        ]));
        assert!(!quick(&[basic("cpu", "b")]));
        // An escaped line takes the general path even where the quick one exists.
        let t = RouteTable::compile(&[tags("a", "b c")], "junk").unwrap();
        assert!(t.quick.is_none());
        let t = RouteTable::compile(&[tags("host", "a")], "junk").unwrap();
        assert_eq!(check(&t, r"c\ pu,host=a v=1"), ("t".into(), Some(0)));
    }
}
