//! Socket.IO packets as the gateway decodes them: a sequence of websocket
//! messages through one connection's `ParserState`, with the gateway's
//! `ParseConfig` (at most 10 attachments, `engine.max_payload` bytes of
//! them), then the checks `socketio::SocketIo` applies to what decoded.
//!
//! Input framing: messages separated by a NUL byte; a message starting with
//! 0x01 is binary (the rest of it), anything else is text (lossy UTF-8).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use socketioxide_core::{
    Value,
    packet::PacketData,
    parser::{Parse, ParseConfig, ParserState},
};
use socketioxide_parser_common::CommonParser;

fuzz_target!(|data: &[u8]| {
    let config = ParseConfig {
        max_incoming_binaries: 10,
        max_incoming_binary_buf_size: 1_000_000,
        ..ParseConfig::default()
    };
    let state = ParserState::default();
    for msg in data.split(|b| *b == 0).take(64) {
        let result = match msg.split_first() {
            Some((1, bin)) => CommonParser.decode_bin(&config, &state, Bytes::copy_from_slice(bin)),
            _ => {
                let text = String::from_utf8_lossy(msg).into_owned();
                CommonParser.decode_str(&config, &state, text.into())
            }
        };
        let Ok(packet) = result else { continue };
        // What the session layer does with a decoded packet.
        match &packet.inner {
            PacketData::Connect(Some(Value::Str(text, _)))
            | PacketData::Event(Value::Str(text, _), _)
            | PacketData::BinaryEvent(Value::Str(text, _), _) => {
                if let Ok(serde_json::Value::Array(args)) =
                    serde_json::from_str::<serde_json::Value>(text)
                {
                    let _ = args.first().and_then(serde_json::Value::as_str);
                }
            }
            _ => {}
        }
        // Re-encoding what was decoded must not panic either.
        let _ = CommonParser.encode(packet);
    }
});
