//! Replays the committed seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) through the
//! same entry points the fuzzers call (`tether::fuzzing`), so every input that once mattered
//! (seeds, and crashes found and fixed) stays a regression test under plain `cargo test`.
//! Where an entry point says what an input reached (a cookie decoded, a route matched, a head
//! accepted), the named seeds below must reach what they were written for: a seed that no
//! longer exercises its path fails here instead of passing vacuously.

use std::collections::BTreeMap;
use std::path::Path;

/// Runs every seed of `target` through `run` (none may panic) and returns each seed's result by
/// file name.
fn replay<T>(target: &str, run: fn(&[u8]) -> T) -> BTreeMap<String, T> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut results = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        let Ok(result) = outcome else {
            panic!("{target}: {} panicked", path.display());
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        results.insert(name, result);
    }
    assert!(!results.is_empty(), "{target}: empty corpus");
    results
}

/// Each named seed is in the corpus and gave the expected result.
fn expect<T: PartialEq + std::fmt::Debug>(
    target: &str,
    results: &BTreeMap<String, T>,
    expected: &[(&str, T)],
) {
    for (name, want) in expected {
        let got = results
            .get(*name)
            .unwrap_or_else(|| panic!("{target}: seed {name} is missing"));
        assert_eq!(got, want, "{target}: seed {name}");
    }
}

#[test]
fn config_corpus() {
    replay("config", tether::fuzzing::config);
}

/// At least one seed really decodes under the fuzz codec, so the decode → encode round trip
/// runs; the others cover each way of being refused.
#[test]
fn cookie_corpus() {
    let results = replay("cookie", tether::fuzzing::cookie);
    expect(
        "cookie",
        &results,
        &[
            // Signed with the fuzz secret, issued a minute before the fuzz clock.
            ("valid", true),
            // Issued exactly max_age (3600 s) before the fuzz clock: still valid.
            ("valid-oldest", true),
            // Issued 300 s after the fuzz clock: the most skew tolerated.
            ("valid-future", true),
            // Signed, but issued 3601 s before the fuzz clock.
            ("expired", false),
            // Signed, but issued 301 s after the fuzz clock.
            ("too-far-future", false),
            // "valid" with the last character (the tag's last 6 bits) changed.
            ("bad-tag", false),
            // Right length and alphabet, signed with another secret.
            ("shape", false),
            ("garbage", false),
            ("empty", false),
        ],
    );
    assert!(
        results.values().any(|&decoded| decoded),
        "cookie: no seed decoded, so the round trip never ran"
    );
}

/// Each seed reaches the route it was written for (0 `shop.example.com` + `/api/`,
/// 1 `*.example.com`, 2 `/static/`, 3 the catch-all).
#[test]
fn route_corpus() {
    let results = replay("route", tether::fuzzing::route);
    expect(
        "route",
        &results,
        &[
            ("exact", Some(0)),
            // www.example.com, /
            ("wildcard", Some(1)),
            // WWW.EXAMPLE.COM, /: host names match case-insensitively.
            ("wildcard-upper", Some(1)),
            // shop.example.com, /cart: the exact host outside /api/ falls to the wildcard.
            ("wildcard-exact-host", Some(1)),
            // example.com, /: the wildcard needs a label before .example.com.
            ("apex", Some(3)),
            ("path", Some(2)),
        ],
    );
}

/// The head rules of DESIGN.md §12: each seed is accepted or refused as it should be (`None`:
/// no complete head).
#[test]
fn head_corpus() {
    let results = replay("head", tether::fuzzing::head);
    expect(
        "head",
        &results,
        &[
            ("get", Some(true)),
            ("upgrade", Some(true)),
            // Two Content-Length fields with the same value (3 and 003).
            ("dupcl", Some(true)),
            // HTTP/1.0 needs no Host.
            ("http10", Some(true)),
            ("http10-host", Some(true)),
            ("http11-no-host", Some(false)),
            ("two-hosts", Some(false)),
            ("http10-two-hosts", Some(false)),
            ("clte", Some(false)),
            ("tecl", Some(false)),
            ("tete", Some(false)),
        ],
    );
}

/// The codec's request parser: each seed is accepted, refused or incomplete (`None`) as it
/// should be; the accepted ones went through the writer round trip in the entry point.
#[test]
fn h1_request_corpus() {
    let results = replay("h1_request", tether::fuzzing::h1_request);
    expect(
        "h1_request",
        &results,
        &[
            ("get", Some(true)),
            ("post-cl", Some(true)),
            ("post-chunked", Some(true)),
            // Connection names X-Secret and Content-Length: the first is dropped, not the second.
            ("hop-by-hop", Some(true)),
            ("upgrade", Some(true)),
            ("http10", Some(true)),
            // Only the first request is parsed; the second stays in the buffer.
            ("pipelined", Some(true)),
            ("partial", None),
            ("clte", Some(false)),
            ("tecl", Some(false)),
            ("te-obfuscated", Some(false)),
            ("te-space-colon", Some(false)),
            ("cl-differing", Some(false)),
            ("bare-lf", Some(false)),
            ("bare-cr", Some(false)),
            ("obs-fold", Some(false)),
            ("two-hosts", Some(false)),
            ("nul", Some(false)),
            ("leading-crlf", Some(false)),
        ],
    );
}

/// The codec's response parser: each seed is accepted, refused or incomplete as it should be.
#[test]
fn h1_response_corpus() {
    let results = replay("h1_response", tether::fuzzing::h1_response);
    expect(
        "h1_response",
        &results,
        &[
            ("ok-cl", Some(true)),
            ("chunked", Some(true)),
            ("gzip-chunked", Some(true)),
            ("until-close", Some(true)),
            // A Content-Length on a 204 is read past, not refused.
            ("no-content", Some(true)),
            ("not-modified", Some(true)),
            // The interim head only; the final one follows in the buffer.
            ("continue", Some(true)),
            ("switching", Some(true)),
            // A 101 without Upgrade: no `Connection: upgrade` goes out with it.
            ("switching-no-upgrade", Some(true)),
            ("hop-by-hop", Some(true)),
            ("no-reason", Some(true)),
            ("partial", None),
            ("clte", Some(false)),
            ("cl-differing", Some(false)),
            ("bare-lf", Some(false)),
            ("te-http10", Some(false)),
            ("chunked-not-last", Some(false)),
            ("bad-status", Some(false)),
        ],
    );
}

/// The chunked validator agrees with the reference decoder on every seed (checked in the entry
/// point), and each seed gets the verdict it was written for: `Some(true)` a complete body,
/// `Some(false)` malformed, `None` incomplete.
#[test]
fn h1_chunked_corpus() {
    let results = replay("h1_chunked", tether::fuzzing::h1_chunked);
    expect(
        "h1_chunked",
        &results,
        &[
            ("simple", Some(true)),
            ("many", Some(true)),
            ("extensions", Some(true)),
            ("trailers", Some(true)),
            // A body followed by the next request: the end is found before it.
            ("then-next", Some(true)),
            ("leading-zeros", Some(true)),
            ("upper-hex", Some(true)),
            ("incomplete", None),
            ("bad-size", Some(false)),
            ("overflow", Some(false)),
            ("bare-lf-size", Some(false)),
            ("missing-crlf", Some(false)),
            // An LF alone after the data, then a request hidden as the "next" message.
            ("smuggle-lf-after-data", Some(false)),
            ("bad-trailer", Some(false)),
            ("negative", Some(false)),
            ("space-after-size", Some(false)),
        ],
    );
}
