//! What the UI can do to app sockets: `join(nsp, room, filter?)`,
//! `leave(nsp, room, filter?)`, `_disconnect(nsp, close, filter?)` and
//! `emit(nsp, filter?, event, ...args)`. `filter` is a room, and the UI
//! passes a socket id to target one socket (every socket is in the room of
//! its own id).
//!
//! Each action is published as the adapter's request (REMOTE_JOIN,
//! REMOTE_LEAVE, REMOTE_DISCONNECT) or broadcast, exactly as Node's
//! `io.of(nsp).in(filter).socketsJoin(room)` and friends do, so it acts on
//! sockets of every gateway and every Node server on the bus. This gateway
//! receives its own requests back from the bus and applies them like any
//! other; its own broadcast is delivered locally (servers skip their own uid).

use serde_json::Value;
use switchboard_wire::{
    BroadcastMessage, BroadcastOptions, BusPacket, DisconnectRequest, Request, RequestOpts,
    RoomsRequest, encode_broadcast, encode_request, json_to_msgpack,
};

use crate::socketio::SocketIo;

/// Performs one UI event; `Err` says why it was refused.
pub fn perform(io: &SocketIo, args: &[Value]) -> Result<(), &'static str> {
    let name = args
        .first()
        .and_then(Value::as_str)
        .ok_or("no event name")?;
    let nsp = args.get(1).and_then(Value::as_str).ok_or("no namespace")?;
    if !io.namespaces.iter().any(|n| &**n == nsp) {
        return Err("not a namespace of this gateway");
    }
    let selection = |at: usize| -> Result<RequestOpts, &'static str> {
        match args.get(at) {
            None | Some(Value::Null) => Ok(RequestOpts::default()),
            Some(Value::String(filter)) if !filter.is_empty() => Ok(RequestOpts {
                rooms: vec![filter.clone()],
                except: Vec::new(),
            }),
            Some(_) => Err("the filter must be a room or a socket id"),
        }
    };
    let uid = Some(io.uid.clone());
    let request = match name {
        "join" | "leave" => {
            let room = args
                .get(2)
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
                .ok_or("no room")?;
            let r = RoomsRequest {
                uid,
                opts: Some(selection(3)?),
                rooms: vec![room.to_string()],
                ..RoomsRequest::default()
            };
            if name == "join" {
                Request::RemoteJoin(r)
            } else {
                Request::RemoteLeave(r)
            }
        }
        "_disconnect" => Request::RemoteDisconnect(DisconnectRequest {
            uid,
            opts: Some(selection(3)?),
            close: args.get(2).and_then(Value::as_bool).unwrap_or(false),
            ..DisconnectRequest::default()
        }),
        "emit" => return emit(io, nsp, selection(2)?, &args[3..]),
        _ => return Err("unknown admin event"),
    };
    io.publish_in_background(io.channels.request(nsp), encode_request(&request), "admin");
    Ok(())
}

/// `io.of(nsp).in(filter).emit(event, ...args)`.
fn emit(io: &SocketIo, nsp: &str, to: RequestOpts, data: &[Value]) -> Result<(), &'static str> {
    if !data.first().is_some_and(Value::is_string) {
        return Err("no event name to emit");
    }
    let msg = BroadcastMessage {
        uid: io.uid.clone(),
        packet: BusPacket::event(nsp, json_to_msgpack(&Value::Array(data.to_vec()))),
        opts: BroadcastOptions {
            rooms: to.rooms,
            ..BroadcastOptions::default()
        },
    };
    io.deliver(&msg);
    io.publish_in_background(io.channels.broadcast(nsp), encode_broadcast(&msg), "admin");
    Ok(())
}
