//! Fuzz target: record-batch validation of arbitrary bytes must never panic, and whatever it
//! accepts must re-parse to the same headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_broker::codec::batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(headers) = batch::validate_produce(data, 1 << 20) {
        let again: Vec<_> = batch::headers(data).collect::<Result<_, _>>().expect("accepted bytes re-parse");
        assert_eq!(headers, again);
    }
});
