//! Anomaly rules: threshold with hysteresis, z-score against a per-key EWMA baseline, and
//! silence timers driven by the watermark (event time) or processing time.
//!
//! Rules see every valid reading in arrival order, including late ones (a late 95 °C reading
//! is still an overheating motor), so alerts are raised without waiting for the watermark.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Reader, StoredDecodeError};
use crate::config::{PipelineConfig, RuleConfig, SilenceRule, ThresholdRule, ZScoreRule};
use crate::message::{Collector, Message, Operator};
use crate::num::Fnv64;
use crate::parse::{FieldSlots, SensorReading};
use crate::time::Millis;

/// An alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Deterministic id: a stable hash of pipeline, rule, key and event time, so the same
    /// input yields the same id on every run and replay.
    pub id: String,
    /// Rule name.
    pub rule: String,
    /// `threshold`, `zscore` or `silence`.
    pub kind: &'static str,
    /// Key (device).
    pub key: String,
    /// The reading's value (threshold, z-score) or the silence length in ms.
    pub value: f64,
    /// Event time the alert is about (the reading's; for silence, last reading + silence).
    pub event_time: Millis,
    /// Rule-specific numbers (threshold, score, mean, last_seen...).
    pub detail: BTreeMap<String, f64>,
}

/// The deterministic alert id.
pub fn alert_id(pipeline: &str, rule: &str, key: &str, event_time: Millis) -> String {
    let h = Fnv64::default()
        .field(pipeline.as_bytes())
        .field(rule.as_bytes())
        .field(key.as_bytes())
        .field(&event_time.to_le_bytes())
        .finish();
    format!("{h:016x}")
}

/// Exponentially weighted mean and variance of one key's field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Readings seen.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Variance.
    pub var: f64,
    /// Whether the rule is currently firing (hysteresis).
    pub active: bool,
}

impl Ewma {
    /// Folds in `x` with weight `alpha` (West's incremental EWMA variance).
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
    }

    /// `|x - mean| / stddev`, 0 while the variance is 0.
    pub fn score(&self, x: f64) -> f64 {
        let sd = self.var.sqrt();
        if sd > 0.0 && sd.is_finite() {
            ((x - self.mean) / sd).abs()
        } else {
            0.0
        }
    }
}

/// Silence bookkeeping of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Highest event time seen.
    pub last_event: Millis,
    /// Processing time of the last reading.
    pub last_arrival: Millis,
    /// Whether the alert for `last_event` has fired.
    pub fired: bool,
}

/// Serializable state of one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleState {
    /// Key → firing.
    Threshold {
        /// Keys currently above the threshold (hysteresis not yet cleared).
        active: BTreeSet<String>,
    },
    /// Key → baseline.
    Zscore {
        /// Baselines.
        baselines: BTreeMap<String, Ewma>,
    },
    /// Key → silence bookkeeping.
    Silence {
        /// Per key.
        keys: BTreeMap<String, Silence>,
    },
}

/// Version byte of the binary rule-state encoding ([`RuleState::encode`]). Rule state that
/// checkpoints held before it is JSON, which starts with `{`.
pub const RULE_ENCODING_V1: u8 = 1;

const KIND_THRESHOLD: u8 = 0;
const KIND_ZSCORE: u8 = 1;
const KIND_SILENCE: u8 = 2;

/// The binary encoding of one rule's state: version, kind, entry count, then each entry's
/// key and value, keys in increasing order. The one writer behind [`RuleState::encode`] and
/// [`RuleEngine::encoded_states`] (which encodes straight from its hash maps), so both give
/// the same bytes for the same state.
fn encode_entries<'a, V>(
    out: &mut Vec<u8>,
    kind: u8,
    entries: impl ExactSizeIterator<Item = (&'a str, V)>,
    put: impl Fn(&mut Vec<u8>, V),
) {
    out.push(RULE_ENCODING_V1);
    out.push(kind);
    codec::put_u64(out, u64::try_from(entries.len()).unwrap_or(u64::MAX));
    for (key, v) in entries {
        codec::put_str(out, key);
        put(out, v);
    }
}

fn put_ewma(out: &mut Vec<u8>, e: &Ewma) {
    codec::put_u64(out, e.n);
    codec::put_f64(out, e.mean);
    codec::put_f64(out, e.var);
    codec::put_bool(out, e.active);
}

fn put_silence(out: &mut Vec<u8>, s: &Silence) {
    codec::put_i64(out, s.last_event);
    codec::put_i64(out, s.last_arrival);
    codec::put_bool(out, s.fired);
}

/// Reads `n` entries of increasing keys, each value with `value`.
fn read_entries<V>(
    r: &mut Reader<'_>,
    mut value: impl FnMut(&mut Reader<'_>) -> Result<V, DecodeError>,
) -> Result<BTreeMap<String, V>, DecodeError> {
    let n = r.len("rule entries")?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let key = r.str("rule key")?;
        if map
            .last_key_value()
            .is_some_and(|(last, _): (&String, _)| last.as_str() >= key)
        {
            return Err(DecodeError::Invalid("rule key order"));
        }
        let v = value(r)?;
        map.insert(key.to_owned(), v);
    }
    Ok(map)
}

impl RuleState {
    /// Appends the state in the binary checkpoint encoding (version [`RULE_ENCODING_V1`]):
    /// kind, then each key with its value (`f64`s as bits). Decodes to an equal state.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RuleState::Threshold { active } => encode_entries(
                out,
                KIND_THRESHOLD,
                active.iter().map(|k| (k.as_str(), ())),
                |_, ()| {},
            ),
            RuleState::Zscore { baselines } => encode_entries(
                out,
                KIND_ZSCORE,
                baselines.iter().map(|(k, v)| (k.as_str(), v)),
                put_ewma,
            ),
            RuleState::Silence { keys } => encode_entries(
                out,
                KIND_SILENCE,
                keys.iter().map(|(k, v)| (k.as_str(), v)),
                put_silence,
            ),
        }
    }

    /// Reads stored rule state: the binary encoding, or the JSON of older checkpoints (first
    /// byte `{`). Bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoredDecodeError> {
        codec::decode_stored(bytes, "rule state", Self::decode_binary)
    }

    fn decode_binary(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.u8("rule state version")? {
            RULE_ENCODING_V1 => {}
            v => return Err(DecodeError::UnknownVersion(v)),
        }
        let state = match r.u8("rule kind")? {
            KIND_THRESHOLD => RuleState::Threshold {
                active: read_entries(&mut r, |_| Ok(()))?.into_keys().collect(),
            },
            KIND_ZSCORE => RuleState::Zscore {
                baselines: read_entries(&mut r, |r| {
                    Ok(Ewma {
                        n: r.u64("ewma count")?,
                        mean: r.f64("ewma mean")?,
                        var: r.f64("ewma variance")?,
                        active: r.bool("ewma active")?,
                    })
                })?,
            },
            KIND_SILENCE => RuleState::Silence {
                keys: read_entries(&mut r, |r| {
                    Ok(Silence {
                        last_event: r.i64("silence last event")?,
                        last_arrival: r.i64("silence last arrival")?,
                        fired: r.bool("silence fired")?,
                    })
                })?,
            },
            _ => return Err(DecodeError::Invalid("rule kind")),
        };
        r.finish()?;
        Ok(state)
    }
}

/// A rule and its per-key state, indexed by the engine's key ids ([`KeyIds`]): a reading's
/// key is hashed once per reading for all rules, and each rule finds its state by index. No
/// output depends on the ids (snapshots sort keys by name into [`RuleState`]'s ordered maps;
/// timers due together fire sorted by key name).
#[derive(Debug, Clone)]
enum Rule {
    /// `active[id]`: the key is above the threshold (hysteresis not yet cleared).
    Threshold(ThresholdRule, Vec<bool>),
    /// `baselines[id]`: the key's baseline, once it had a value of the rule's field.
    ZScore(ZScoreRule, Vec<Option<Ewma>>),
    Silence {
        cfg: SilenceRule,
        /// `states[id]`, once the key had a reading.
        states: Vec<Option<Silence>>,
        /// Deadlines in event time: `last_event + after_ms` of each key not fired.
        event_timers: Timers,
        /// Deadlines in processing time: `last_arrival + processing_time_after_ms`.
        pt_timers: Timers,
    },
}

impl Rule {
    /// The reading field the rule reads (none for silence).
    fn field(&self) -> Option<&str> {
        match self {
            Rule::Threshold(c, _) => Some(&c.field),
            Rule::ZScore(c, _) => Some(&c.field),
            Rule::Silence { .. } => None,
        }
    }
}

/// Pending silence deadlines `(at, key id)`, earliest first, pruned lazily: a reading that
/// moves a key's deadline pushes the new one and leaves the old entry in place, and an entry
/// counts only while it is still its key's deadline and the key has not fired ([`live`]).
/// So a reading costs one push onto a heap (O(1) when deadlines arrive in time order, as
/// they mostly do) instead of a remove and an insert in an ordered set. Stale entries are
/// dropped when they come due, or all at once when they outnumber the keys
/// ([`Timers::push`]), which bounds the heap to about twice the keys.
#[derive(Debug, Clone, Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Millis, usize)>>,
}

/// Whether the deadline `at` of key `id` is still pending: its silence state has not fired
/// and `deadline` of that state is `at`.
fn live(
    states: &[Option<Silence>],
    id: usize,
    at: Millis,
    deadline: impl Fn(&Silence) -> Millis,
) -> bool {
    matches!(states.get(id), Some(Some(s)) if !s.fired && deadline(s) == at)
}

impl Timers {
    /// Adds deadline `at` of key `id`; when the heap holds more than about twice as many
    /// entries as there are keys (`keys`), drops every stale one (`is_live` says which).
    fn push(
        &mut self,
        at: Millis,
        id: usize,
        keys: usize,
        is_live: impl Fn(Millis, usize) -> bool,
    ) {
        self.heap.push(Reverse((at, id)));
        if self.heap.len() > keys.saturating_mul(2).saturating_add(1024) {
            self.heap.retain(|Reverse((at, id))| is_live(*at, *id));
        }
    }

    /// Removes and returns the entries due at `at` (stale ones included).
    fn pop_due(&mut self, at: Millis) -> Vec<(Millis, usize)> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse((t, _))| *t <= at) {
            if let Some(Reverse(e)) = self.heap.pop() {
                due.push(e);
            }
        }
        due
    }

    fn clear(&mut self) {
        self.heap.clear();
    }
}

/// The engine's keys, each with a small id (its index, in order of first reading) that the
/// rules index their state with and the timers hold instead of the key: one hash lookup per
/// reading, and no key string is cloned or compared after a key's first reading. Ids are
/// not stored (a restore numbers keys in key order).
#[derive(Debug, Clone, Default)]
struct KeyIds {
    ids: crate::num::KeyMap<usize>,
    names: Vec<String>,
}

impl KeyIds {
    /// The id of `key`, a new one if it is new.
    fn id_or_insert(&mut self, key: &str) -> usize {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.names.len();
        self.ids.insert(key.to_owned(), id);
        self.names.push(key.to_owned());
        id
    }

    fn name(&self, id: usize) -> &str {
        self.names.get(id).map_or("", String::as_str)
    }

    /// Every id, by key name.
    fn sorted(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.names.len()).collect();
        v.sort_unstable_by(|&a, &b| self.name(a).cmp(self.name(b)));
        v
    }
}

/// The state at `id`, growing `v` with defaults up to it.
fn slot<T: Default>(v: &mut Vec<T>, id: usize) -> &mut T {
    if v.len() <= id {
        // Ids are indexes of a `Vec` of names: `id + 1` cannot overflow.
        v.resize_with(id + 1, T::default);
    }
    &mut v[id]
}

/// `(key, state)` of every id holding a state, by key name (`order` from [`KeyIds::sorted`]).
fn entries<'a, T, V: 'a>(
    keys: &'a KeyIds,
    order: &[usize],
    states: &'a [T],
    get: impl Fn(&'a T) -> Option<V>,
) -> Vec<(&'a str, V)> {
    order
        .iter()
        .filter_map(|&id| Some((keys.name(id), get(states.get(id)?)?)))
        .collect()
}

/// Evaluates every configured rule; an [`Operator`] from readings to alerts.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    pipeline: String,
    rules: Vec<Rule>,
    /// Where each rule's field is in a reading's values (`rules[i]`'s at `i`).
    fields: FieldSlots,
    keys: KeyIds,
    now: Millis,
    watermark: Option<Millis>,
}

impl RuleEngine {
    /// The rules of `config`, with empty state.
    pub fn new(config: &PipelineConfig) -> Self {
        let rules = config
            .rules
            .iter()
            .map(|r| match r {
                RuleConfig::Threshold(t) => Rule::Threshold(t.clone(), Vec::new()),
                RuleConfig::ZScore(z) => Rule::ZScore(z.clone(), Vec::new()),
                RuleConfig::Silence(s) => Rule::Silence {
                    cfg: s.clone(),
                    states: Vec::new(),
                    event_timers: Timers::default(),
                    pt_timers: Timers::default(),
                },
            })
            .collect();
        Self {
            pipeline: config.name.clone(),
            rules,
            fields: FieldSlots::default(),
            keys: KeyIds::default(),
            now: Millis::MIN,
            watermark: None,
        }
    }

    /// State of every rule, by rule name (per-key state sorted by key).
    pub fn snapshot(&self) -> Vec<(String, RuleState)> {
        let keys = &self.keys;
        let owned = |id: usize| keys.name(id).to_owned();
        self.rules
            .iter()
            .map(|r| match r {
                Rule::Threshold(c, a) => (
                    c.name.clone(),
                    RuleState::Threshold {
                        active: a
                            .iter()
                            .enumerate()
                            .filter(|&(_, &on)| on)
                            .map(|(id, _)| owned(id))
                            .collect(),
                    },
                ),
                Rule::ZScore(c, b) => (
                    c.name.clone(),
                    RuleState::Zscore {
                        baselines: b
                            .iter()
                            .enumerate()
                            .filter_map(|(id, e)| Some((owned(id), (*e)?)))
                            .collect(),
                    },
                ),
                Rule::Silence { cfg, states, .. } => (
                    cfg.name.clone(),
                    RuleState::Silence {
                        keys: states
                            .iter()
                            .enumerate()
                            .filter_map(|(id, s)| Some((owned(id), (*s)?)))
                            .collect(),
                    },
                ),
            })
            .collect()
    }

    /// Each rule's state in the binary checkpoint encoding, by rule name: the bytes
    /// [`RuleState::encode`] gives for [`RuleEngine::snapshot`], written straight from the
    /// per-id state (keys sorted once for all rules, none cloned).
    pub fn encoded_states(&self) -> Vec<(&str, Vec<u8>)> {
        let order = self.keys.sorted();
        let keys = &self.keys;
        self.rules
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                let name = match r {
                    Rule::Threshold(c, a) => {
                        let e = entries(keys, &order, a, |&on| on.then_some(()));
                        encode_entries(&mut out, KIND_THRESHOLD, e.into_iter(), |_, ()| {});
                        &c.name
                    }
                    Rule::ZScore(c, b) => {
                        let e = entries(keys, &order, b, Option::as_ref);
                        encode_entries(&mut out, KIND_ZSCORE, e.into_iter(), put_ewma);
                        &c.name
                    }
                    Rule::Silence { cfg, states, .. } => {
                        let e = entries(keys, &order, states, Option::as_ref);
                        encode_entries(&mut out, KIND_SILENCE, e.into_iter(), put_silence);
                        &cfg.name
                    }
                };
                (name.as_str(), out)
            })
            .collect()
    }

    /// Restores rule state by name (state of rules no longer configured is ignored; a rule
    /// whose kind changed starts empty) and the processing time and watermark.
    pub fn restore(
        &mut self,
        states: BTreeMap<String, RuleState>,
        now: Millis,
        watermark: Option<Millis>,
    ) {
        self.now = now;
        self.watermark = watermark;
        // Keys numbered in key order.
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for s in states.values() {
            match s {
                RuleState::Threshold { active } => names.extend(active.iter().map(String::as_str)),
                RuleState::Zscore { baselines } => {
                    names.extend(baselines.keys().map(String::as_str));
                }
                RuleState::Silence { keys } => names.extend(keys.keys().map(String::as_str)),
            }
        }
        self.keys = KeyIds::default();
        for name in names {
            self.keys.id_or_insert(name);
        }
        let keys = &mut self.keys;
        for r in &mut self.rules {
            match r {
                Rule::Threshold(c, a) => {
                    a.clear();
                    if let Some(RuleState::Threshold { active }) = states.get(&c.name) {
                        for k in active {
                            *slot(a, keys.id_or_insert(k)) = true;
                        }
                    }
                }
                Rule::ZScore(c, b) => {
                    b.clear();
                    if let Some(RuleState::Zscore { baselines }) = states.get(&c.name) {
                        for (k, e) in baselines {
                            *slot(b, keys.id_or_insert(k)) = Some(*e);
                        }
                    }
                }
                Rule::Silence {
                    cfg,
                    states: per_key,
                    event_timers,
                    pt_timers,
                } => {
                    per_key.clear();
                    event_timers.clear();
                    pt_timers.clear();
                    if let Some(RuleState::Silence { keys: stored }) = states.get(&cfg.name) {
                        for (k, s) in stored {
                            let id = keys.id_or_insert(k);
                            *slot(per_key, id) = Some(*s);
                            if !s.fired {
                                let e = s.last_event.saturating_add(cfg.after_ms);
                                event_timers.heap.push(Reverse((e, id)));
                                if let Some(p) = cfg.processing_time_after_ms {
                                    let at = s.last_arrival.saturating_add(p);
                                    pt_timers.heap.push(Reverse((at, id)));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The processing time last seen.
    pub fn now(&self) -> Millis {
        self.now
    }

    fn alert(
        &self,
        rule: &str,
        kind: &'static str,
        key: &str,
        value: f64,
        event_time: Millis,
        detail: &[(&str, f64)],
    ) -> Alert {
        Alert {
            id: alert_id(&self.pipeline, rule, key, event_time),
            rule: rule.to_owned(),
            kind,
            key: key.to_owned(),
            value,
            event_time,
            detail: detail.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    /// Evaluates every rule on one reading (the [`Operator`]'s `Data`, by reference, so the
    /// caller need not clone the reading).
    pub fn on_reading(&mut self, r: &SensorReading, out: &mut Collector<Alert>) {
        self.on_data(r, out);
    }

    fn on_data(&mut self, r: &SensorReading, out: &mut Collector<Alert>) {
        let now = self.now;
        let watermark = self.watermark;
        let id = self.keys.id_or_insert(&r.key);
        let mut alerts = Vec::new();
        self.fields
            .resolve(&r.values, self.rules.iter().map(Rule::field));
        for (i, rule) in self.rules.iter_mut().enumerate() {
            match rule {
                Rule::Threshold(c, active) => {
                    let Some(x) = self.fields.get(i, &r.values) else {
                        continue;
                    };
                    let a = slot(active, id);
                    if *a {
                        if x < c.above - c.hysteresis {
                            *a = false;
                        }
                    } else if x > c.above {
                        *a = true;
                        alerts.push((c.name.clone(), "threshold", x, vec![("threshold", c.above)]));
                    }
                }
                Rule::ZScore(c, baselines) => {
                    let Some(x) = self.fields.get(i, &r.values) else {
                        continue;
                    };
                    let b = slot(baselines, id).get_or_insert_with(Ewma::default);
                    if b.n >= c.warmup {
                        let z = b.score(x);
                        if b.active {
                            if z < c.clear_below {
                                b.active = false;
                            }
                        } else if z > c.threshold {
                            b.active = true;
                            alerts.push((
                                c.name.clone(),
                                "zscore",
                                x,
                                vec![("score", z), ("mean", b.mean), ("stddev", b.var.sqrt())],
                            ));
                        }
                    }
                    b.update(x, c.alpha);
                }
                Rule::Silence {
                    cfg,
                    states,
                    event_timers,
                    pt_timers,
                } => {
                    let t = r.event_time;
                    let after = cfg.after_ms;
                    let pt_after = cfg.processing_time_after_ms;
                    let state = slot(states, id);
                    // The deadlines pending before this reading, if any: a deadline this
                    // reading leaves unchanged is still in the heap and not pushed again.
                    let pending = match state {
                        Some(s) if !s.fired => Some((
                            s.last_event.saturating_add(after),
                            pt_after.map(|p| s.last_arrival.saturating_add(p)),
                        )),
                        _ => None,
                    };
                    let s = state.get_or_insert(Silence {
                        last_event: t,
                        last_arrival: now,
                        fired: false,
                    });
                    if t > s.last_event {
                        s.last_event = t;
                        // Progress ends the silence, unless this reading is itself so old that
                        // the watermark is already past its deadline: then the key is still
                        // silent and the episode that already alerted goes on.
                        let still_silent =
                            watermark.is_some_and(|wm| t.saturating_add(cfg.after_ms) <= wm);
                        if !(s.fired && still_silent) {
                            s.fired = false;
                        }
                    }
                    s.last_arrival = now;
                    if !s.fired {
                        let e = s.last_event.saturating_add(after);
                        let pt = pt_after.map(|p| now.saturating_add(p));
                        let st: &[Option<Silence>] = states;
                        if pending.is_none_or(|(old, _)| old != e) {
                            event_timers.push(e, id, st.len(), |at, id| {
                                live(st, id, at, |s| s.last_event.saturating_add(after))
                            });
                        }
                        let moved = |at: &Millis| pending.is_none_or(|(_, old)| old != Some(*at));
                        if let Some(at) = pt.filter(moved) {
                            let p = pt_after.unwrap_or(0);
                            pt_timers.push(at, id, st.len(), |at, id| {
                                live(st, id, at, |s| s.last_arrival.saturating_add(p))
                            });
                        }
                    }
                }
            }
        }
        for (rule, kind, x, detail) in alerts {
            let a = self.alert(&rule, kind, &r.key, x, r.event_time, &detail);
            out.data(a);
        }
    }

    /// Fires silence timers due at event time `wm` (`event = true`) or processing time.
    fn fire_silence(&mut self, at: Millis, event: bool, out: &mut Collector<Alert>) {
        let mut alerts = Vec::new();
        let keys = &self.keys;
        for rule in &mut self.rules {
            let Rule::Silence {
                cfg,
                states,
                event_timers,
                pt_timers,
            } = rule
            else {
                continue;
            };
            let after = cfg.after_ms;
            let pt_after = cfg.processing_time_after_ms;
            // The deadline an entry of this clock stands for.
            let deadline = |s: &Silence| {
                if event {
                    s.last_event.saturating_add(after)
                } else {
                    s.last_arrival.saturating_add(pt_after.unwrap_or(0))
                }
            };
            let timers = if event {
                &mut *event_timers
            } else {
                &mut *pt_timers
            };
            let mut due = timers.pop_due(at);
            // Only entries still pending; `live` is checked again below because a deadline
            // may be in the heap twice (pushed again after the key fired and woke up).
            let st: &[Option<Silence>] = states;
            due.retain(|&(t, id)| live(st, id, t, deadline));
            // In (time, key) order: ids are numbered by first reading, which a restore does
            // not keep, so the alerts' order must not follow them.
            due.sort_by(|a, b| (a.0, keys.name(a.1)).cmp(&(b.0, keys.name(b.1))));
            for (t, id) in due {
                if !live(states, id, t, deadline) {
                    continue;
                }
                let Some(Some(s)) = states.get_mut(id) else {
                    continue;
                };
                // Both clocks describe the same silence episode: the other clock's entry
                // is stale from now on (`live` needs `!fired`).
                s.fired = true;
                let f = crate::num::u64_to_f64;
                let after = f(u64::try_from(cfg.after_ms).unwrap_or(0));
                alerts.push((
                    cfg.name.clone(),
                    keys.name(id).to_owned(),
                    after,
                    s.last_event.saturating_add(cfg.after_ms),
                    s.last_event,
                ));
            }
        }
        for (rule, key, value, t, last) in alerts {
            let last_f = crate::num::i64_to_f64(last);
            let a = self.alert(
                &rule,
                "silence",
                &key,
                value,
                t,
                &[("last_seen_ms", last_f)],
            );
            out.data(a);
        }
    }

    /// Advances processing time to `now` and fires processing-time silence timers.
    pub fn on_processing_time(&mut self, now: Millis, out: &mut Collector<Alert>) {
        if now > self.now {
            self.now = now;
        }
        self.fire_silence(self.now, false, out);
    }
}

impl Operator for RuleEngine {
    type In = SensorReading;
    type Out = Alert;

    fn process(&mut self, msg: Message<SensorReading>, out: &mut Collector<Alert>) {
        match msg {
            Message::Data(r) => self.on_data(&r, out),
            Message::Watermark(wm) => {
                if self.watermark.is_none_or(|c| wm > c) {
                    self.watermark = Some(wm);
                    self.fire_silence(wm, true, out);
                }
                out.emit(Message::Watermark(wm));
            }
            Message::CheckpointBarrier(id) => out.emit(Message::CheckpointBarrier(id)),
            // End is not the passage of time: silence timers do not fire.
            Message::End => out.emit(Message::End),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-dé]{0,4}").expect("regex")
    }

    fn state() -> impl Strategy<Value = RuleState> {
        let ewma = (any::<u64>(), any::<f64>(), any::<f64>(), any::<bool>()).prop_map(
            |(n, mean, var, active)| Ewma {
                n,
                mean,
                var,
                active,
            },
        );
        let silence = (any::<i64>(), any::<i64>(), any::<bool>()).prop_map(
            |(last_event, last_arrival, fired)| Silence {
                last_event,
                last_arrival,
                fired,
            },
        );
        prop_oneof![
            proptest::collection::btree_set(key(), 0..6)
                .prop_map(|active| RuleState::Threshold { active }),
            proptest::collection::btree_map(key(), ewma, 0..6)
                .prop_map(|baselines| RuleState::Zscore { baselines }),
            proptest::collection::btree_map(key(), silence, 0..6)
                .prop_map(|keys| RuleState::Silence { keys }),
        ]
    }

    /// Equal with `f64`s compared bit for bit (NaN included).
    fn same(a: &RuleState, b: &RuleState) -> bool {
        let mut x = Vec::new();
        let mut y = Vec::new();
        a.encode(&mut x);
        b.encode(&mut y);
        x == y && std::mem::discriminant(a) == std::mem::discriminant(b)
    }

    proptest! {
        /// The binary encoding decodes to the same state, `f64`s bit for bit; the JSON of
        /// older checkpoints still decodes.
        #[test]
        fn rule_state_round_trips(s in state()) {
            let mut b = Vec::new();
            s.encode(&mut b);
            let back = RuleState::decode(&b).unwrap();
            prop_assert!(same(&back, &s), "{back:?} != {s:?}");
            if let Ok(json) = serde_json::to_vec(&s) {
                // JSON has no NaN or infinities: only finite states are written that way.
                if let Ok(old) = RuleState::decode(&json) {
                    prop_assert_eq!(old, s);
                }
            }
        }

        /// Arbitrary bytes never panic: a state or an error.
        #[test]
        fn rule_state_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RuleState::decode(&b);
        }
    }

    /// The engine encodes from its hash maps exactly what encoding its sorted snapshot gives.
    #[test]
    fn encoded_states_are_the_snapshots_encoding() {
        let config = PipelineConfig {
            rules: serde_json::from_str(
                r#"[{"kind":"threshold","name":"hot","field":"temperature_c","above":80,"hysteresis":5},
                    {"kind":"zscore","name":"z","field":"temperature_c","warmup":2},
                    {"kind":"silence","name":"quiet","after_ms":1000}]"#,
            )
            .unwrap(),
            ..PipelineConfig::default()
        };
        config.validate().unwrap();
        let mut engine = RuleEngine::new(&config);
        let mut out = Collector::new();
        for (i, key) in ["d", "b", "é", "a", "c", "b", "a"].into_iter().enumerate() {
            let t = i64::try_from(i).unwrap();
            let reading = SensorReading {
                key: key.into(),
                event_time: 1_000 * t,
                values: [(
                    "temperature_c".into(),
                    70.0 + 5.0 * f64::from(i32::try_from(t % 4).unwrap()),
                )]
                .into_iter()
                .collect(),
                partition: 0,
                offset: t,
            };
            engine.process(Message::Data(reading), &mut out);
        }
        let snapshot = engine.snapshot();
        let encoded = engine.encoded_states();
        assert_eq!(snapshot.len(), 3);
        assert_eq!(encoded.len(), 3);
        for ((name, state), (ename, bytes)) in snapshot.iter().zip(&encoded) {
            assert_eq!(name, ename);
            let mut want = Vec::new();
            state.encode(&mut want);
            assert_eq!(&want, bytes, "{name}");
            assert_eq!(&RuleState::decode(bytes).unwrap(), state);
        }
        assert!(matches!(&snapshot[0].1, RuleState::Threshold { active } if !active.is_empty()));
    }

    /// The silence rule as it was written before its timers were pruned lazily: one
    /// ordered set entry per pending deadline, removed and re-inserted by every reading.
    struct ReferenceSilence {
        after: Millis,
        pt_after: Millis,
        keys: BTreeMap<String, Silence>,
        event_timers: BTreeSet<(Millis, String)>,
        pt_timers: BTreeSet<(Millis, String)>,
        now: Millis,
        watermark: Option<Millis>,
    }

    impl ReferenceSilence {
        fn reading(&mut self, key: &str, t: Millis) {
            let (now, after, p) = (self.now, self.after, self.pt_after);
            let s = match self.keys.get(key) {
                Some(s) => {
                    if !s.fired {
                        self.event_timers
                            .remove(&(s.last_event + after, key.to_owned()));
                        self.pt_timers.remove(&(s.last_arrival + p, key.to_owned()));
                    }
                    let mut s = *s;
                    if t > s.last_event {
                        s.last_event = t;
                        let still_silent = self.watermark.is_some_and(|wm| t + after <= wm);
                        if !(s.fired && still_silent) {
                            s.fired = false;
                        }
                    }
                    s.last_arrival = now;
                    s
                }
                None => Silence {
                    last_event: t,
                    last_arrival: now,
                    fired: false,
                },
            };
            if !s.fired {
                self.event_timers
                    .insert((s.last_event + after, key.to_owned()));
                self.pt_timers.insert((now + p, key.to_owned()));
            }
            self.keys.insert(key.to_owned(), s);
        }

        /// `(key, event time)` of each alert, in order.
        fn fire(&mut self, at: Millis, event: bool) -> Vec<(String, Millis)> {
            let mut out = Vec::new();
            loop {
                let timers = if event {
                    &mut self.event_timers
                } else {
                    &mut self.pt_timers
                };
                let Some((t, key)) = timers.first().cloned() else {
                    break;
                };
                if t > at {
                    break;
                }
                timers.remove(&(t, key.clone()));
                let s = self.keys.get_mut(&key).unwrap();
                if s.fired {
                    continue;
                }
                s.fired = true;
                self.event_timers
                    .remove(&(s.last_event + self.after, key.clone()));
                self.pt_timers
                    .remove(&(s.last_arrival + self.pt_after, key.clone()));
                out.push((key, s.last_event + self.after));
            }
            out
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reading(usize, Millis),
        Watermark(Millis),
        Now(Millis),
        Restore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..5, 0i64..60).prop_map(|(k, t)| Op::Reading(k, t)),
            2 => (0i64..80).prop_map(Op::Watermark),
            2 => (0i64..80).prop_map(Op::Now),
            1 => Just(Op::Restore),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The silence rule's lazily pruned timers fire exactly the alerts, in the same
        /// order, as one ordered set of pending deadlines did, across restores too; and
        /// with enough readings to prune the heap many times over.
        #[test]
        fn silence_timers_fire_as_an_ordered_set_did(
            ops in proptest::collection::vec(op(), 0..200),
            many in 0usize..3_000,
        ) {
            let config = PipelineConfig {
                rules: serde_json::from_str(
                    r#"[{"kind":"silence","name":"quiet","after_ms":5,"processing_time_after_ms":7}]"#,
                )
                .unwrap(),
                ..PipelineConfig::default()
            };
            config.validate().unwrap();
            let mut engine = RuleEngine::new(&config);
            let mut reference = ReferenceSilence {
                after: 5,
                pt_after: 7,
                keys: BTreeMap::new(),
                event_timers: BTreeSet::new(),
                pt_timers: BTreeSet::new(),
                now: Millis::MIN,
                watermark: None,
            };
            let keys = ["d", "b", "a", "é", "c"];
            // Readings that move deadlines forward again and again before the ops.
            let ops = (0..many)
                .map(|i| Op::Reading(i % 5, i64::try_from(i / 5).unwrap()))
                .chain(ops);
            let mut out = Collector::new();
            for op in ops {
                let mut want = Vec::new();
                match op {
                    Op::Reading(k, t) => {
                        let r = SensorReading {
                            key: keys[k].into(),
                            event_time: t,
                            values: [("temperature_c".into(), 20.0)].into_iter().collect(),
                            partition: 0,
                            offset: 0,
                        };
                        engine.process(Message::Data(r), &mut out);
                        reference.reading(keys[k], t);
                    }
                    Op::Watermark(wm) => {
                        engine.process(Message::Watermark(wm), &mut out);
                        if reference.watermark.is_none_or(|c| wm > c) {
                            reference.watermark = Some(wm);
                            want = reference.fire(wm, true);
                        }
                    }
                    Op::Now(now) => {
                        engine.on_processing_time(now, &mut out);
                        reference.now = reference.now.max(now);
                        want = reference.fire(reference.now, false);
                    }
                    Op::Restore => {
                        let states = engine.snapshot().into_iter().collect();
                        let (now, wm) = (engine.now, engine.watermark);
                        engine = RuleEngine::new(&config);
                        engine.restore(states, now, wm);
                    }
                }
                let got: Vec<(String, Millis)> = out
                    .drain_data()
                    .into_iter()
                    .map(|a| (a.key, a.event_time))
                    .collect();
                prop_assert_eq!(got, want);
            }
            let timers = engine.rules.iter().map(|r| match r {
                Rule::Silence { event_timers, pt_timers, .. } => {
                    event_timers.heap.len() + pt_timers.heap.len()
                }
                _ => 0,
            });
            prop_assert!(timers.sum::<usize>() <= 2 * (2 * keys.len() + 1024) + 2);
        }
    }

    #[test]
    fn rule_state_decode_errors_name_the_problem() {
        let e = |b: &[u8]| RuleState::decode(b).unwrap_err().to_string();
        assert_eq!(
            e(&[]),
            "binary rule state: truncated: rule state version needs more bytes"
        );
        assert_eq!(e(&[7]), "binary rule state: unknown encoding version 7");
        assert_eq!(
            e(&[RULE_ENCODING_V1, 9, 0]),
            "binary rule state: invalid rule kind"
        );
        // Keys out of order (b, a) would not be a canonical encoding.
        assert_eq!(
            e(&[RULE_ENCODING_V1, KIND_THRESHOLD, 2, 1, b'b', 1, b'a']),
            "binary rule state: invalid rule key order"
        );
        assert_eq!(
            e(&[RULE_ENCODING_V1, KIND_THRESHOLD, 0, 0]),
            "binary rule state: 1 trailing bytes"
        );
        assert!(e(b"{\"kind\":").starts_with("json rule state: "));
    }
}
