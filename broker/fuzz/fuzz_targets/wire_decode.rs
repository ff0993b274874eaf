//! Fuzz target: the node-to-node wire codec must never panic, and what it decodes re-encodes
//! to a frame that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use runnel_broker::raft::wire::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf, 1 << 20) {
        let mut again = BytesMut::new();
        if encode(&frame, &mut again).is_ok() {
            let back = decode(&mut again, usize::MAX).ok().flatten();
            assert_eq!(
                back.as_ref(),
                Some(&frame),
                "re-encoded frame did not round-trip"
            );
        }
    }
});
