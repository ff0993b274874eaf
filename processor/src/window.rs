//! Event-time windows (tumbling and hopping) with aggregations, allowed lateness, revisions.
//!
//! A window `[start, end)` is emitted (revision 0) when the watermark reaches `end`. Until the
//! watermark reaches `end + allowed_lateness`, a late reading still updates it and re-emits it
//! immediately with the next revision; after that its state is dropped and readings for it go
//! to the late-data output. A reading of a hopping window whose windows have partly expired
//! updates the live ones and is also reported late (so nothing is dropped silently).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, DecodeError, Reader, StoredDecodeError};
use crate::config::{AggFn, AggregationConfig, PipelineConfig};
use crate::message::{Collector, Message, Operator};
use crate::num::{u64_to_f64, Fnv64};
use crate::parse::{FieldSlots, SensorReading};
use crate::sketch::Sketch;
use crate::time::Millis;

/// Window geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Length.
    pub size: Millis,
    /// Distance between starts (`== size` for tumbling).
    pub slide: Millis,
    /// Allowed lateness.
    pub lateness: Millis,
}

impl WindowSpec {
    /// Start times of every window containing `t`, ascending, without allocating. Empty only
    /// if `t` is so close to the ends of the `i64` range that a window bound would overflow.
    pub fn assign(&self, t: Millis) -> Starts {
        let mut starts = Starts {
            next: 0,
            left: 0,
            slide: self.slide,
        };
        let Some(last) = t.div_euclid(self.slide).checked_mul(self.slide) else {
            return starts;
        };
        // Walk down from the last start as far as windows still contain `t`, counting them:
        // they are `first, first + slide, ...` (a start whose end overflows is skipped, and
        // only the highest starts can overflow).
        let mut s = last;
        loop {
            match s.checked_add(self.size) {
                Some(end) if end > t => {
                    starts.next = s;
                    starts.left = starts.left.saturating_add(1);
                }
                Some(_) => break,
                None => {}
            }
            match s.checked_sub(self.slide) {
                Some(prev) => s = prev,
                None => break,
            }
        }
        starts
    }
}

/// The window starts of one event time, ascending ([`WindowSpec::assign`]).
#[derive(Debug, Clone)]
pub struct Starts {
    next: Millis,
    left: usize,
    slide: Millis,
}

impl Iterator for Starts {
    type Item = Millis;

    fn next(&mut self) -> Option<Millis> {
        if self.left == 0 {
            return None;
        }
        let s = self.next;
        self.left -= 1;
        // Every start counted was reached from `s` by adding `slide`, so this cannot
        // overflow while more are left; past the last one the value is not used.
        self.next = s.saturating_add(self.slide);
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Starts {}

/// Running aggregates of one numeric field in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldAcc {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    sketch: Option<Sketch>,
}

impl FieldAcc {
    fn new(with_sketch: Option<f64>) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: with_sketch.map(Sketch::new),
        }
    }

    fn add(&mut self, x: f64) {
        self.count = self.count.saturating_add(1);
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if let Some(s) = &mut self.sketch {
            s.add(x);
        }
    }

    fn get(&self, f: AggFn) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        match f {
            AggFn::Count => Some(u64_to_f64(self.count)),
            AggFn::Sum => Some(self.sum),
            AggFn::Avg => Some(self.sum / u64_to_f64(self.count)),
            AggFn::Min => Some(self.min),
            AggFn::Max => Some(self.max),
            AggFn::Percentile(p) => self.sketch.as_ref()?.quantile(p.quantile()),
        }
    }
}

/// A window's per-field accumulators: `(field name, accumulators)` sorted by name, each name
/// once. A vector sized to the fields, not a tree node sized for eleven: a window's state is a
/// few cache lines, and windows created by one operator share its name strings. Serialized
/// as the map from name to accumulators it stands for (what JSON checkpoints hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(Arc<str>, FieldAcc)>);

impl Fields {
    /// The accumulators of `field`.
    pub fn get(&self, field: &str) -> Option<&FieldAcc> {
        let i = self.0.binary_search_by(|(n, _)| (**n).cmp(field)).ok()?;
        self.0.get(i).map(|(_, acc)| acc)
    }

    /// `(name, accumulators)`, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldAcc)> {
        self.0.iter().map(|(n, acc)| (&**n, acc))
    }

    /// The accumulators, by field name.
    pub fn values(&self) -> impl Iterator<Item = &FieldAcc> {
        self.0.iter().map(|(_, acc)| acc)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, FieldAcc>::deserialize(d)?;
        Ok(Self(
            map.into_iter().map(|(n, acc)| (n.into(), acc)).collect(),
        ))
    }
}

/// State of one open window. Equality compares the state, not the `changed` mark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowState {
    /// Key.
    pub key: String,
    /// Start.
    pub start: Millis,
    /// End (exclusive).
    pub end: Millis,
    /// Readings in the window.
    pub count: u64,
    /// Per-field accumulators.
    pub fields: Fields,
    /// Revision of the last emitted result, `None` before the first emission.
    pub emitted: Option<u32>,
    /// Changed since [`WindowOperator::take_dirty_shards`] last saw it (not stored: a
    /// restored window is what the store holds).
    #[serde(skip)]
    changed: bool,
}

impl PartialEq for WindowState {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.key,
            self.start,
            self.end,
            self.count,
            &self.fields,
            self.emitted,
        ) == (&o.key, o.start, o.end, o.count, &o.fields, o.emitted)
    }
}

/// Version byte of the binary window encoding ([`WindowState::encode`]). A JSON window (what
/// checkpoints held before it) starts with `{`, so the two are told apart by the first byte.
pub const WINDOW_ENCODING_V1: u8 = 1;

impl WindowState {
    /// Appends the window in the binary checkpoint encoding (version
    /// [`WINDOW_ENCODING_V1`]): key, bounds, count and emitted revision as varints, then
    /// each field's name, count, sum/min/max as `f64` bits and its optional sketch. Decodes
    /// to an equal window, `f64`s bit for bit.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(WINDOW_ENCODING_V1);
        codec::put_str(out, &self.key);
        codec::put_i64(out, self.start);
        codec::put_i64(out, self.end);
        codec::put_u64(out, self.count);
        codec::put_u64(out, self.emitted.map_or(0, |e| u64::from(e) + 1));
        codec::put_u64(out, u64::try_from(self.fields.len()).unwrap_or(u64::MAX));
        for (name, acc) in self.fields.iter() {
            codec::put_str(out, name);
            codec::put_u64(out, acc.count);
            codec::put_f64(out, acc.sum);
            codec::put_f64(out, acc.min);
            codec::put_f64(out, acc.max);
            match &acc.sketch {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    s.encode(out);
                }
            }
        }
    }

    /// Reads a stored window: the binary encoding, or the JSON checkpoints held before it
    /// (first byte `{`). Bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, WindowDecodeError> {
        codec::decode_stored(bytes, "window", Self::decode_binary)
    }

    fn decode_binary(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.u8("window version")? {
            WINDOW_ENCODING_V1 => {}
            v => return Err(DecodeError::UnknownVersion(v)),
        }
        let key = r.str("window key")?.to_owned();
        let start = r.i64("window start")?;
        let end = r.i64("window end")?;
        let count = r.u64("window count")?;
        let emitted = match r.u64("window revision")? {
            0 => None,
            n => {
                Some(u32::try_from(n - 1).map_err(|_| DecodeError::OutOfRange("window revision"))?)
            }
        };
        let n = r.len("window fields")?;
        let mut fields: Vec<(Arc<str>, FieldAcc)> = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = r.str("field name")?;
            if fields.last().is_some_and(|(last, _)| &**last >= name) {
                return Err(DecodeError::Invalid("field order"));
            }
            let count = r.u64("field count")?;
            let sum = r.f64("field sum")?;
            let min = r.f64("field min")?;
            let max = r.f64("field max")?;
            let sketch = match r.u8("field sketch")? {
                0 => None,
                1 => Some(Sketch::decode(&mut r)?),
                _ => return Err(DecodeError::Invalid("field sketch flag")),
            };
            fields.push((
                name.into(),
                FieldAcc {
                    count,
                    sum,
                    min,
                    max,
                    sketch,
                },
            ));
        }
        r.finish()?;
        Ok(Self {
            key,
            start,
            end,
            count,
            fields: Fields(fields),
            emitted,
            changed: false,
        })
    }
}

/// Why a stored window does not decode.
pub type WindowDecodeError = StoredDecodeError;

/// Version byte of a stored shard of windows ([`WindowOperator::take_dirty_shards`]).
pub const WINDOW_SHARD_V1: u8 = 1;

/// The most shards [`WindowOperator::take_dirty_shards`] spreads windows over.
pub const MAX_SHARDS: u32 = 1 << 16;

/// The shard (of `shards`) that the windows of `key` are stored in: a stable hash of the key,
/// so every window of a key is in the same shard.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    let h = Fnv64::default().write(key.as_bytes()).finish() % u64::from(shards.max(1));
    // The remainder is below `shards`, a `u32`.
    u32::try_from(h).unwrap_or(0)
}

/// The windows of a stored shard (version [`WINDOW_SHARD_V1`], then each window's
/// [`WindowState::encode`] length-prefixed), in the order they were written. Bad input is
/// an error, never a panic.
pub fn decode_shard(bytes: &[u8]) -> Result<Vec<WindowState>, WindowDecodeError> {
    decode_shard_binary(bytes).map_err(|source| StoredDecodeError::Binary {
        what: "window shard",
        source,
    })
}

fn decode_shard_binary(bytes: &[u8]) -> Result<Vec<WindowState>, DecodeError> {
    let mut r = Reader::new(bytes);
    match r.u8("shard version")? {
        WINDOW_SHARD_V1 => {}
        v => return Err(DecodeError::UnknownVersion(v)),
    }
    let mut windows = Vec::new();
    while r.remaining() > 0 {
        windows.push(WindowState::decode_binary(r.bytes("shard window")?)?);
    }
    Ok(windows)
}

/// What a checkpoint writes of the open windows ([`WindowOperator::take_dirty_shards`]).
#[derive(Debug, Default)]
pub struct ShardWrites {
    /// Every shard holding a window was written: stored shards not in `put` (and windows in
    /// any older layout) are stale, and `emptied` is empty.
    pub full: bool,
    /// `(shard, value)` of each written shard, encoded for [`decode_shard`].
    pub put: Vec<(u32, Vec<u8>)>,
    /// Shards that changed and hold no window any more: to delete.
    pub emptied: Vec<u32>,
}

/// One emitted window result.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    /// Key.
    pub key: String,
    /// Start.
    pub start: Millis,
    /// End (exclusive).
    pub end: Millis,
    /// 0 for the on-time result, +1 for each late update.
    pub revision: u32,
    /// Readings in the window.
    pub count: u64,
    /// `<field>_<fn>` → value.
    pub columns: BTreeMap<String, f64>,
}

/// A reading (partly) too late for its window(s).
#[derive(Debug, Clone, PartialEq)]
pub struct LateReading {
    /// The reading.
    pub reading: SensorReading,
    /// The first expired window's start.
    pub window_start: Millis,
    /// Its end.
    pub window_end: Millis,
    /// The watermark when the reading arrived.
    pub watermark: Millis,
    /// How many of the reading's windows were still open and got updated (hopping windows).
    pub updated_windows: usize,
}

/// What the window operator emits.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowEvent {
    /// A window result (new or revised).
    Result(WindowResult),
    /// A reading beyond the allowed lateness.
    Late(LateReading),
}

/// Empty accumulators for every aggregated field: a sketch where an aggregation of the
/// field asks for a percentile.
fn empty_fields(aggregations: &[AggregationConfig], sketch_alpha: f64) -> Fields {
    let mut fields: BTreeMap<&str, bool> = BTreeMap::new();
    for a in aggregations {
        let wants_sketch = a
            .functions
            .iter()
            .any(|f| matches!(f, AggFn::Percentile(_)));
        *fields.entry(a.field.as_str()).or_default() |= wants_sketch;
    }
    Fields(
        fields
            .into_iter()
            .map(|(name, sketch)| (name.into(), FieldAcc::new(sketch.then_some(sketch_alpha))))
            .collect(),
    )
}

/// A fresh window of `key` with `empty` accumulators.
fn new_state(empty: &Fields, key: &str, start: Millis, end: Millis) -> WindowState {
    WindowState {
        key: key.to_owned(),
        start,
        end,
        count: 0,
        fields: empty.clone(),
        emitted: None,
        changed: true,
    }
}

/// The result of window `w` at `revision` under `aggregations`.
fn result_of(aggregations: &[AggregationConfig], w: &WindowState, revision: u32) -> WindowResult {
    let mut columns = BTreeMap::new();
    for a in aggregations {
        if let Some(acc) = w.fields.get(&a.field) {
            for &f in &a.functions {
                if let Some(v) = acc.get(f) {
                    columns.insert(format!("{}_{f}", a.field), v);
                }
            }
        }
    }
    WindowResult {
        key: w.key.clone(),
        start: w.start,
        end: w.end,
        revision,
        count: w.count,
        columns,
    }
}

/// Windows of one `(end, start)`, by key. A hash map: a reading finds its window with one
/// hash of its key instead of string comparisons down an ordered map of every window; the
/// `(end, key, start)` order that results are emitted in is restored by sorting the (few)
/// windows that close together.
type Bucket = crate::num::KeyMap<WindowState>;

/// `(end, key, start)`, the order windows are emitted and listed in.
fn order(w: &WindowState) -> (Millis, &str, Millis) {
    (w.end, w.key.as_str(), w.start)
}

/// The keyed event-time window operator.
#[derive(Debug, Clone)]
pub struct WindowOperator {
    spec: WindowSpec,
    aggregations: Vec<AggregationConfig>,
    /// A new window's accumulators; its names are the ones new windows share.
    empty: Fields,
    /// Where `empty`'s fields are in a reading's values.
    slots: FieldSlots,
    /// Open windows by `(end, start)`, then key: closing and purging take a prefix in end
    /// order.
    windows: BTreeMap<(Millis, Millis), Bucket>,
    /// Number of open windows (the buckets' sizes summed).
    open: usize,
    watermark: Option<Millis>,
    /// Every window with `end <= emitted_through` has been emitted (`emitted.is_some()`), so
    /// closing on a watermark advance starts after it instead of at the first window. `None`
    /// (a new or restored operator) means no such bound is known: the next close scans from
    /// the first window, once.
    emitted_through: Option<Millis>,
    /// Keys of the windows purged since [`WindowOperator::take_dirty_shards`] was last
    /// called, so a checkpoint rewrites exactly their shards; `None` once more were purged
    /// than [`MAX_PURGED`] (the next checkpoint then writes every shard).
    purged: Option<Vec<String>>,
}

/// Purged windows remembered for the next checkpoint before falling back to a scan.
const MAX_PURGED: usize = 1 << 18;

impl WindowOperator {
    /// An operator for `config`'s window and aggregations.
    pub fn new(config: &PipelineConfig) -> Self {
        Self {
            spec: WindowSpec {
                size: config.window.size_ms,
                slide: config.window.slide(),
                lateness: config.window.allowed_lateness_ms,
            },
            aggregations: config.aggregations.clone(),
            empty: empty_fields(&config.aggregations, config.sketch_relative_accuracy),
            slots: FieldSlots::default(),
            windows: BTreeMap::new(),
            open: 0,
            watermark: None,
            emitted_through: None,
            purged: Some(Vec::new()),
        }
    }

    /// Open windows (for snapshots, queries and tests), in `(end, key, start)` order (sorted
    /// per call: O(n log n)).
    pub fn windows(&self) -> impl Iterator<Item = &WindowState> {
        let mut all: Vec<&WindowState> = self.windows.values().flat_map(Bucket::values).collect();
        all.sort_unstable_by(|a, b| order(a).cmp(&order(b)));
        all.into_iter()
    }

    /// Number of open windows, O(1).
    pub fn len(&self) -> usize {
        self.open
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// The current partial result of every window of `key` that the watermark has not
    /// closed yet (never emitted) and whose start is in `[from, to)`, by start. Walks every
    /// window held (they are ordered by end, not key): a query costs one pass, no copy of the
    /// state.
    pub fn open_results(&self, key: &str, from: Millis, to: Millis) -> Vec<WindowResult> {
        let mut out: Vec<WindowResult> = self
            .windows
            .values()
            .filter_map(|b| b.get(key))
            .filter(|w| w.emitted.is_none() && (from..to).contains(&w.start))
            .map(|w| self.result(w, 0))
            .collect();
        out.sort_by_key(|r| (r.start, r.end));
        out
    }

    /// Restores open windows and the watermark from a snapshot.
    pub fn restore(&mut self, windows: Vec<WindowState>, watermark: Option<Millis>) {
        self.windows = BTreeMap::new();
        self.open = 0;
        for mut w in windows {
            // Share the operator's names, so readings find the fields by slot.
            for (name, _) in &mut w.fields.0 {
                if let Some((shared, _)) = self.empty.0.iter().find(|(n, _)| n == name) {
                    *name = Arc::clone(shared);
                }
            }
            let bucket = self.windows.entry((w.end, w.start)).or_default();
            if bucket.insert(w.key.clone(), w).is_none() {
                self.open = self.open.saturating_add(1);
            }
        }
        self.watermark = watermark;
        self.emitted_through = None;
    }

    /// The open windows grouped into `shards` (at most [`MAX_SHARDS`]) stored values by
    /// [`shard_of`] their key, for a checkpoint: every shard holding a window if `all` (or if
    /// too many windows were purged to remember them), otherwise only the shards where a
    /// window was created, updated, emitted or purged since the last call — with every window
    /// they hold, in no particular order. Clears the marks. A durable store pays per key
    /// written, so a checkpoint writes a few values of many windows each, not one per window.
    pub fn take_dirty_shards(&mut self, shards: u32, all: bool) -> ShardWrites {
        let purged = self.purged.replace(Vec::new());
        let full = all || purged.is_none();
        let shards = shards.clamp(1, MAX_SHARDS);
        let n = usize::try_from(shards).unwrap_or(1);
        let index = |key: &str| usize::try_from(shard_of(key, shards)).unwrap_or(usize::MAX);
        let mut dirty = vec![full; n];
        if !full {
            let changed = self
                .windows
                .values()
                .flat_map(Bucket::values)
                .filter(|w| w.changed)
                .map(|w| w.key.as_str());
            for key in purged.iter().flatten().map(String::as_str).chain(changed) {
                if let Some(d) = dirty.get_mut(index(key)) {
                    *d = true;
                }
            }
        }
        let mut values: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut one = Vec::with_capacity(512);
        for w in self.windows.values_mut().flat_map(Bucket::values_mut) {
            w.changed = false;
            let i = index(&w.key);
            if !dirty.get(i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(v) = values.get_mut(i) {
                if v.is_empty() {
                    v.push(WINDOW_SHARD_V1);
                }
                one.clear();
                w.encode(&mut one);
                codec::put_bytes(v, &one);
            }
        }
        let mut out = ShardWrites {
            full,
            ..ShardWrites::default()
        };
        for ((shard, value), dirty) in (0..shards).zip(values).zip(dirty) {
            match (dirty, value.is_empty()) {
                (false, _) => {}
                (true, false) => out.put.push((shard, value)),
                (true, true) if !full => out.emptied.push(shard),
                (true, true) => {}
            }
        }
        out
    }

    fn expired(&self, end: Millis) -> bool {
        self.watermark
            .is_some_and(|wm| end.saturating_add(self.spec.lateness) <= wm)
    }

    fn closed(&self, end: Millis) -> bool {
        self.watermark.is_some_and(|wm| end <= wm)
    }

    fn result(&self, w: &WindowState, revision: u32) -> WindowResult {
        result_of(&self.aggregations, w, revision)
    }

    fn on_data(&mut self, r: SensorReading, out: &mut Collector<WindowEvent>) {
        let mut first_expired = None;
        let mut updated = 0;
        self.slots
            .resolve(&r.values, self.empty.0.iter().map(|(n, _)| Some(&**n)));
        for start in self.spec.assign(r.event_time) {
            let Some(end) = start.checked_add(self.spec.size) else {
                continue;
            };
            if self.expired(end) {
                first_expired.get_or_insert((start, end));
                continue;
            }
            let closed = self.closed(end);
            let bucket = self.windows.entry((end, start)).or_default();
            let w = match bucket.get_mut(r.key.as_str()) {
                Some(w) => w,
                None => {
                    self.open = self.open.saturating_add(1);
                    bucket
                        .entry(r.key.clone())
                        .or_insert_with(|| new_state(&self.empty, &r.key, start, end))
                }
            };
            w.count = w.count.saturating_add(1);
            w.changed = true;
            // A window has the operator's fields, by slot; one restored from a checkpoint
            // of another configuration may have others, found by name.
            let empty = &self.empty.0;
            for (i, (field, acc)) in w.fields.0.iter_mut().enumerate() {
                let x = match empty.get(i) {
                    Some((shared, _)) if Arc::ptr_eq(shared, field) => self.slots.get(i, &r.values),
                    _ => r.value(field),
                };
                if let Some(x) = x {
                    acc.add(x);
                }
            }
            updated += 1;
            if closed {
                // Late but within the allowed lateness: re-emit now with the next revision.
                let rev = w.emitted.map_or(0, |e| e.saturating_add(1));
                w.emitted = Some(rev);
                out.data(WindowEvent::Result(result_of(&self.aggregations, w, rev)));
            }
        }
        if let Some((window_start, window_end)) = first_expired {
            out.data(WindowEvent::Late(LateReading {
                watermark: self.watermark.unwrap_or(Millis::MIN),
                reading: r,
                window_start,
                window_end,
                updated_windows: updated,
            }));
        }
    }

    /// Emits (revision 0) every window not emitted yet whose end is `<= upto` (every one for
    /// `None`), in `(end, key, start)` order. Starts after `emitted_through`: windows ending
    /// at or before it are all emitted already (a window created behind the watermark is
    /// emitted when created), so the cost is the windows closed plus one lookup.
    fn emit_closed(&mut self, upto: Option<Millis>, out: &mut Collector<WindowEvent>) {
        let from = match self.emitted_through.and_then(|e| e.checked_add(1)) {
            Some(next) => Bound::Included((next, Millis::MIN)),
            None if self.emitted_through.is_some() => return, // emitted through Millis::MAX
            None => Bound::Unbounded,
        };
        let mut closing: Vec<&mut WindowState> = self
            .windows
            .range_mut((from, Bound::Unbounded))
            .take_while(|((end, _), _)| upto.is_none_or(|wm| *end <= wm))
            .flat_map(|(_, b)| b.values_mut())
            .filter(|w| w.emitted.is_none())
            .collect();
        closing.sort_unstable_by(|a, b| order(a).cmp(&order(b)));
        for w in closing {
            w.emitted = Some(0);
            w.changed = true;
            out.data(WindowEvent::Result(result_of(&self.aggregations, w, 0)));
        }
        if let Some(wm) = upto {
            self.emitted_through = Some(self.emitted_through.map_or(wm, |e| e.max(wm)));
        }
    }

    fn on_watermark(&mut self, wm: Millis, out: &mut Collector<WindowEvent>) {
        if self.watermark.is_some_and(|c| wm <= c) {
            return;
        }
        self.watermark = Some(wm);
        self.emit_closed(Some(wm), out);
        // Purge windows whose lateness has passed (end + lateness <= wm): a prefix in end
        // order, so pop it instead of scanning every open window.
        let lateness = self.spec.lateness;
        while let Some(e) = self.windows.first_entry() {
            if e.key().0.saturating_add(lateness) > wm {
                break;
            }
            let bucket = e.remove();
            self.open = self.open.saturating_sub(bucket.len());
            for key in bucket.into_keys() {
                if let Some(p) = &mut self.purged {
                    if p.len() < MAX_PURGED {
                        p.push(key);
                    } else {
                        self.purged = None;
                    }
                }
            }
        }
    }
}

impl Operator for WindowOperator {
    type In = SensorReading;
    type Out = WindowEvent;

    fn process(&mut self, msg: Message<SensorReading>, out: &mut Collector<WindowEvent>) {
        match msg {
            Message::Data(r) => self.on_data(r, out),
            Message::Watermark(wm) => {
                self.on_watermark(wm, out);
                out.emit(Message::Watermark(wm));
            }
            Message::CheckpointBarrier(id) => out.emit(Message::CheckpointBarrier(id)),
            Message::End => {
                self.emit_closed(None, out);
                out.emit(Message::End);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::run_operator;
    use proptest::strategy::Strategy;

    fn spec(size: Millis, slide: Millis) -> WindowSpec {
        WindowSpec {
            size,
            slide,
            lateness: 0,
        }
    }

    /// The allocating reference `assign` replaced: descending walk, then reversed.
    fn assign_reference(spec: WindowSpec, t: Millis) -> Vec<Millis> {
        let mut starts = Vec::new();
        let Some(last) = t.div_euclid(spec.slide).checked_mul(spec.slide) else {
            return starts;
        };
        let mut s = last;
        loop {
            match s.checked_add(spec.size) {
                Some(end) if end > t => starts.push(s),
                Some(_) => break,
                None => {}
            }
            match s.checked_sub(spec.slide) {
                Some(prev) => s = prev,
                None => break,
            }
        }
        starts.reverse();
        starts
    }

    proptest::proptest! {
        #[test]
        fn assign_matches_the_reference(
            size in 1i64..400,
            slide in 1i64..400,
            t in proptest::prop_oneof![
                proptest::num::i64::ANY,
                (0i64..2_000).prop_map(|d| i64::MAX - d),
                (0i64..2_000).prop_map(|d| i64::MIN + d),
                -5_000i64..5_000,
            ],
        ) {
            let s = WindowSpec { size, slide, lateness: 0 };
            let got: Vec<Millis> = s.assign(t).collect();
            proptest::prop_assert_eq!(s.assign(t).len(), got.len());
            proptest::prop_assert_eq!(got, assign_reference(s, t));
        }
    }

    proptest::proptest! {
        /// Windows built from random readings (any finite values, late revisions) decode to
        /// equal windows from the binary encoding and from the JSON that older checkpoints hold.
        #[test]
        fn window_encodings_round_trip(
            readings in proptest::collection::vec(
                (0usize..3, 0i64..3_000, proptest::num::f64::NORMAL | proptest::num::f64::ZERO),
                1..60,
            ),
            watermark in 0i64..3_000,
        ) {
            let mut w = op(2_000);
            let mut msgs: Vec<Message<SensorReading>> = readings
                .iter()
                .map(|&(k, t, x)| Message::Data(reading(["a", "é", ""][k], t, x)))
                .collect();
            msgs.insert(msgs.len() / 2, Message::Watermark(watermark));
            run_operator(&mut w, msgs);
            for state in w.windows() {
                let mut b = Vec::new();
                state.encode(&mut b);
                proptest::prop_assert_eq!(b[0], WINDOW_ENCODING_V1);
                proptest::prop_assert_eq!(&WindowState::decode(&b)?, state);
                // JSON (older checkpoints) has no infinity (serde_json writes `null`), so a sum
                // that overflowed past f64::MAX exists only in the binary encoding.
                if state.fields.values().all(|f| f.sum.is_finite()) {
                    let json = serde_json::to_vec(state).unwrap();
                    proptest::prop_assert_eq!(&WindowState::decode(&json)?, state);
                }
                // Every strict prefix is an error, not a panic or a different window.
                for n in 0..b.len() {
                    proptest::prop_assert!(WindowState::decode(&b[..n]).is_err());
                }
            }
        }

        /// Every window goes to exactly one shard, its key's, and the shards decode to the
        /// open windows.
        #[test]
        fn shards_hold_every_window_once(
            readings in proptest::collection::vec((0usize..40, 0i64..5_000), 1..80),
            shards in 1u32..9,
        ) {
            let mut w = op(2_000);
            let msgs: Vec<Message<SensorReading>> = readings
                .iter()
                .map(|&(k, t)| Message::Data(reading(&format!("k{k}"), t, 1.0)))
                .collect();
            run_operator(&mut w, msgs);
            let writes = w.take_dirty_shards(shards, true);
            proptest::prop_assert!(writes.full && writes.emptied.is_empty());
            let mut stored = Vec::new();
            for (shard, value) in &writes.put {
                proptest::prop_assert!(*shard < shards);
                for state in decode_shard(value)? {
                    proptest::prop_assert_eq!(shard_of(&state.key, shards), *shard);
                    stored.push(state);
                }
            }
            stored.sort_by(|a, b| order(a).cmp(&order(b)));
            let open: Vec<WindowState> = w.windows().cloned().collect();
            proptest::prop_assert_eq!(stored, open);
            // Nothing changed since: nothing to write.
            let again = w.take_dirty_shards(shards, false);
            proptest::prop_assert!(again.put.is_empty() && again.emptied.is_empty());
        }

        #[test]
        fn arbitrary_shard_bytes_never_panic(
            mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            version in proptest::bool::ANY,
        ) {
            if version && !b.is_empty() {
                b[0] = WINDOW_SHARD_V1;
            }
            let _ = decode_shard(&b);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            version in proptest::bool::ANY,
        ) {
            if version && !b.is_empty() {
                b[0] = WINDOW_ENCODING_V1;
            }
            let _ = WindowState::decode(&b);
        }
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let e = |b: &[u8]| WindowState::decode(b).unwrap_err().to_string();
        assert_eq!(
            e(&[]),
            "binary window: truncated: window version needs more bytes"
        );
        assert_eq!(e(&[9]), "binary window: unknown encoding version 9");
        assert!(e(b"{\"key\":").starts_with("json window: "));
        let mut w = op(0);
        run_operator(&mut w, [Message::Data(reading("a", 10, 1.0))]);
        let mut b = Vec::new();
        w.windows().next().unwrap().encode(&mut b);
        b.push(0);
        assert_eq!(e(&b), "binary window: 1 trailing bytes");
    }

    /// A checkpoint after a window is purged rewrites its shard without it, or lists the
    /// shard as emptied if that was its last window; other shards are left alone.
    #[test]
    fn purged_windows_dirty_their_shard() {
        let mut w = op(0);
        let (a, b) = ("a", "b");
        assert_ne!(
            shard_of(a, 8),
            shard_of(b, 8),
            "pick keys in different shards"
        );
        run_operator(
            &mut w,
            [
                Message::Data(reading(a, 10, 1.0)),
                Message::Data(reading(b, 20, 1.0)),
                Message::Data(reading(b, 1_500, 1.0)),
            ],
        );
        assert_eq!(w.take_dirty_shards(8, true).put.len(), 2);
        // The watermark closes and purges [0, 1000) of both keys; b's [1000, 2000) stays.
        run_operator(&mut w, [Message::Watermark(1_000)]);
        let writes = w.take_dirty_shards(8, false);
        assert!(!writes.full);
        assert_eq!(writes.emptied, [shard_of(a, 8)]);
        assert_eq!(writes.put.len(), 1);
        assert_eq!(writes.put[0].0, shard_of(b, 8));
        let left = decode_shard(&writes.put[0].1).unwrap();
        assert_eq!(
            left.iter()
                .map(|s| (s.key.as_str(), s.start))
                .collect::<Vec<_>>(),
            [(b, 1_000)]
        );
        assert_eq!(
            decode_shard(&[WINDOW_SHARD_V1]).unwrap(),
            Vec::<WindowState>::new()
        );
        assert_eq!(
            decode_shard(&[7]).unwrap_err().to_string(),
            "binary window shard: unknown encoding version 7"
        );
    }

    #[test]
    fn assigns_tumbling_and_hopping() {
        let a = |s: WindowSpec, t| s.assign(t).collect::<Vec<_>>();
        assert_eq!(a(spec(60, 60), 0), [0]);
        assert_eq!(a(spec(60, 60), 59), [0]);
        assert_eq!(a(spec(60, 60), 60), [60]);
        assert_eq!(a(spec(60, 60), -1), [-60]);
        assert_eq!(a(spec(60, 20), 65), [20, 40, 60]);
        assert_eq!(a(spec(60, 20), 60), [20, 40, 60]);
        assert_eq!(a(spec(50, 20), 45), [0, 20, 40]);
        assert_eq!(a(spec(50, 20), 55), [20, 40]);
        assert!(a(spec(60, 60), i64::MAX).is_empty());
        assert!(a(spec(60, 60), i64::MIN).len() <= 1);
        assert_eq!(
            a(spec(60, 7), i64::MAX - 3).len(),
            spec(60, 7).assign(i64::MAX - 3).len()
        );
    }

    fn reading(key: &str, t: Millis, temp: f64) -> SensorReading {
        SensorReading {
            key: key.into(),
            event_time: t,
            values: [
                ("temperature_c".to_string(), temp),
                ("vibration_g".to_string(), 0.1),
            ]
            .into_iter()
            .collect(),
            partition: 0,
            offset: 0,
        }
    }

    fn op(lateness: Millis) -> WindowOperator {
        let mut c = PipelineConfig::default();
        c.window.size_ms = 1000;
        c.window.allowed_lateness_ms = lateness;
        WindowOperator::new(&c)
    }

    fn results(msgs: &[Message<WindowEvent>]) -> Vec<(String, Millis, u32, u64)> {
        msgs.iter()
            .filter_map(|m| match m {
                Message::Data(WindowEvent::Result(r)) => {
                    Some((r.key.clone(), r.start, r.revision, r.count))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn emits_on_watermark_with_aggregates() {
        let mut w = op(0);
        let out = run_operator(
            &mut w,
            [
                Message::Data(reading("a", 10, 20.0)),
                Message::Data(reading("a", 500, 30.0)),
                Message::Data(reading("b", 999, 5.0)),
                Message::Data(reading("a", 1000, 99.0)),
                Message::Watermark(999),
            ],
        );
        assert!(results(&out).is_empty());
        let out = run_operator(&mut w, [Message::Watermark(1000)]);
        assert_eq!(
            results(&out),
            [("a".into(), 0, 0, 2), ("b".into(), 0, 0, 1)]
        );
        let Message::Data(WindowEvent::Result(a)) = &out[0] else {
            panic!("expected a result first: {out:?}");
        };
        assert_eq!(a.columns["temperature_c_avg"], 25.0);
        assert_eq!(a.columns["temperature_c_min"], 20.0);
        assert_eq!(a.columns["temperature_c_max"], 30.0);
        assert_eq!(a.columns["vibration_g_max"], 0.1);
        // Lower-rank percentile: rank floor(0.95 * (2 - 1)) = 0 → 20.
        assert!((a.columns["temperature_c_p95"] - 20.0).abs() <= 0.2);
        assert_eq!(out.last(), Some(&Message::Watermark(1000)));
        // End flushes the rest.
        let out = run_operator(&mut w, [Message::End]);
        assert_eq!(results(&out), [("a".into(), 1000, 0, 1)]);
    }

    /// A field listed in two aggregations has a sketch if either asks for a percentile.
    #[test]
    fn a_percentile_in_a_later_aggregation_of_a_field_is_computed() {
        let mut c = PipelineConfig::default();
        c.window.size_ms = 1000;
        c.aggregations = vec![
            AggregationConfig {
                field: "temperature_c".into(),
                functions: vec![AggFn::Max],
            },
            AggregationConfig {
                field: "temperature_c".into(),
                functions: vec![AggFn::Percentile(crate::config::Percentile::new(50.0))],
            },
        ];
        let mut w = WindowOperator::new(&c);
        let out = run_operator(
            &mut w,
            [Message::Data(reading("a", 10, 20.0)), Message::End],
        );
        let Some(Message::Data(WindowEvent::Result(r))) = out.first() else {
            panic!("expected a result: {out:?}");
        };
        assert_eq!(r.columns["temperature_c_max"], 20.0);
        assert!(
            (r.columns["temperature_c_p50"] - 20.0).abs() <= 0.2,
            "{r:?}"
        );
    }

    /// A window restored from a checkpoint keeps accumulating: the configured fields, and a
    /// field that only an older configuration aggregated (found by name, not by slot).
    #[test]
    fn restored_windows_accumulate_their_own_fields() {
        let mut old = PipelineConfig::default();
        old.window.size_ms = 1000;
        old.aggregations[1].field = "humidity".into();
        let mut before = WindowOperator::new(&old);
        let mut r = reading("a", 10, 20.0);
        r.values = [
            ("temperature_c".to_string(), 20.0),
            ("humidity".to_string(), 40.0),
        ]
        .into_iter()
        .collect();
        run_operator(&mut before, [Message::Data(r)]);
        let stored: Vec<WindowState> = before
            .windows()
            .map(|w| {
                let mut b = Vec::new();
                w.encode(&mut b);
                WindowState::decode(&b).unwrap()
            })
            .collect();

        let mut w = op(0);
        w.restore(stored, None);
        let mut r = reading("a", 20, 30.0);
        r.values = [
            ("humidity".to_string(), 50.0),
            ("temperature_c".to_string(), 30.0),
            ("vibration_g".to_string(), 0.5),
        ]
        .into_iter()
        .collect();
        run_operator(&mut w, [Message::Data(r)]);
        let state = w.windows().next().unwrap();
        let sums: Vec<(&str, u64, f64)> = state
            .fields
            .iter()
            .map(|(n, acc)| (n, acc.count, acc.sum))
            .collect();
        // The restored window has the old fields, both updated; `vibration_g` is not one.
        assert_eq!(sums, [("humidity", 2, 90.0), ("temperature_c", 2, 50.0)]);
        // A new window of the same operator has the configured fields.
        run_operator(&mut w, [Message::Data(reading("b", 30, 7.0))]);
        let b = w.windows().find(|s| s.key == "b").unwrap();
        let names: Vec<&str> = b.fields.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["temperature_c", "vibration_g"]);
        assert_eq!(b.fields.get("vibration_g").map(|a| a.sum), Some(0.1));
    }

    #[test]
    fn late_within_lateness_revises_beyond_goes_to_late_output() {
        let mut w = op(500);
        let out = run_operator(
            &mut w,
            [
                Message::Data(reading("a", 10, 1.0)),
                Message::Watermark(1200),
                Message::Data(reading("a", 20, 2.0)),
                Message::Data(reading("b", 30, 3.0)),
                Message::Watermark(1500),
                Message::Data(reading("a", 40, 4.0)),
            ],
        );
        assert_eq!(
            results(&out),
            [
                ("a".into(), 0, 0, 1),
                ("a".into(), 0, 1, 2),
                ("b".into(), 0, 0, 1)
            ]
        );
        let late: Vec<_> = out
            .iter()
            .filter_map(|m| match m {
                Message::Data(WindowEvent::Late(l)) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(late.len(), 1);
        assert_eq!(
            (
                late[0].reading.event_time,
                late[0].window_end,
                late[0].watermark
            ),
            (40, 1000, 1500)
        );
        assert_eq!(w.windows().count(), 0, "window purged at end + lateness");
    }

    #[test]
    fn hopping_partly_expired_reading_updates_live_windows_and_is_reported() {
        let mut c = PipelineConfig::default();
        c.window.size_ms = 1000;
        c.window.slide_ms = Some(500);
        c.window.allowed_lateness_ms = 0;
        let mut w = WindowOperator::new(&c);
        let out = run_operator(
            &mut w,
            [
                Message::Watermark(1000),
                Message::Data(reading("a", 700, 1.0)),
            ],
        );
        // Windows [0,1000) expired, [500,1500) open.
        assert_eq!(w.windows().count(), 1);
        let Some(Message::Data(WindowEvent::Late(l))) = out.last() else {
            panic!("expected a late report: {out:?}");
        };
        assert_eq!((l.window_start, l.updated_windows), (0, 1));
    }

    #[test]
    fn control_messages_are_forwarded_in_order() {
        let mut w = op(0);
        let out = run_operator(
            &mut w,
            [
                Message::Data(reading("a", 10, 1.0)),
                Message::CheckpointBarrier(crate::message::CheckpointId(1)),
                Message::Watermark(1000),
                Message::End,
            ],
        );
        assert!(matches!(out[0], Message::CheckpointBarrier(_)));
        assert!(matches!(out[1], Message::Data(WindowEvent::Result(_))));
        assert_eq!(out[2], Message::Watermark(1000));
        assert_eq!(out[3], Message::End);
    }
}
