//! Streams adapter input: stream entries (`streams::decode_entry`; the input is split on NUL
//! bytes into field/value pairs) and pub/sub messages (`streams::decode_pubsub`), each with
//! its re-encoding round trip, plus the stream-key hash on arbitrary namespaces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_wire::streams::{self, StreamsOptions};

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let pairs = parts.chunks_exact(2).map(|p| (p[0], p[1]));
    if let Ok(msg) = streams::decode_entry(pairs) {
        let options = StreamsOptions::default();
        let _ = (options.encode_message(&msg), options.is_read(&msg.nsp));
        for plaintext in [false, true] {
            let fields = streams::encode_fields(&msg, plaintext);
            let back = streams::decode_entry(fields.pairs()).expect("encode_fields output decodes");
            assert_eq!(streams::encode_fields(&back, plaintext), fields, "stable");
        }
    }
    if let Ok(msg) = streams::decode_pubsub(data) {
        let bytes = streams::encode_pubsub(&msg);
        let back = streams::decode_pubsub(&bytes).expect("encode_pubsub output decodes");
        assert_eq!(streams::encode_pubsub(&back), bytes, "stable");
    }
    let _ = streams::hash_code(&String::from_utf8_lossy(data));
});
