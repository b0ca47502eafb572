//! The fleet commands of the `switchboard` CLI (`status`, `sockets`,
//! `rooms`): what [`switchboard_broadcaster::fleet`] gathers, printed as a
//! table for people or as JSON (`--json`) for scripts.

use serde_json::{Value, json};
use switchboard_broadcaster::fleet::{FleetRooms, FleetSockets, FleetStatus, Gathered, to_json};

/// A table with left-aligned columns two spaces apart.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(self.header.clone());
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// `1d02h`, `3h04m`, `5m06s`, `7s`.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The line that says who answered, for the human formats.
fn answered_line(g: &Gathered, timeout_ms: u64) -> String {
    let answered = g.responses.len();
    let mut line = format!(
        "{answered} of {} server(s) answered on the request channel",
        g.expected
    );
    if g.missing() > 0 {
        line.push_str(&format!(
            "; {} did not answer within {timeout_ms} ms",
            g.missing()
        ));
    }
    line
}

fn answered_json(g: &Gathered) -> Value {
    json!({ "servers": g.servers, "expected": g.expected, "answered": g.responses.len(), "missing": g.missing() })
}

/// Prints `switchboard status`.
pub fn print_status(s: &FleetStatus, as_json: bool, timeout_ms: u64) {
    if as_json {
        let out = json!({
            "gateways": s.gateways,
            "nodeServers": s.node_servers,
            "unanswered": s.unanswered.iter().map(|(tag, address)| json!({"tag": tag, "address": address})).collect::<Vec<_>>(),
            "answers": answered_json(&s.gathered),
        });
        println!("{out}");
        return;
    }
    let mut t = Table::new(vec![
        "SERVER",
        "KIND",
        "VERSION",
        "HOST",
        "ADDRESS",
        "PID",
        "UPTIME",
        "POLLING",
        "WEBSOCKET",
        "SOCKETS",
        "ROOMS",
        "BUS",
    ]);
    let mut gateways = s.gateways.clone();
    gateways.sort_by(|a, b| a["uid"].as_str().cmp(&b["uid"].as_str()));
    for g in &gateways {
        let text = |k: &str| match &g[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            v => v.to_string(),
        };
        t.rows.push(vec![
            text("uid"),
            text("kind"),
            text("version"),
            text("hostname"),
            text("address"),
            text("pid"),
            g["uptimeSecs"].as_u64().map_or("-".into(), human_duration),
            g["connections"]["polling"].to_string(),
            g["connections"]["websocket"].to_string(),
            text("sockets"),
            text("rooms"),
            if g["busUp"] == json!(true) {
                "up"
            } else {
                "down"
            }
            .into(),
        ]);
    }
    for uid in &s.node_servers {
        let mut row = vec![uid.clone(), "node".into()];
        row.extend(std::iter::repeat_n("-".to_string(), 10));
        t.rows.push(row);
    }
    for (tag, address) in &s.unanswered {
        let mut row = vec![
            format!("tag:{tag}"),
            "switchboard".into(),
            "-".into(),
            "-".into(),
            address.clone(),
        ];
        row.extend(std::iter::repeat_n("-".to_string(), 6));
        row.push("no answer".into());
        t.rows.push(row);
    }
    println!("{}", t.render());
    let g = &s.gathered;
    let mut summary = format!(
        "{} server(s) on the request channel: {} gateway(s) answered, {} Node server(s) (they do not report status)",
        g.servers,
        g.responses.len(),
        s.node_servers.len()
    );
    if g.missing() > 0 {
        summary.push_str(&format!(
            "; {} server(s) did not answer within {timeout_ms} ms",
            g.missing()
        ));
        if !s.unanswered.is_empty() {
            let named: Vec<&str> = s.unanswered.iter().map(|(_, a)| a.as_str()).collect();
            summary.push_str(&format!(": gateway(s) at {}", named.join(", ")));
        }
    }
    println!("{summary}");
}

/// Prints `switchboard sockets`.
pub fn print_sockets(s: &FleetSockets, as_json: bool, timeout_ms: u64) {
    let mut sockets = s.sockets.clone();
    sockets.sort_by(|a, b| a.id.cmp(&b.id));
    let rooms_of = |id: &str, rooms: &[String]| -> Vec<String> {
        rooms.iter().filter(|r| *r != id).cloned().collect()
    };
    if as_json {
        let list: Vec<Value> = sockets
            .iter()
            .map(|so| {
                json!({
                    "id": so.id,
                    "rooms": rooms_of(&so.id, &so.rooms),
                    "data": to_json(&so.data),
                    "address": to_json(&so.handshake)["address"],
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "sockets": list, "answers": answered_json(&s.gathered) })
        );
        return;
    }
    let mut t = Table::new(vec!["SOCKET", "ADDRESS", "ROOMS", "DATA"]);
    for so in &sockets {
        let address = to_json(&so.handshake)["address"]
            .as_str()
            .unwrap_or("-")
            .to_string();
        let mut data = to_json(&so.data).to_string();
        if data.chars().count() > 60 {
            data = data.chars().take(59).collect::<String>() + "…";
        }
        t.rows.push(vec![
            so.id.clone(),
            address,
            rooms_of(&so.id, &so.rooms).join(","),
            data,
        ]);
    }
    println!("{}", t.render());
    println!(
        "{} socket(s); {}",
        sockets.len(),
        answered_line(&s.gathered, timeout_ms)
    );
}

/// Prints `switchboard rooms`.
pub fn print_rooms(r: &FleetRooms, as_json: bool, timeout_ms: u64) {
    if as_json {
        println!(
            "{}",
            json!({ "rooms": r.rooms, "answers": answered_json(&r.gathered) })
        );
        return;
    }
    let mut t = Table::new(vec!["ROOM"]);
    t.rows = r.rooms.iter().map(|room| vec![room.clone()]).collect();
    println!("{}", t.render());
    println!(
        "{} room(s), socket ids included; {}",
        r.rooms.len(),
        answered_line(&r.gathered, timeout_ms)
    );
}

/// `switchboard presence ROOM`: one line per member.
pub fn print_presence(
    room: &str,
    members: &[switchboard_broadcaster::presence::Member],
    as_json: bool,
) {
    if as_json {
        println!("{}", json!({ "room": room, "members": members }));
        return;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut t = Table::new(vec!["USER", "SOCKETS", "SINCE", "CLAIMS"]);
    t.rows = members
        .iter()
        .map(|m| {
            vec![
                m.user.clone(),
                m.sockets.to_string(),
                format!(
                    "{} ago",
                    human_duration(now_ms.saturating_sub(m.joined_at) / 1000)
                ),
                Value::Object(m.claims.clone()).to_string(),
            ]
        })
        .collect();
    println!("{}", t.render());
    println!("{} member(s) in {room}", members.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(vec!["A", "BB"]);
        t.rows.push(vec!["long".into(), "x".into()]);
        assert_eq!(t.render(), "A     BB\nlong  x");
    }

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(human_duration(7), "7s");
        assert_eq!(human_duration(366), "6m06s");
        assert_eq!(human_duration(3 * 3600 + 240), "3h04m");
        assert_eq!(human_duration(86_400 + 7200), "1d02h");
    }
}
