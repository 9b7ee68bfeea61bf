//! The web console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`) against a real 6-node cluster with one
//! node stopped. Saves screenshots under `target/console/`.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session through chromedriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

fn webdriver(method: &str, url: &str, body: Option<Json>) -> Json {
    use std::sync::OnceLock;
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap();
    let req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    rt.block_on(async move {
        let r = req.send().await.map_err(|e| e.to_string())?;
        r.json::<Json>().await.map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| json!({"value": {"error": e}}))
}

impl Browser {
    fn start(port: u16) -> Browser {
        assert!(
            std::path::Path::new("/usr/bin/chromedriver").exists(),
            "the console test needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        );
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(10), || {
            webdriver("GET", &format!("{base}/status"), None)["value"]["ready"] == json!(true)
        })
        .expect("chromedriver ready");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let created = webdriver("POST", &format!("{base}/session"), Some(caps));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        webdriver(method, &url, body)["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Json {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Polls a script until it returns `true`.
    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.js(script) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64_decode(png.as_str().expect("base64 PNG"));
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    /// Messages the page logged at level SEVERE (errors).
    fn errors(&self) -> Vec<Json> {
        let logs = self.cmd("POST", "/se/log", Some(json!({"type": "browser"})));
        logs.as_array()
            .map(|l| {
                l.iter()
                    .filter(|e| e["level"] == json!("SEVERE"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        webdriver("DELETE", &url, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the WebDriver screenshot encoding), decoded.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().take_while(|c| **c != b'=').count();
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c) << (18 - 6 * i);
        }
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..n.saturating_sub(1)]);
    }
    out
}

#[test]
fn the_console_shows_a_down_node_reads_keys_and_previews_a_view_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(48, 6);
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let mut s = Session::new();
    assert_eq!(s.put(&a[0], "hello", "world").0, 201);
    for i in 0..30 {
        s.put(&a[i % 5], &format!("k{i}"), "v");
    }
    nodes[5].kill9();

    let browser = Browser::start(9515 + (std::process::id() % 400) as u16);
    browser.goto(&format!("http://{}/ui", a[1]));
    // The stopped node shows as down, in the node table and on the shard map.
    let down = &a[5];
    browser.wait_for(
        "the stopped node shown as down",
        &format!(
            "const r = document.querySelector('tr[data-node=\"{down}\"]'); \
             const c = document.querySelector('.chip[data-node=\"{down}\"]'); \
             return !!r && r.classList.contains('down') && !!c && c.classList.contains('down');"
        ),
    );
    let live = &a[0];
    assert_eq!(
        browser.js(&format!(
            "return document.querySelector('tr[data-node=\"{live}\"] .state').textContent;"
        )),
        json!("up")
    );
    // Key distribution: one bar per shard.
    assert_eq!(
        browser.js("return document.querySelectorAll('#bars .bar').length;"),
        json!(3)
    );
    // Live rates, once two status documents have arrived.
    browser.wait_for(
        "the rate charts",
        "const l = document.querySelector('#chart-requests polyline'); \
         return !!l && l.getAttribute('points').split(' ').length >= 3;",
    );
    browser.screenshot("overview.png");

    // A key written through node 1, read with the page's own session.
    browser.type_into("#lookup-key", "hello");
    browser.click("#lookup-go");
    browser.wait_for(
        "the key lookup",
        "return document.getElementById('lookup-result').dataset.value === 'world';",
    );

    // The view-change preview: dropping the third shard's nodes.
    browser.type_into("#vc-view", &a[..4].join(","));
    browser.type_into("#vc-repl", "2");
    browser.click("#vc-preview");
    browser.wait_for(
        "the preview",
        "return !!document.getElementById('vc-share');",
    );
    let shard3 =
        browser.js("return document.querySelector('#vc-plan li[data-shard=\"3\"]').textContent;");
    let shard3 = shard3.as_str().unwrap().to_string();
    assert!(shard3.contains("removed"), "{shard3}");
    assert!(
        shard3.contains(&format!("loses {}, {}", a[4], a[5])),
        "{shard3}"
    );
    let shard1 =
        browser.js("return document.querySelector('#vc-plan li[data-shard=\"1\"]').textContent;");
    assert_eq!(shard1, json!("shard 1: unchanged"));
    let share = browser.js("return document.getElementById('vc-share').textContent;");
    assert!(share.as_str().unwrap().contains("33%"), "{share}");
    browser.screenshot("view-change-preview.png");

    // A narrow (phone) window still lays the page out.
    browser.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 420, "height": 900})),
    );
    std::thread::sleep(Duration::from_millis(300));
    let overflow =
        browser.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    assert_eq!(overflow, json!(true), "the page fits a phone's width");
    browser.screenshot("phone.png");

    let errors = browser.errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
