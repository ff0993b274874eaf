//! End-to-end tests of the `runnel` client commands: a real broker in-process on
//! 127.0.0.1:0, and the `runnel` binary run as a child process against it, the way a person
//! (or a shell pipeline into jq) uses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

mod common;
use common::*;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self
    }
}

/// Run `runnel ARGS` against the broker's gRPC address, feeding `stdin`.
async fn runnel(grpc: SocketAddr, args: &[&str], stdin: &[u8]) -> Out {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(args)
        .env("RUNNEL_GRPC_ADDR", grpc.to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("runnel starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("runnel {args:?} timed out"))
        .expect("runnel runs");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8 JSON"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_list_describe_delete() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let g = b.grpc_addr;
    let created = runnel(
        g,
        &[
            "topics",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=60000",
        ],
        b"",
    )
    .await
    .ok()
    .lines();
    assert_eq!(created[0]["name"], "orders");
    assert_eq!(created[0]["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(created[0]["configs"]["retention.ms"], "60000");
    runnel(g, &["topics", "create", "audit"], b"").await.ok();
    let list = runnel(g, &["topics", "list"], b"").await.ok().lines();
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit", "orders"]);
    assert_eq!(list[1]["partitions"], 3);
    let d = runnel(g, &["topics", "describe", "orders"], b"")
        .await
        .ok()
        .lines();
    assert_eq!(d[0]["partitions"][2]["high_watermark"], 0);
    let dup = runnel(g, &["topics", "create", "orders"], b"").await;
    assert_eq!(dup.code, Some(1));
    assert_eq!(dup.stderr.trim(), "error: topic \"orders\" already exists");
    let deleted = runnel(g, &["topics", "delete", "orders"], b"").await.ok();
    assert!(deleted.stdout.is_empty());
    let list = runnel(g, &["topics", "list"], b"").await.ok().lines();
    assert_eq!(list.len(), 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_round_trips_keys_headers_and_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let g = b.grpc_addr;
    runnel(g, &["topics", "create", "src", "-p", "2"], b"")
        .await
        .ok();
    let input: &[u8] = b"dev-1:{\"t\":71.5}\ndev-2:{\"t\":90.1}\n\xff\xfekey:val\xc3\x28ue\nno separator here\n\ndev-1:last\n";
    let p = runnel(
        g,
        &[
            "produce",
            "src",
            "-K",
            ":",
            "-H",
            "source=cli",
            "-H",
            "flag",
        ],
        input,
    )
    .await
    .ok();
    assert!(p.stderr.contains("produced 5 record(s)"), "{}", p.stderr);
    let mut got = runnel(g, &["consume", "src"], b"").await.ok().lines();
    assert_eq!(got.len(), 5);
    got.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    let by_value: BTreeMap<String, &Value> = got
        .iter()
        .map(|r| (r["value"].as_str().unwrap().to_owned(), r))
        .collect();
    let r = by_value["{\"t\":71.5}"];
    assert_eq!(r["topic"], "src");
    assert_eq!(r["key"], "dev-1");
    assert_eq!(
        r["headers"],
        serde_json::json!([{"key": "source", "value": "cli"}, {"key": "flag", "value": null}])
    );
    // Same key, same partition, in order.
    let last = by_value["last"];
    assert_eq!(last["partition"], r["partition"]);
    assert!(last["offset"].as_i64() > r["offset"].as_i64());
    let raw = got
        .iter()
        .find(|r| r["key_encoding"] == "base64")
        .expect("binary key");
    assert_eq!(raw["key"], "//5rZXk="); // ff fe "key"
    assert_eq!(raw["value_encoding"], "base64");
    assert_eq!(raw["value"], "dmFswyh1ZQ=="); // "val" c3 28 "ue"
    let plain = by_value["no separator here"];
    assert_eq!(plain["key"], Value::Null);
    assert!(plain.get("key_encoding").is_none());

    // The JSON lines feed `produce --json` and copy the records exactly.
    runnel(g, &["topics", "create", "copy", "-p", "2"], b"")
        .await
        .ok();
    let dump = runnel(g, &["consume", "src"], b"").await.ok().stdout;
    runnel(g, &["produce", "copy", "--json"], dump.as_bytes())
        .await
        .ok();
    // Null keys are spread round-robin, so compare what was stored, not where.
    let strip = |mut v: Vec<Value>| {
        for r in &mut v {
            for field in ["topic", "partition", "offset"] {
                r.as_object_mut().unwrap().remove(field);
            }
        }
        v.sort_by_key(Value::to_string);
        v
    };
    let copied = strip(runnel(g, &["consume", "copy"], b"").await.ok().lines());
    assert_eq!(copied, strip(got.clone()));

    // --count and one partition.
    let one = runnel(g, &["consume", "src", "-p", "1", "-n", "1"], b"")
        .await
        .ok()
        .lines();
    assert!(one.len() <= 1);
    // latest without --follow has nothing to print; --follow with --count ends once it has.
    let latest = runnel(g, &["consume", "src", "--from", "latest"], b"")
        .await
        .ok();
    assert!(latest.stdout.is_empty());
    let followed = runnel(g, &["consume", "src", "--follow", "-n", "5"], b"")
        .await
        .ok()
        .lines();
    assert_eq!(followed.len(), 5);
    // A bad --json line is reported with its number; the lines before it are stored.
    let bad = runnel(
        g,
        &["produce", "copy", "--json"],
        b"{\"value\":\"ok\"}\n{oops\n",
    )
    .await;
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("line 2: invalid JSON"),
        "{}",
        bad.stderr
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_a_timestamp_or_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let g = b.grpc_addr;
    runnel(g, &["topics", "create", "ts", "-p", "1"], b"")
        .await
        .ok();
    // 2025-08-17T12:00:00.000Z + i minutes
    let base = 1_755_432_000_000i64;
    let lines: String = (0..10)
        .map(|i| {
            format!(
                "{{\"key\":\"k\",\"value\":\"v{i}\",\"timestamp\":{}}}\n",
                base + i * 60_000
            )
        })
        .collect();
    runnel(g, &["produce", "ts", "--json"], lines.as_bytes())
        .await
        .ok();
    let values = |out: Out| -> Vec<String> {
        out.ok()
            .lines()
            .iter()
            .map(|r| r["value"].as_str().unwrap().to_owned())
            .collect()
    };
    let from_rfc = values(
        runnel(
            g,
            &["consume", "ts", "--from-time", "2025-08-17T12:07:00Z"],
            b"",
        )
        .await,
    );
    assert_eq!(from_rfc, ["v7", "v8", "v9"]);
    let between = values(
        runnel(
            g,
            &["consume", "ts", "--from-time", "2025-08-17T14:06:30+02:00"],
            b"",
        )
        .await,
    );
    assert_eq!(between, ["v7", "v8", "v9"]);
    let ms = (base + 9 * 60_000).to_string();
    let from_ms = values(runnel(g, &["consume", "ts", "--from-time", &ms], b"").await);
    assert_eq!(from_ms, ["v9"]);
    let after = values(
        runnel(
            g,
            &["consume", "ts", "--from-time", "2030-01-01T00:00:00Z"],
            b"",
        )
        .await,
    );
    assert!(after.is_empty());
    let from_offset = values(runnel(g, &["consume", "ts", "--from", "8"], b"").await);
    assert_eq!(from_offset, ["v8", "v9"]);
    let got = runnel(g, &["consume", "ts", "--from", "3", "-n", "1"], b"")
        .await
        .ok()
        .lines();
    assert_eq!(got[0]["timestamp"], base + 3 * 60_000);
    let bad = runnel(g, &["consume", "ts", "--from-time", "yesterday"], b"").await;
    assert_eq!(bad.code, Some(2), "a usage error: {}", bad.stderr);
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_unreachable_brokers_are_one_line_errors_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let g = b.grpc_addr;
    for args in [
        &["consume", "nope"][..],
        &["consume", "nope", "--follow"],
        &["produce", "nope"],
        &["topics", "describe", "nope"],
        &["topics", "delete", "nope"],
        &[
            "simulate",
            "--count",
            "5",
            "--no-create-topics",
            "--sensor-topic",
            "nope",
            "--sources",
            "sensors",
        ],
    ] {
        let out = runnel(g, args, b"x\n").await;
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim(),
            "error: topic \"nope\" does not exist",
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    runnel(g, &["topics", "create", "one", "-p", "1"], b"")
        .await
        .ok();
    let out = runnel(g, &["consume", "one", "-p", "4"], b"").await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("there is no partition 4"),
        "{}",
        out.stderr
    );
    let out = runnel(g, &["produce", "one", "-p", "4"], b"x\n").await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("there is no partition 4"),
        "{}",
        out.stderr
    );
    b.shutdown().await;
    // Nobody listens there any more.
    let out = runnel(g, &["topics", "list"], b"").await;
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach the broker's gRPC API"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}

/// Every record of `topic`, by partition, as (key, value, timestamp).
async fn records(g: SocketAddr, topic: &str) -> BTreeMap<i64, Vec<(Value, Value, Value, Value)>> {
    let mut out: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for r in runnel(g, &["consume", topic], b"").await.ok().lines() {
        out.entry(r["partition"].as_i64().unwrap())
            .or_default()
            .push((
                r["offset"].clone(),
                r["key"].clone(),
                r["value"].clone(),
                r["timestamp"].clone(),
            ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_a_fixed_count_over_grpc_and_kafka_and_read_it_back() {
    let dir = tempfile::tempdir().unwrap();
    // Kafka clients connect where Metadata points; a broker bound to port 0 would advertise
    // port 0, so bind a free port chosen now.
    let port = runnel_broker::net::free_loopback_addr().unwrap().port();
    let config = runnel_broker::config::Config {
        data_dir: dir.path().to_owned(),
        kafka_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..runnel_broker::config::Config::default()
    };
    let b = runnel_broker::server::start(config)
        .await
        .expect("broker starts");
    let g = b.grpc_addr;
    let kafka = b.kafka_addr.to_string();
    let run = |sink: &str, prefix: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "simulate",
            "--count",
            "3000",
            "--seed",
            "42",
            "--start-time",
            "2025-08-17T12:00:00Z",
            "--unpaced",
            "--quiet",
            "--malformed-rate",
            "0.02",
            "--schema-violation-rate",
            "0.02",
            "--late-rate",
            "0.02",
            "--sink",
            sink,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (flag, t) in [
            ("--sensor-topic", "sensors"),
            ("--click-topic", "clicks"),
            ("--post-topic", "posts"),
        ] {
            args.push(flag.to_owned());
            args.push(format!("{prefix}_{t}"));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let grpc_args = run("grpc", "g", &["--label-headers"]);
    let grpc_args: Vec<&str> = grpc_args.iter().map(String::as_str).collect();
    let out = runnel(g, &grpc_args, b"").await.ok();
    let summary = &out.lines()[0];
    assert_eq!(summary["sent"], 3000);
    assert_eq!(summary["acked"], 3000);
    assert_eq!(summary["errors"], 0);

    // Count and parse back: every sensor record is a reading unless it was sent as garbage.
    let mut total = 0u64;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for t in ["g_sensors", "g_clicks", "g_posts"] {
        for r in runnel(g, &["consume", t], b"").await.ok().lines() {
            total += 1;
            let kind = r["headers"][1]["value"].as_str().unwrap().to_owned();
            *kinds.entry(kind.clone()).or_default() += 1;
            let parsed = r["value"]
                .as_str()
                .and_then(|v| serde_json::from_str::<Value>(v).ok());
            match kind.as_str() {
                "malformed" => assert!(parsed.is_none(), "{r}"),
                "schema-violation" => assert!(parsed.is_some(), "{r}"),
                _ => {
                    let v = parsed.unwrap_or_else(|| panic!("{r}"));
                    if t == "g_sensors" {
                        assert_eq!(v["device_id"], r["key"]);
                        assert!(v["temperature_c"].is_f64(), "{v}");
                    }
                }
            }
        }
    }
    assert_eq!(total, 3000);
    for (k, n) in summary["by_kind"].as_object().unwrap() {
        assert_eq!(Some(n.as_u64().unwrap()), kinds.get(k).copied(), "{k}");
    }

    // The same seed over the Kafka protocol stores the same records in the same partitions
    // (murmur2 like the broker's gRPC partitioner; the broker's sensor encoder).
    let kafka_args = run("kafka", "k", &["--bootstrap-server", &kafka]);
    let kafka_args: Vec<&str> = kafka_args.iter().map(String::as_str).collect();
    let out = runnel(g, &kafka_args, b"").await.ok();
    assert_eq!(out.lines()[0]["acked"], 3000);
    for t in ["sensors", "clicks", "posts"] {
        let over_grpc = records(g, &format!("g_{t}")).await;
        let over_kafka = records(g, &format!("k_{t}")).await;
        assert_eq!(over_grpc.len(), 3, "three partitions");
        assert_eq!(over_grpc, over_kafka, "{t}");
    }
    // And the same seed again gives the same events.
    let again = run("grpc", "again", &[]);
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    runnel(g, &again, b"").await.ok();
    assert_eq!(
        records(g, "again_sensors").await,
        records(g, "k_sensors").await
    );
    b.shutdown().await;
}
