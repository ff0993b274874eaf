//! Checked numeric conversions, the stable hash used for deterministic ids, and the hash
//! maps keyed by a reading's key.
//!
//! The workspace forbids lossy `as` casts; the few float→int conversions the processor needs
//! go through here, each checking range and finiteness first.

/// A map from a reading's key (`device_id`), looked up once or twice per reading. foldhash
/// instead of std's SipHash: ~25 instead of ~140 instructions on a device id, still seeded
/// at random per map (foldhash's "minimal DoS resistance": colliding keys cannot be
/// precomputed, only inferred by studying a running process). Nothing depends on the
/// iteration order, which was random with SipHash too.
pub type KeyMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

/// `x` rounded toward +∞ as an `i32`, or `None` if not finite or out of range.
pub fn ceil_to_i32(x: f64) -> Option<i32> {
    let c = x.ceil();
    if c.is_finite() && c >= f64::from(i32::MIN) && c <= f64::from(i32::MAX) {
        // Range and finiteness checked just above, and `c` is integral: exact.
        #[allow(clippy::cast_possible_truncation)]
        Some(c as i32)
    } else {
        None
    }
}

/// `x` rounded toward -∞ as a `u64`, or `None` if not finite, negative, or too large.
pub fn floor_to_u64(x: f64) -> Option<u64> {
    let f = x.floor();
    // 2^64 is exactly representable; every float below it in range converts exactly.
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f as u64)
    } else {
        None
    }
}

/// `n` as `f64`. Exact up to 2^53, which counts in a window never approach.
pub fn u64_to_f64(n: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    f
}

/// `n` as `f64`. Exact for |n| < 2^53 (every millisecond timestamp of the next 285,000 years).
pub fn i64_to_f64(n: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    f
}

/// 64-bit FNV-1a. Stable across Rust versions and platforms (unlike `DefaultHasher`), so
/// ids derived from it are the same after a restart or on another node.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Feeds a length-prefixed field, so ("ab","c") and ("a","bc") hash differently.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.write(&len.to_le_bytes()).write(bytes)
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_conversions() {
        assert_eq!(ceil_to_i32(1.2), Some(2));
        assert_eq!(ceil_to_i32(-1.2), Some(-1));
        assert_eq!(ceil_to_i32(f64::NAN), None);
        assert_eq!(ceil_to_i32(f64::INFINITY), None);
        assert_eq!(ceil_to_i32(3e9), None);
        assert_eq!(floor_to_u64(2.9), Some(2));
        assert_eq!(floor_to_u64(-0.5), None);
        assert_eq!(floor_to_u64(1e30), None);
    }

    #[test]
    fn fnv_is_stable_and_field_separated() {
        // Published FNV-1a 64 test vector.
        assert_eq!(Fnv64::default().write(b"a").finish(), 0xaf63_dc4c_8601_ec8c);
        let a = Fnv64::default().field(b"ab").field(b"c").finish();
        let b = Fnv64::default().field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
    }
}
