//! A mergeable quantile sketch with a relative-error guarantee (DDSketch-style).
//!
//! Written here rather than taken from a crate: the algorithm is ~100 lines, and the processor
//! needs things the available crates do not promise together: serde state that round-trips
//! bit-for-bit (checkpoints), deterministic results independent of insertion order within a
//! bucket, and no panics on any input. Values map to logarithmic buckets
//! `γ^(i-1) < |x| ≤ γ^i` with `γ = (1+α)/(1-α)`; a bucket's representative `2γ^i/(γ+1)` is
//! within relative error α of every value in it, so every quantile estimate is within α of
//! the true rank value (Masson, Rim, Lee: "DDSketch", VLDB 2019). Merging adds bucket counts.
//! Bucket count is bounded by the value range: with α = 1% and |x| in [1e-9, 1e9] that is
//! at most ~2100 buckets per sign.
//!
//! A sign's buckets are a sorted vector ([`Bins`]), not a tree: a window's values span a few
//! dozen neighbouring buckets, which then sit in a few adjacent cache lines, and adding a
//! value is a binary search there instead of a walk down tree nodes allocated apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, DecodeError, Reader};
use crate::num::ceil_to_i32;

/// Magnitudes below this are counted in the zero bucket.
const MIN_INDEXABLE: f64 = 1e-9;

/// A mergeable quantile sketch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "SketchFields")]
pub struct Sketch {
    alpha: f64,
    positive: Bins,
    negative: Bins,
    zero: u64,
    count: u64,
    /// `γ.ln()`, derived from `alpha` (computed once, not per added value; not serialized).
    #[serde(skip)]
    ln_gamma: f64,
}

/// [`Sketch`]'s serialized fields: deserializing derives the rest.
#[derive(Deserialize)]
struct SketchFields {
    alpha: f64,
    positive: Bins,
    negative: Bins,
    zero: u64,
    count: u64,
}

impl From<SketchFields> for Sketch {
    fn from(f: SketchFields) -> Self {
        Self {
            ln_gamma: gamma_of(f.alpha).ln(),
            alpha: f.alpha,
            positive: f.positive,
            negative: f.negative,
            zero: f.zero,
            count: f.count,
        }
    }
}

/// `γ = (1+α)/(1-α)`.
fn gamma_of(alpha: f64) -> f64 {
    (1.0 + alpha) / (1.0 - alpha)
}

impl Sketch {
    /// An empty sketch with relative accuracy `alpha` in (0, 0.5) (clamped into range).
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_finite() {
            alpha.clamp(1e-6, 0.49)
        } else {
            0.01
        };
        Self {
            alpha,
            positive: Bins::default(),
            negative: Bins::default(),
            zero: 0,
            count: 0,
            ln_gamma: gamma_of(alpha).ln(),
        }
    }

    fn gamma(&self) -> f64 {
        gamma_of(self.alpha)
    }

    fn index(&self, magnitude: f64) -> Option<i32> {
        ceil_to_i32(magnitude.ln() / self.ln_gamma)
    }

    fn value_of(&self, index: i32) -> f64 {
        let g = self.gamma();
        2.0 * g.powi(index) / (g + 1.0)
    }

    /// Adds one value. Non-finite values are ignored (validation keeps them out anyway).
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let m = x.abs();
        let bucket = if m < MIN_INDEXABLE {
            None
        } else {
            self.index(m)
        };
        match bucket {
            None => self.zero = self.zero.saturating_add(1),
            Some(i) => {
                let store = if x > 0.0 {
                    &mut self.positive
                } else {
                    &mut self.negative
                };
                store.add(i, 1);
            }
        }
        self.count = self.count.saturating_add(1);
    }

    /// Adds all of `other`'s values. Sketches with different accuracies merge at `self`'s
    /// bucket boundaries only if equal; otherwise `other` is re-bucketed by representative.
    pub fn merge(&mut self, other: &Sketch) {
        let same = self.alpha.to_bits() == other.alpha.to_bits();
        for (neg, store) in [(false, &other.positive), (true, &other.negative)] {
            for &(i, c) in store.iter() {
                let idx = if same {
                    Some(i)
                } else {
                    self.index(other.value_of(i))
                };
                match (idx, neg) {
                    (None, _) => self.zero = self.zero.saturating_add(c),
                    (Some(i), false) => self.positive.add(i, c),
                    (Some(i), true) => self.negative.add(i, c),
                }
            }
        }
        self.zero = self.zero.saturating_add(other.zero);
        self.count = self.count.saturating_add(other.count);
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Estimate of the value of rank `floor(q · (n-1))` (0-based, ascending), for `q` in
    /// [0, 1]; `None` if empty. Within relative error α of the true value (absolute error
    /// 1e-9 for values in the zero bucket).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !q.is_finite() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let last = self.count - 1;
        let rank = crate::num::floor_to_u64(q * crate::num::u64_to_f64(last))
            .unwrap_or(0)
            .min(last);
        // Ascending order: most negative (largest index in `negative`) first, then zero, then
        // positives by index.
        let mut seen: u64 = 0;
        for &(i, c) in self.negative.iter().rev() {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(-self.value_of(i));
            }
        }
        seen = seen.saturating_add(self.zero);
        if seen > rank {
            return Some(0.0);
        }
        for &(i, c) in self.positive.iter() {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(self.value_of(i));
            }
        }
        // Unreachable when counts are consistent; answer with the largest bucket.
        self.positive
            .iter()
            .next_back()
            .map(|&(i, _)| self.value_of(i))
    }
}

/// One sign's buckets: `(index, count)` sorted by index, each index once. Serialized as the
/// map from index to count it stands for (what checkpoints held when it was a `BTreeMap`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Bins(Vec<(i32, u64)>);

impl Bins {
    /// Adds `c` to bucket `i`'s count, creating the bucket.
    fn add(&mut self, i: i32, c: u64) {
        match self.0.binary_search_by_key(&i, |&(j, _)| j) {
            Ok(at) => {
                if let Some((_, n)) = self.0.get_mut(at) {
                    *n = n.saturating_add(c);
                }
            }
            Err(at) => self.0.insert(at, (i, c)),
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The buckets, ascending by index.
    fn iter(&self) -> std::slice::Iter<'_, (i32, u64)> {
        self.0.iter()
    }
}

impl Serialize for Bins {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(i, c)| (i, c)))
    }
}

impl<'de> Deserialize<'de> for Bins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A map in the input may repeat or disorder keys; the tree sorts and dedups them
        // as it did when it was the stored type.
        let map = BTreeMap::<i32, u64>::deserialize(d)?;
        Ok(Self(map.into_iter().collect()))
    }
}

impl Sketch {
    /// Appends the sketch in the binary state encoding: accuracy, zero and total counts,
    /// then each sign's buckets as (index delta, count) varints, ascending by index.
    pub fn encode(&self, out: &mut Vec<u8>) {
        codec::put_f64(out, self.alpha);
        codec::put_u64(out, self.zero);
        codec::put_u64(out, self.count);
        for store in [&self.positive, &self.negative] {
            codec::put_u64(out, u64::try_from(store.len()).unwrap_or(u64::MAX));
            let mut prev: Option<i32> = None;
            for &(i, c) in store.iter() {
                // The first index as is, then the (positive) gap to the previous one.
                let v = match prev {
                    None => i64::from(i),
                    Some(p) => i64::from(i) - i64::from(p),
                };
                codec::put_i64(out, v);
                codec::put_u64(out, c);
                prev = Some(i);
            }
        }
    }

    /// Reads a sketch written by [`Sketch::encode`]. Rejects an accuracy out of range,
    /// bucket indexes not strictly ascending or outside `i32`, and truncated input.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let alpha = r.f64("sketch accuracy")?;
        if !(1e-6..=0.49).contains(&alpha) {
            return Err(DecodeError::Invalid("sketch accuracy"));
        }
        let zero = r.u64("sketch zero count")?;
        let count = r.u64("sketch count")?;
        let mut stores = [Bins::default(), Bins::default()];
        for store in &mut stores {
            let n = r.len("sketch buckets")?;
            let mut prev: Option<i32> = None;
            for _ in 0..n {
                let v = r.i64("sketch bucket index")?;
                let i = match prev {
                    None => i32::try_from(v),
                    Some(p) if v > 0 => i32::try_from(i64::from(p).saturating_add(v)),
                    Some(_) => return Err(DecodeError::Invalid("sketch bucket order")),
                }
                .map_err(|_| DecodeError::OutOfRange("sketch bucket index"))?;
                // Ascending, checked above: appending keeps the bins sorted.
                store.0.push((i, r.u64("sketch bucket count")?));
                prev = Some(i);
            }
        }
        let [positive, negative] = stores;
        Ok(Self {
            alpha,
            positive,
            negative,
            zero,
            count,
            ln_gamma: gamma_of(alpha).ln(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(values: &[f64], q: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let last = v.len() - 1;
        let rank =
            crate::num::floor_to_u64(q * crate::num::u64_to_f64(u64::try_from(last).unwrap()))
                .unwrap();
        v[usize::try_from(rank).unwrap()]
    }

    fn within(est: f64, truth: f64, alpha: f64) -> bool {
        (est - truth).abs() <= alpha * truth.abs() + 1e-9
    }

    #[test]
    fn empty_and_single() {
        let mut s = Sketch::new(0.01);
        assert_eq!(s.quantile(0.5), None);
        s.add(42.0);
        let e = s.quantile(0.99).unwrap();
        assert!(within(e, 42.0, 0.01), "{e}");
        s.add(f64::NAN);
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn zero_and_negative_values() {
        let mut s = Sketch::new(0.01);
        for x in [-5.0, 0.0, 1e-12, 3.0] {
            s.add(x);
        }
        assert!(within(s.quantile(0.0).unwrap(), -5.0, 0.01));
        assert_eq!(s.quantile(0.34).unwrap(), 0.0);
        assert!(within(s.quantile(1.0).unwrap(), 3.0, 0.01));
    }

    #[test]
    fn serde_round_trips_exactly() {
        let mut s = Sketch::new(0.02);
        for i in 0..100 {
            s.add(f64::from(i) * 1.37 - 20.0);
        }
        let back: Sketch = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    proptest! {
        #[test]
        fn bins_count_as_the_map_they_replaced(
            adds in prop::collection::vec((-40i32..40, 0u64..5), 0..200),
        ) {
            let (mut bins, mut map) = (Bins::default(), BTreeMap::new());
            for &(i, c) in &adds {
                bins.add(i, c);
                let n: &mut u64 = map.entry(i).or_insert(0);
                *n = n.saturating_add(c);
            }
            let as_map: Vec<(i32, u64)> = map.clone().into_iter().collect();
            prop_assert_eq!(&bins.0, &as_map);
            // Serialized exactly as the map was, and read back from it.
            let json = serde_json::to_string(&map).unwrap();
            prop_assert_eq!(serde_json::to_string(&bins).unwrap(), json.clone());
            prop_assert_eq!(serde_json::from_str::<Bins>(&json).unwrap(), bins);
        }

        #[test]
        fn binary_encoding_round_trips_exactly(
            values in prop::collection::vec(prop_oneof![-1e9f64..1e9, Just(0.0), -1e-3f64..1e-3], 0..300),
            alpha in prop_oneof![Just(0.01), 1e-6f64..0.49],
        ) {
            let mut s = Sketch::new(alpha);
            for &v in &values { s.add(v); }
            let mut b = Vec::new();
            s.encode(&mut b);
            let mut r = Reader::new(&b);
            prop_assert_eq!(Sketch::decode(&mut r)?, s);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Sketch::decode(&mut Reader::new(&b));
        }

        #[test]
        fn quantiles_within_relative_error(
            values in prop::collection::vec(-1e6f64..1e6, 1..300),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::new(0.01);
            for &v in &values { s.add(v); }
            let est = s.quantile(q).unwrap();
            let truth = exact(&values, q);
            prop_assert!(within(est, truth, 0.01), "q={} est={} truth={}", q, est, truth);
        }

        #[test]
        fn merge_equals_adding_everything(
            a in prop::collection::vec(-1e3f64..1e3, 0..100),
            b in prop::collection::vec(-1e3f64..1e3, 0..100),
        ) {
            let (mut sa, mut sb, mut all) = (Sketch::new(0.01), Sketch::new(0.01), Sketch::new(0.01));
            for &v in &a { sa.add(v); all.add(v); }
            for &v in &b { sb.add(v); all.add(v); }
            sa.merge(&sb);
            prop_assert_eq!(sa, all);
        }
    }
}
