//! The HTTP publish API body: `serde_json` into the gateway's own
//! `switchboard_gateway::api::EmitRequest`, then the conversion the API
//! does for an accepted request (JSON args -> msgpack -> emitter-format
//! broadcast, and the Socket.IO text the gateway would send).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_gateway::api::EmitRequest;
use switchboard_wire::{
    BroadcastMessage, BroadcastOptions, BusPacket, decode_broadcast, encode_broadcast,
    encode_event, json_to_msgpack,
};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<EmitRequest>(data) else {
        return;
    };
    let mut items = vec![rmpv::Value::from(req.event.as_str())];
    if let Some(d) = &req.data {
        items.push(json_to_msgpack(d));
    }
    for a in req.args.iter().flatten() {
        items.push(json_to_msgpack(a));
    }
    let nsp = req.namespace.clone().unwrap_or_else(|| "/".into());
    let msg = BroadcastMessage {
        uid: "switchboard-api".into(),
        packet: BusPacket::event(nsp, rmpv::Value::Array(items)),
        opts: BroadcastOptions {
            rooms: req.rooms.clone(),
            except: req.except.clone(),
            ..Default::default()
        },
    };
    let bytes = encode_broadcast(&msg);
    let back = decode_broadcast(&bytes).expect("API broadcast decodes");
    let _ = encode_event(&back.packet.nsp, &back.packet.data, None);
});
