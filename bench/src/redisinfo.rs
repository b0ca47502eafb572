//! Redis' own counters, read around a benchmark run: `INFO commandstats`
//! (how many commands of each kind a publisher cost) and `INFO cpu`.

use anyhow::Context;

/// (command, calls) pairs of `INFO commandstats`, e.g. `("publish", 1000)`.
pub fn command_calls(conn: &mut redis::Connection) -> anyhow::Result<Vec<(String, u64)>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect())
}

/// Calls of `name` between two [`command_calls`] snapshots.
pub fn calls_between(before: &[(String, u64)], after: &[(String, u64)], name: &str) -> u64 {
    let get = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    get(after).saturating_sub(get(before))
}

/// Redis's own CPU time (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`), in µs.
pub fn redis_cpu_us(conn: &mut redis::Connection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn)?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .with_context(|| format!("INFO cpu has no {name}"))
    };
    Ok((field("used_cpu_user")? + field("used_cpu_sys")?) * 1e6)
}
