//! The status page (DESIGN.md §24) in a real browser: headless Chromium, driven over the
//! DevTools protocol (`common::browser`), against the real `tether` binary and in-process
//! backends on 127.0.0.1:0.
//!
//! One browser and one tether for the whole story, in the order an operator would live it (two
//! cores are shared with other tests; a browser per check would triple the start-up cost):
//! - the inline script and style run under the page's strict CSP, and every backend is listed;
//! - a backend back from maint shows `slow start`; a SIGHUP reload shows with its diff line;
//! - without JavaScript, the server-rendered page shows the same text the script renders;
//! - the numbers on the page are those of `/status` at the same moment (a `/status` read just
//!   before and one just after the page's refresh agree: the page must show exactly that);
//! - an action without the token is refused, and the page says why; nothing changes;
//! - with the token typed in, drain shows `draining`;
//! - a backend killed shows `down` within two refresh periods of `/status` saying so.
//!
//! `TETHER_STATUS_SCREENSHOT=PATH` also writes a screenshot of the page under load, at the end
//! of the story, to PATH (how `docs/status-page.png` is made). Without Chromium the test fails saying what to
//! install, unless `TETHER_SKIP_BROWSER=1`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::{self, Browser, Page};
use common::{post, try_get, wait_for, Backend, Tether};
use serde_json::{json, Value};

const TOKEN: &str = "status-page-test-token";
/// The page's refresh period in this test (`/?refresh=1`).
const PERIOD: Duration = Duration::from_secs(1);

/// The test's config; `web_b_weight` changes on the reload.
fn config(
    token_file: &std::path::Path,
    web: &[Backend],
    shop: &[Backend],
    web_b_weight: u32,
) -> String {
    let web = common::backend_tables("web", web).replace(
        "id = \"web-b\"\n",
        &format!("id = \"web-b\"\nweight = {web_b_weight}\n"),
    );
    format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
admin_token_file = "{token}"
pid_file = "{{DIR}}/tether.pid"
upgrade_sock = "{{DIR}}/tether.sock"

[log]
access = false

[affinity]
secret = "status-page-test-secret-0123456789"

[[route]]
path_prefix = "/"
pool = "web"

[[route]]
name = "shop"
path_prefix = "/shop/"
pool = "shop"

[pool.web]
policy = "round_robin"
[pool.web.health]
path = "/healthz"
interval = "200ms"
timeout = "200ms"
rise = 1
fall = 1
[pool.web.circuit_breaker]
max_in_flight = 50
max_queue = 100
{web}
[pool.shop]
policy = "cookie"
slow_start = "60s"
{shop}"#,
        token = token_file.display(),
        shop = common::backend_tables("shop", shop),
    )
}

/// Requests until `stop`: web traffic with one `5xx` in five, and shop sessions that keep their
/// cookies (recent sessions; moves once a backend goes into maint).
fn load(t: &Tether, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for n in 0..3 {
        let (web, shop, stop) = (t.url("/"), t.url("/shop/"), stop.clone());
        let fail = t.url("/respond/500");
        threads.push(std::thread::spawn(move || {
            let mut cookies: Vec<Option<String>> = vec![None; 8];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let url = if i % 5 == n { &fail } else { &web };
                let _ = try_get(url, &[]);
                i += 1;
                if i.is_multiple_of(2) {
                    // Half as many shop requests as web ones.
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let c = &mut cookies[i % 8];
                let header = c.as_ref().map(|v| format!("tether_shop={v}"));
                let headers: Vec<(&str, &str)> =
                    header.iter().map(|h| ("cookie", h.as_str())).collect();
                if let Ok(r) = try_get(&shop, &headers) {
                    if let Some(v) = r.set_cookie("tether_shop") {
                        *c = Some(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    threads
}

fn post_admin(t: &Tether, path: &str) -> common::Resp {
    post(
        &t.admin_url(path),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
}

/// What the page shows, read from the DOM: per pool its traffic line, breaker queue, backend
/// rows (cell texts by `data-field`) and moves; plus the summary fields. A JS function.
const READ: &str = r#"(() => {
    const txt = (root, f) => { const e = root.querySelector('[data-field="' + f + '"]'); return e ? e.textContent : null; };
    const pools = [...document.querySelectorAll('main section.pool')].map(s => ({
        name: s.dataset.pool,
        per_second: txt(s.querySelector('.pool-traffic'), 'last_10s.per_second'),
        percent_5xx: txt(s.querySelector('.pool-traffic'), 'last_10s.percent_5xx'),
        seconds: txt(s.querySelector('.pool-traffic'), 'last_10s.seconds'),
        queue_length: txt(s, 'circuit_breaker.queue_length'),
        backends: [...s.querySelectorAll('table.backends tbody tr')].map(r => Object.fromEntries(
            [...r.querySelectorAll('td[data-field]')].map(td => [td.dataset.field, td.textContent]))),
        moves: [...s.querySelectorAll('table.moves tbody tr')].map(r => [...r.cells].map(c => c.textContent)),
    }));
    return { generation: txt(document, 'generation'), time: txt(document, 'time'),
             last_reload: txt(document, 'last_reload'), changes: txt(document, 'last_reload.changes'), pools };
})"#;

/// The text of the page's live part, without the "as of" time. A JS function.
const TEXT: &str = r#"(() => {
    const m = document.querySelector('main').cloneNode(true);
    m.querySelector('[data-field="time"]').textContent = '';
    return m.textContent;
})"#;

fn read_page(page: &Page) -> Value {
    page.eval(&format!("({READ})()"))
}

/// Has the page refresh from /status and runs the JS function `f` right after it rendered (in
/// the same turn, so the page's own polling cannot render in between).
fn refreshed(page: &Page, f: &str) -> Value {
    page.eval(&format!(
        "window.tether.refresh().then(ok => ok ? ({f})() : 'refresh failed')"
    ))
}

/// The pool called `name` in a `/status` value.
fn pool<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {s}"))
}

/// The backend `id` of pool `name` in a `/status` value.
fn backend<'a>(s: &'a Value, name: &str, id: &str) -> &'a Value {
    pool(s, name)["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backend {name}/{id} in {s}"))
}

fn one(v: &Value) -> String {
    v.as_f64().map_or_else(|| "—".into(), |x| format!("{x:.1}"))
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |x| format!("{x:.1} %"))
}

fn label(state: &str) -> &str {
    match state {
        "drain" => "draining",
        "maint" => "maintenance",
        s => s,
    }
}

/// What the page must show for the `/status` value `s` (the test's own reading of §24).
fn expected(s: &Value) -> Value {
    let pools: Vec<Value> = s["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let br = &p["circuit_breaker"];
            let backends: Vec<Value> = p["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let mut row = json!({
                        "id": b["id"],
                        "addr": b["addr"],
                        "weight": format!("{} / {}", one(&b["effective_weight"]), b["weight"]),
                        "in_flight": b["in_flight"].to_string(),
                        "last_10s.per_second": one(&b["last_10s"]["per_second"]),
                        "last_10s.percent_5xx": pct(&b["last_10s"]["percent_5xx"]),
                        "recent_sessions": b["recent_sessions"].to_string(),
                        // The state cell starts with the state's name; checked apart.
                        "state": label(b["state"].as_str().unwrap()),
                    });
                    if br.is_object() {
                        row["breaker"] = json!(format!(
                            "{} of {}, {} queued",
                            b["breaker_in_flight"], br["max_in_flight"], b["breaker_queued"]
                        ));
                    }
                    row
                })
                .collect();
            let moves: Vec<Value> = p["moves"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    json!([
                        m["from"],
                        m["to"],
                        m["reason"],
                        m["count"].to_string()
                    ])
                })
                .collect();
            json!({
                "name": p["name"],
                "per_second": one(&p["last_10s"]["per_second"]),
                "percent_5xx": pct(&p["last_10s"]["percent_5xx"]),
                "seconds": p["last_10s"]["seconds"].to_string(),
                "queue_length": if br.is_object() { json!(br["queue_length"].to_string()) } else { Value::Null },
                "backends": backends,
                "moves": moves,
            })
        })
        .collect();
    let r = &s["last_reload"];
    let (last_reload, changes) = if r.is_null() {
        (json!("none since start"), Value::Null)
    } else {
        (
            json!(format!(
                "{} {} by {}, generation {}",
                r["result"].as_str().unwrap(),
                r["time"].as_str().unwrap(),
                r["trigger"].as_str().unwrap(),
                r["generation"]
            )),
            if r["changes"] == "" {
                Value::Null
            } else {
                r["changes"].clone()
            },
        )
    };
    json!({
        "generation": s["generation"].to_string(),
        "last_reload": last_reload,
        "changes": changes,
        "pools": pools,
    })
}

/// The page's reading with each state cell cut to its first word-group (the badge), and the
/// time left out: comparable with [`expected`].
fn comparable(mut shown: Value) -> Value {
    shown.as_object_mut().unwrap().remove("time");
    for p in shown["pools"].as_array_mut().unwrap() {
        for b in p["backends"].as_array_mut().unwrap() {
            let cell = b["state"].as_str().unwrap().to_string();
            let badge = ["draining", "maintenance", "ejected", "down", "up"]
                .into_iter()
                .find(|l| cell.starts_with(l))
                .unwrap_or("?");
            b["state"] = json!(badge);
        }
    }
    shown
}

/// `/status` without the fields that change by themselves from one read to the next.
fn settled(t: &Tether) -> Value {
    let mut s = t.status();
    s.as_object_mut().unwrap().remove("time");
    s
}

/// Reads `/status`, has the page refresh, reads `/status` again, until both reads agree
/// (traffic windows move once a second); returns the agreed value and the page's reading.
fn same_moment(t: &Tether, page: &Page) -> (Value, Value) {
    for _ in 0..50 {
        let before = settled(t);
        let shown = refreshed(page, READ);
        let after = settled(t);
        if before == after {
            return (before, shown);
        }
    }
    panic!("/status never held still across a page refresh in 50 tries");
}

#[test]
fn the_status_page_in_a_real_browser() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let secrets = tempfile::Builder::new()
        .prefix("tether-page-")
        .tempdir()
        .unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let web: Vec<Backend> = ["web-a", "web-b", "web-c"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let shop: Vec<Backend> = ["shop-a", "shop-b"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let t = Tether::start(&config(&token_file, &web, &shop, 1));
    let b = Browser::start(&chromium);
    let page = b.page(true);
    let url = t.admin_url("/?refresh=1");
    page.goto(&url);

    // --- The script and the style run under the CSP; every backend is listed. ---
    assert!(
        page.wait_true(
            "document.body.classList.contains('js') && typeof window.tether === 'object'",
            Duration::from_secs(10)
        )
        .is_some(),
        "the inline script did not run (CSP?)\n{}",
        b.log()
    );
    assert_eq!(
        page.eval("getComputedStyle(document.querySelector('.badge')).borderTopLeftRadius"),
        json!("999px"),
        "the inline style is not applied (CSP?)"
    );
    let status = t.status();
    let ids = |pools: &Value| -> Vec<String> {
        pools
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| {
                let name = p["name"].as_str().unwrap().to_string();
                p["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |b| format!("{name}/{}", b["id"].as_str().unwrap()))
            })
            .collect()
    };
    let listed: Vec<String> = read_page(&page)["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let name = p["name"].as_str().unwrap().to_string();
            p["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |b| format!("{name}/{}", b["id"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(listed, ids(&status["pools"]));
    assert_eq!(listed.len(), 5);

    // --- Traffic: requests, 5xx, sessions, and moves (shop-a in maint, then back). ---
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&t, stop.clone());
    wait_for("recent sessions on shop", Duration::from_secs(10), || {
        pool(&t.status(), "shop")["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["recent_sessions"].as_u64() > Some(0))
    });
    assert_eq!(
        post_admin(&t, "/pools/shop/backends/shop-a/maint").status,
        200
    );
    wait_for("sessions moved off shop-a", Duration::from_secs(10), || {
        pool(&t.status(), "shop")["moves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["from"] == "shop-a" && m["reason"] == "maint")
    });
    assert_eq!(
        post_admin(&t, "/pools/shop/backends/shop-a/ready").status,
        200
    );
    // Back from maint: slow start ramps it up (DESIGN.md §13); the page says so.
    assert_eq!(backend(&t.status(), "shop", "shop-a")["slow_start"], true);
    assert!(
        page.wait_true(
            "(() => { const c = document.querySelector(\"section[data-pool='shop'] tr[data-backend='shop-a'] td[data-field='state']\"); return c !== null && c.textContent === 'up slow start'; })()",
            2 * PERIOD + Duration::from_millis(50)
        )
        .is_some(),
        "shop-a not shown in slow start"
    );
    wait_for(
        "the page shows traffic and 5xx",
        Duration::from_secs(10),
        || {
            let shown = read_page(&page);
            let web = pool(&shown, "web");
            web["per_second"] != json!("0.0") && web["percent_5xx"] != json!("0.0 %")
        },
    );
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }

    // --- A reload (web-b's weight 1 -> 2), shown with its diff line. ---
    t.write_config(&config(&token_file, &web, &shop, 2));
    t.sighup();
    wait_for("the reload", Duration::from_secs(10), || {
        t.status()["last_reload"]["result"] == "success"
    });
    let reloaded = t.status()["last_reload"].clone();
    assert_eq!(reloaded["generation"], 2, "{reloaded}");
    assert_eq!(reloaded["trigger"], "SIGHUP", "{reloaded}");
    assert!(
        reloaded["changes"].as_str().unwrap().contains("web"),
        "{reloaded}"
    );
    assert!(
        page.wait_true(
            "document.querySelector('[data-field=\"generation\"]').textContent === '2'",
            2 * PERIOD + Duration::from_millis(50)
        )
        .is_some(),
        "the page does not show generation 2"
    );

    // --- The numbers on the page are those of /status at the same moment. ---
    let (s, shown) = same_moment(&t, &page);
    let web_pool = pool(&s, "web");
    assert!(
        web_pool["last_10s"]["requests"].as_u64() > Some(0)
            && web_pool["last_10s"]["responses_5xx"].as_u64() > Some(0),
        "the comparison must cover real traffic: {web_pool}"
    );
    assert!(!pool(&s, "shop")["moves"].as_array().unwrap().is_empty());
    assert_eq!(comparable(shown), expected(&s));

    // --- Without JavaScript: the server renders the same text the script does. ---
    let plain = b.page(false);
    for attempt in 0.. {
        let before = settled(&t);
        plain.goto(&t.admin_url("/"));
        let script = refreshed(&page, TEXT);
        let after = settled(&t);
        if before != after {
            assert!(attempt < 50, "/status never held still");
            continue;
        }
        assert_eq!(
            plain.eval("document.body.classList.contains('js')"),
            json!(false),
            "scripts are off in this page"
        );
        let server = plain.eval(&format!("({TEXT})()"));
        assert_eq!(
            server, script,
            "the server-rendered page and the script's rendering differ"
        );
        assert_eq!(
            comparable(read_page(&plain)),
            expected(&before),
            "without JavaScript"
        );
        // Read-only without JavaScript: the action buttons are not shown.
        assert_eq!(
            plain.eval("getComputedStyle(document.querySelector('td.act')).display"),
            json!("none")
        );
        break;
    }

    // --- Without the token, an action is refused and the page says why. ---
    assert!(page
        .eval("document.getElementById('mode').textContent")
        .as_str()
        .unwrap()
        .starts_with("read-only"));
    page.click("section[data-pool='web'] tr[data-backend='web-b'] button[data-action='maint']");
    assert!(
        page.wait_true(
            "document.getElementById('msg').textContent.includes('refused')",
            Duration::from_secs(10)
        )
        .is_some(),
        "no refusal shown"
    );
    let msg = page.eval("document.getElementById('msg').textContent");
    assert_eq!(
        msg,
        json!("maint web/web-b refused (401 missing or wrong bearer token): this page is read-only until you enter the admin token above.")
    );
    assert_eq!(backend(&t.status(), "web", "web-b")["admin"], "ready");

    // --- With the token typed in, drain shows `draining`. ---
    page.click("#token");
    page.type_text(TOKEN);
    page.click("#token-use");
    assert_eq!(
        page.eval("sessionStorage.getItem('tether-admin-token')"),
        json!(TOKEN)
    );
    page.click("section[data-pool='web'] tr[data-backend='web-a'] button[data-action='drain']");
    let drained = "(() => { const c = document.querySelector(\"section[data-pool='web'] tr[data-backend='web-a'] td[data-field='state']\"); return c !== null && c.textContent.startsWith('draining'); })()";
    assert!(
        page.wait_true(drained, 2 * PERIOD).is_some(),
        "web-a not shown draining; message: {}",
        page.eval("document.getElementById('msg').textContent")
    );
    assert_eq!(backend(&t.status(), "web", "web-a")["state"], "drain");
    assert_eq!(
        page.eval("document.getElementById('msg').textContent"),
        json!("drain web/web-a: done, now draining")
    );

    // --- A backend killed shows `down` within two refresh periods of /status saying so. ---
    let killed = Instant::now();
    web[2].stop();
    wait_for(
        "/status says web-c is down",
        Duration::from_secs(10),
        || backend(&t.status(), "web", "web-c")["state"] == "down",
    );
    let reported = Instant::now();
    let down = "(() => { const c = document.querySelector(\"section[data-pool='web'] tr[data-backend='web-c'] td[data-field='state']\"); return c !== null && c.textContent.startsWith('down'); })()";
    // Two periods, plus this test's 50 ms polling of the page.
    let took = page.wait_true(down, 2 * PERIOD + Duration::from_millis(50));
    assert!(
        took.is_some(),
        "web-c not shown down within two refresh periods ({:?}) of /status saying so",
        2 * PERIOD
    );
    eprintln!(
        "web-c: /status said down {:?} after the kill, the page {:?} later",
        reported - killed,
        took.unwrap()
    );

    if let Some(path) = std::env::var_os("TETHER_STATUS_SCREENSHOT") {
        // Under load again, with a full 10 s window, web-a draining, web-c down, shop-a in
        // slow start, a reload and some moves behind it.
        let stop = Arc::new(AtomicBool::new(false));
        let threads = load(&t, stop.clone());
        wait_for("a full window", Duration::from_secs(15), || {
            let s = t.status();
            pool(&s, "web")["last_10s"]["seconds"] == json!(10)
                && backend(&s, "web", "web-b")["last_10s"]["requests"].as_u64() > Some(100)
        });
        page.eval("window.tether.refresh().then(() => window.scrollTo(0, 0))");
        std::fs::write(&path, page.screenshot()).expect("write the screenshot");
        eprintln!("screenshot written to {}", path.to_string_lossy());
        stop.store(true, Ordering::Relaxed);
        for th in threads {
            th.join().unwrap();
        }
    }
}

/// Without a browser: `GET /` is the page with its policy and the tables rendered in; `/status`
/// counts exactly the requests and 5xx of the last seconds, and says until when a backend is
/// ejected.
#[test]
fn the_page_and_the_status_fields_over_plain_http() {
    let solo = Backend::start("solo");
    let pair: Vec<Backend> = ["pair-a", "pair-b"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
pid_file = "{{DIR}}/tether.pid"
upgrade_sock = "{{DIR}}/tether.sock"
[log]
access = false
[[route]]
path_prefix = "/solo/"
pool = "solo"
[[route]]
path_prefix = "/"
pool = "pair"
[pool.solo]
policy = "round_robin"
{solo}
[pool.pair]
policy = "round_robin"
[pool.pair.outlier]
consecutive_5xx = 3
base_ejection = "60s"
max_ejected_percent = 50
{pair}"#,
        solo = common::backend_tables("solo", &[&solo]),
        pair = common::backend_tables("pair", &pair),
    ));

    // The page, server-rendered, with its headers.
    let page = common::get(&t.admin_url("/"), &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    for id in ["solo", "pair-a", "pair-b"] {
        assert!(
            page.body.contains(&format!(
                "<tr data-backend=\"{id}\" data-source=\"static\" class=\"s-up\">"
            )),
            "{id} not rendered"
        );
    }
    assert!(!page.body.contains("{{CONTENT}}"));
    let head = common::try_request("HEAD", &t.admin_url("/"), &[], None).unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = post(&t.admin_url("/"), &[], "");
    assert_eq!(post.status, 405);

    // 10 requests to the solo backend, 4 of them answered 500: exactly that in its window.
    for i in 0..10 {
        let path = if i < 4 {
            "/solo/respond/500"
        } else {
            "/solo/x"
        };
        assert!(try_get(&t.url(path), &[]).is_ok());
    }
    wait_for("the sampler saw the 10", Duration::from_secs(5), || {
        backend(&t.status(), "solo", "solo")["last_10s"]["requests"] == 10
    });
    let s = t.status();
    let w = &backend(&s, "solo", "solo")["last_10s"];
    assert_eq!(w["responses_5xx"], 4, "{w}");
    assert_eq!(w["percent_5xx"], 40.0, "{w}");
    let secs = w["seconds"].as_f64().unwrap();
    assert!((1.0..=10.0).contains(&secs), "{w}");
    assert_eq!(
        w["per_second"].as_f64().unwrap(),
        (10.0 / secs * 10.0).round() / 10.0,
        "{w}"
    );
    assert_eq!(pool(&s, "solo")["last_10s"]["requests"], 10);
    // Unrelated fields kept their names and meaning.
    for key in [
        "id",
        "addr",
        "weight",
        "effective_weight",
        "health",
        "admin",
        "state",
        "in_flight",
    ] {
        assert!(
            backend(&s, "solo", "solo").get(key).is_some(),
            "/status lost {key}"
        );
    }
    assert!(s["last_reload"].is_null());
    assert_eq!(s["admin_token_required"], false);

    // Server errors in a row eject one of the pair (at most 50 %): until when is shown.
    let before = std::time::SystemTime::now();
    for _ in 0..6 {
        let _ = try_get(&t.url("/respond/500"), &[]);
    }
    wait_for("an ejection", Duration::from_secs(5), || {
        pool(&t.status(), "pair")["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["state"] == "ejected")
    });
    let s = t.status();
    let ejected: Vec<&Value> = pool(&s, "pair")["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "ejected")
        .collect();
    assert_eq!(ejected.len(), 1, "{s}");
    let until = humantime::parse_rfc3339(ejected[0]["ejected_until"].as_str().unwrap()).unwrap();
    let lasts = until.duration_since(before).unwrap();
    assert!(
        lasts >= Duration::from_secs(59) && lasts <= Duration::from_secs(62),
        "ejected until {until:?}, {lasts:?} after the first 500"
    );
    let other = pool(&s, "pair")["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["state"] != "ejected")
        .unwrap()
        .clone();
    assert!(other["ejected_until"].is_null(), "{other}");
    // The page says the same.
    let page = common::get(&t.admin_url("/"), &[]).body;
    let id = ejected[0]["id"].as_str().unwrap();
    assert!(
        page.contains(&format!(
            "<tr data-backend=\"{id}\" data-source=\"static\" class=\"s-ejected\">"
        )) && page.contains(&format!(
            "<span class=\"badge s-ejected\">ejected</span> until {}",
            ejected[0]["ejected_until"].as_str().unwrap()
        )),
        "the page does not show {id} ejected until then"
    );
}

/// Cross-site request forgery, in a real browser: a page of another origin (here the proxy
/// listener's, another port) that POSTs to the admin API without a token gets nothing changed,
/// while the status page's own origin may (the admin listener has no token: loopback only).
#[test]
fn a_page_of_another_origin_cannot_post_to_the_admin_api() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let web: Vec<Backend> = ["web-a", "web-b"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let t = Tether::start(&format!(
        "[server]\nlisten = [\"{{LISTEN}}\"]\nadmin = \"{{ADMIN}}\"\n\
         [[route]]\npool = \"web\"\n[pool.web]\npolicy = \"round_robin\"\n{}",
        common::backend_tables("web", &web)
    ));
    let admin_state = |id: &str| backend(&t.status(), "web", id)["admin"].clone();
    let b = Browser::start(&chromium);
    let page = b.page(true);
    let post = |path: &str| {
        format!(
            "fetch('{}', {{method: 'POST', mode: 'no-cors'}}).then(r => 'sent ' + r.type, e => 'error ' + e.message)",
            t.admin_url(path)
        )
    };
    // Another origin: a page the proxy serves.
    page.goto(&t.url("/anything"));
    let sent = page.eval(&post("/pools/web/backends/web-a/maint"));
    assert!(
        sent.as_str()
            .is_some_and(|s| s.starts_with("sent") || s.starts_with("error")),
        "{sent}"
    );
    // The request reached tether (an opaque response), but changed nothing.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        admin_state("web-a"),
        "ready",
        "a cross-site POST drove the admin API"
    );
    // The status page's own origin.
    page.goto(&t.admin_url("/"));
    let own = page.eval(&format!(
        "fetch('{}', {{method: 'POST'}}).then(r => r.status)",
        t.admin_url("/pools/web/backends/web-a/maint")
    ));
    assert_eq!(own, json!(200), "the page's own POST");
    assert_eq!(admin_state("web-a"), "maint");
}
