//! Sharded adapter payloads (`SSUBSCRIBE socket.io#<nsp>#...`): `sharded::decode` of JSON or
//! msgpack, the publishing rule for every mode, and the re-encoding round trip (what
//! `sharded::encode` writes decodes again, and re-encodes to the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_wire::sharded::{self, ShardedOptions, SubscriptionMode};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = sharded::decode(data) else {
        return;
    };
    let _ = (msg.message_type(), msg.request_id());
    for mode in [
        SubscriptionMode::Static,
        SubscriptionMode::Dynamic,
        SubscriptionMode::DynamicPrivate,
    ] {
        let _ = ShardedOptions::new("socket.io", mode).channel_for(&msg);
    }
    let bytes = sharded::encode(&msg);
    assert_eq!(sharded::is_json(&bytes), !msg.has_binary());
    let back = sharded::decode(&bytes).expect("sharded::encode output decodes");
    assert_eq!(sharded::encode(&back), bytes, "re-encoding is stable");
});
