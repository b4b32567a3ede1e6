//! `sluice explain`: for each line, the decision the running appliance would
//! take, as one JSON object per line. Uses the shards' own [`Checker`].
use serde_json::{json, Map, Value};

use crate::app::{compile_routes, route_subscriptions};
use crate::budget::Budgets;
use crate::check::{self, Checker, Verdict};
use crate::config::Config;
use crate::parse::{self, Escape, FieldValue, Line};
use crate::route::{Match, RouteTable};

/// Explains lines against one configuration; keeps budget state across calls,
/// as one shard would.
pub struct Explainer {
    config: Config,
    table: RouteTable,
    subscriptions: Vec<Vec<usize>>,
}

fn unescaped(token: &[u8], kind: Escape) -> String {
    let mut out = Vec::with_capacity(token.len());
    parse::unescape_into(token, kind, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn describe_line(line: &Line<'_>, object: &mut Map<String, Value>) {
    object.insert(
        "measurement".into(),
        unescaped(line.measurement, Escape::Measurement).into(),
    );
    let mut tags = Map::new();
    for (k, v) in parse::tags(line.tags) {
        tags.insert(
            unescaped(k, Escape::TagKey),
            unescaped(v, Escape::TagValue).into(),
        );
    }
    object.insert("tags".into(), Value::Object(tags));
    let mut fields = Map::new();
    for (k, v) in parse::fields(line.fields) {
        let value = match v {
            FieldValue::Float(f) => json!(f),
            FieldValue::Int(i) => json!(i),
            FieldValue::UInt(u) => json!(u),
            FieldValue::Bool(b) => json!(b),
            FieldValue::Str(s) => {
                let mut out = Vec::with_capacity(s.len());
                parse::unescape_str_into(s, &mut out);
                json!(String::from_utf8_lossy(&out))
            }
        };
        fields.insert(unescaped(k, Escape::FieldKey), value);
    }
    object.insert("fields".into(), Value::Object(fields));
}

impl Explainer {
    pub fn new(config: Config) -> anyhow::Result<Explainer> {
        let table = compile_routes(&config)?;
        let subscriptions = route_subscriptions(&config, &table);
        Ok(Explainer {
            config,
            table,
            subscriptions,
        })
    }

    fn route_fields(&self, matched: Option<Match>, object: &mut Map<String, Value>) {
        match matched {
            Some(m) => {
                object.insert("rule".into(), m.rule.map_or(Value::Null, |r| json!(r)));
                object.insert("route".into(), json!(self.table.routes()[m.route as usize]));
                let sinks: Vec<&str> = self.subscriptions[m.route as usize]
                    .iter()
                    .map(|&i| self.config.sinks[i].name.as_str())
                    .collect();
                object.insert("sinks".into(), json!(sinks));
            }
            None => {
                object.insert("rule".into(), Value::Null);
                object.insert("route".into(), Value::Null);
                object.insert("sinks".into(), json!([]));
            }
        }
    }

    /// Explain every line of `input` (a datagram's worth of text) at `now_ns`.
    pub fn explain(&self, input: &[u8], now_ns: i64, budgets: &mut Option<Budgets>) -> Vec<Value> {
        let route_has_sinks = self.subscriptions.iter().map(|s| !s.is_empty()).collect();
        let mut checker = Checker::new(
            &self.table,
            self.config.sanity.clone(),
            budgets.take(),
            route_has_sinks,
            now_ns,
        );
        let mut out = Vec::new();
        let mut rewrite = Vec::new();
        for item in parse::lines(input) {
            let mut object = Map::new();
            match checker.judge(item) {
                Verdict::Accept {
                    line,
                    matched,
                    timestamp_ns,
                    rewrite: how,
                } => {
                    object.insert("line".into(), json!(String::from_utf8_lossy(line.raw)));
                    object.insert("verdict".into(), json!("accept"));
                    object.insert("reason".into(), Value::Null);
                    describe_line(&line, &mut object);
                    object.insert("timestamp_ns".into(), json!(timestamp_ns));
                    self.route_fields(Some(matched), &mut object);
                    let forwarded = if check::rewritten(&line, how, &mut rewrite) {
                        String::from_utf8_lossy(&rewrite).into_owned()
                    } else {
                        String::from_utf8_lossy(line.raw).into_owned()
                    };
                    object.insert("forwarded".into(), json!(forwarded));
                }
                Verdict::Reject {
                    raw,
                    reason,
                    line,
                    matched,
                } => {
                    object.insert("line".into(), json!(String::from_utf8_lossy(raw)));
                    object.insert("verdict".into(), json!("reject"));
                    object.insert("reason".into(), json!(reason.label()));
                    if let Some(line) = &line {
                        describe_line(line, &mut object);
                        let ts = line
                            .timestamp
                            .and_then(|t| check::to_nanos(t, self.config.sanity.precision));
                        object.insert("timestamp_ns".into(), json!(ts));
                    } else {
                        object.insert("measurement".into(), Value::Null);
                        object.insert("tags".into(), json!({}));
                        object.insert("fields".into(), json!({}));
                        object.insert("timestamp_ns".into(), Value::Null);
                    }
                    self.route_fields(matched, &mut object);
                    object.insert("sinks".into(), json!([]));
                    if let Some(dead) = &self.config.dead_letter.route {
                        let wanted =
                            self.config.dead_letter.reasons.is_empty()
                                || self.config.dead_letter.reasons.iter().any(|r| {
                                    r == reason.label() || r == reason.drop_class().as_str()
                                });
                        if wanted {
                            object.insert("dead_letter_route".into(), json!(dead));
                        }
                    }
                }
            }
            out.push(Value::Object(object));
        }
        *budgets = checker_budgets(checker);
        out
    }

    /// Fresh budget state for a run.
    pub fn budgets(&self) -> Option<Budgets> {
        Budgets::new(&self.config.cardinality, self.table.routes())
    }
}

fn checker_budgets(checker: Checker<'_>) -> Option<Budgets> {
    checker.into_budgets()
}
