//! Event-time windows (tumbling and hopping) with aggregations, allowed lateness, revisions.
//!
//! A window `[start, end)` is emitted (revision 0) when the watermark reaches `end`. Until the
//! watermark reaches `end + allowed_lateness`, a late reading still updates it and re-emits it
//! immediately with the next revision; after that its state is dropped and readings for it go
//! to the late-data output. A reading of a hopping window whose windows have partly expired
//! updates the live ones and is also reported late (so nothing is dropped silently).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::config::{AggFn, AggregationConfig, PipelineConfig};
use crate::message::{Collector, Message, Operator};
use crate::num::u64_to_f64;
use crate::parse::SensorReading;
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
    /// Start times of every window containing `t`, ascending. Empty only if `t` is so close
    /// to the ends of the `i64` range that a window bound would overflow.
    pub fn assign(&self, t: Millis) -> Vec<Millis> {
        let mut starts = Vec::new();
        let Some(last) = t.div_euclid(self.slide).checked_mul(self.slide) else {
            return starts;
        };
        let mut s = last;
        loop {
            match s.checked_add(self.size) {
                Some(end) if end > t => starts.push(s),
                Some(_) => break,
                None => {}
            }
            match s.checked_sub(self.slide) {
                Some(prev) => s = prev,
                None => break,
            }
        }
        starts.reverse();
        starts
    }
}

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
    pub fields: BTreeMap<String, FieldAcc>,
    /// Revision of the last emitted result, `None` before the first emission.
    pub emitted: Option<u32>,
    /// Changed since [`WindowOperator::take_changed`] last saw it (not stored: a restored
    /// window is what the store holds).
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

/// A fresh window of `key` with empty accumulators for every aggregated field.
fn new_state(
    aggregations: &[AggregationConfig],
    sketch_alpha: f64,
    key: &str,
    start: Millis,
    end: Millis,
) -> WindowState {
    let mut fields = BTreeMap::new();
    for a in aggregations {
        let wants_sketch = a
            .functions
            .iter()
            .any(|f| matches!(f, AggFn::Percentile(_)));
        fields
            .entry(a.field.clone())
            .or_insert_with(|| FieldAcc::new(wants_sketch.then_some(sketch_alpha)));
    }
    WindowState {
        key: key.to_owned(),
        start,
        end,
        count: 0,
        fields,
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

/// The keyed event-time window operator.
#[derive(Debug, Clone)]
pub struct WindowOperator {
    spec: WindowSpec,
    aggregations: Vec<AggregationConfig>,
    sketch_alpha: f64,
    /// Keyed by `(end, key, start)` so closing and purging scan a prefix in end order.
    windows: BTreeMap<(Millis, String, Millis), WindowState>,
    watermark: Option<Millis>,
    /// Every window with `end <= emitted_through` has been emitted (`emitted.is_some()`), so
    /// closing on a watermark advance starts after it instead of at the first window. `None`
    /// (a new or restored operator) means no such bound is known: the next close scans from
    /// the first window, once.
    emitted_through: Option<Millis>,
    /// `(key, start)` of the windows purged since [`WindowOperator::take_purged`] was last
    /// called, so a checkpoint deletes exactly those; `None` once more were purged than
    /// [`MAX_PURGED`] (the caller then scans its store instead).
    purged: Option<Vec<(String, Millis)>>,
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
            sketch_alpha: config.sketch_relative_accuracy,
            windows: BTreeMap::new(),
            watermark: None,
            emitted_through: None,
            purged: Some(Vec::new()),
        }
    }

    /// Open windows (for snapshots and queries), in `(end, key, start)` order.
    pub fn windows(&self) -> impl Iterator<Item = &WindowState> {
        self.windows.values()
    }

    /// The current partial result of every window of `key` that the watermark has not
    /// closed yet (never emitted) and whose start is in `[from, to)`, by start. Walks every
    /// window held (they are ordered by end, not key): a query costs one pass, no copy of the
    /// state.
    pub fn open_results(&self, key: &str, from: Millis, to: Millis) -> Vec<WindowResult> {
        let mut out: Vec<WindowResult> = self
            .windows
            .values()
            .filter(|w| w.emitted.is_none() && w.key == key && (from..to).contains(&w.start))
            .map(|w| self.result(w, 0))
            .collect();
        out.sort_by_key(|r| (r.start, r.end));
        out
    }

    /// Restores open windows and the watermark from a snapshot.
    pub fn restore(&mut self, windows: Vec<WindowState>, watermark: Option<Millis>) {
        self.windows = windows
            .into_iter()
            .map(|w| ((w.end, w.key.clone(), w.start), w))
            .collect();
        self.watermark = watermark;
        self.emitted_through = None;
    }

    /// Calls `f` with every window changed (created, updated or emitted) since the last call,
    /// or with every window if `all`, in `(end, key, start)` order, and clears the marks: a
    /// checkpoint writes only what changed since the previous one. Costs one pass over the
    /// open windows' marks plus `f` for the changed ones.
    pub fn take_changed(&mut self, all: bool, mut f: impl FnMut(&WindowState)) {
        for w in self.windows.values_mut() {
            if all || w.changed {
                f(w);
            }
            w.changed = false;
        }
    }

    /// The `(key, start)` of every window purged since the last call, or `None` if too many
    /// were to remember them (then some purged windows are not listed).
    pub fn take_purged(&mut self) -> Option<Vec<(String, Millis)>> {
        self.purged.replace(Vec::new())
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
        for start in self.spec.assign(r.event_time) {
            let Some(end) = start.checked_add(self.spec.size) else {
                continue;
            };
            if self.expired(end) {
                first_expired.get_or_insert((start, end));
                continue;
            }
            let closed = self.closed(end);
            let w = match self.windows.entry((end, r.key.clone(), start)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(new_state(
                    &self.aggregations,
                    self.sketch_alpha,
                    &r.key,
                    start,
                    end,
                )),
            };
            w.count = w.count.saturating_add(1);
            w.changed = true;
            for (field, acc) in &mut w.fields {
                if let Some(x) = r.value(field) {
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
            Some(next) => Bound::Included((next, String::new(), Millis::MIN)),
            None if self.emitted_through.is_some() => return, // emitted through Millis::MAX
            None => Bound::Unbounded,
        };
        for (_, w) in self.windows.range_mut((from, Bound::Unbounded)) {
            if upto.is_some_and(|wm| w.end > wm) {
                break;
            }
            if w.emitted.is_none() {
                w.emitted = Some(0);
                w.changed = true;
                out.data(WindowEvent::Result(result_of(&self.aggregations, w, 0)));
            }
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
            let w = e.remove();
            if let Some(p) = &mut self.purged {
                if p.len() < MAX_PURGED {
                    p.push((w.key, w.start));
                } else {
                    self.purged = None;
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

    fn spec(size: Millis, slide: Millis) -> WindowSpec {
        WindowSpec {
            size,
            slide,
            lateness: 0,
        }
    }

    #[test]
    fn assigns_tumbling_and_hopping() {
        assert_eq!(spec(60, 60).assign(0), [0]);
        assert_eq!(spec(60, 60).assign(59), [0]);
        assert_eq!(spec(60, 60).assign(60), [60]);
        assert_eq!(spec(60, 60).assign(-1), [-60]);
        assert_eq!(spec(60, 20).assign(65), [20, 40, 60]);
        assert_eq!(spec(60, 20).assign(60), [20, 40, 60]);
        assert_eq!(spec(50, 20).assign(45), [0, 20, 40]);
        assert_eq!(spec(50, 20).assign(55), [20, 40]);
        assert!(spec(60, 60).assign(i64::MAX).is_empty());
        assert!(spec(60, 60).assign(i64::MIN).len() <= 1);
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
