//! The status page on the admin listener's `GET /` (DESIGN.md §24): one embedded HTML file
//! (`status.html`, with its style and script inline), served with the tables already rendered
//! from the same `/status` value, so the basics work without JavaScript; the script then polls
//! `/status` and renders the same markup again (it mirrors [`render`]).
//!
//! Owns: the page, its markup and its Content-Security-Policy (`default-src 'none'`, the inline
//! style and script allowed by their SHA-256 only, `connect-src 'self'` for `/status` and the
//! actions). Must not touch: what `/status` says — the page shows those fields and computes
//! nothing of its own (rates, shares and effective weights come from `/status`); actions go
//! through the admin API with the token the user typed in.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use http::{Response, StatusCode};
use serde_json::Value;

const TEMPLATE: &str = include_str!("status.html");
const SLOT: &str = "{{CONTENT}}";

/// The template around the rendered tables, and the policy that allows its inline parts.
struct Page {
    head: &'static str,
    tail: &'static str,
    csp: String,
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| {
        let (head, tail) = TEMPLATE
            .split_once(SLOT)
            .expect("status.html has a {{CONTENT}} slot");
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(inline(TEMPLATE, "script")),
            hash(inline(TEMPLATE, "style")),
        );
        Page { head, tail, csp }
    })
}

/// The text of the template's one `<tag>…</tag>` (what a browser hashes for the CSP).
fn inline<'a>(html: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = html.find(&open).expect("inline element") + open.len();
    let end = start + html[start..].find(&close).expect("closed inline element");
    &html[start..end]
}

/// `sha256-<base64>`, a CSP source expression for inline text.
fn hash(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    )
}

/// The Content-Security-Policy the page is served with.
pub fn csp() -> &'static str {
    &page().csp
}

/// `GET /`: the page with `status` (the `/status` value) rendered into it.
pub fn response(status: &Value) -> Response<Vec<u8>> {
    let p = page();
    let content = render(status);
    let mut body = String::with_capacity(p.head.len() + content.len() + p.tail.len());
    body.push_str(p.head);
    body.push_str(&content);
    body.push_str(p.tail);
    let body = body.into_bytes();
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    let len = r.body().len();
    let h = r.headers_mut();
    let text = |s: &'static str| http::HeaderValue::from_static(s);
    h.insert(http::header::CONTENT_TYPE, text("text/html; charset=utf-8"));
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(http::header::CACHE_CONTROL, text("no-store"));
    if let Ok(v) = http::HeaderValue::from_str(&p.csp) {
        h.insert(http::header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, text("nosniff"));
    h.insert(http::header::X_FRAME_OPTIONS, text("DENY"));
    h.insert(http::header::REFERRER_POLICY, text("no-referrer"));
    r
}

/// How the page names a `/status` state.
fn label(state: &str) -> &str {
    match state {
        "drain" => "draining",
        "maint" => "maintenance",
        other => other,
    }
}

/// Escapes text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// A JSON number or string as text (what JavaScript's `String(x)` prints for integers).
fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// One decimal, or `—` for null (the script's `one`).
fn one(v: &Value) -> String {
    v.as_f64().map_or_else(|| "—".into(), |x| format!("{x:.1}"))
}

/// One decimal and `%`, or `—` for null (the script's `pct`).
fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |x| format!("{x:.1} %"))
}

/// The page's live part, from a `/status` value: the markup the script builds from the same
/// value (keep the two in step; `tests/status_page.rs` compares them in a browser).
pub fn render(st: &Value) -> String {
    let mut o = String::with_capacity(8 * 1024);
    let item = |o: &mut String, term: &str, field: &str, value: &str| {
        let _ = write!(
            o,
            "<div><dt>{term}</dt><dd data-field=\"{field}\">{}</dd></div>",
            esc(value)
        );
    };
    let _ = write!(
        o,
        "<section class=\"summary\"><h1>tether <span data-field=\"version\">{}</span></h1><dl>",
        esc(s(st, "version"))
    );
    item(&mut o, "generation", "generation", &num(&st["generation"]));
    let path = st["config"]["path"].as_str().unwrap_or("built-in");
    item(&mut o, "config", "config.path", path);
    item(&mut o, "started", "started", s(st, "started"));
    item(&mut o, "as of", "time", s(st, "time"));
    let actions = if st["admin_token_required"].as_bool().unwrap_or(true) {
        "need the admin token"
    } else {
        "open (no admin_token_file)"
    };
    item(&mut o, "actions", "admin_token_required", actions);
    o.push_str("</dl></section>");
    reload(&mut o, &st["last_reload"]);
    for p in st["pools"].as_array().into_iter().flatten() {
        pool(&mut o, p);
    }
    o.push_str("<section class=\"routes\"><h2>Routes</h2><table><thead><tr><th>route</th><th>path prefix</th><th>pool</th></tr></thead><tbody>");
    for r in st["routes"].as_array().into_iter().flatten() {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(s(r, "name")),
            esc(s(r, "path_prefix")),
            esc(s(r, "pool"))
        );
    }
    o.push_str("</tbody></table></section>");
    o
}

fn reload(o: &mut String, r: &Value) {
    o.push_str("<section class=\"reload\"><h2>Last reload</h2>");
    if r.is_null() {
        o.push_str("<p data-field=\"last_reload\">none since start</p></section>");
        return;
    }
    let result = s(r, "result");
    let _ = write!(
        o,
        "<p data-field=\"last_reload\"><span class=\"badge {}\">{}</span>{}</p>",
        if result == "success" { "ok" } else { "bad" },
        esc(result),
        esc(&format!(
            " {} by {}, generation {}",
            s(r, "time"),
            s(r, "trigger"),
            num(&r["generation"])
        ))
    );
    let changes = s(r, "changes");
    if !changes.is_empty() {
        let _ = write!(
            o,
            "<p class=\"changes\" data-field=\"last_reload.changes\">{}</p>",
            esc(changes)
        );
    }
    for class in ["impact", "errors"] {
        let lines = r[class].as_array().map(Vec::as_slice).unwrap_or_default();
        if lines.is_empty() {
            continue;
        }
        let _ = write!(o, "<ul class=\"{class}\">");
        for l in lines {
            let _ = write!(o, "<li>{}</li>", esc(l.as_str().unwrap_or("")));
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>");
}

fn pool(o: &mut String, p: &Value) {
    let t = &p["last_10s"];
    let _ = write!(
        o,
        "<section class=\"pool\" data-pool=\"{name}\"><h2>{name}<span class=\"policy\">{}{}</span></h2>\
         <p class=\"pool-traffic\"><span data-field=\"last_10s.per_second\">{}</span> req/s, \
         <span data-field=\"last_10s.percent_5xx\">{}</span> 5xx, over the last \
         <span data-field=\"last_10s.seconds\">{}</span> s</p>",
        esc(s(p, "policy")),
        match s(p, "protocol") {
            "h2c" => " · HTTP/2 (h2c)",
            "h2" => " · HTTP/2 (TLS)",
            _ => "",
        },
        one(&t["per_second"]),
        pct(&t["percent_5xx"]),
        num(&t["seconds"]),
        name = esc(s(p, "name")),
    );
    let br = &p["circuit_breaker"];
    let breaker = br.is_object();
    if breaker {
        let _ = write!(
            o,
            "<p class=\"breaker\">circuit breaker: <span data-field=\"circuit_breaker.queue_length\">{}</span>{}</p>",
            num(&br["queue_length"]),
            esc(&format!(
                " of {} queued (timeout {}), at most {} in flight per backend; refused: {} full, {} timed out",
                num(&br["max_queue"]),
                s(br, "queue_timeout"),
                num(&br["max_in_flight"]),
                num(&br["rejected_full"]),
                num(&br["rejected_timeout"]),
            ))
        );
    }
    let d = &p["discovery"];
    if d.is_object() {
        let (kind, name) = if d["srv"].is_string() {
            ("srv", s(d, "srv"))
        } else {
            ("dns", s(d, "dns"))
        };
        let last = &d["last_resolution"];
        let result = if last.is_object() {
            s(last, "result")
        } else {
            "none yet"
        };
        let mut after = String::new();
        if last.is_object() {
            let _ = write!(
                after,
                " at {}, {} answers",
                s(last, "time"),
                num(&last["answers"])
            );
            if let Some(detail) = last["detail"].as_str() {
                let _ = write!(after, ": {detail}");
            }
        }
        if let Some(held) = d["held"].as_array() {
            let _ = write!(
                after,
                "; an answer of {} backends is held back (POST /reload?force=true applies it)",
                held.len()
            );
        }
        let _ = write!(
            o,
            "<p class=\"discovery\">{}<span data-field=\"discovery.last_resolution.result\">{}</span>{}</p>",
            esc(&format!(
                "discovery: {kind} {name} every {}, {} backends from DNS; last resolution: ",
                s(d, "interval"),
                num(&d["backends"])
            )),
            esc(result),
            esc(&after)
        );
    }
    o.push_str("<table class=\"backends\"><thead><tr>");
    for c in [
        "backend",
        "address",
        "state",
        "weight",
        "in flight",
        "req/s",
        "5xx",
        "sessions",
    ] {
        let _ = write!(o, "<th>{c}</th>");
    }
    if breaker {
        o.push_str("<th>breaker</th>");
    }
    o.push_str("<th class=\"act\">actions</th></tr></thead><tbody>");
    for b in p["backends"].as_array().into_iter().flatten() {
        backend(o, b, br);
    }
    o.push_str("</tbody></table><h3>Session moves</h3>");
    let moves = p["moves"].as_array().map(Vec::as_slice).unwrap_or_default();
    if moves.is_empty() {
        o.push_str("<p class=\"none\">no session moves since start</p>");
    } else {
        o.push_str("<table class=\"moves\"><thead><tr><th>from</th><th>to</th><th>reason</th><th>sessions</th></tr></thead><tbody>");
        for m in moves {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(s(m, "from")),
                esc(s(m, "to")),
                esc(s(m, "reason")),
                num(&m["count"])
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

fn backend(o: &mut String, b: &Value, br: &Value) {
    let state = s(b, "state");
    let admin = s(b, "admin");
    let _ = write!(
        o,
        "<tr data-backend=\"{id}\" data-source=\"{src}\" class=\"s-{st}\"><td data-field=\"id\">{id}</td>\
         <td data-field=\"addr\" class=\"mono\">{}</td>\
         <td data-field=\"state\"><span class=\"badge s-{st}\">{}</span>",
        esc(s(b, "addr")),
        esc(label(state)),
        id = esc(s(b, "id")),
        src = esc(s(b, "source")),
        st = esc(state),
    );
    let mut after = String::new();
    if state == "drain" && !b["drain_deadline"].is_null() {
        let _ = write!(after, " until {}", s(b, "drain_deadline"));
    }
    if state == "ejected" && !b["ejected_until"].is_null() {
        let _ = write!(after, " until {}", s(b, "ejected_until"));
    }
    if admin != "ready" && state != admin {
        let _ = write!(after, " (admin: {admin})");
    }
    o.push_str(&esc(&after));
    if b["slow_start"].as_bool() == Some(true) {
        o.push_str(" <span class=\"badge s-slow\">slow start</span>");
    }
    let _ = write!(
        o,
        "</td><td data-field=\"weight\">{} / {}</td><td data-field=\"in_flight\">{}</td>\
         <td data-field=\"last_10s.per_second\">{}</td><td data-field=\"last_10s.percent_5xx\">{}</td>\
         <td data-field=\"recent_sessions\">{}</td>",
        one(&b["effective_weight"]),
        num(&b["weight"]),
        num(&b["in_flight"]),
        one(&b["last_10s"]["per_second"]),
        pct(&b["last_10s"]["percent_5xx"]),
        num(&b["recent_sessions"]),
    );
    if br.is_object() {
        let _ = write!(
            o,
            "<td data-field=\"breaker\">{} of {}, {} queued</td>",
            num(&b["breaker_in_flight"]),
            num(&br["max_in_flight"]),
            num(&b["breaker_queued"])
        );
    }
    o.push_str("<td class=\"act\">");
    for a in ["drain", "maint", "ready"] {
        let _ = write!(
            o,
            "<button type=\"button\" data-action=\"{a}\">{a}</button>"
        );
    }
    o.push_str("</td></tr>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({
            "version": "0.1.0", "generation": 3,
            "config": {"path": "/etc/tether/tether.toml", "hash": "x", "last_reload_successful": false},
            "routes": [{"name": "<r>", "path_prefix": "/", "pool": "web"}],
            "pools": [{
                "name": "web", "policy": "cookie",
                "last_10s": {"seconds": 10, "requests": 123, "responses_5xx": 4, "per_second": 12.3, "percent_5xx": 3.3},
                "moves": [{"from": "a", "to": "b", "reason": "down", "count": 7}],
                "circuit_breaker": {"max_in_flight": 5, "max_queue": 10, "queue_timeout": "1s", "queue_length": 2, "rejected_full": 1, "rejected_timeout": 0},
                "discovery": {"dns": "app.internal:8080", "interval": "5s", "resolvers": "system", "backends": 1,
                              "last_resolution": {"time": "2029-12-31T23:59:58Z", "result": "held", "answers": 3, "detail": "held back <x>"},
                              "held": ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]},
                "backends": [
                    {"id": "a", "addr": "127.0.0.1:1", "source": "dns", "weight": 2, "effective_weight": 0.4, "state": "drain", "admin": "drain",
                     "health": "up", "ejected": false, "in_flight": 3, "drain_deadline": "2030-01-01T00:00:00Z", "drain_started": "2029-12-31T23:55:00Z",
                     "ejected_until": null, "slow_start": true, "recent_sessions": 17,
                     "last_10s": {"seconds": 10, "requests": 100, "responses_5xx": 0, "per_second": 10.0, "percent_5xx": 0.0},
                     "breaker_in_flight": 3, "breaker_queued": 1},
                    {"id": "b", "addr": "127.0.0.1:2", "weight": 1, "effective_weight": 1.0, "state": "down", "admin": "maint",
                     "health": "down", "ejected": false, "in_flight": 0, "drain_deadline": null, "drain_started": null,
                     "ejected_until": null, "slow_start": false, "recent_sessions": 0,
                     "last_10s": {"seconds": 10, "requests": 0, "responses_5xx": 0, "per_second": 0.0, "percent_5xx": null},
                     "breaker_in_flight": 0, "breaker_queued": 0}
                ]
            }],
            "time": "2030-01-01T00:00:00Z", "started": "2029-12-31T00:00:00Z",
            "last_reload": {"time": "2029-12-31T12:00:00Z", "trigger": "SIGHUP", "result": "failure", "generation": 3,
                            "changes": "", "impact": [], "errors": ["pool.web.backend[0].addr = \"x\" (line 3): missing port <b>"]},
            "admin_token_required": true
        })
    }

    #[test]
    fn renders_every_field_the_page_shows_and_escapes_text() {
        let html = render(&status());
        for needle in [
            "<span data-field=\"version\">0.1.0</span>",
            "<dd data-field=\"generation\">3</dd>",
            "<dd data-field=\"config.path\">/etc/tether/tether.toml</dd>",
            "<dd data-field=\"admin_token_required\">need the admin token</dd>",
            "<span class=\"badge bad\">failure</span> 2029-12-31T12:00:00Z by SIGHUP, generation 3",
            "missing port &lt;b&gt;",
            "<td>&lt;r&gt;</td>",
            "<span data-field=\"last_10s.per_second\">12.3</span> req/s",
            "<span data-field=\"last_10s.percent_5xx\">3.3 %</span> 5xx",
            "<span data-field=\"circuit_breaker.queue_length\">2</span> of 10 queued (timeout 1s)",
            "<tr data-backend=\"a\" data-source=\"dns\" class=\"s-drain\">",
            "<p class=\"discovery\">discovery: dns app.internal:8080 every 5s, 1 backends from DNS; last resolution: <span data-field=\"discovery.last_resolution.result\">held</span> at 2029-12-31T23:59:58Z, 3 answers: held back &lt;x&gt;; an answer of 3 backends is held back (POST /reload?force=true applies it)</p>",
            "<span class=\"badge s-drain\">draining</span> until 2030-01-01T00:00:00Z <span class=\"badge s-slow\">slow start</span>",
            "<td data-field=\"weight\">0.4 / 2</td>",
            "<td data-field=\"in_flight\">3</td>",
            "<td data-field=\"last_10s.per_second\">10.0</td>",
            "<td data-field=\"last_10s.percent_5xx\">0.0 %</td>",
            "<td data-field=\"recent_sessions\">17</td>",
            "<td data-field=\"breaker\">3 of 5, 1 queued</td>",
            "<span class=\"badge s-down\">down</span> (admin: maint)",
            "<td data-field=\"last_10s.percent_5xx\">—</td>",
            "<tr><td>a</td><td>b</td><td>down</td><td>7</td></tr>",
            "<button type=\"button\" data-action=\"drain\">drain</button>",
        ] {
            assert!(html.contains(needle), "missing {needle:?} in\n{html}");
        }
        assert!(!html.contains("<b>"), "text is escaped");
    }

    #[test]
    fn no_reload_no_moves_no_breaker() {
        let mut st = status();
        st["last_reload"] = Value::Null;
        st["pools"][0]["moves"] = json!([]);
        st["pools"][0]
            .as_object_mut()
            .unwrap()
            .remove("circuit_breaker");
        let html = render(&st);
        assert!(html.contains("<p data-field=\"last_reload\">none since start</p>"));
        assert!(html.contains("no session moves since start"));
        assert!(!html.contains("breaker"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let csp = csp();
        assert!(csp.starts_with("default-src 'none'; "));
        let script = inline(TEMPLATE, "script");
        let style = inline(TEMPLATE, "style");
        assert!(script.contains("fetch('/status'"));
        assert!(style.contains(".badge"));
        assert!(csp.contains(&format!("script-src '{}'", hash(script))));
        assert!(csp.contains(&format!("style-src '{}'", hash(style))));
        assert!(!csp.contains("unsafe"), "{csp}");
        // Only one of each, so the hash covers every inline script and style.
        assert_eq!(TEMPLATE.matches("<script").count(), 1);
        assert_eq!(TEMPLATE.matches("<style").count(), 1);
        assert!(
            !TEMPLATE.contains(" style=\""),
            "no style attributes: the CSP refuses them"
        );
        assert!(
            !TEMPLATE.contains("http://") && !TEMPLATE.contains("https://"),
            "no external resources"
        );
        // The well-known SHA-256 of "abc", so `hash` is the digest a browser computes.
        assert_eq!(
            hash("abc"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn the_response_carries_the_page_and_its_policy() {
        let r = response(&status());
        let body = String::from_utf8(r.body().clone()).unwrap();
        assert!(body.starts_with("<!doctype html>"));
        assert!(!body.contains(SLOT));
        assert!(body.contains("<main id=\"live\"><section class=\"summary\">"));
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["content-security-policy"], csp());
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-length"], body.len().to_string().as_str());
    }
}
