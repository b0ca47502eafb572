//! The monitoring kit against the real thing: every metric and label the
//! Grafana dashboard (`deploy/grafana/switchboard.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) query must be exported by a running
//! gateway, and real Prometheus tooling accepts them: `promtool check rules`
//! and `promtool test rules` (the unit tests in `alerts.test.yml`),
//! `promtool check config`, and every dashboard expression parsed by
//! `promtool` as a recording rule.
//!
//! promtool comes with Debian's `prometheus` package (`.ci/run` installs
//! it); without it those checks print `SKIPPED CHECK` and fail instead when
//! `SWITCHBOARD_REQUIRE_TOOLS` lists `promtool`.

mod common;
mod deploy_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use deploy_support::{
    find_tool,
    promql::{Query, Selector, Uses, alert_queries, dashboard_queries, uses},
    repo, skip_tool,
};
use serde_json::json;
use switchboard_testkit::{jwt::Claims, net::http_request, node::ConnectOptions};

/// Series Prometheus adds to every target itself; the gateway never exports
/// them.
const PROMETHEUS_SERIES: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];
/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// What one `/metrics` page exports: each sample name with the label names
/// its series carry, and the type of each metric family.
#[derive(Debug, Default)]
struct Exported {
    samples: BTreeMap<String, BTreeSet<String>>,
    families: BTreeMap<String, String>,
}

impl Exported {
    fn parse(text: &str) -> Self {
        let mut out = Exported::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    out.families
                        .insert(name.to_string(), kind.trim().to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, labels) = match line.split_once('{') {
                Some((name, rest)) => {
                    let body = &rest[..rest.rfind('}').expect("closing brace")];
                    let labels = body
                        .split(',')
                        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
                        .collect::<BTreeSet<_>>();
                    (name.to_string(), labels)
                }
                None => (
                    line.split(' ').next().unwrap_or_default().to_string(),
                    BTreeSet::new(),
                ),
            };
            out.samples.entry(name).or_default().extend(labels);
        }
        out
    }

    /// The label names of the series a query for `metric` selects, or why
    /// it selects nothing. Histogram and summary families are queried
    /// through their `_bucket`/`_sum`/`_count` series; a counter through
    /// its `_total` series.
    fn labels_of(&self, metric: &str) -> Result<BTreeSet<String>, String> {
        if PROMETHEUS_SERIES.contains(&metric) {
            return Ok(BTreeSet::new());
        }
        if let Some(labels) = self.samples.get(metric) {
            return Ok(labels.clone());
        }
        match self.families.get(metric).map(String::as_str) {
            Some(kind @ ("histogram" | "summary")) => Err(format!(
                "`{metric}` is a {kind}: query {metric}_bucket, {metric}_sum or {metric}_count"
            )),
            _ if self.samples.contains_key(&format!("{metric}_total")) => {
                Err(format!("`{metric}` is exported as `{metric}_total`"))
            }
            _ => Err(format!("`{metric}` is not exported by the gateway")),
        }
    }
}

/// Every problem of `query` against `exported`: unknown metrics, matchers
/// on labels the metric does not have, grouping on labels none of its
/// metrics has.
fn problems(query: &Query, exported: &Exported) -> Vec<String> {
    let Uses {
        selectors,
        grouping,
    } = uses(&query.expr);
    let mut errors = Vec::new();
    let mut available: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for Selector { metric, labels } in &selectors {
        match exported.labels_of(metric) {
            Ok(have) => {
                for label in labels.iter().chain(query.extra_label.as_ref()) {
                    if !have.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                        errors.push(format!(
                            "`{metric}` has no label `{label}` (it has {have:?})"
                        ));
                    }
                }
                available.extend(have);
            }
            Err(why) => errors.push(why),
        }
    }
    for label in &grouping {
        if !available.contains(label) {
            errors.push(format!(
                "groups on `{label}`, which none of its metrics has"
            ));
        }
    }
    if selectors.is_empty() {
        errors.push("queries no metric at all".into());
    }
    errors
        .into_iter()
        .map(|e| format!("{}: {e}\n    {}", query.source, query.expr))
        .collect()
}

#[test]
fn promql_scanner_finds_metrics_labels_and_grouping() {
    let u = uses(
        r#"sum by (instance, reason) (rate(switchboard_x_total{job="s", reason=~"a|b"}[5m])) > 0.25 * on(instance) group_left(team) (up offset 10m or vector(0))"#,
    );
    let names: Vec<(&str, Vec<&str>)> = u
        .selectors
        .iter()
        .map(|s| {
            (
                s.metric.as_str(),
                s.labels.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("switchboard_x_total", vec!["job", "reason"]),
            ("up", vec![])
        ]
    );
    assert_eq!(
        u.grouping.iter().map(String::as_str).collect::<Vec<_>>(),
        ["instance", "reason", "team"]
    );
    // Functions, aggregations, keywords, numbers, durations and strings
    // (braces inside one included) are not metric names.
    let u = uses(
        r#"count(a == 0) or label_replace(b{c="}{"}, "d", "$1", "e", "(.*)") unless c @ 100 > 1e3"#,
    );
    let metrics: Vec<&str> = u.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["a", "b", "c"]);
    assert_eq!(u.selectors[1].labels, ["c"]);
    let u = uses(r#"{__name__="switchboard_y_bucket", le="+Inf"}"#);
    assert_eq!(u.selectors[0].metric, "switchboard_y_bucket");
    assert_eq!(u.selectors[0].labels, ["le"]);
}

#[test]
fn exported_handles_histogram_and_counter_suffixes() {
    let exported = Exported::parse(
        "# TYPE h histogram\nh_bucket{le=\"0.1\",kind=\"a\"} 1\nh_bucket{le=\"+Inf\",kind=\"a\"} 1\nh_sum{kind=\"a\"} 0.05\nh_count{kind=\"a\"} 1\n\
         # TYPE c_total counter\nc_total{reason=\"x\"} 3\n# TYPE g gauge\ng 1\n",
    );
    let query = |expr: &str| Query {
        source: "test".into(),
        expr: expr.into(),
        extra_label: None,
    };
    let ok = |expr: &str| {
        let p = problems(&query(expr), &exported);
        assert!(p.is_empty(), "{expr}: {p:?}");
    };
    let bad = |expr: &str, why: &str| {
        let p = problems(&query(expr), &exported);
        assert!(p.iter().any(|e| e.contains(why)), "{expr}: {p:?}");
    };
    ok(r#"histogram_quantile(0.99, sum by (le, kind) (rate(h_bucket{job="switchboard"}[5m])))"#);
    ok("sum(rate(h_sum[5m])) / sum(rate(h_count[5m]))");
    ok(r#"sum by (instance, reason) (rate(c_total{reason="x"}[5m])) + on(instance) g"#);
    ok(r#"up{job="switchboard"} == 0"#);
    bad("rate(h[5m])", "is a histogram");
    bad("rate(c[5m])", "exported as `c_total`");
    bad("missing_metric", "not exported");
    bad(r#"c_total{kind="a"}"#, "has no label `kind`");
    bad("sum by (le) (c_total)", "groups on `le`");
}

/// Drives a gateway (on Redis, so its bus metrics are live) through
/// everything that creates a labelled series on first use: connects and
/// refusals, client events and the rate limit, a token expiring, a
/// protocol violation, an Engine.IO error, a refused API call, a forwarded
/// request whose owner is gone. Then every query of the dashboard and the
/// alert rules must name only metrics and labels this gateway exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_only_what_the_gateway_exports() {
    let redis = redis();
    let gw = redis_gateway(
        &redis,
        &[
            ("SWITCHBOARD_LIMITS__CLIENT_EVENTS_PER_SEC", "1"),
            ("SWITCHBOARD_LIMITS__CLIENT_EVENTS_BURST", "1"),
        ],
    )
    .await;
    let node = node().await;

    // Connects (polling, upgraded), client events, one over the rate limit,
    // a client disconnect.
    connect(
        &node,
        "alice",
        &gw,
        ConnectOptions::new().token(token("alice")),
    )
    .await;
    for i in 0..3 {
        node.emit("alice", "chat", vec![json!(i)]).await.unwrap();
    }
    // A refused connect (wrong key).
    let forged = Claims::new()
        .sub("mallory")
        .sign_hs256("another-secret-0123456789abc");
    assert!(
        node.connect("mallory", &gw.url(), ConnectOptions::new().token(forged))
            .await
            .is_err()
    );
    // A token that expires while connected: the gateway disconnects it.
    let short = Claims::new()
        .sub("bob")
        .exp(switchboard_testkit::jwt::now_secs() + 2)
        .sign_hs256(SECRET);
    connect(
        &node,
        "bob",
        &gw,
        ConnectOptions::new().websocket_only().token(short),
    )
    .await;
    // A protocol violation on a raw websocket.
    let mut raw = RawWs::connect(gw.port(), "").await.unwrap();
    raw.socketio_connect(&token("carol")).await.unwrap();
    raw.send_text("4zzz").await.unwrap();
    raw.expect_closed(T).await.unwrap();
    // An Engine.IO error, a refused publish API call, and a polling request
    // for a session of a gateway that is not registered.
    gw.wait_for_log("registered with peers for sid forwarding", T)
        .unwrap();
    let url = gw.url();
    tokio::task::spawn_blocking(move || {
        let get = |path: &str| {
            http_request(
                "GET",
                &format!("{url}{path}"),
                &[],
                None,
                Duration::from_secs(5),
            )
            .expect("GET")
            .status
        };
        assert_eq!(get("/socket.io/?EIO=4&transport=carrier-pigeon"), 400);
        assert_eq!(
            get("/socket.io/?EIO=4&transport=polling&sid=ZZZZabcdefghijkl"),
            400
        );
        let resp = http_request(
            "POST",
            &format!("{url}/api/v1/emit"),
            &[("Authorization", "Bearer not-the-key-0123456789")],
            Some(br#"{"event":"x","users":["alice"]}"#),
            Duration::from_secs(5),
        )
        .expect("POST");
        assert_eq!(resp.status, 401);
    })
    .await
    .unwrap();
    node.disconnect("alice").await.unwrap();

    // Every labelled family appears once its first event is counted.
    let wanted = [
        r#"switchboard_client_events_refused_total{reason="rate_limited"}"#,
        r#"switchboard_server_disconnects_total{reason="token_expired"}"#,
        r#"switchboard_engine_sessions_closed_total{reason="client_closed"}"#,
        r#"switchboard_forwarded_requests_total{outcome="owner_gone",transport="polling"}"#,
    ];
    for series in wanted {
        wait_metric(&gw, series, Duration::from_secs(20), |v| v >= 1.0).await;
    }
    let text = metrics(&gw).await;
    let exported = Exported::parse(&text);

    let queries: Vec<Query> = dashboard_queries()
        .into_iter()
        .chain(alert_queries())
        .collect();
    assert!(queries.len() > 40, "only {} queries found", queries.len());
    let errors: Vec<String> = queries
        .iter()
        .flat_map(|q| problems(q, &exported))
        .collect();
    assert!(
        errors.is_empty(),
        "{} queries use what the gateway does not export:\n{}\n\n/metrics:\n{text}",
        errors.len(),
        errors.join("\n")
    );
    // New metrics belong on the dashboard; say which are not there yet.
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| uses(&q.expr).selectors)
        .map(|s| s.metric)
        .collect();
    let unwatched: Vec<&String> = exported
        .samples
        .keys()
        .filter(|m| !used.contains(*m))
        .collect();
    if !unwatched.is_empty() {
        eprintln!("note: exported but on no dashboard panel or alert: {unwatched:?}");
    }
}

/// `promtool` or a loud skip.
fn promtool(check: &str) -> Option<std::path::PathBuf> {
    let found = find_tool("promtool");
    if found.is_none() {
        skip_tool(
            "promtool",
            check,
            "promtool is not installed (apt-get install prometheus; .ci/run does)",
        );
    }
    found
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let Some(promtool) = promtool("promtool check/test rules") else {
        return;
    };
    let dir = repo().join("deploy/prometheus");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool check rules alerts.yml:\n{out}");
    let rules = alert_queries().len();
    assert!(
        out.contains(&format!("SUCCESS: {rules} rules found")),
        "{out}"
    );
    let (ok, out) = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool test rules alerts.test.yml:\n{out}");
    // Every alert has at least one unit test that expects it to fire.
    let tests = fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    let fired: BTreeSet<&str> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
        .filter_map(|c| c["alertname"].as_str())
        .collect();
    for q in alert_queries() {
        let name = q.source.trim_start_matches("alert ");
        assert!(
            fired.contains(name),
            "alerts.test.yml never expects {name} to fire"
        );
    }
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool check config prometheus.yml:\n{out}");
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(promtool) = promtool("promtool check rules (dashboard queries)") else {
        return;
    };
    let queries = dashboard_queries();
    let rules: Vec<serde_yaml::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query_{i}").into());
            rule.insert("expr".into(), q.expr.clone().into());
            serde_yaml::Value::Mapping(rule)
        })
        .collect();
    let file = serde_yaml::to_string(&json!({
        "groups": [{ "name": "dashboard", "rules": serde_json::to_value(&rules).unwrap() }]
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard.yml");
    fs::write(&path, &file).unwrap();
    let started = Instant::now();
    let (ok, out) = run(Command::new(&promtool).arg("check").arg("rules").arg(&path));
    assert!(
        ok,
        "promtool rejects a dashboard query:\n{out}\nqueries:\n{}",
        queries
            .iter()
            .enumerate()
            .map(|(i, q)| format!("query_{i} = {}: {}", q.source, q.expr))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Each alert links to its section of docs/operations.md, and the section
/// exists, so the on-call engineer lands on what to do.
#[test]
fn every_alert_has_a_runbook_section() {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&deploy_support::deploy_file("prometheus/alerts.yml")).unwrap();
    let docs = fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let mut count = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            count += 1;
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name} lacks a {key}"
                );
            }
            assert!(
                ["critical", "warning"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity must be critical or warning"
            );
            assert_eq!(
                rule["annotations"]["runbook"].as_str(),
                Some(format!("docs/operations.md#{}", name.to_lowercase()).as_str()),
                "{name}: runbook link"
            );
            assert!(
                docs.lines().any(|l| l == format!("#### {name}")),
                "docs/operations.md has no `#### {name}` section"
            );
        }
    }
    assert!(count >= 10, "only {count} alerts");
}
