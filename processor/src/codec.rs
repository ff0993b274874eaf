//! A tiny binary codec for checkpointed state: LEB128 varints, zigzag integers, bit-exact
//! `f64`s and length-prefixed strings, with a reader that rejects bad input with an error
//! (never a panic, never an allocation larger than the input).

use thiserror::Error;

/// Why stored bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated: {0} needs more bytes")]
    Truncated(&'static str),
    /// A varint is longer than 10 bytes or does not fit its type.
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    /// A string is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// The leading version byte is not one this build writes or reads.
    #[error("unknown encoding version {0}")]
    UnknownVersion(u8),
    /// A value breaks an invariant of the type (named).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes are left after the value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Why a stored value (a window, a rule's state) does not decode, naming what it is: the
/// binary encoding, or the JSON that checkpoints held before it.
#[derive(Debug, Error)]
pub enum StoredDecodeError {
    /// The binary encoding is malformed.
    #[error("binary {what}: {source}")]
    Binary {
        /// What was decoded (`window`, `rule state`).
        what: &'static str,
        /// What is wrong.
        source: DecodeError,
    },
    /// The (older) JSON encoding is malformed.
    #[error("json {what}: {source}")]
    Json {
        /// What was decoded.
        what: &'static str,
        /// What is wrong.
        source: serde_json::Error,
    },
}

/// Decodes a stored `what`: JSON when its first byte is `{` (checkpoints written before the
/// binary encoding; no binary encoding starts with it, their first byte is a small version
/// number), else `binary`.
pub fn decode_stored<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    binary: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Result<T, StoredDecodeError> {
    match bytes.first() {
        Some(b'{') => {
            serde_json::from_slice(bytes).map_err(|source| StoredDecodeError::Json { what, source })
        }
        _ => binary(bytes).map_err(|source| StoredDecodeError::Binary { what, source }),
    }
}

/// Appends a `bool` as one byte, 0 or 1.
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Low seven bits plus the continuation bit: the mask makes the truncation exact.
        out.push(u8::try_from(v & 0x7f).unwrap_or(0) | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap_or(0));
}

/// Appends `v` zigzag-encoded (small magnitudes of either sign stay short).
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, zigzag(v));
}

/// Appends the bits of `v` (little-endian), so it decodes to the same bits.
pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// Appends a length-prefixed string.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends length-prefixed bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, u64::try_from(b.len()).unwrap_or(u64::MAX));
    out.extend_from_slice(b);
}

fn zigzag(v: i64) -> u64 {
    // Sign-magnitude interleaving: 0, -1, 1, -2, ... → 0, 1, 2, 3, ...
    u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes())
}

fn unzigzag(u: u64) -> i64 {
    let half = i64::from_ne_bytes((u >> 1).to_ne_bytes());
    half ^ -i64::from_ne_bytes((u & 1).to_ne_bytes())
}

/// Reads values from a byte slice, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .bytes
            .split_first()
            .ok_or(DecodeError::Truncated(what))?;
        self.bytes = rest;
        Ok(b)
    }

    /// An unsigned varint.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let low = u64::from(b & 0x7f);
            // The tenth byte may carry only the top bit of a u64.
            if shift == 63 && low > 1 {
                return Err(DecodeError::OutOfRange(what));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::OutOfRange(what))
    }

    /// A zigzag varint.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.u64(what).map(unzigzag)
    }

    /// A zigzag varint that must fit an `i32`.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        i32::try_from(self.i64(what)?).map_err(|_| DecodeError::OutOfRange(what))
    }

    /// A varint that must fit a `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.u64(what)?).map_err(|_| DecodeError::OutOfRange(what))
    }

    /// A count of items that each take at least one byte: never more than the bytes left,
    /// so a caller may reserve that many without trusting the input.
    pub fn len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u64(what)?).map_err(|_| DecodeError::OutOfRange(what))?;
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    /// Eight bytes as the bits of an `f64`.
    pub fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<8>()
            .ok_or(DecodeError::Truncated(what))?;
        self.bytes = rest;
        Ok(f64::from_bits(u64::from_le_bytes(*head)))
    }

    /// A `bool`: one byte, 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(what)?;
        let (b, rest) = self
            .bytes
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated(what))?;
        self.bytes = rest;
        Ok(b)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| DecodeError::NotUtf8(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_u64(&mut b, v);
            let mut r = Reader::new(&b);
            assert_eq!(r.u64("v"), Ok(v));
            r.finish().unwrap();
        }
        // Eleven bytes, or a tenth byte above 1, do not fit a u64.
        assert!(Reader::new(&[0xff; 11]).u64("v").is_err());
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).u64("v"),
            Err(DecodeError::OutOfRange("v"))
        );
        assert_eq!(
            Reader::new(&[0x80]).u64("v"),
            Err(DecodeError::Truncated("v"))
        );
        // A length longer than the input is refused before anything is allocated.
        assert_eq!(
            Reader::new(&[0x05, b'a']).str("s"),
            Err(DecodeError::Truncated("s"))
        );
        assert_eq!(
            Reader::new(&[0x01, 0xff]).str("s"),
            Err(DecodeError::NotUtf8("s"))
        );
    }

    proptest! {
        #[test]
        fn values_round_trip(
            i in any::<i64>(),
            u in any::<u64>(),
            f in any::<f64>(),
            s in ".{0,20}",
            raw in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut b = Vec::new();
            put_i64(&mut b, i);
            put_u64(&mut b, u);
            put_f64(&mut b, f);
            put_str(&mut b, &s);
            put_bytes(&mut b, &raw);
            let mut r = Reader::new(&b);
            prop_assert_eq!(r.i64("i")?, i);
            prop_assert_eq!(r.u64("u")?, u);
            prop_assert_eq!(r.f64("f")?.to_bits(), f.to_bits());
            prop_assert_eq!(r.str("s")?, s.as_str());
            prop_assert_eq!(r.bytes("raw")?, raw.as_slice());
            prop_assert!(r.finish().is_ok());
        }
    }
}
