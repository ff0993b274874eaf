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
