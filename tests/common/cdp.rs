//! A real headless Chromium driven over the Chrome DevTools Protocol, for tests that use a
//! page as a person would: type into it, click it (mouse events at an element's place, not
//! `element.click()`), and answer its `confirm()` dialogs.
#![allow(dead_code)]

use super::{eventually, get, HttpClient, TempDir};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// A headless Chromium with its DevTools endpoint on a free port, killed on drop.
pub struct Browser {
    child: Child,
    /// `127.0.0.1:port` of the DevTools endpoint.
    pub devtools: String,
}

impl Browser {
    /// Starts Chromium on `about:blank`, its profile in `dir`. Panics (never skips) when
    /// Chromium is missing.
    pub fn launch(dir: &TempDir) -> Browser {
        let mut child = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1100,1500"])
            .arg(format!("--user-data-dir={}", dir.0.join("profile").display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium is required for this test (apt-get install chromium); .ci/run installs it");
        // Chromium says where DevTools listens on stderr; the rest of stderr is drained so
        // that it never blocks on a full pipe.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            devtools: String::new(),
        };
        b.devtools = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium announces its DevTools endpoint");
        b
    }

    /// The page Chromium opened, connected.
    pub async fn page(&self, c: &HttpClient) -> Page {
        let list = eventually("a page target", Duration::from_secs(10), || async {
            let g = get(c, &format!("http://{}/json/list", self.devtools)).await;
            let v: Value = serde_json::from_slice(&g.body).ok()?;
            v.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .map(String::from)
        })
        .await;
        let page = Page::connect(&list).await;
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One page's DevTools session.
pub struct Page {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: Arc<AtomicU64>,
    accept: Arc<AtomicBool>,
    dialogs: Arc<Mutex<Vec<String>>>,
}

impl Page {
    async fn connect(ws: &str) -> Page {
        let (stream, _) = tokio_tungstenite::connect_async(ws)
            .await
            .unwrap_or_else(|e| panic!("DevTools WebSocket {ws}: {e}"));
        let (mut sink, mut source) = stream.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let page = Page {
            out,
            pending: Default::default(),
            // Ids from 1 for calls; dialogs are answered with ids of their own.
            next: Arc::new(AtomicU64::new(1)),
            accept: Arc::new(AtomicBool::new(false)),
            dialogs: Default::default(),
        };
        let (pending, accept, dialogs, out, next) = (
            page.pending.clone(),
            page.accept.clone(),
            page.dialogs.clone(),
            page.out.clone(),
            page.next.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(m)) = source.next().await {
                let Message::Text(text) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = v["id"].as_u64() {
                    if let Some(tx) = pending.lock().unwrap().remove(&id) {
                        let _ = tx.send(v);
                    }
                } else if v["method"] == "Page.javascriptDialogOpening" {
                    // A dialog blocks the page (and the click that opened it) until it is
                    // answered: answered here, as the test said beforehand.
                    let msg = v["params"]["message"].as_str().unwrap_or("").to_string();
                    dialogs.lock().unwrap().push(msg);
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let answer = json!({
                        "id": id,
                        "method": "Page.handleJavaScriptDialog",
                        "params": { "accept": accept.load(Ordering::SeqCst) },
                    });
                    let _ = out.send(Message::text(answer.to_string()));
                }
            }
        });
        page
    }

    /// Calls a DevTools method and returns its result; panics on an error answer.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({ "id": id, "method": method, "params": params });
        self.out
            .send(Message::text(msg.to_string()))
            .expect("DevTools connection open");
        let v = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer from Chromium"))
            .expect("DevTools connection open");
        assert!(v["error"].is_null(), "{method}: {}", v["error"]);
        v["result"].clone()
    }

    /// Evaluates `js` in the page (awaiting a promise), returning its value.
    pub async fn eval(&self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `js` is `true` in the page.
    pub async fn until(&self, what: &str, js: &str) {
        eventually(what, Duration::from_secs(15), || async {
            (self.eval(js).await == Value::Bool(true)).then_some(())
        })
        .await
    }

    /// Loads `url` and waits for it to be whole.
    pub async fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.until(
            "the page loads",
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                json!(url)
            ),
        )
        .await;
    }

    /// Clicks the middle of the element `selector` names with the mouse.
    pub async fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            s = json!(selector)
        );
        let at = self.eval(&js).await;
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("nothing to click at {selector}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            let ev = json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", ev).await;
        }
    }

    /// Types `text` where the focus is.
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Presses a key (e.g. "Tab") where the focus is.
    pub async fn press(&self, key: &str, code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            let ev =
                json!({ "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code });
            self.call("Input.dispatchKeyEvent", ev).await;
        }
    }

    /// How the next dialogs are answered: OK (`true`) or Cancel.
    pub fn answer_dialogs(&self, accept: bool) {
        self.accept.store(accept, Ordering::SeqCst);
    }

    /// The messages of the dialogs the page opened, in order.
    pub fn dialogs(&self) -> Vec<String> {
        self.dialogs.lock().unwrap().clone()
    }

    /// A PNG of what the page shows.
    pub async fn screenshot(&self) -> Vec<u8> {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }
}

/// Standard base64, as DevTools sends binary data.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, v)| n | (*v as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
