//! A headless Chromium driven over the DevTools protocol, for tests of the status page.
//!
//! Owns: starting Debian's `chromium` with `--remote-debugging-pipe` (the protocol as
//! NUL-terminated JSON on the browser's fd 3 and 4: no port, no websocket, nothing another test
//! can connect to), one page per [`Browser::page`], and stopping the browser by its own pid when
//! dropped (`Browser.close`, then SIGKILL after 5 s). Every call waits at most [`CALL_TIMEOUT`].
//!
//! Chromium is found as `chromium` (Debian), `chromium-browser` or `$TETHER_CHROMIUM`; a test
//! that needs it fails with what to install, unless `TETHER_SKIP_BROWSER=1` says to skip it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one protocol call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser binary, or `None` when the test should be skipped (`TETHER_SKIP_BROWSER=1`).
/// Panics with what to install when it is missing and not skipped.
pub fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("TETHER_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .iter()
                .map(PathBuf::from),
        );
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    if std::env::var_os("TETHER_SKIP_BROWSER").is_some() {
        eprintln!("SKIPPED: no chromium and TETHER_SKIP_BROWSER is set");
        return None;
    }
    panic!(
        "chromium not found: install Debian's `chromium` package (as .ci/run does), set \
         TETHER_CHROMIUM to a Chromium binary, or set TETHER_SKIP_BROWSER=1 to skip browser tests \
         on purpose"
    );
}

pub struct Browser {
    child: Child,
    input: Mutex<ChildStdin>,
    replies: Mutex<Receiver<Value>>,
    next_id: AtomicU64,
    _profile: tempfile::TempDir,
    log: PathBuf,
}

impl Browser {
    /// Starts a headless Chromium with a fresh profile, window 1400×1000.
    pub fn start(binary: &std::path::Path) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("tether-chromium-")
            .tempdir()
            .expect("profile dir");
        let log = profile.path().join("chromium.log");
        let stderr = std::fs::File::create(&log).expect("chromium log");
        // The pipe protocol wants fd 3 (commands in) and fd 4 (replies out): the shell moves
        // our stdin and stdout pipes there, then execs, so the pid is Chromium's own.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg(binary)
            .args([
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox", // CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--force-device-scale-factor=1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let input = child.stdin.take().expect("stdin pipe");
        let output = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(output);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            // Events are dropped; only replies (with an id) are waited for.
                            if v.get("id").is_some() && tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser {
            child,
            input: Mutex::new(input),
            replies: Mutex::new(rx),
            next_id: AtomicU64::new(1),
            _profile: profile,
            log,
        }
    }

    /// Chromium's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One protocol call (on a page when `session` is given); its `result`, or the error.
    pub fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        {
            let mut input = self.input.lock().unwrap();
            input
                .write_all(&bytes)
                .and_then(|_| input.flush())
                .map_err(|e| format!("{method}: write to chromium: {e}"))?;
        }
        let replies = self.replies.lock().unwrap();
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match replies.recv_timeout(left) {
                Ok(v) if v["id"] == json!(id) => {
                    return match v.get("error") {
                        Some(e) => Err(format!("{method}: {e}")),
                        None => Ok(v["result"].clone()),
                    };
                }
                Ok(_) => continue, // a late reply to an earlier call that timed out
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no reply within {CALL_TIMEOUT:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: chromium exited\n{}", self.log()))
                }
            }
        }
    }

    /// A new page (tab) attached for commands, at `about:blank`; `javascript: false` turns
    /// scripts off in it (what a browser without JavaScript sees).
    pub fn page(&self, javascript: bool) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .expect("Target.createTarget");
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .expect("Target.attachToTarget");
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        page.call("Page.enable", json!({}));
        if !javascript {
            page.call(
                "Emulation.setScriptExecutionDisabled",
                json!({"value": true}),
            );
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask it to close (it then ends its helper processes), wait up to 5 s, then kill it.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut input) = self.input.lock() {
            let mut bytes =
                serde_json::to_vec(&json!({"id": id, "method": "Browser.close"})).unwrap();
            bytes.push(0);
            let _ = input.write_all(&bytes);
            let _ = input.flush();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    /// A protocol call on this page; panics on error.
    #[track_caller]
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.browser
            .call(Some(&self.session), method, params)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads `url` and waits (≤ 30 s) until the document is complete.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(
            r.get("errorText").is_none(),
            "navigate to {url}: {}",
            r["errorText"]
        );
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            // Works with scripts disabled too: the protocol's evaluation is not page script.
            if self.eval("document.readyState") == json!("complete")
                && self.eval("location.href") == json!(url)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{url} did not load within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value as JSON.
    #[track_caller]
    pub fn eval(&self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Clicks the middle of the first element matching `selector` with real mouse events
    /// (so a hidden or covered element is not clicked by accident). Panics when none is visible.
    #[track_caller]
    pub fn click(&self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let rect = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
        ));
        let (x, y) = match rect.as_array().map(Vec::as_slice) {
            Some([x, y]) => (x.as_f64().unwrap(), y.as_f64().unwrap()),
            _ => panic!("no visible element matches {selector}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Types `text` into the focused element, as a keyboard would insert it.
    pub fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// The page as PNG bytes (the whole page, not only the window).
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("png data"))
            .expect("base64 png")
    }

    /// Polls `expr` every 50 ms until it is true; returns how long that took, or `None` after
    /// `timeout`.
    pub fn wait_true(&self, expr: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.eval(expr) == json!(true) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
