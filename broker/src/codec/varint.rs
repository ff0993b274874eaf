//! Zigzag varints as used inside Kafka v2 records.

/// Read a zigzag varint/varlong at `*at`, advancing it; `None` if truncated or over-long.
pub fn read(buf: &[u8], at: &mut usize) -> Option<i64> {
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

/// Read a varint-length-prefixed byte field; length -1 is `Some(None)` (null).
pub fn read_opt_bytes(buf: &[u8], at: &mut usize) -> Option<Option<Vec<u8>>> {
    let len = read(buf, at)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = at.checked_add(len)?;
    let bytes = buf.get(*at..end)?.to_vec();
    *at = end;
    Some(Some(bytes))
}

/// Skip a varint-length-prefixed byte field; `allow_null` accepts length -1.
pub fn skip_bytes(buf: &[u8], at: &mut usize, allow_null: bool) -> Option<()> {
    let len = read(buf, at)?;
    if len == -1 && allow_null {
        return Some(());
    }
    let len = usize::try_from(len).ok()?;
    let end = at.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    *at = end;
    Some(())
}
