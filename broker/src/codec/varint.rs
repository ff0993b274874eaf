//! Zigzag varints as used inside Kafka v2 records.

/// Read a zigzag varint/varlong at `*at`, advancing it; `None` if truncated or over-long.
pub fn read(buf: &[u8], at: &mut usize) -> Option<i64> {
    // Most varints in a record (lengths, deltas, counts) are one byte.
    let first = *buf.get(*at)?;
    if first & 0x80 == 0 {
        *at += 1;
        return Some(i64::from(first >> 1) ^ -i64::from(first & 1));
    }
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let decoded = (value >> 1) ^ (0u64.wrapping_sub(value & 1));
    Some(i64::from_ne_bytes(decoded.to_ne_bytes()))
}

/// Read a varint-length-prefixed byte field as a slice of `buf`; length -1 is `Some(None)`
/// (null).
pub fn read_opt_slice<'a>(buf: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read(buf, at)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = at.checked_add(len)?;
    let bytes = buf.get(*at..end)?;
    *at = end;
    Some(Some(bytes))
}

/// Read a varint-length-prefixed byte field; length -1 is `Some(None)` (null).
pub fn read_opt_bytes(buf: &[u8], at: &mut usize) -> Option<Option<Vec<u8>>> {
    Some(read_opt_slice(buf, at)?.map(<[u8]>::to_vec))
}

/// Skip a varint-length-prefixed byte field; `allow_null` accepts length -1.
pub fn skip_bytes(buf: &[u8], at: &mut usize, allow_null: bool) -> Option<()> {
    match read_opt_slice(buf, at)? {
        None if !allow_null => None,
        _ => Some(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Zigzag varint encoding, as Kafka writes it.
    fn encode(value: i64) -> Vec<u8> {
        let mut n = u64::from_ne_bytes(((value << 1) ^ (value >> 63)).to_ne_bytes());
        let mut out = Vec::new();
        while n >= 0x80 {
            out.push(u8::try_from(n & 0x7f).unwrap() | 0x80);
            n >>= 7;
        }
        out.push(u8::try_from(n).unwrap());
        out
    }

    #[test]
    fn every_one_byte_varint_decodes() {
        for value in -64..64 {
            let bytes = encode(value);
            assert_eq!(bytes.len(), 1);
            let mut at = 0;
            assert_eq!(read(&bytes, &mut at), Some(value));
            assert_eq!(at, 1);
        }
    }

    proptest! {
        #[test]
        fn round_trips_and_stops_at_the_end(value in any::<i64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut bytes = encode(value);
            let len = bytes.len();
            bytes.extend(tail);
            let mut at = 0;
            prop_assert_eq!(read(&bytes, &mut at), Some(value));
            prop_assert_eq!(at, len);
            let mut at = 0;
            prop_assert_eq!(read(&bytes[..len - 1], &mut at), None, "truncated");
        }
    }
}
