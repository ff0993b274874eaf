//! Architecture invariants of the processor crate, phrased as absences and checked here.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
}

#[test]
fn only_the_sled_module_names_sled_and_the_core_has_no_runtime_or_clock() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10);
    for (path, text) in &files {
        assert!(text.starts_with("//!"), "{path} must open with a //! line");
        if !path.ends_with("sled_store.rs") {
            assert!(!text.contains("sled::"), "{path} names sled");
        }
        for banned in ["tokio", "SystemTime::now", "Instant::now", "thread::spawn"] {
            assert!(
                !text.contains(banned),
                "{path} uses {banned}: time is an input, no runtime"
            );
        }
    }
}

/// The crate's own dependency graph (not its dev-dependencies) holds no async runtime and no
/// gRPC stack: the protobuf format decodes with prost alone (`src/proto.rs`).
#[test]
fn no_runtime_or_grpc_in_the_dependency_graph() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "runnel-processor",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("prost "), "{tree}");
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        for banned in ["tokio", "tonic", "hyper", "runnel-proto", "mio"] {
            assert!(
                name != banned && !name.starts_with(&format!("{banned}-")),
                "runnel-processor depends on {name}"
            );
        }
    }
}
