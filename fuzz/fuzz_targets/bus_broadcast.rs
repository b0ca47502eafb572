//! Broadcast messages from the Redis bus (`socket.io#<nsp>#[<room>#]`):
//! `switchboard_wire::decode_broadcast`, then what the gateway does with a
//! decoded message (`encode_event` into Socket.IO text + attachments), and
//! the re-encoding round trip (`encode_broadcast` output must decode to the
//! same message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_wire::{decode_broadcast, encode_broadcast, encode_event};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = decode_broadcast(data) else {
        return;
    };
    let _ = encode_event(&msg.packet.nsp, &msg.packet.data, msg.packet.id);
    let bytes = encode_broadcast(&msg);
    let again = decode_broadcast(&bytes).expect("encode_broadcast output decodes");
    let _ = encode_event(&again.packet.nsp, &again.packet.data, again.packet.id);
});
