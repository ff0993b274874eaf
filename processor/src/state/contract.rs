//! The contract every [`StateStore`] must meet, checked against a `BTreeMap` model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{CheckpointMeta, StateStore, WriteBatch};

/// Runs every contract check; `make` returns a fresh, empty store each call.
pub(crate) fn run_all(mut make: impl FnMut() -> Box<dyn StateStore>) {
    basics(make().as_mut());
    batches_and_meta(make().as_mut());
    matches_model(&mut make);
}

fn basics(s: &mut dyn StateStore) {
    assert_eq!(s.get(b"a").unwrap(), None);
    s.put(b"a", b"1").unwrap();
    s.put(b"ab", b"2").unwrap();
    s.put(b"b", b"3").unwrap();
    s.put(b"a", b"4").unwrap();
    assert_eq!(s.get(b"a").unwrap(), Some(b"4".to_vec()));
    assert_eq!(
        s.scan_prefix(b"a").unwrap(),
        vec![
            (b"a".to_vec(), b"4".to_vec()),
            (b"ab".to_vec(), b"2".to_vec())
        ]
    );
    assert_eq!(s.scan_prefix(b"").unwrap().len(), 3);
    s.delete(b"a").unwrap();
    s.delete(b"missing").unwrap();
    assert_eq!(s.get(b"a").unwrap(), None);
    // Empty values and binary keys.
    s.put(&[0xff, 0], b"").unwrap();
    assert_eq!(s.get(&[0xff, 0]).unwrap(), Some(Vec::new()));
    assert_eq!(s.scan_prefix(&[0xff]).unwrap().len(), 1);
}

fn batches_and_meta(s: &mut dyn StateStore) {
    assert_eq!(s.checkpoint_meta().unwrap(), None);
    s.put(b"x", b"old").unwrap();
    let meta = CheckpointMeta {
        pipeline: "p".into(),
        id: 1,
        steps_applied: 2,
        input_next_offsets: vec![("t".into(), 1, 5)],
        output_next_seq: vec![],
        watermark: None,
        processing_time: 0,
        journal_next: None,
    };
    let mut b = WriteBatch::default();
    b.put(b"k".to_vec(), b"v1".to_vec());
    b.put(b"k".to_vec(), b"v2".to_vec());
    b.delete(b"x".to_vec());
    b.set_checkpoint_meta(&meta);
    s.write_batch(b).unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"v2".to_vec()), "later op wins");
    assert_eq!(s.get(b"x").unwrap(), None);
    assert_eq!(s.checkpoint_meta().unwrap(), Some(meta));
    // The meta key is outside every state prefix that does not start with NUL.
    assert!(s.scan_prefix(b"k").unwrap().iter().all(|(k, _)| k[0] != 0));
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(bool, Vec<u8>, Vec<u8>)>),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), key()).prop_map(|(k, v)| Op::Put(k, v)),
        key().prop_map(Op::Delete),
        prop::collection::vec((any::<bool>(), key(), key()), 0..6).prop_map(Op::Batch),
    ]
}

fn matches_model(make: &mut dyn FnMut() -> Box<dyn StateStore>) {
    let make = std::cell::RefCell::new(make);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(
            &(prop::collection::vec(op(), 0..30), key()),
            |(ops, prefix)| {
                let mut s = (make.borrow_mut())();
                let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Put(k, v) => {
                            s.put(&k, &v).unwrap();
                            model.insert(k, v);
                        }
                        Op::Delete(k) => {
                            s.delete(&k).unwrap();
                            model.remove(&k);
                        }
                        Op::Batch(items) => {
                            let mut b = WriteBatch::default();
                            for (put, k, v) in items {
                                if put {
                                    model.insert(k.clone(), v.clone());
                                    b.put(k, v);
                                } else {
                                    model.remove(&k);
                                    b.delete(k);
                                }
                            }
                            s.write_batch(b).unwrap();
                        }
                    }
                }
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(s.scan_prefix(&prefix).unwrap(), want);
                for (k, v) in &model {
                    prop_assert_eq!(s.get(k).unwrap(), Some(v.clone()));
                }
                Ok(())
            },
        )
        .unwrap();
}
