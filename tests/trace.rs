//! W3C trace context end to end (DESIGN.md §18): what the backend receives as `traceparent` and
//! `tracestate`, and the access log's `trace_id`, on the real binary.

mod common;

use std::time::Duration;

use common::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn start(a: &Backend) -> Tether {
    Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
threads = 1
grace_period = "1s"

[log]
format = "json"
access = true

[[route]]
pool = "web"

[pool.web]
policy = "round_robin"

[[pool.web.backend]]
id = "a"
addr = "{}"
"#,
        a.addr()
    ))
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case.
fn fields(tp: &str) -> (String, String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    for (p, n) in parts[1..].iter().zip([32, 16, 2]) {
        assert_eq!(p.len(), n, "{tp}");
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{tp}"
        );
    }
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn logged_trace_id(t: &Tether, request_id: &str) -> String {
    let mut found = None;
    let ok = eventually(Duration::from_secs(5), || {
        found = t.stderr().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["target"] == "access" && v["request_id"] == request_id)
                .then(|| v["trace_id"].as_str().map(str::to_owned))
                .flatten()
        });
        found.is_some()
    });
    assert!(
        ok,
        "no access line with a trace_id for {request_id}:\n{}",
        t.stderr()
    );
    found.unwrap()
}

#[test]
fn a_valid_traceparent_is_continued_with_tethers_span_as_parent() {
    let a = Backend::start("a");
    let t = start(&a);
    let r = get(
        &t.url("/"),
        &[
            ("traceparent", VALID),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ("x-request-id", "trace-1"),
        ],
    );
    assert_eq!(r.status, 200);
    let sent = r.seen_header("traceparent").expect("traceparent upstream");
    let (trace, parent, flags) = fields(&sent);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "tether's own span is the new parent"
    );
    assert_ne!(parent, "0000000000000000");
    assert_eq!(flags, "01");
    assert_eq!(
        r.seen_header("tracestate").as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    assert_eq!(logged_trace_id(&t, "trace-1"), trace);

    // Unsampled stays unsampled; each request gets its own span.
    let r1 = get(
        &t.url("/"),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
    );
    let r2 = get(&t.url("/"), &[("traceparent", VALID)]);
    let (_, p1, f1) = fields(&r1.seen_header("traceparent").unwrap());
    let (_, p2, _) = fields(&r2.seen_header("traceparent").unwrap());
    assert_eq!(f1, "00");
    assert_ne!(p1, p2);
}

#[test]
fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
    let a = Backend::start("a");
    let t = start(&a);
    let mut seen = std::collections::BTreeSet::new();
    for (i, bad) in [
        None,
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
        Some("garbage"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("new-{i}");
        let mut headers = vec![("x-request-id", id.as_str()), ("tracestate", "congo=x")];
        if let Some(b) = bad {
            headers.push(("traceparent", b));
        }
        let r = get(&t.url("/"), &headers);
        assert_eq!(r.status, 200);
        let sent = r.seen_header("traceparent").expect("a new traceparent");
        let (trace, _, flags) = fields(&sent);
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
        assert_ne!(trace, "00000000000000000000000000000000");
        assert_eq!(flags, "01", "a new trace is sampled");
        assert_eq!(
            r.seen_header("tracestate"),
            None,
            "the tracestate of a trace tether did not continue is dropped ({bad:?})"
        );
        assert_eq!(logged_trace_id(&t, &id), trace);
        assert!(seen.insert(trace), "trace ids are fresh");
    }
}
