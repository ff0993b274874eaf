//! Data-driven tests of the coordinator state machine (raft-rs `datadriven` style).
//!
//! Each `testdata/*.txt` file is a sequence of cases: a command line, `----`, then the expected
//! output lines, ending at a blank line. `#` lines are comments. One coordinator and one clock
//! (starting at 0 ms) live for a whole file. Run with `RUNNEL_REWRITE=1` to rewrite the expected
//! output from what the coordinator does (then review the diff).
//!
//! Commands (arguments are `key=value`, values without spaces):
//! - `join t=<token> m=<member> [g=g] [i=<instance>] [c=<client>] [h=/<client ip>] [p=name:meta,...]
//!   [type=consumer] [session=10000] [rebalance=10000] [v=5]` (v >= 4 requires a known member id)
//! - `sync t= m= gen= [g=] [i=] [a=member:assignment,...] [ptype=] [pname=]`
//! - `heartbeat m= gen= [g=] [i=]`
//! - `leave [g=] members=<member>|i:<instance>|<member>/<instance>,...`
//! - `commit t= gen= [m=] [g=] [i=] o=<topic>/<partition>@<offset>[#epoch][:metadata],...`
//! - `persisted t= [ok=false]`
//! - `fetch [g=] [o=<topic>/<partition>,...]`, `describe g=...`, `list [states=...]`
//! - `tick <ms>` advances the clock and ticks; `state [g=]` prints the group's internals.
//! - `initial-delay <ms>` sets `group.initial.rebalance.delay.ms` (0 unless a script sets it).
//!
//! Every command prints its own answer (if immediate) and then every drained output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;

use super::*;

struct Harness {
    c: GroupCoordinator,
    now: u64,
}

fn s(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_tp(spec: &str) -> TopicPartition {
    let (topic, partition) = spec.rsplit_once('/').expect("topic/partition");
    TopicPartition {
        topic: topic.to_owned(),
        partition: partition.parse().expect("partition"),
    }
}

fn fmt_offset(o: &CommittedOffset) -> String {
    let md = o
        .metadata
        .as_deref()
        .map_or("null".into(), |m| format!("{m:?}"));
    format!("@{} e={} md={md}", o.offset, o.leader_epoch)
}

fn fmt_output(o: &Output) -> String {
    match o {
        Output::Join(t, r) if r.error == ErrorCode::None => {
            let members: Vec<String> = r
                .members
                .iter()
                .map(|m| match &m.group_instance_id {
                    Some(i) => format!("{}({i}):{}", m.member_id, s(&m.metadata)),
                    None => format!("{}:{}", m.member_id, s(&m.metadata)),
                })
                .collect();
            format!(
                "t{t} join NONE gen={} member={} leader={} proto={} members=[{}]",
                r.generation_id,
                r.member_id,
                r.leader,
                r.protocol_name.as_deref().unwrap_or("-"),
                members.join(" ")
            )
        }
        Output::Join(t, r) => format!("t{t} join {} member={}", r.error.name(), r.member_id),
        Output::Sync(t, r) if r.error == ErrorCode::None => format!(
            "t{t} sync NONE proto={} assignment={}",
            r.protocol_name.as_deref().unwrap_or("-"),
            s(&r.assignment)
        ),
        Output::Sync(t, r) => format!("t{t} sync {}", r.error.name()),
        Output::Commit(t, r) => {
            let parts: Vec<String> = r
                .results
                .iter()
                .map(|(tp, e)| format!("{}/{}={}", tp.topic, tp.partition, e.name()))
                .collect();
            format!("t{t} commit {}", parts.join(" "))
        }
        Output::Persist {
            token,
            group_id,
            offsets,
        } => {
            let parts: Vec<String> = offsets
                .iter()
                .map(|(tp, o)| format!("{}/{}{}", tp.topic, tp.partition, fmt_offset(o)))
                .collect();
            format!("t{token} persist {group_id}: {}", parts.join(" "))
        }
    }
}

impl Harness {
    fn run(&mut self, line: &str) -> String {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        let args: BTreeMap<&str, &str> = rest.iter().filter_map(|w| w.split_once('=')).collect();
        let get =
            |k: &str, d: &'static str| -> String { args.get(k).copied().unwrap_or(d).to_owned() };
        let num =
            |k: &str, d: i64| -> i64 { args.get(k).map_or(d, |v| v.parse().expect("number")) };
        let opt = |k: &str| args.get(k).map(|v| (*v).to_owned());
        let token = || u64::try_from(num("t", 0)).expect("token");
        let group = get("g", "g");
        let mut out = String::new();
        match cmd {
            "join" => {
                let protocols = get("p", "range:m")
                    .split(',')
                    .map(|p| {
                        let (name, meta) = p.split_once(':').unwrap_or((p, ""));
                        Protocol {
                            name: name.to_owned(),
                            metadata: Bytes::from(meta.to_owned()),
                        }
                    })
                    .collect();
                let req = JoinRequest {
                    group_id: group,
                    member_id: get("m", ""),
                    group_instance_id: opt("i"),
                    client_id: get("c", "c"),
                    client_host: get("h", "/127.0.0.1"),
                    session_timeout_ms: i32::try_from(num("session", 10_000)).unwrap(),
                    rebalance_timeout_ms: i32::try_from(num("rebalance", 10_000)).unwrap(),
                    protocol_type: get("type", "consumer"),
                    protocols,
                    require_known_member_id: num("v", 5) >= 4,
                };
                self.c.join(self.now, token(), req);
            }
            "sync" => {
                let assignments = opt("a")
                    .map(|a| {
                        a.split(',')
                            .map(|x| {
                                let (m, v) = x.split_once(':').expect("member:assignment");
                                (m.to_owned(), Bytes::from(v.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let req = SyncRequest {
                    group_id: group,
                    generation_id: i32::try_from(num("gen", -1)).unwrap(),
                    member_id: get("m", ""),
                    group_instance_id: opt("i"),
                    protocol_type: opt("ptype"),
                    protocol_name: opt("pname"),
                    assignments,
                };
                self.c.sync(self.now, token(), req);
            }
            "heartbeat" => {
                let req = HeartbeatRequest {
                    group_id: group,
                    generation_id: i32::try_from(num("gen", -1)).unwrap(),
                    member_id: get("m", ""),
                    group_instance_id: opt("i"),
                };
                let e = self.c.heartbeat(self.now, req);
                writeln!(out, "heartbeat {}", e.name()).unwrap();
            }
            "leave" => {
                let members = get("members", "")
                    .split(',')
                    .map(|x| match x.split_once(':') {
                        Some(("i", inst)) => LeavingMember {
                            member_id: String::new(),
                            group_instance_id: Some(inst.to_owned()),
                        },
                        _ => match x.split_once('/') {
                            Some((m, inst)) => LeavingMember {
                                member_id: m.to_owned(),
                                group_instance_id: Some(inst.to_owned()),
                            },
                            None => LeavingMember {
                                member_id: x.to_owned(),
                                group_instance_id: None,
                            },
                        },
                    })
                    .collect();
                let r = self.c.leave(self.now, &group, members);
                let parts: Vec<String> = r
                    .members
                    .iter()
                    .map(|(m, e)| {
                        let who = match &m.group_instance_id {
                            Some(i) => format!("{}/{i}", m.member_id),
                            None => m.member_id.clone(),
                        };
                        format!("{who}={}", e.name())
                    })
                    .collect();
                writeln!(out, "leave {} {}", r.error.name(), parts.join(" ")).unwrap();
            }
            "commit" => {
                let offsets = get("o", "")
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| {
                        let (tp, rest) = x.split_once('@').expect("tp@offset");
                        let (rest, metadata) = match rest.split_once(':') {
                            Some((r, m)) => (r, Some(m.to_owned())),
                            None => (rest, None),
                        };
                        let (offset, epoch) = rest.split_once('#').unwrap_or((rest, "-1"));
                        (
                            parse_tp(tp),
                            CommittedOffset {
                                offset: offset.parse().expect("offset"),
                                leader_epoch: epoch.parse().expect("epoch"),
                                metadata,
                            },
                        )
                    })
                    .collect();
                let req = CommitRequest {
                    group_id: group,
                    generation_id: i32::try_from(num("gen", -1)).unwrap(),
                    member_id: get("m", ""),
                    group_instance_id: opt("i"),
                    offsets,
                };
                self.c.commit(self.now, token(), req);
            }
            "persisted" => self.c.persisted(token(), get("ok", "true") == "true"),
            "fetch" => {
                let parts = opt("o").map(|o| o.split(',').map(parse_tp).collect());
                let r = self.c.fetch_offsets(&group, parts);
                let parts: Vec<String> = r
                    .offsets
                    .iter()
                    .map(|(tp, o)| {
                        let o = o.as_ref().map_or("@-1".into(), fmt_offset);
                        format!("{}/{}{o}", tp.topic, tp.partition)
                    })
                    .collect();
                writeln!(out, "fetch {} {}", r.error.name(), parts.join(" ")).unwrap();
            }
            "describe" => {
                let ids: Vec<String> = group.split(',').map(str::to_owned).collect();
                for d in self.c.describe(&ids) {
                    writeln!(
                        out,
                        "describe {} {} state={} type={} proto={}",
                        d.group_id,
                        d.error.name(),
                        d.state.name(),
                        d.protocol_type,
                        d.protocol
                    )
                    .unwrap();
                    for m in d.members {
                        writeln!(
                            out,
                            "  member {} instance={} client={} host={} metadata={} assignment={}",
                            m.member_id,
                            m.group_instance_id.as_deref().unwrap_or("-"),
                            m.client_id,
                            m.client_host,
                            s(&m.metadata),
                            s(&m.assignment)
                        )
                        .unwrap();
                    }
                }
            }
            "list" => {
                let states: Vec<String> = get("states", "")
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect();
                let parts: Vec<String> = self
                    .c
                    .list(&states)
                    .iter()
                    .map(|l| format!("{}({})={}", l.group_id, l.protocol_type, l.state.name()))
                    .collect();
                writeln!(out, "list {}", parts.join(" ")).unwrap();
            }
            "tick" => {
                let ms: u64 = rest.first().map_or(0, |v| v.parse().expect("ms"));
                self.now += ms;
                self.c.tick(self.now);
                writeln!(out, "now={}", self.now).unwrap();
            }
            "initial-delay" => {
                let ms: u64 = rest.first().map_or(0, |v| v.parse().expect("ms"));
                self.c.set_initial_rebalance_delay_ms(ms);
            }
            "state" => writeln!(out, "{}", self.c.debug_group(&group)).unwrap(),
            other => panic!("unknown command {other:?}"),
        }
        for o in self.c.drain_outputs() {
            writeln!(out, "{}", fmt_output(&o)).unwrap();
        }
        out
    }
}

/// Run one testdata file; with `RUNNEL_REWRITE` set, rewrite its expectations instead.
fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read testdata");
    let mut h = Harness {
        c: GroupCoordinator::new(CoordinatorConfig {
            member_id_seed: "s".into(),
            // Scripts opt in with `initial-delay <ms>`, so the others read one step at a time.
            initial_rebalance_delay_ms: 0,
            ..CoordinatorConfig::default()
        }),
        now: 0,
    };
    let rewrite = std::env::var_os("RUNNEL_REWRITE").is_some();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        let command = line;
        let sep = lines.next().map(|(_, l)| l);
        assert_eq!(
            sep,
            Some("----"),
            "{}:{}: expected ---- after command",
            path.display(),
            n + 1
        );
        let mut expected = String::new();
        while let Some((_, l)) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
            lines.next();
        }
        let actual = h.run(command);
        if actual != expected {
            failures.push(format!(
                "{}:{}: {command}\n--- expected\n{expected}--- actual\n{actual}",
                path.display(),
                n + 1
            ));
        }
        rewritten.push_str(command);
        rewritten.push_str("\n----\n");
        rewritten.push_str(&actual);
    }
    if rewrite {
        std::fs::write(path, rewritten).expect("rewrite testdata");
    } else {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn testdata() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/group/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        run_file(&f);
    }
}
