//! Results as JSON lines (one [`Record`] per scenario run against one
//! server) and the markdown tables `bench/run.sh` puts in
//! `docs/benchmarks.md` between two marker comments.

use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One scenario at one size against one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// `memory`, `connect`, `fanout`, `ceiling`, `twogw`, `scale`.
    pub scenario: String,
    /// `switchboard`, `node`, or a floor (`floor-tcp`, `floor-ws`, `floor-fanout`).
    pub server: String,
    /// Size label, e.g. `5000 conns`.
    pub size: String,
    /// Metric key -> value; keys are described by [`metric`].
    pub figures: BTreeMap<String, f64>,
    /// Which run produced it (date, commit), shown above its table.
    #[serde(default)]
    pub run: String,
}

impl Record {
    /// A record of this run (named by `SB_RUN`, set by `bench/run.sh`).
    pub fn of_run(scenario: &str, server: &str, size: String, figures: &[(&str, f64)]) -> Record {
        Record {
            scenario: scenario.into(),
            server: server.into(),
            size,
            figures: figures.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            run: std::env::var("SB_RUN").unwrap_or_default(),
        }
    }

    /// Prints this record as one JSON line, and appends it to `results`.
    pub fn report(&self, results: Option<&Path>) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        match results {
            Some(path) => self.append_to(path),
            None => Ok(()),
        }
    }

    /// Appends this record as one JSON line.
    pub fn append_to(&self, path: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(self)?)?;
        Ok(())
    }
}

/// Reads every record of a JSON-lines file.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad record: {l}")))
        .collect()
}

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
    /// Context, no ratio.
    Neither,
}

/// Label, decimals and direction of a metric key, in display order.
pub const METRICS: &[(&str, &str, usize, Better)] = &[
    (
        "rss_per_conn_kib",
        "RSS growth per connection (KiB)",
        2,
        Better::Lower,
    ),
    ("rss_before_mib", "RSS before (MiB)", 1, Better::Neither),
    ("rss_after_mib", "RSS after (MiB)", 1, Better::Neither),
    ("connects_per_s", "connects/s", 0, Better::Higher),
    ("connect_p50_ms", "connect p50 (ms)", 2, Better::Lower),
    ("connect_p99_ms", "connect p99 (ms)", 2, Better::Lower),
    (
        "server_cpu_us_per_connect",
        "server CPU per connect (µs)",
        1,
        Better::Lower,
    ),
    (
        "deliveries_per_s",
        "deliveries/s (achieved)",
        0,
        Better::Higher,
    ),
    (
        "deliveries_per_s_drained",
        "deliveries/s, first publish to last delivery",
        0,
        Better::Higher,
    ),
    (
        "cpu_us_per_delivery",
        "server CPU per delivery (µs)",
        2,
        Better::Lower,
    ),
    (
        "latency_p50_ms",
        "publish→receive p50 (ms)",
        2,
        Better::Lower,
    ),
    (
        "latency_p99_ms",
        "publish→receive p99 (ms)",
        2,
        Better::Lower,
    ),
    (
        "latency_max_ms",
        "publish→receive max (ms)",
        1,
        Better::Lower,
    ),
    ("deliveries", "deliveries received", 0, Better::Neither),
    ("expected", "deliveries expected", 0, Better::Neither),
    ("lost", "lost", 0, Better::Lower),
    ("duplicates", "duplicated", 0, Better::Lower),
    ("disconnects", "clients disconnected", 0, Better::Lower),
    ("max_rss_mib", "server RSS peak (MiB)", 1, Better::Lower),
    ("server_cpu_util", "server CPU (cores)", 2, Better::Neither),
    (
        "loadgen_cpu_util",
        "load generator CPU (cores)",
        2,
        Better::Neither,
    ),
    (
        "load_avg_1m",
        "machine load average (1 min) at the end",
        2,
        Better::Neither,
    ),
    (
        "deliveries_per_send",
        "deliveries per send syscall (perf)",
        2,
        Better::Higher,
    ),
    ("connections", "connections", 0, Better::Neither),
    ("connect_failures", "connects that failed", 0, Better::Lower),
    ("hold_s", "idle hold measured (s)", 0, Better::Neither),
    (
        "total_rss_mib",
        "total server RSS, end of hold (MiB)",
        1,
        Better::Lower,
    ),
    (
        "gw_rss_max_mib",
        "largest single-process RSS (MiB)",
        1,
        Better::Lower,
    ),
    (
        "idle_cpu_pct",
        "idle CPU, all processes (% of one core)",
        2,
        Better::Lower,
    ),
    (
        "gw_idle_cpu_max_pct",
        "idle CPU, busiest process (% of one core)",
        2,
        Better::Lower,
    ),
    ("pongs", "pings answered (whole run)", 0, Better::Neither),
    (
        "redis_receivers",
        "broadcast: Redis subscribers reached",
        0,
        Better::Neither,
    ),
    (
        "received_once",
        "broadcast: connections that got it exactly once",
        0,
        Better::Higher,
    ),
    (
        "bcast_p50_ms",
        "broadcast publish→receive p50 (ms)",
        1,
        Better::Lower,
    ),
    (
        "bcast_p99_ms",
        "broadcast publish→receive p99 (ms)",
        1,
        Better::Lower,
    ),
    (
        "bcast_last_ms",
        "broadcast publish→last receive (ms)",
        1,
        Better::Lower,
    ),
    (
        "bcast_expected",
        "broadcast: connections open when it was published",
        0,
        Better::Neither,
    ),
    (
        "all_gw_cpu_s",
        "broadcast: gateways' CPU until the last receive (s)",
        1,
        Better::Lower,
    ),
    (
        "all_gen_cpu_s",
        "broadcast: generators' CPU until the last receive (s)",
        1,
        Better::Neither,
    ),
    (
        "role_expected",
        "role broadcast (role:r0, 10% of users): members open",
        0,
        Better::Neither,
    ),
    (
        "role_received_once",
        "role broadcast: members that got it exactly once",
        0,
        Better::Higher,
    ),
    (
        "role_lost",
        "role broadcast: members that missed it",
        0,
        Better::Lower,
    ),
    (
        "role_duplicates",
        "role broadcast: duplicates",
        0,
        Better::Lower,
    ),
    (
        "role_wrong",
        "role broadcast: non-members that got it",
        0,
        Better::Lower,
    ),
    (
        "role_p50_ms",
        "role broadcast publish→receive p50 (ms)",
        1,
        Better::Lower,
    ),
    (
        "role_p99_ms",
        "role broadcast publish→receive p99 (ms)",
        1,
        Better::Lower,
    ),
    (
        "role_last_ms",
        "role broadcast publish→last receive (ms)",
        1,
        Better::Lower,
    ),
    ("connect_secs", "connect phase (s)", 1, Better::Lower),
    (
        "total_pss_mib",
        "total server PSS, end of hold (MiB; shared binary pages counted once)",
        1,
        Better::Lower,
    ),
    (
        "total_anon_mib",
        "total server anonymous RSS, end of hold (MiB)",
        1,
        Better::Lower,
    ),
    (
        "total_pss_per_conn_kib",
        "total server PSS per connection, baselines included (KiB)",
        2,
        Better::Lower,
    ),
    (
        "total_rss_per_conn_kib",
        "total server RSS per connection, baselines included (KiB)",
        2,
        Better::Lower,
    ),
    (
        "idle_cpu_pct_per_100k",
        "idle CPU per 100k connections (% of one core)",
        2,
        Better::Lower,
    ),
    (
        "gen_idle_cpu_pct",
        "idle CPU of the generators (% of one core)",
        2,
        Better::Neither,
    ),
    (
        "slab_growth_mib",
        "kernel Slab growth (MiB)",
        0,
        Better::Neither,
    ),
    (
        "sunreclaim_growth_mib",
        "of which unreclaimable (MiB)",
        0,
        Better::Neither,
    ),
    (
        "slab_per_conn_kib",
        "kernel Slab per connection, both ends (KiB)",
        2,
        Better::Neither,
    ),
    (
        "tcp_inuse",
        "TCP sockets in use (sockstat)",
        0,
        Better::Neither,
    ),
    (
        "tcp_buffers_mib",
        "TCP buffer memory, end of hold (sockstat, MiB)",
        1,
        Better::Neither,
    ),
    (
        "gen_rss_mib",
        "generators' RSS, end of hold (MiB)",
        0,
        Better::Neither,
    ),
    (
        "mem_available_min_mib",
        "lowest MemAvailable during the run (MiB)",
        0,
        Better::Neither,
    ),
    (
        "listen_overflows",
        "listen queue overflows (TcpExt, whole machine)",
        0,
        Better::Lower,
    ),
    (
        "restarted",
        "rolling restart: gateways restarted",
        0,
        Better::Neither,
    ),
    (
        "moved",
        "rolling restart: clients moved",
        0,
        Better::Neither,
    ),
    (
        "moved_back",
        "rolling restart: of which reconnected",
        0,
        Better::Higher,
    ),
    (
        "storm_max_s",
        "rolling restart: longest reconnect storm, SIGTERM→last reconnect (s)",
        1,
        Better::Lower,
    ),
    (
        "storm_incomplete",
        "rolling restart: storms not over within the timeout",
        0,
        Better::Lower,
    ),
    (
        "reconnect_failures",
        "rolling restart: reconnects that never succeeded",
        0,
        Better::Lower,
    ),
    (
        "bystander_disconnects",
        "rolling restart: clients of other gateways disconnected",
        0,
        Better::Lower,
    ),
    (
        "probes",
        "rolling restart: probes published (to 1% of users)",
        0,
        Better::Neither,
    ),
    (
        "probe_steady_conns",
        "probes: sampled clients of the other gateways, open throughout",
        0,
        Better::Neither,
    ),
    (
        "probe_steady_expected",
        "probe deliveries those should get",
        0,
        Better::Neither,
    ),
    (
        "probe_steady_on_time",
        "of which arrived before `finish`",
        0,
        Better::Higher,
    ),
    (
        "probe_steady_late",
        "of which arrived after `finish` (late, not lost)",
        0,
        Better::Lower,
    ),
    (
        "probe_steady_lost",
        "of which never arrived (lost)",
        0,
        Better::Lower,
    ),
    (
        "probe_steady_p50_ms",
        "probe publish → arrival p50, those clients (ms)",
        0,
        Better::Lower,
    ),
    (
        "probe_steady_p99_ms",
        "probe publish → arrival p99 (ms)",
        0,
        Better::Lower,
    ),
    (
        "probe_steady_max_ms",
        "probe publish → arrival max (ms)",
        0,
        Better::Lower,
    ),
    (
        "probe_steady_slow",
        "probe deliveries later than 3 s",
        0,
        Better::Lower,
    ),
    (
        "probe_closed_conns",
        "probes: sampled clients of the other gateways closed in the restarts",
        0,
        Better::Lower,
    ),
    (
        "probe_closed_lost",
        "probes those missed while closed",
        0,
        Better::Lower,
    ),
    (
        "probe_moved_conns",
        "probes: sampled clients that were moved",
        0,
        Better::Neither,
    ),
    (
        "probe_moved_lost",
        "probes those missed while reconnecting",
        0,
        Better::Neither,
    ),
    ("probe_duplicates", "probes duplicated", 0, Better::Lower),
    ("errors", "generator protocol errors", 0, Better::Lower),
    ("publishes_per_s", "publishes/s", 0, Better::Higher),
    ("requests_per_s", "requests/s", 0, Better::Higher),
    ("request_p50_us", "one request p50 (µs)", 0, Better::Lower),
    ("request_p99_us", "one request p99 (µs)", 0, Better::Lower),
    (
        "server_cpu_us_per_request",
        "gateway CPU per request (µs)",
        1,
        Better::Lower,
    ),
    (
        "publishes_per_request",
        "Redis PUBLISH per request",
        3,
        Better::Neither,
    ),
    (
        "pings_per_request",
        "Redis PING per request",
        3,
        Better::Lower,
    ),
    ("publish_p50_us", "one publish p50 (µs)", 0, Better::Lower),
    ("publish_p99_us", "one publish p99 (µs)", 0, Better::Lower),
    (
        "cpu_us_per_publish",
        "publisher CPU per publish (µs)",
        2,
        Better::Lower,
    ),
    (
        "publisher_cpu_util",
        "publisher CPU (cores)",
        2,
        Better::Neither,
    ),
    (
        "redis_cmds_per_publish",
        "Redis commands per publish",
        3,
        Better::Lower,
    ),
    ("pings_per_publish", "of which PING", 3, Better::Lower),
    (
        "redis_cpu_us_per_publish",
        "Redis CPU per publish (µs)",
        2,
        Better::Lower,
    ),
    (
        "allocs_per_publish",
        "heap allocations per publish",
        1,
        Better::Lower,
    ),
];

/// Columns of the per-process table of the `scale` scenario (records that
/// carry a `gateway` figure).
const GATEWAY_COLUMNS: &[(&str, &str, usize)] = &[
    ("connections", "conns", 0),
    ("rss_before_mib", "RSS before (MiB)", 1),
    ("rss_after_mib", "RSS end of hold (MiB)", 1),
    ("idle_cpu_pct", "idle CPU (% core)", 2),
    ("received_once", "got it once", 0),
    ("lost", "missed", 0),
    ("duplicates", "dup.", 0),
    ("disconnects", "disc.", 0),
    ("bcast_p50_ms", "p50 (ms)", 1),
    ("bcast_p99_ms", "p99 (ms)", 1),
    ("bcast_last_ms", "last (ms)", 1),
    ("storm_s", "restart storm (s)", 1),
];

/// One row per process of a multi-process scenario, Switchboard first.
fn render_gateway_table(rows: &[&Record]) -> String {
    let mut rows = rows.to_vec();
    let rank = |s: &str| match s {
        "switchboard" => 0,
        "node" => 1,
        _ => 2,
    };
    let gw = |r: &Record| r.figures.get("gateway").copied().unwrap_or(0.0);
    rows.sort_by(|a, b| {
        rank(&a.server)
            .cmp(&rank(&b.server))
            .then(a.server.cmp(&b.server))
            .then(gw(a).total_cmp(&gw(b)))
    });
    let mut out = String::from(
        "Per process (broadcast columns: publish→receive per connection):\n\n| server | # |",
    );
    for (_, label, _) in GATEWAY_COLUMNS {
        out.push_str(&format!(" {label} |"));
    }
    out.push_str("\n|---|---:|");
    for _ in GATEWAY_COLUMNS {
        out.push_str("---:|");
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!("| {} | {} |", r.server, gw(r)));
        for (key, _, decimals) in GATEWAY_COLUMNS {
            out.push_str(&format!(
                " {} |",
                fmt(r.figures.get(*key).copied(), *decimals)
            ));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The metadata of `key`, if known.
pub fn metric(key: &str) -> Option<(&'static str, usize, Better)> {
    METRICS
        .iter()
        .find(|(k, ..)| *k == key)
        .map(|&(_, label, decimals, better)| (label, decimals, better))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".into(),
    }
}

/// Switchboard's advantage over Node for one metric: `>1` means Switchboard
/// is better by that factor.
pub fn advantage(sb: f64, node: f64, better: Better) -> Option<f64> {
    match better {
        Better::Lower if sb > 0.0 && node >= 0.0 => Some(node / sb),
        Better::Higher if node > 0.0 => Some(sb / node),
        _ => None,
    }
}

/// Markdown tables: one per (scenario, size), rows = metrics, columns =
/// Switchboard, Node, advantage, floors. Repeated runs show their median.
pub fn render_tables(records: &[Record]) -> String {
    // (scenario order, size) -> server -> key -> values
    type Cells = BTreeMap<String, BTreeMap<String, Vec<f64>>>;
    let mut runs_of: BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    let order = [
        "memory",
        "connect",
        "fanout",
        "ceiling",
        "burst",
        "steady",
        "twogw",
        "scale",
        "publish",
        "http-publish",
    ];
    let mut groups: Vec<((String, String), Cells)> = Vec::new();
    let (per_process, records): (Vec<&Record>, Vec<&Record>) = records
        .iter()
        .partition(|r| r.figures.contains_key("gateway"));
    for r in records {
        let key = (r.scenario.clone(), r.size.clone());
        if !r.run.is_empty() {
            runs_of
                .entry(key.clone())
                .or_default()
                .insert(r.run.clone());
        }
        let idx = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                groups.push((key, BTreeMap::new()));
                groups.len() - 1
            }
        };
        let cells = groups[idx].1.entry(r.server.clone()).or_default();
        for (k, v) in &r.figures {
            cells.entry(k.clone()).or_default().push(*v);
        }
    }
    groups.sort_by_key(|((s, _), _)| order.iter().position(|o| o == s).unwrap_or(order.len()));

    let mut out = String::new();
    for ((scenario, size), cells) in &groups {
        // Extra columns: other servers (socketioxide), the previous gateway
        // build (`baseline`) of a before/after scenario, then the floors.
        let mut floors: Vec<&String> = cells
            .keys()
            .filter(|s| *s != "switchboard" && *s != "node")
            .collect();
        floors.sort_by_key(|s| (s.starts_with("floor"), s.as_str()));
        out.push_str(&format!("#### `{scenario}` — {size}\n\n"));
        if let Some(runs) = runs_of.get(&(scenario.clone(), size.clone())) {
            let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
            out.push_str(&format!("Measured: {}\n\n", runs.join("; ")));
        }
        out.push_str("| metric | Switchboard | Node | Switchboard advantage |");
        for f in &floors {
            out.push_str(&format!(" {f} |"));
        }
        out.push_str("\n|---|---:|---:|---:|");
        for _ in &floors {
            out.push_str("---:|");
        }
        out.push('\n');
        let runs = |server: &str| {
            cells
                .get(server)
                .and_then(|m| m.values().map(Vec::len).max())
                .unwrap_or(0)
        };
        for &(key, label, decimals, better) in METRICS {
            let get = |server: &str| {
                cells
                    .get(server)
                    .and_then(|m| m.get(key))
                    .and_then(|v| median(v.clone()))
            };
            let (sb, node) = (get("switchboard"), get("node"));
            let floor_vals: Vec<Option<f64>> = floors.iter().map(|f| get(f)).collect();
            if sb.is_none() && node.is_none() && floor_vals.iter().all(Option::is_none) {
                continue;
            }
            let adv = match (sb, node) {
                (Some(s), Some(n)) => advantage(s, n, better)
                    .map(|a| format!("×{a:.1}"))
                    .unwrap_or_else(|| "".into()),
                _ => "".into(),
            };
            out.push_str(&format!(
                "| {label} | {} | {} | {adv} |",
                fmt(sb, decimals),
                fmt(node, decimals)
            ));
            for v in floor_vals {
                out.push_str(&format!(" {} |", fmt(v, decimals)));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "\nRuns: Switchboard {}, Node {} (median shown).\n\n",
            runs("switchboard"),
            runs("node")
        ));
        let rows: Vec<&Record> = per_process
            .iter()
            .copied()
            .filter(|r| r.scenario == *scenario && r.size == *size)
            .collect();
        if !rows.is_empty() {
            out.push_str(&render_gateway_table(&rows));
        }
    }
    out
}

pub const BEGIN: &str = "<!-- results:begin (written by bench/run.sh) -->";
pub const END: &str = "<!-- results:end -->";

/// Replaces what lies between [`BEGIN`] and [`END`] in `doc` with `body`
/// (appending both markers when absent).
pub fn splice(doc: &str, body: &str) -> String {
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{BEGIN}\n{body}{}", &doc[..b], &doc[e..])
        }
        _ => format!("{doc}\n{BEGIN}\n{body}{END}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(server: &str, k: &str, v: f64) -> Record {
        Record {
            scenario: "memory".into(),
            server: server.into(),
            size: "5000 conns".into(),
            figures: [(k.to_string(), v)].into_iter().collect(),
            run: "2024-01-01 abc1234".into(),
        }
    }

    #[test]
    fn advantage_direction() {
        assert_eq!(advantage(5.0, 10.0, Better::Lower), Some(2.0));
        assert_eq!(advantage(100.0, 50.0, Better::Higher), Some(2.0));
        assert_eq!(advantage(1.0, 1.0, Better::Neither), None);
        assert_eq!(advantage(0.0, 1.0, Better::Lower), None);
    }

    #[test]
    fn table_has_both_servers_ratio_and_floor() {
        let records = vec![
            rec("switchboard", "rss_per_conn_kib", 4.0),
            rec("switchboard", "rss_per_conn_kib", 6.0),
            rec("node", "rss_per_conn_kib", 12.0),
            rec("floor-tcp", "rss_per_conn_kib", 1.5),
        ];
        let t = render_tables(&records);
        assert!(t.contains("#### `memory` — 5000 conns"), "{t}");
        assert!(
            t.contains("| RSS growth per connection (KiB) | 5.00 | 12.00 | ×2.4 | 1.50 |"),
            "{t}"
        );
        assert!(t.contains("Runs: Switchboard 2, Node 1"), "{t}");
        assert!(t.contains("Measured: 2024-01-01 abc1234"), "{t}");
    }

    #[test]
    fn per_process_rows_get_their_own_table() {
        let mut total = rec("switchboard", "total_rss_mib", 900.0);
        total.scenario = "scale".into();
        let gw = |server: &str, g: f64, rss: f64| {
            let mut r = rec(server, "rss_after_mib", rss);
            r.scenario = "scale".into();
            r.figures.insert("gateway".into(), g);
            r
        };
        let records = vec![
            total,
            gw("node", 0.0, 300.0),
            gw("switchboard", 1.0, 82.0),
            gw("switchboard", 0.0, 81.0),
        ];
        let t = render_tables(&records);
        assert!(
            t.contains("| total server RSS, end of hold (MiB) | 900.0 | – |"),
            "{t}"
        );
        // Per-process figures stay out of the main table.
        assert!(!t.contains("| RSS after (MiB) |"), "{t}");
        let sb0 = t.find("| switchboard | 0 | – | – | 81.0 |").expect(&t);
        let sb1 = t.find("| switchboard | 1 | – | – | 82.0 |").expect(&t);
        let node0 = t.find("| node | 0 | – | – | 300.0 |").expect(&t);
        assert!(sb0 < sb1 && sb1 < node0, "{t}");
    }

    #[test]
    fn splice_replaces_between_markers() {
        let doc = format!("# T\n{BEGIN}\nold\n{END}\ntail\n");
        let out = splice(&doc, "new\n");
        assert_eq!(out, format!("# T\n{BEGIN}\nnew\n{END}\ntail\n"));
        let out = splice("# T\n", "x\n");
        assert!(out.ends_with(&format!("{BEGIN}\nx\n{END}\n")));
    }

    #[test]
    fn records_round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("sb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let _ = std::fs::remove_file(&path);
        let r = rec("node", "lost", 0.0);
        r.append_to(&path).unwrap();
        r.append_to(&path).unwrap();
        assert_eq!(read_records(&path).unwrap(), vec![r.clone(), r]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
