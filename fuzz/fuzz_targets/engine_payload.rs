//! Engine.IO input: single packets as websocket text frames
//! (`Packet::parse`), and HTTP long-polling POST bodies through
//! engineioxide-core's streaming payload decoder, fed in chunks, with a
//! small `max_payload` so that the limit path is exercised too.
//!
//! Input: the first byte picks the chunk size of the body (1..=256).
#![no_main]

use std::convert::Infallible;

use bytes::Bytes;
use engineioxide_core::{Packet, ProtocolVersion, payload};
use futures::{StreamExt, executor::block_on, stream};
use http_body::Frame;
use http_body_util::StreamBody;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    if let Ok(packet) = Packet::parse(ProtocolVersion::V4, text) {
        let _ = String::from(packet);
    }
    let chunk = usize::from(*first) + 1;
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = rest
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(stream::iter(frames));
    block_on(async {
        let packets = payload::decoder(body, None, ProtocolVersion::V4, 4096);
        futures::pin_mut!(packets);
        let mut n = 0;
        while let Some(p) = packets.next().await {
            n += 1;
            if p.is_err() || n > 10_000 {
                break;
            }
        }
    });
});
