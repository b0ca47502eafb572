//! What the shipped dashboard and alert rules query: every PromQL expression
//! of `deploy/grafana/switchboard.json` and `deploy/prometheus/alerts.yml`,
//! and the metric and label names each one uses.
//!
//! The names come from a small PromQL scanner rather than a full parser:
//! all these tests need is which identifiers are metric names and which
//! label names they are matched or grouped on; the syntax itself is checked
//! by real Prometheus (`promtool check rules`, see
//! `deploy_observability.rs`). The one PromQL parser crate (promql-parser)
//! would add about thirty crates to the workspace build for that.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use super::deploy_file;

/// One PromQL expression of the deploy kit and where it comes from.
#[derive(Debug, Clone)]
pub struct Query {
    /// E.g. `dashboard panel "Connections" A` or `alert SwitchboardBusDown`.
    pub source: String,
    /// The expression, with Grafana's variables replaced by values that
    /// keep it valid PromQL.
    pub expr: String,
    /// A label the query needs besides those in `expr` (the label of a
    /// Grafana `label_values(selector, label)` variable).
    pub extra_label: Option<String>,
}

/// Grafana variables and what they stand for in a plain PromQL check.
const GRAFANA_VARS: [(&str, &str); 5] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

/// Every query of the dashboard: panel targets (rows' nested panels
/// included) and the template variables.
pub fn dashboard_queries() -> Vec<Query> {
    let dash: Json = serde_json::from_str(&deploy_file("grafana/switchboard.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/switchboard.json is not JSON: {e}"));
    let mut out = Vec::new();
    fn walk(panels: &[Json], out: &mut Vec<Query>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {:?} target {} has no expr", p["title"], t["refId"])
                });
                out.push(Query {
                    source: format!("dashboard panel {} {}", p["title"], t["refId"]),
                    expr: substitute(expr),
                    extra_label: None,
                });
            }
            walk(p["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    walk(
        dash["panels"].as_array().expect("dashboard panels"),
        &mut out,
    );
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_else(|| panic!("variable {} has no query", var["name"]));
        let (selector, label) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','))
            .unwrap_or_else(|| {
                panic!(
                    "variable {}: expected label_values(selector, label), got {q}",
                    var["name"]
                )
            });
        out.push(Query {
            source: format!("dashboard variable {}", var["name"]),
            expr: substitute(selector.trim()),
            extra_label: Some(label.trim().to_string()),
        });
    }
    out
}

/// Every alerting and recording rule expression of `alerts.yml`.
pub fn alert_queries() -> Vec<Query> {
    let rules: Yaml = serde_yaml::from_str(&deploy_file("prometheus/alerts.yml"))
        .unwrap_or_else(|e| panic!("deploy/prometheus/alerts.yml is not YAML: {e}"));
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .expect("a rule without alert or record name");
            out.push(Query {
                source: format!("alert {name}"),
                expr: rule["expr"].as_str().expect("rule expr").to_string(),
                extra_label: None,
            });
        }
    }
    out
}

fn substitute(expr: &str) -> String {
    GRAFANA_VARS
        .iter()
        .fold(expr.to_string(), |e, (var, value)| e.replace(var, value))
}

/// A series selector in an expression: the metric name and the label names
/// its matchers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric name (`foo` in `foo{a="b"}`, or a `__name__="foo"` matcher).
    pub metric: String,
    /// Label names of the matchers, `__name__` excluded.
    pub labels: Vec<String>,
}

/// What one expression uses: its selectors, and the label names it groups
/// or matches on (`by`, `without`, `on`, `ignoring`, `group_left/right`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Uses {
    /// Every series selector.
    pub selectors: Vec<Selector>,
    /// Label names in grouping and vector-matching clauses.
    pub grouping: BTreeSet<String>,
}

/// Operators and constants that are never metric names (the clauses in
/// [`LABEL_LISTS`] neither).
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan",
];
/// Aggregation operators: followed by `(` or by a `by`/`without` clause.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Scans `expr` for the metric and label names it uses. Panics on text it
/// cannot scan (an unterminated string or brace), naming the expression.
pub fn uses(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Uses::default();
    let mut i = 0;
    let mut last_metric: Option<usize> = None; // index into out.selectors
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i, expr);
            last_metric = None;
        } else if c == '{' {
            let (matchers, end) = matchers(&chars, i, expr);
            let name = matchers
                .iter()
                .find(|(l, op, _)| l == "__name__" && op == "=")
                .map(|(_, _, v)| v.clone());
            let labels: Vec<String> = matchers
                .into_iter()
                .map(|(l, _, _)| l)
                .filter(|l| l != "__name__")
                .collect();
            match (last_metric, name) {
                (Some(idx), _) => out.selectors[idx].labels.extend(labels),
                (None, Some(metric)) => out.selectors.push(Selector { metric, labels }),
                (None, None) => panic!("selector without a metric name in {expr:?}"),
            }
            last_metric = None;
            i = end;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            last_metric = None;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (0.25, 1e3, 0x1f, 10m, 1h30m).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            last_metric = None;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            last_metric = None;
            if LABEL_LISTS.contains(&word.as_str()) {
                if next == Some('(') {
                    let open = i + chars[i..].iter().position(|&c| c == '(').unwrap_or(0);
                    let close = open
                        + chars[open..]
                            .iter()
                            .position(|&c| c == ')')
                            .unwrap_or_else(|| panic!("unclosed `{word} (` in {expr:?}"));
                    let list: String = chars[open + 1..close].iter().collect();
                    out.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string),
                    );
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || next == Some('(')
            {
                // An operator or a function call.
            } else {
                out.selectors.push(Selector {
                    metric: word,
                    labels: Vec::new(),
                });
                last_metric = Some(out.selectors.len() - 1);
            }
        } else {
            // Operators, parentheses, commas, `@`.
            i += 1;
            last_metric = None;
        }
    }
    out
}

/// The index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize, expr: &str) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    panic!("unterminated string in {expr:?}")
}

/// The `(label, op, value)` matchers of the `{...}` block starting at
/// `start`, and the index just past its `}`.
fn matchers(chars: &[char], start: usize, expr: &str) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    let mut i = start + 1;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        match chars.get(i) {
            None => panic!("unclosed `{{` in {expr:?}"),
            Some('}') => return (out, i + 1),
            _ => {}
        }
        let label_start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[label_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        assert!(
            !label.is_empty() && ["=", "!=", "=~", "!~"].contains(&op.as_str()),
            "bad label matcher at {label:?}{op:?} in {expr:?}"
        );
        let end = skip_string(chars, i, expr);
        let value: String = chars[i + 1..end - 1].iter().collect();
        out.push((label, op, value));
        i = end;
    }
}
