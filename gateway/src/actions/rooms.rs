//! Client rooms: joins and leaves by `[[client.rooms]]` rules, and relays
//! from a member to the room's other members.
//!
//! Every membership change a client makes goes through
//! [`change_membership`], into the same [`Hub`](crate::hub::Hub) membership
//! that connect-time rooms, the emitter's `socketsJoin` / `socketsLeave` and
//! the HTTP API use: a room a client joined is left by an API
//! `socketsLeave` like any other.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_wire::{
    BroadcastFlags, BroadcastMessage, BroadcastOptions, BusPacket, encode_broadcast,
    json_to_msgpack,
    room_template::{self, Vars, claim, claim_text},
};

use super::{
    Actions, Kind, Refusal, Refused,
    config::{Allow, Rule},
    forward, room_arg,
};
use crate::socketio::{Socket, SocketIo};

/// A membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Join the room.
    Join,
    /// Leave the room.
    Leave,
}

/// What a rule's `allow` says for one socket and argument.
enum Decision {
    Allow,
    Deny(&'static str),
    AskHook,
}

/// The room a rule names for this socket and event, and the argument it
/// read (when the room or `with_allow`'s rule reads `{arg}`).
fn room_for(
    rule: &Rule,
    socket: &Socket,
    args: &[Value],
    with_allow: bool,
) -> Result<(String, Option<String>), Refused> {
    let needs_arg = rule.room.uses(room_template::ARG) || (with_allow && rule.allow.reads_arg());
    let arg = if needs_arg {
        Some(room_arg(args)?)
    } else {
        None
    };
    let vars = Vars {
        claims: &socket.claims,
        roles: &[],
        arg: arg.as_deref(),
    };
    let room = rule.room.expand_one(&vars).ok_or_else(|| {
        Refused::new(
            Refusal::Forbidden,
            format!(
                "the room template {} reads a claim this user does not have",
                rule.room
            ),
        )
    })?;
    Ok((room, arg))
}

fn decide(actions: &Actions, rule: &Rule, socket: &Socket, arg: Option<&str>) -> Decision {
    let claim_text_of = |name: &str| claim(&socket.claims, name);
    match &rule.allow {
        Allow::Anyone => Decision::Allow,
        Allow::Authenticated if socket.user.is_some() => Decision::Allow,
        Allow::Authenticated => Decision::Deny("anonymous socket"),
        Allow::Roles(wanted) => {
            let roles = crate::auth::roles_in(&socket.claims, &actions.role_claims);
            if roles.iter().any(|r| wanted.contains(r)) {
                Decision::Allow
            } else {
                Decision::Deny("no allowed role")
            }
        }
        Allow::ArgEquals(name) => match (claim_text_of(name).and_then(claim_text), arg) {
            (Some(value), Some(arg)) if value == arg => Decision::Allow,
            _ => Decision::Deny("argument differs from the claim"),
        },
        Allow::ArgIn(name) => {
            let found = match (claim_text_of(name), arg) {
                (Some(Value::Array(items)), Some(arg)) => {
                    items.iter().filter_map(claim_text).any(|v| v == arg)
                }
                (Some(value), Some(arg)) => claim_text(value).is_some_and(|v| v == arg),
                _ => false,
            };
            if found {
                Decision::Allow
            } else {
                Decision::Deny("argument not in the claim")
            }
        }
        Allow::Hook => Decision::AskHook,
    }
}

/// A `join_event`: checks the rule, then joins (or asks the join hook
/// first) and answers the ack.
pub(super) fn join(
    actions: &Actions,
    io: &SocketIo,
    socket: &Arc<Socket>,
    rule: &Rule,
    event: &str,
    args: &[Value],
    ack: Option<i64>,
) {
    let (room, arg) = match room_for(rule, socket, args, true) {
        Ok(found) => found,
        Err(refused) => return actions.finish(socket, Kind::Join, event, ack, Err(refused)),
    };
    let result = match decide(actions, rule, socket, arg.as_deref()) {
        Decision::Allow => change_membership(io, socket, rule, &room, Change::Join),
        Decision::Deny(why) => Err(Refused::new(Refusal::Forbidden, why)),
        Decision::AskHook => {
            return forward::join_hook(actions, io, socket, rule, event, room, arg, ack);
        }
    };
    actions.finish(socket, Kind::Join, event, ack, result);
}

/// A `leave_event`: leaves the room the rule names, if the socket is in it.
pub(super) fn leave(
    _actions: &Actions,
    io: &SocketIo,
    socket: &Socket,
    rule: &Rule,
    args: &[Value],
) -> Result<Value, Refused> {
    let (room, _) = room_for(rule, socket, args, false)?;
    change_membership(io, socket, rule, &room, Change::Leave)
}

/// Joins or leaves one client room: the one path of client-made membership
/// (join and leave events, joins a hook allowed). `rule` is the
/// `[[client.rooms]]` rule that named the room (its per-room options apply
/// here). Returns the ack
/// arguments, `[{"ok":true,"room":...}]`.
///
/// A join of a room the socket is already in succeeds without change; a
/// join beyond `client.max_rooms_per_socket` is `too_many_rooms`; a leave of
/// a room the socket is not in is `not_a_member`. A refusal changes nothing.
pub(crate) fn change_membership(
    io: &SocketIo,
    socket: &Socket,
    rule: &Rule,
    room: &str,
    change: Change,
) -> Result<Value, Refused> {
    tracing::debug!(socket = %socket.id, room, rule = rule.index, ?change, "client room change");
    let hub = &io.hub;
    match change {
        Change::Join => {
            if !hub.is_in(socket.id, room) {
                let max = io
                    .actions
                    .as_ref()
                    .map_or(usize::MAX, |a| a.max_rooms_per_socket);
                if hub.rooms_len(socket.id) >= max {
                    return Err(Refused::new(
                        Refusal::TooManyRooms,
                        format!("already in {max} rooms"),
                    ));
                }
                let created = hub.join(socket.id, &[room]);
                io.metrics.rooms.add(created as i64);
                if let Some(admin) = &io.admin_events {
                    admin.rooms_joined(socket, &[room]);
                }
            }
            if rule.config.presence {
                io.presence.joined(socket, room);
            }
        }
        Change::Leave => {
            if !hub.is_in(socket.id, room) {
                return Err(Refused::new(Refusal::NotAMember, room.to_string()));
            }
            let emptied = hub.leave(socket.id, &[room]);
            io.metrics.rooms.sub(emptied as i64);
            io.presence.left(socket, room);
            if let Some(admin) = &io.admin_events {
                admin.rooms_left(socket, &[room]);
            }
        }
    }
    Ok(json!([{ "ok": true, "room": room }]))
}

/// A `relay_event`: a member's event sent to the room's members on every
/// gateway (and Node server) through the bus.
///
/// Receivers get `relay_event` with the sender's arguments (after the room
/// argument, when the room reads `{arg}`) followed by one object
/// `{"room": ..., "from": {"user": <user id from the token>, "socket": <id>}}`.
/// The sender is left out unless `relay_to_sender`. The ack is
/// `{"ok":true,"room":...}` once the bus took it.
#[allow(clippy::too_many_arguments)]
pub(super) fn relay(
    actions: &Actions,
    io: &SocketIo,
    socket: &Arc<Socket>,
    rule: &Rule,
    event: &str,
    args: Vec<Value>,
    attachments: Vec<Bytes>,
    ack: Option<i64>,
) {
    let room = match room_for(rule, socket, &args, false) {
        Ok((room, _)) => room,
        Err(refused) => return actions.finish(socket, Kind::Relay, event, ack, Err(refused)),
    };
    if !io.hub.is_in(socket.id, &room) {
        let refused = Refused::new(Refusal::NotAMember, room);
        return actions.finish(socket, Kind::Relay, event, ack, Err(refused));
    }
    let skip = if rule.room.uses(room_template::ARG) {
        2
    } else {
        1
    };
    let mut data: Vec<Value> = Vec::with_capacity(args.len() + 1);
    data.push(Value::String(event.to_string()));
    data.extend(args.into_iter().skip(skip));
    data.push(json!({
        "room": room,
        "from": { "user": socket.user.as_deref(), "socket": socket.id.as_str() },
    }));
    let mut packet_data = json_to_msgpack(&Value::Array(data));
    if !attachments.is_empty() {
        put_attachments(&mut packet_data, &attachments);
    }
    let msg = BroadcastMessage {
        uid: io.uid.clone(),
        packet: BusPacket {
            packet_type: 2,
            data: packet_data,
            nsp: socket.nsp.to_string(),
            id: None,
        },
        opts: BroadcastOptions {
            rooms: vec![room.clone()],
            except: if rule.config.relay_to_sender {
                Vec::new()
            } else {
                vec![socket.id.to_string()]
            },
            flags: BroadcastFlags::default(),
        },
    };
    // Delivered here at once; other gateways get it from the bus, and this
    // one skips it there (its own uid), as the Node adapter does.
    io.deliver(&msg);
    let channel = io.channels.room(&socket.nsp, &room);
    let payload = encode_broadcast(&msg);
    let Some(io) = io.shared() else {
        return;
    };
    let socket = socket.clone();
    let event = event.to_string();
    tokio::spawn(async move {
        let result = match io.bus.publish(&channel, payload).await {
            Ok(_) => Ok(json!([{ "ok": true, "room": room }])),
            Err(err) => {
                io.metrics
                    .bus_publish_errors
                    .with_label_values(&["client_relay"])
                    .inc();
                Err(Refused::new(Refusal::Unavailable, err.to_string()))
            }
        };
        if let Some(actions) = &io.actions {
            actions.finish(&socket, Kind::Relay, &event, ack, result);
        }
    });
}

/// Replaces Socket.IO's `{"_placeholder":true,"num":N}` with the binary
/// attachment `N`, so the relayed packet carries the same bytes.
fn put_attachments(value: &mut rmpv::Value, attachments: &[Bytes]) {
    match value {
        rmpv::Value::Array(items) => {
            for item in items {
                put_attachments(item, attachments);
            }
        }
        rmpv::Value::Map(entries) => {
            let placeholder = entries.len() == 2
                && entries
                    .iter()
                    .any(|(k, v)| k.as_str() == Some("_placeholder") && v.as_bool() == Some(true));
            let num = entries
                .iter()
                .find(|(k, _)| k.as_str() == Some("num"))
                .and_then(|(_, v)| v.as_u64())
                .and_then(|n| usize::try_from(n).ok());
            if placeholder && let Some(bytes) = num.and_then(|n| attachments.get(n)) {
                *value = rmpv::Value::Binary(bytes.to_vec());
                return;
            }
            for (_, v) in entries {
                put_attachments(v, attachments);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_binaries() {
        let mut v = json_to_msgpack(&json!([
            "ev",
            {"_placeholder": true, "num": 0},
            {"nested": {"_placeholder": true, "num": 1}, "n": 1},
            {"_placeholder": true, "num": 5}
        ]));
        put_attachments(
            &mut v,
            &[Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
        );
        let items = v.as_array().unwrap();
        assert_eq!(items[1], rmpv::Value::Binary(b"a".to_vec()));
        assert_eq!(
            items[2].as_map().unwrap()[0].1,
            rmpv::Value::Binary(b"bc".to_vec())
        );
        // An out-of-range placeholder stays as it is.
        assert!(items[3].is_map());
    }
}
