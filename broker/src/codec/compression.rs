//! Bounded decompression of a compressed batch's records section, so that produce can check
//! the records inside (as Kafka's log validator does) without trusting the batch header.
//!
//! Codecs as Kafka clients write them: gzip (one or more members), snappy (xerial-framed as the
//! Java client writes it, or raw as some clients do), lz4 (the LZ4 frame format) and zstd
//! (frames). The output is capped at `limit` bytes: a small batch that inflates without bound
//! (a "zip bomb") is refused instead of exhausting memory.

use std::io::Read;

use super::batch::Compression;

/// Why a records section could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{codec} data does not decompress: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
}

/// The xerial snappy stream header ("\x82SNAPPY\0", then version and compatible version).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses `data` written with `codec`, producing at most `limit` bytes.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    match codec {
        Compression::None => bounded(data, limit, "none"),
        Compression::Gzip => bounded(flate2::read::MultiGzDecoder::new(data), limit, "gzip"),
        Compression::Snappy => snappy(data, limit),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(data).map_err(|e| corrupt("lz4", &e))?;
            bounded(decoder, limit, "lz4")
        }
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(data).map_err(|e| corrupt("zstd", &e))?;
            bounded(decoder, limit, "zstd")
        }
    }
}

fn corrupt(codec: &'static str, reason: &dyn std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: reason.to_string(),
    }
}

/// Reads `reader` to its end, failing once more than `limit` bytes come out.
fn bounded(
    reader: impl Read,
    limit: usize,
    codec: &'static str,
) -> Result<Vec<u8>, DecompressError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, &e))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    if !data.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_block(data, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("snappy", &"truncated xerial header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("snappy", &"truncated block length"))?;
        let len = usize::try_from(u32::from_be_bytes(*len))
            .map_err(|_| corrupt("snappy", &"block length overflows"))?;
        if len > tail.len() {
            return Err(corrupt("snappy", &"block overruns the data"));
        }
        let (block, tail) = tail.split_at(len);
        snappy_block(block, &mut out, limit)?;
        rest = tail;
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, checking its announced length against `limit` before
/// allocating.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecompressError> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", &e))?;
    let start = out.len();
    let end = start
        .checked_add(len)
        .filter(|end| *end <= limit)
        .ok_or(DecompressError::TooLarge { limit })?;
    out.resize(end, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..10_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
        e.write_all(data).expect("lz4");
        let (out, result) = e.finish();
        result.expect("lz4");
        out
    }

    fn xerial(data: &[u8]) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(8 * 1024) {
            let block = snap::raw::Encoder::new()
                .compress_vec(chunk)
                .expect("snappy");
            let len = u32::try_from(block.len()).expect("small block");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        let raw_snappy = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("snappy");
        let zstd = zstd::encode_all(&data[..], 3).expect("zstd");
        let cases = [
            (Compression::None, data.clone()),
            (Compression::Gzip, gzip(&data)),
            (Compression::Snappy, raw_snappy),
            (Compression::Snappy, xerial(&data)),
            (Compression::Lz4, lz4(&data)),
            (Compression::Zstd, zstd),
        ];
        for (codec, compressed) in cases {
            let got = decompress(codec, &compressed, data.len()).expect("decompresses");
            assert_eq!(got, data, "{codec:?}");
            assert_eq!(
                decompress(codec, &compressed, data.len() - 1),
                Err(DecompressError::TooLarge {
                    limit: data.len() - 1
                }),
                "{codec:?} must respect the limit"
            );
        }
    }

    #[test]
    fn a_bomb_is_refused_without_inflating_it() {
        let zeros = vec![0u8; 64 << 20];
        let compressed = gzip(&zeros);
        assert!(compressed.len() < 1 << 20);
        assert_eq!(
            decompress(Compression::Gzip, &compressed, 1 << 20),
            Err(DecompressError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..300u32)
            .map(|i| (i * 37 % 256).to_be_bytes()[3])
            .collect();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(codec, &garbage, 1 << 20).is_err(), "{codec:?}");
        }
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 99, 1]);
        assert!(decompress(Compression::Snappy, &framed, 1 << 20).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(codec in 0u8..5, data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let codec = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][usize::from(codec)];
            let _ = decompress(codec, &data, 4096);
        }
    }
}
