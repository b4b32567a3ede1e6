//! Route: a precompiled rule table (influx-spout semantics) that maps a
//! scanned line to a route. Pure code: no I/O, no clock.
//!
//! Rules are tried in file order and the first match wins. Instead of trying
//! every rule per line, the table answers three cheap questions and takes the
//! lowest matching rule index:
//! - `basic`: one hash lookup of the unescaped measurement (exact bytes, not
//!   influx-spout's FNV-1 hash, so no collisions; `names.rs`);
//! - `tags`: only the tags rules ordered before the best candidate so far;
//! - `regex`/`negregex`: one pass of a single multi-pattern automaton, run
//!   only when some regex rule is ordered before the best candidate.
mod names;
mod tags;

use names::NameTable;
use regex_automata::meta::{Cache, Regex};
use regex_automata::{Input, PatternSet};
#[cfg(test)]
use tags::tags_match_split;
use tags::{eq_bytes, TagsRule};

use crate::config::{RuleConfig, RuleKind};
use crate::parse::{self, Escape, Line};

/// Index of a route in [`RouteTable::routes`].
pub type RouteId = u16;

/// Errors compiling a rule table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rule[{index}]: bad regex: {message}")]
    BadRegex { index: usize, message: String },
    #[error("too many routes (max {max})")]
    TooManyRoutes { max: usize },
}

/// A regex or negregex rule: its index and its pattern id in the regex set.
#[derive(Clone, Copy, Debug)]
struct RegexRule {
    index: u32,
    pattern: u32,
    negated: bool,
}

/// A tags or regex rule that a few compares decide on a line without
/// backslashes, for tables whose every tags rule is plain and whose every
/// regex is an anchored literal (`RouteTable::quick`).
#[derive(Clone, Debug)]
struct QuickRule {
    index: u32,
    test: QuickTest,
}

#[derive(Clone, Debug)]
enum QuickTest {
    /// A tags rule of one pair: its `key=value` is a whole tag.
    Pair(Box<[u8]>),
    /// A tags rule of several pairs: each `key=value` is a whole tag.
    Pairs(Box<[Box<[u8]>]>),
    /// A regex `^literal` (`negated`: a negregex): the line starts with it.
    Prefix { literal: Box<[u8]>, negated: bool },
}

impl QuickRule {
    #[inline(always)]
    fn matches(&self, line: &Line<'_>) -> bool {
        match &self.test {
            QuickTest::Pair(needle) => tags::has_pair(line.tags, needle),
            QuickTest::Pairs(needles) => tags::has_pairs(line.tags, needles),
            QuickTest::Prefix { literal, negated } => starts_with(line.raw, literal) != *negated,
        }
    }
}

/// The result of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// Index of the matching rule; `None` means the junkyard.
    pub rule: Option<u32>,
    pub route: RouteId,
}

/// Per-shard mutable state for lookups (reused; no allocation per line after warm-up).
pub struct Scratch {
    unescaped: Vec<u8>,
    cache: Option<Cache>,
    patterns: PatternSet,
}

/// The compiled, immutable rule table. Shared by all shards.
pub struct RouteTable {
    routes: Vec<String>,
    junkyard: RouteId,
    /// Route of each rule, by rule index.
    rule_routes: Vec<RouteId>,
    /// Unescaped measurement -> lowest index of a `basic` rule naming it.
    basic: NameTable,
    /// `tags` rules with their indices, ascending.
    tags_rules: Vec<(u32, TagsRule)>,
    /// Regex/negregex rules, ascending by index.
    regex_rules: Vec<RegexRule>,
    /// Lowest index of a tags or regex rule (`u32::MAX`: none): below a
    /// line's best exact-name rule, they must be tried.
    first_tags_or_regex: u32,
    regex: Option<Regex>,
    /// When every regex pattern is `^` and a plain literal (`^cpu_`), the
    /// literals by pattern id: a prefix compare decides each, not the
    /// automaton.
    prefixes: Option<Vec<Box<[u8]>>>,
    /// When, moreover, every tags rule is plain (`TagsRule::needles`): the
    /// tags and regex rules in rule order, for lines without backslashes
    /// (nearly all): one loop of compares, no regex or split machinery.
    quick: Option<Box<[QuickRule]>>,
}

impl RouteTable {
    /// Compile rules. `junkyard` is the route of lines no rule matches.
    pub fn compile(rules: &[RuleConfig], junkyard: &str) -> Result<RouteTable, Error> {
        Self::compile_with_extra(rules, junkyard, None)
    }

    /// Like `compile`, also giving an id to a route no rule produces (the
    /// dead-letter route), after the junkyard.
    pub fn compile_with_extra(
        rules: &[RuleConfig],
        junkyard: &str,
        extra: Option<&str>,
    ) -> Result<RouteTable, Error> {
        let mut routes: Vec<String> = Vec::new();
        let mut route_id = |name: &str| -> Result<RouteId, Error> {
            if let Some(i) = routes.iter().position(|r| r == name) {
                return Ok(i as RouteId);
            }
            if routes.len() >= RouteId::MAX as usize {
                return Err(Error::TooManyRoutes {
                    max: RouteId::MAX as usize,
                });
            }
            routes.push(name.to_string());
            Ok((routes.len() - 1) as RouteId)
        };
        let mut rule_routes = Vec::with_capacity(rules.len());
        let mut basic: Vec<(&[u8], u32)> = Vec::new();
        let mut tags_rules = Vec::new();
        let mut regex_rules = Vec::new();
        let mut patterns: Vec<&str> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            rule_routes.push(route_id(&rule.route)?);
            match &rule.kind {
                RuleKind::Basic(name) => {
                    // First rule for a name wins (`NameTable::new`); later
                    // duplicates can never match.
                    basic.push((name.as_bytes(), index as u32));
                }
                RuleKind::Tags(pairs) => tags_rules.push((
                    index as u32,
                    TagsRule::new(
                        pairs
                            .iter()
                            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                            .collect(),
                    ),
                )),
                RuleKind::Regex(p) | RuleKind::NegRegex(p) => {
                    regex_rules.push(RegexRule {
                        index: index as u32,
                        pattern: patterns.len() as u32,
                        negated: matches!(rule.kind, RuleKind::NegRegex(_)),
                    });
                    patterns.push(p);
                }
            }
        }
        let junkyard = route_id(junkyard)?;
        if let Some(extra) = extra {
            route_id(extra)?;
        }
        let regex = if patterns.is_empty() {
            None
        } else {
            Some(Regex::new_many(&patterns).map_err(|e| {
                let index = e
                    .pattern()
                    .and_then(|p| regex_rules.get(p.as_usize()))
                    .map_or(0, |r| r.index as usize);
                Error::BadRegex {
                    index,
                    message: e.to_string(),
                }
            })?)
        };
        let prefixes = patterns
            .iter()
            .map(|p| anchored_literal(p).map(|l| l.as_bytes().into()))
            .collect::<Option<Vec<_>>>()
            .filter(|p| !p.is_empty());
        let quick = quick_rules(&tags_rules, &regex_rules, prefixes.as_deref());
        Ok(RouteTable {
            routes,
            junkyard,
            rule_routes,
            basic: NameTable::new(basic),
            first_tags_or_regex: tags_rules
                .first()
                .map(|(i, _)| *i)
                .into_iter()
                .chain(regex_rules.first().map(|r| r.index))
                .min()
                .unwrap_or(u32::MAX),
            tags_rules,
            regex_rules,
            regex,
            prefixes,
            quick,
        })
    }

    /// Route names, indexed by [`RouteId`].
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    pub fn junkyard(&self) -> RouteId {
        self.junkyard
    }

    pub fn rule_count(&self) -> usize {
        self.rule_routes.len()
    }

    /// Route of rule `index`.
    pub fn rule_route(&self, index: usize) -> RouteId {
        self.rule_routes[index]
    }

    /// A scratch space for [`RouteTable::lookup`]; one per shard.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            unescaped: Vec::with_capacity(256),
            cache: self.regex.as_ref().map(|r| r.create_cache()),
            patterns: PatternSet::new(self.regex.as_ref().map_or(0, |r| r.pattern_len())),
        }
    }

    /// First matching rule for a scanned line, or the junkyard.
    ///
    /// Inlined into the shard's line loop: the exact-name probe (and no
    /// rules at all) take no call, so the `Line` stays in registers; the
    /// tags and regex rules, when some could still win, are out of line.
    #[inline(always)]
    pub fn lookup(&self, line: &Line<'_>, scratch: &mut Scratch) -> Match {
        let mut best = u32::MAX;
        if !self.basic.is_empty() {
            let found = if !line.escaped {
                self.basic.get(line.measurement)
            } else {
                self.basic_escaped(line.measurement, scratch)
            };
            if let Some(index) = found {
                best = index;
            }
        }
        if self.first_tags_or_regex < best {
            best = self.tags_and_regex(line, best, scratch);
        }
        if best == u32::MAX {
            Match {
                rule: None,
                route: self.junkyard,
            }
        } else {
            Match {
                rule: Some(best),
                route: self.rule_routes[best as usize],
            }
        }
    }

    /// The exact-name lookup of a measurement that may hold escapes.
    #[inline(never)]
    fn basic_escaped(&self, measurement: &[u8], scratch: &mut Scratch) -> Option<u32> {
        scratch.unescaped.clear();
        parse::unescape_into(measurement, Escape::Measurement, &mut scratch.unescaped);
        self.basic.get(&scratch.unescaped)
    }

    /// Lowest tags, regex or negregex rule index below `best` that matches,
    /// else `best`. Out of line, and small: the quick rules inlined, the
    /// general path (with its large stack frame) a call of its own.
    #[inline(never)]
    fn tags_and_regex(&self, line: &Line<'_>, best: u32, scratch: &mut Scratch) -> u32 {
        match &self.quick {
            Some(quick) if !line.escaped => quick_lookup(quick, line, best),
            _ => self.tags_and_regex_general(line, best, scratch),
        }
    }

    /// `tags_and_regex` for any table and line: tags rules by `TagsRule`,
    /// regexes by prefix compares or the automaton.
    #[inline(never)]
    fn tags_and_regex_general(&self, line: &Line<'_>, mut best: u32, scratch: &mut Scratch) -> u32 {
        for (index, rule) in &self.tags_rules {
            if *index >= best {
                break;
            }
            if rule.matches(line.tags, line.escaped) {
                best = *index;
                break;
            }
        }
        if let (Some(regex), Some(first)) = (&self.regex, self.regex_rules.first()) {
            if first.index < best {
                best = self.regex_lookup(regex, line.raw, line.escaped, best, scratch);
            }
        }
        best
    }

    /// Lowest regex/negregex rule index below `best` that matches, else `best`.
    /// Regexes see the line without its newline and with influx-spout's
    /// unescaping (a backslash before `,`, `"`, space or `=` removed), so a
    /// pattern `hell o` matches `hell\ o`; `^` and `$` anchor at the line's ends.
    fn regex_lookup(
        &self,
        regex: &Regex,
        raw: &[u8],
        escaped: bool,
        best: u32,
        scratch: &mut Scratch,
    ) -> u32 {
        let haystack: &[u8] = if !escaped {
            raw
        } else {
            scratch.unescaped.clear();
            spout_unescape_into(raw, &mut scratch.unescaped);
            &scratch.unescaped
        };
        // Whether the regex of pattern id `p` matches: every pattern
        // `^literal` (`prefixes`) is a prefix compare; otherwise the
        // automaton finds the matching patterns first.
        if self.prefixes.is_none() {
            run_automaton(regex, haystack, &mut scratch.cache, &mut scratch.patterns);
        }
        let hit = |p: u32| match &self.prefixes {
            Some(prefixes) => starts_with(haystack, &prefixes[p as usize]),
            None => scratch
                .patterns
                .contains(regex_automata::PatternID::must(p as usize)),
        };
        for rule in &self.regex_rules {
            if rule.index >= best {
                break;
            }
            if hit(rule.pattern) != rule.negated {
                return rule.index;
            }
        }
        best
    }
}

/// `haystack` starts with `literal` (an anchored-literal regex's test).
#[inline(always)]
fn starts_with(haystack: &[u8], literal: &[u8]) -> bool {
    haystack.len() >= literal.len() && eq_bytes(&haystack[..literal.len()], literal)
}

/// Fill `patterns` with the ids of the patterns that match `haystack`.
/// Out of line: the automaton's search needs a large stack frame, which
/// the prefix compares and tags rules of the caller should not pay for.
#[inline(never)]
fn run_automaton(
    regex: &Regex,
    haystack: &[u8],
    cache: &mut Option<Cache>,
    patterns: &mut PatternSet,
) {
    patterns.clear();
    let cache = cache.get_or_insert_with(|| regex.create_cache());
    if regex.pattern_len() == 1 {
        // One pattern: whether it matches anywhere is the whole answer, and
        // an earliest-match search may stop early (an anchored `^app_` looks
        // at the line's start only), where the overlapping search that finds
        // every pattern of a set runs the automaton over the whole line.
        let input = Input::new(haystack).earliest(true);
        if regex.search_half_with(cache, &input).is_some() {
            patterns.insert(regex_automata::PatternID::ZERO);
        }
    } else {
        regex.which_overlapping_matches_with(cache, &Input::new(haystack), patterns);
    }
}

/// Lowest index of a quick rule below `best` that matches the line (which
/// holds no backslash), else `best`.
#[inline(always)]
fn quick_lookup(quick: &[QuickRule], line: &Line<'_>, best: u32) -> u32 {
    for rule in quick {
        if rule.index >= best {
            break;
        }
        if rule.matches(line) {
            return rule.index;
        }
    }
    best
}

/// The tags and regex rules in rule order as `QuickRule`s, when every tags
/// rule is plain and every regex pattern an anchored literal (`prefixes`,
/// by pattern id); else `None`.
fn quick_rules(
    tags_rules: &[(u32, TagsRule)],
    regex_rules: &[RegexRule],
    prefixes: Option<&[Box<[u8]>]>,
) -> Option<Box<[QuickRule]>> {
    let mut quick = Vec::new();
    for (index, rule) in tags_rules {
        let needles = rule.needles.as_ref()?;
        let test = match &needles[..] {
            [one] => QuickTest::Pair(one.clone()),
            many => QuickTest::Pairs(many.into()),
        };
        quick.push(QuickRule {
            index: *index,
            test,
        });
    }
    if !regex_rules.is_empty() {
        let prefixes = prefixes?;
        for rule in regex_rules {
            quick.push(QuickRule {
                index: rule.index,
                test: QuickTest::Prefix {
                    literal: prefixes[rule.pattern as usize].clone(),
                    negated: rule.negated,
                },
            });
        }
    }
    quick.sort_by_key(|r| r.index);
    (!quick.is_empty()).then(|| quick.into_boxed_slice())
}

/// The literal of a pattern that is `^` followed by bytes that stand for
/// themselves in any regex syntax (ASCII letters and digits, `_ - , = : /
/// @ %` and space), so it matches exactly the haystacks that start with
/// them. Anything else (a class, a repetition, an escape, a flag group, a
/// second anchor) is `None`: the automaton decides.
fn anchored_literal(pattern: &str) -> Option<&str> {
    let literal = pattern.strip_prefix('^')?;
    literal
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-,=:/@% ".contains(&b))
        .then_some(literal)
}

/// influx-spout's `Unescape`: drop a backslash that precedes `,`, `"`, space or `=`.
fn spout_unescape_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\\' && i + 1 < raw.len() && matches!(raw[i + 1], b',' | b'"' | b' ' | b'=') {
            out.push(raw[i + 1]);
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests;
