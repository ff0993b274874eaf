//! Fuzz target: record-batch validation of arbitrary bytes must never panic, and whatever it
//! accepts must re-parse to the same headers. Half the inputs get a correct CRC-32C patched in,
//! so the fuzzer also explores record parsing behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_broker::codec::batch;

fuzz_target!(|input: (bool, Vec<u8>)| {
    let (fix_crc, mut data) = input;
    if fix_crc && data.len() >= batch::HEADER_LEN {
        let claimed = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        if let Ok(len) = usize::try_from(claimed) {
            let end = (len + batch::LOG_OVERHEAD).min(data.len());
            if end > 21 {
                let crc = crc32c::crc32c(&data[21..end]);
                data[17..21].copy_from_slice(&crc.to_be_bytes());
            }
        }
    }
    if let Ok(headers) = batch::validate_produce(&data, 1 << 20) {
        let again: Vec<_> = batch::headers(&data).collect::<Result<_, _>>().expect("accepted bytes re-parse");
        assert_eq!(headers, again);
    }
});
