//! Fuzz target: framing, header peek and request decoding of arbitrary bytes must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use runnel_broker::codec::frame::decode_frame;
use runnel_broker::handlers::decode_request;

fuzz_target!(|data: &[u8]| {
    // As a whole frame body...
    let _ = decode_request(BytesMut::from(data));
    // ...and as a byte stream that may hold several frames.
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, 1 << 20) {
        let _ = decode_request(frame);
    }
});
