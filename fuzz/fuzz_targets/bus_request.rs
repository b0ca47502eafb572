//! Request and response messages from the Redis bus
//! (`socket.io-request#<nsp>#`, `socket.io-response#<nsp>#`):
//! `decode_request` / `decode_response`, and the re-encoding round trip
//! (what `encode_*` writes must decode again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_wire::{decode_request, decode_response, encode_request, encode_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        let _ = (req.request_type(), req.uid(), req.request_id());
        let bytes = encode_request(&req);
        decode_request(&bytes).expect("encode_request output decodes");
    }
    if let Ok(resp) = decode_response(data) {
        let _ = (resp.request_id(), resp.socket_ids());
        let bytes = encode_response(&resp);
        decode_response(&bytes).expect("encode_response output decodes");
    }
});
