//! Replays the committed seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) through the
//! same entry points the fuzzers call (`tether::fuzzing`), so every input that once mattered
//! (seeds, and crashes found and fixed) stays a regression test under plain `cargo test`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
}

#[test]
fn config_corpus() {
    replay("config", tether::fuzzing::config);
}

#[test]
fn cookie_corpus() {
    replay("cookie", tether::fuzzing::cookie);
}

#[test]
fn route_corpus() {
    replay("route", tether::fuzzing::route);
}

#[test]
fn head_corpus() {
    replay("head", tether::fuzzing::head);
}
