//! Connection state recovery input: session records (`Session::decode`, with the re-encoding
//! round trip), offsets from client CONNECT packets (`is_valid_offset`, `StreamId`), and
//! `append_offset` on arbitrary packet text (either a clean append or no change at all).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_wire::recovery::{self, Session, StreamId};
use switchboard_wire::socketio::EncodedPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = Session::decode(data) {
        let record = session.encode();
        let back = Session::decode(record.as_bytes()).expect("Session::encode output decodes");
        assert_eq!(back.encode(), record, "stable");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let valid = recovery::is_valid_offset(text);
    if let Ok(id) = text.parse::<StreamId>() {
        assert!(valid);
        let _ = id.next();
        assert_eq!(id.to_string().parse::<StreamId>().ok(), Some(id));
    }
    let mut packet = EncodedPacket {
        text: text.to_string(),
        attachments: Vec::new(),
    };
    match recovery::append_offset(&mut packet, "1-0") {
        Ok(()) => assert!(packet.text.ends_with("\"1-0\"]")),
        Err(_) => assert_eq!(packet.text, text),
    }
});
