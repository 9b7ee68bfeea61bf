//! Hostile input against real node processes: thousands of generated requests
//! with malformed, oversized, truncated and wrongly typed bodies, paths,
//! headers, causal contexts and view changes.
//!
//! What must hold for every one of them: the node does not crash, answers
//! within 5 s, never with a 5xx other than the documented 503, and every
//! answer the application gives is a JSON object with a `causal-context`
//! object. Requests broken at the HTTP framing level (a body cut short, a
//! length that lies, a header too large to parse) may instead be refused by
//! the HTTP layer or closed, but still never with a 5xx and never by a crash.
//! Afterwards the cluster must still serve ordinary requests correctly.
//!
//! Two nodes (two shards) run so that requests for the other shard's keys,
//! with their hostile contexts, go through the proxy path too. The number of
//! cases is `HOSTILE_CASES` (default 3000); a failure is shrunk by proptest
//! to a minimal request, printed with the node's answer and the seed that
//! replays the run (`HOSTILE_SEED`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_causeway");
const SECRET: &str = "hostile-secret";
/// The client's deadline, plus scheduling slack for a loaded CI machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

/// Two node processes on their own loopback addresses.
struct Nodes {
    addrs: Vec<String>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Nodes {
    fn start() -> Nodes {
        // A third octet from the pid keeps concurrent runs apart, a fourth from a
        // counter the tests of this run.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let net = 20 + std::process::id() % 200;
        let first = 2 + 2 * STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addrs: Vec<String> = (first..first + 2)
            .map(|h| format!("127.88.{net}.{h}:13800"))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Nodes {
            addrs: addrs.clone(),
            children: Vec::new(),
            _dir: dir,
        };
        for addr in &addrs {
            let data = nodes._dir.path().join(addr.replace(':', "-"));
            let log = std::fs::File::create(nodes._dir.path().join(format!("{addr}.log")))
                .expect("log file");
            let child = Command::new(BIN)
                .arg("serve")
                .env("ADDRESS", addr)
                .env("VIEW", addrs.join(","))
                .env("REPL_FACTOR", "1")
                .env("DATA_DIR", &data)
                .env("CLUSTER_SECRET", SECRET)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
            nodes.children.push(child);
        }
        for addr in &addrs {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let raw =
                    format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                if exchange(addr, raw.as_bytes(), false).is_ok_and(|a| a.status == 200) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {addr} did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        nodes
    }

    /// Panics with the node's log if a process has exited.
    fn assert_alive(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self._dir.path().join(format!("{}.log", self.addrs[i]));
                panic!(
                    "node {} exited ({status}); log:\n{}",
                    self.addrs[i],
                    tail(&log)
                );
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut start = text.len().saturating_sub(4000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// An HTTP answer, as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Sends raw bytes, optionally half-closes, and reads one answer.
/// `Err` carries what went wrong at the transport level.
fn exchange(addr: &str, request: &[u8], half_close: bool) -> Result<Answer, String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(ANSWER_WITHIN)).expect("timeout");
    s.set_write_timeout(Some(ANSWER_WITHIN)).expect("timeout");
    // The server may answer (and close) before reading a body it refuses;
    // a failed write is then not the server's fault, the answer is what counts.
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(answer) = parse_answer(&buf) {
                    return Ok(answer);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {:?}", started.elapsed()));
            }
            Err(e) if buf.is_empty() => return Err(format!("closed: {e}")),
            Err(_) => break,
        }
    }
    parse_answer(&buf).ok_or_else(|| {
        if buf.is_empty() {
            "closed without answering".to_string()
        } else {
            format!(
                "incomplete answer: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(300)])
            )
        }
    })
}

/// Parses one complete HTTP/1.1 answer (content-length or chunked body).
fn parse_answer(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse::<usize>().ok();
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &buf[end + 4..];
    if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..line_end]).ok()?.trim(), 16)
                    .ok()?;
            at = line_end + 2;
            if size == 0 {
                return Some(Answer { status, body });
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    }
    let length = length.unwrap_or(0);
    (rest.len() >= length).then(|| Answer {
        status,
        body: rest[..length].to_vec(),
    })
}

/// How the request is put on the wire.
#[derive(Debug, Clone)]
enum Framing {
    /// Correct Content-Length.
    Length,
    /// Transfer-Encoding: chunked, in pieces of the given size.
    Chunked(usize),
    /// Content-Length promises `missing` more bytes than are sent, then the
    /// client half-closes.
    Truncated(usize),
    /// Content-Length smaller than the body: the rest looks like a second request.
    Short(usize),
}

impl Framing {
    /// Framing the application is sure to see whole.
    fn is_clean(&self) -> bool {
        matches!(self, Framing::Length | Framing::Chunked(_))
    }
}

#[derive(Debug, Clone)]
struct Hostile {
    target: usize,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
    /// A header line too large for any sane server (the HTTP layer may refuse it).
    huge_header: Option<usize>,
}

impl Hostile {
    fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
            self.method, self.path
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if let Some(n) = self.huge_header {
            out.extend_from_slice(b"x-huge: ");
            out.extend(std::iter::repeat_n(b'h', n));
            out.extend_from_slice(b"\r\n");
        }
        match &self.framing {
            Framing::Length => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            Framing::Chunked(piece) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in self.body.chunks((*piece).max(1)) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::Truncated(missing) => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len() + missing).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            Framing::Short(cut) => {
                let declared = self.body.len().saturating_sub(*cut);
                out.extend_from_slice(format!("Content-Length: {declared}\r\n\r\n").as_bytes());
                out.extend_from_slice(&self.body);
            }
        }
        out
    }

    /// Requests whose every byte reaches the application as one request.
    fn app_sees_it_whole(&self) -> bool {
        self.framing.is_clean() && self.huge_header.is_none()
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{1,8}",
        2 => "[a-zA-Z0-9_~-]{45,56}",
        1 => "[a-z]{60,4000}",
        1 => Just(String::new()),
        2 => "(%[0-9A-F]{2}){1,12}",
        1 => any::<String>().prop_map(|s| percent_encode(&s)),
        1 => "[a-z]{1,4}/[a-z]{1,4}",
        1 => prop_oneof![Just("..".to_string()), Just("%2e%2e".into()), Just(".".into()), Just("%2F".into())],
    ]
}

fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![Just("kv-store"), Just("kvs")];
    prop_oneof![
        10 => (prefix.clone(), key()).prop_map(|(p, k)| format!("/{p}/keys/{k}")),
        3 => prefix.clone().prop_map(|p| format!("/{p}/view-change")),
        1 => prefix.clone().prop_map(|p| format!("/{p}/shards")),
        1 => (prefix.clone(), "[0-9a-z%-]{0,12}").prop_map(|(p, id)| format!("/{p}/shards/{id}")),
        1 => prefix.prop_map(|p| format!("/{p}/key-count")),
        2 => "[a-z/._-]{0,20}".prop_map(|j| format!("/internal/{j}")),
        1 => "/[a-zA-Z0-9/%._-]{0,40}",
        1 => (prop_oneof![Just("/kv-store/keys/a"), Just("/health"), Just("/kv-store/shards")], "[a-z0-9=&%]{0,30}")
            .prop_map(|(p, q)| format!("{p}?{q}")),
        1 => Just("//kv-store//keys//x".to_string()),
        1 => Just("*".to_string()),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("GET".to_string()),
        6 => Just("PUT".to_string()),
        3 => Just("DELETE".to_string()),
        1 => Just("POST".to_string()),
        1 => Just("PATCH".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => "[A-Za-z]{1,12}",
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        (0usize..200_000).prop_map(|n| Value::from("v".repeat(n))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Contexts shaped like the real thing, with wrong types and extreme numbers.
fn context() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1.5)),
        Just(json!(1e300)),
        Just(json!("7")),
        Just(json!(null)),
        any::<u32>().prop_map(|n| json!(n)),
    ];
    let shard = prop_oneof![
        Just("1"),
        Just("2"),
        Just("0"),
        Just("999999"),
        Just("-1"),
        Just("x"),
        Just("")
    ];
    let origin = prop_oneof![
        Just("0000000000000000".to_string()),
        "[0-9a-f]{16}",
        ".{0,20}"
    ];
    let deps = prop::collection::btree_map(
        shard,
        prop::collection::btree_map(origin, number.clone(), 0..4),
        0..4,
    )
    .prop_map(|m| json!(m));
    prop_oneof![
        4 => (deps, number.clone(), number).prop_map(|(d, e, t)| json!({"deps": d, "epoch": e, "ts": t})),
        2 => json_value(),
        1 => Just(json!({})),
        1 => Just(json!({"deps": []})),
        1 => Just(json!({"deps": {"1": []}, "epoch": {}, "ts": []})),
    ]
}

/// View-change bodies that must all be refused (none names a usable cluster,
/// so the nodes under test keep their view).
fn view_change(addrs: Vec<String>) -> impl Strategy<Value = Value> {
    let bad_address = prop_oneof![
        Just("abc".to_string()),
        Just("1.2.3.4".to_string()),
        Just("1.2.3.4:99999".to_string()),
        Just(":80".to_string()),
        Just("[::1]:x".to_string()),
        Just(String::new()),
        "[a-z:,]{1,30}",
    ];
    let bad_rf = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(3)),
        Just(json!(1.5)),
        Just(json!(u64::MAX)),
        Just(json!(null)),
        Just(json!([])),
        Just(json!("x")),
    ];
    let own = addrs.join(",");
    prop_oneof![
        (bad_rf.clone(), Just(own.clone()))
            .prop_map(|(rf, v)| json!({"view": v, "repl-factor": rf})),
        (bad_rf, Just(addrs.clone())).prop_map(|(rf, v)| json!({"view": v, "repl-factor": rf})),
        (prop::collection::vec(bad_address.clone(), 1..5))
            .prop_map(|v| json!({"view": v.join(","), "repl-factor": 1})),
        (prop::collection::vec(bad_address, 1..5))
            .prop_map(|v| json!({"view": v, "repl-factor": 1})),
        json_value().prop_map(|v| json!({"view": v, "repl-factor": 1})),
        Just(json!({"view": format!("{own},{own}"), "repl-factor": 1})),
        Just(json!({"view": "", "repl-factor": 1})),
        Just(json!({"repl-factor": 1})),
        Just(json!({"view": own})),
    ]
}

fn body(addrs: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let object = (
        prop::option::of(prop_oneof![
            // Mostly a valid value, so hostile contexts reach the write path.
            3 => "[ -~]{0,40}".prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            2 => json_value(),
        ]),
        prop::option::of(context()),
        prop::collection::btree_map("[a-z-]{1,10}", json_value(), 0..3),
    )
        .prop_map(|(value, ctx, extra)| {
            let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            if let Some(c) = ctx {
                m.insert("causal-context".into(), c);
            }
            serde_json::to_vec(&Value::Object(m)).expect("json")
        })
        .boxed();
    prop_oneof![
        8 => object.clone(),
        3 => view_change(addrs).prop_map(|v| serde_json::to_vec(&v).expect("json")),
        2 => (object, any::<prop::sample::Index>()).prop_map(|(b, cut)| {
            let at = cut.index(b.len().max(1));
            b[..at].to_vec()
        }),
        2 => prop::collection::vec(any::<u8>(), 0..300),
        1 => Just(Vec::new()),
        1 => (1usize..50_000).prop_map(|depth| {
            let mut b = vec![b'['; depth];
            b.extend(std::iter::repeat_n(b']', depth));
            b
        }),
        1 => prop_oneof![
            Just(b"null".to_vec()),
            Just(b"\"value\"".to_vec()),
            Just(b"[]".to_vec()),
            Just(b"{\"value\": 1e999999}".to_vec()),
            Just(b"{\"value\": \"a\", \"value\": \"b\"}".to_vec()),
            Just(b"\xEF\xBB\xBF{\"value\": \"bom\"}".to_vec()),
            Just(b"{\"value\": \"\\ud800\"}".to_vec()),
            Just(b"{\"value\": \"\xff\xfe\"}".to_vec()),
        ],
        1 => (2_000_000usize..2_300_000).prop_map(|n| {
            let mut b = b"{\"value\": \"".to_vec();
            b.extend(std::iter::repeat_n(b'x', n));
            b.extend_from_slice(b"\"}");
            b
        }),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let content_type = prop_oneof![
        4 => Just(Some("application/json".to_string())),
        1 => Just(None),
        1 => Just(Some("text/plain".to_string())),
        1 => Just(Some("application/json; charset=latin1".to_string())),
        1 => "[ -~]{0,30}".prop_map(Some),
    ];
    let secret = prop_oneof![
        3 => Just(None),
        1 => Just(Some(SECRET.to_string())),
        1 => "[ -~]{0,40}".prop_map(Some),
    ];
    let extra = prop::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,60}"), 0..4);
    (content_type, secret, extra).prop_map(|(ct, secret, extra)| {
        let mut h = Vec::new();
        if let Some(ct) = ct {
            h.push(("Content-Type".to_string(), ct));
        }
        if let Some(s) = secret {
            h.push(("x-causeway-secret".to_string(), s));
        }
        h.extend(extra);
        h
    })
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        12 => Just(Framing::Length),
        2 => (1usize..4096).prop_map(Framing::Chunked),
        1 => (1usize..10_000).prop_map(Framing::Truncated),
        1 => (1usize..50).prop_map(Framing::Short),
    ]
}

fn hostile(addrs: Vec<String>) -> impl Strategy<Value = Hostile> {
    (
        0..addrs.len(),
        method(),
        path(),
        headers(),
        body(addrs),
        framing(),
        prop_oneof![20 => Just(None), 1 => (16_000usize..200_000).prop_map(Some)],
    )
        .prop_map(
            |(target, method, path, headers, body, framing, huge_header)| Hostile {
                target,
                method,
                path,
                headers,
                body,
                framing,
                huge_header,
            },
        )
}

/// Judges one answer (see the module docs).
fn judge(req: &Hostile, result: Result<Answer, String>) -> Result<(), String> {
    let answer = match result {
        Ok(a) => a,
        Err(e) if e.starts_with("connect") => return Err(format!("node unreachable: {e}")),
        Err(e) if e.starts_with("no answer") => return Err(e),
        // Framing the HTTP layer could not parse may be met with a closed
        // connection; anything the application sees whole must be answered.
        Err(e) if req.app_sees_it_whole() => return Err(format!("no answer: {e}")),
        Err(_) => return Ok(()),
    };
    if answer.status >= 500 && answer.status != 503 {
        return Err(format!(
            "answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(500)])
        ));
    }
    if !req.app_sees_it_whole() && answer.body.is_empty() {
        // A bare refusal from the HTTP layer (e.g. 400, 431) is acceptable here.
        return Ok(());
    }
    if req.method == "HEAD" {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "answer {} is not JSON ({e}): {:?}",
            answer.status,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
        )
    })?;
    match body.get("causal-context") {
        Some(Value::Object(_)) => Ok(()),
        _ => Err(format!(
            "answer {} has no causal-context object: {body}",
            answer.status
        )),
    }
}

fn describe(req: &Hostile) -> String {
    let body = String::from_utf8_lossy(&req.body[..req.body.len().min(400)]);
    format!(
        "{} {} (to node {}, framing {:?}, huge header {:?}, {} body bytes)\nheaders: {:?}\nbody: {body}",
        req.method,
        if req.path.len() > 200 { &req.path[..200] } else { &req.path },
        req.target,
        req.framing,
        req.huge_header,
        req.body.len(),
        req.headers
    )
}

/// A round trip an ordinary client makes; panics if the node no longer serves it.
fn ordinary_round_trip(addrs: &[String]) {
    for (i, addr) in addrs.iter().enumerate() {
        let key = format!("after-hostile-{i}");
        let put = json!({"value": format!("fine-{i}"), "causal-context": {}}).to_string();
        let raw = format!(
            "PUT /kv-store/keys/{key} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{put}",
            put.len()
        );
        let a = exchange(addr, raw.as_bytes(), false).expect("put after hostile input");
        assert!(
            matches!(a.status, 200 | 201),
            "PUT answered {}: {:?}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        let ctx: Value =
            serde_json::from_slice::<Value>(&a.body).expect("json")["causal-context"].clone();
        let get = json!({"causal-context": ctx}).to_string();
        let other = &addrs[(i + 1) % addrs.len()];
        let raw = format!(
            "GET /kv-store/keys/{key} HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{get}",
            get.len()
        );
        let a = exchange(other, raw.as_bytes(), false).expect("get after hostile input");
        let body: Value = serde_json::from_slice(&a.body).expect("json");
        assert_eq!(a.status, 200, "GET answered {}: {body}", a.status);
        assert_eq!(body["value"], json!(format!("fine-{i}")));
    }
}

#[test]
fn hostile_requests_never_crash_a_node_nor_break_the_contract() {
    let cases: u32 = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut nodes = Nodes::start();
    let addrs = nodes.addrs.clone();
    // HOSTILE_SEED replays a run; otherwise each run explores new inputs.
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let sent = std::cell::Cell::new(0u32);
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&hostile(addrs.clone()), |req| {
        sent.set(sent.get() + 1);
        let addr = &addrs[req.target];
        let started = Instant::now();
        let result = exchange(
            addr,
            &req.to_bytes(addr),
            matches!(req.framing, Framing::Truncated(_)),
        );
        if let Ok(a) = &result {
            *statuses.borrow_mut().entry(a.status).or_insert(0) += 1;
        }
        let verdict = judge(&req, result).and_then(|()| {
            if started.elapsed() > ANSWER_WITHIN {
                Err(format!("answered after {:?}", started.elapsed()))
            } else {
                Ok(())
            }
        });
        verdict.map_err(|problem| {
            TestCaseError::fail(format!("{problem}\nrequest: {}", describe(&req)))
        })
    });
    nodes.assert_alive();
    let sent = sent.get();
    if let Err(e) = result {
        panic!("after {sent} requests (HOSTILE_SEED={seed}): {e}");
    }
    assert!(sent >= cases, "only {sent} of {cases} requests were sent");
    let statuses = statuses.into_inner();
    eprintln!("answers to {sent} hostile requests, by status: {statuses:?}");
    // The generator must reach the interesting paths, not just one refusal.
    if cases >= 1000 {
        for status in [400, 404, 405, 413] {
            assert!(
                statuses.contains_key(&status),
                "no {status} answer among {statuses:?}"
            );
        }
        assert!(
            statuses.contains_key(&200) || statuses.contains_key(&201),
            "no request succeeded: {statuses:?}"
        );
    }
    ordinary_round_trip(&addrs);
    nodes.assert_alive();
}

#[test]
fn the_answer_parser_reads_both_body_framings() {
    let a = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("length");
    assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
    let a = parse_answer(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n").expect("chunked");
    assert_eq!((a.status, a.body.as_slice()), (404, &b"{}"[..]));
    assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}").is_none());
    let req = Hostile {
        target: 0,
        method: "PUT".into(),
        path: "/kv-store/keys/a".into(),
        headers: vec![],
        body: b"{}".to_vec(),
        framing: Framing::Chunked(1),
        huge_header: None,
    };
    let bytes = String::from_utf8(req.to_bytes("h")).expect("ascii");
    assert!(bytes.ends_with("1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"), "{bytes}");
    // The judge refuses what the contract forbids.
    let bad = |status, body: &str| {
        judge(
            &req,
            Ok(Answer {
                status,
                body: body.as_bytes().to_vec(),
            }),
        )
    };
    assert!(bad(500, r#"{"causal-context":{}}"#).is_err());
    assert!(bad(400, "oops").is_err());
    assert!(bad(400, r#"{"message":"x"}"#).is_err());
    assert!(bad(503, r#"{"causal-context":{}}"#).is_ok());
    assert!(judge(&req, Err("closed without answering".into())).is_err());
}

/// Opens an internal stream (with the secret) and returns the socket after the 101.
fn open_stream(addr: &str) -> TcpStream {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = format!(
        "GET /internal/stream HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: causeway-rpc\r\nx-causeway-secret: {SECRET}\r\n\r\n"
    );
    s.write_all(hello.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("upgrade answer"),
            1,
            "closed early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

#[test]
fn garbage_on_an_internal_stream_ends_only_that_stream() {
    use std::io::{Read, Write};
    let mut nodes = Nodes::start();
    let addr = nodes.addrs[0].clone();
    // A frame over the size limit: the node closes the stream.
    let mut s = open_stream(&addr);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).expect("closed"), 0);
    // A frame cut short by the peer going away.
    let mut s = open_stream(&addr);
    s.write_all(&1_000_000u32.to_le_bytes()).unwrap();
    s.write_all(b"short").unwrap();
    drop(s);
    // A frame of the right length that does not decode: the node closes the stream.
    let mut s = open_stream(&addr);
    s.write_all(&8u32.to_le_bytes()).unwrap();
    s.write_all(&[0xff; 8]).unwrap();
    let mut rest = Vec::new();
    let n = s
        .read_to_end(&mut rest)
        .expect("the node closes the stream");
    assert_eq!(n, 0, "no reply to garbage: {rest:?}");
    // Without the secret there is no stream at all.
    let raw = format!(
        "GET /internal/stream HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: causeway-rpc\r\n\r\n"
    );
    let a = exchange(&addr, raw.as_bytes(), false).expect("an answer");
    assert_eq!(a.status, 401);
    nodes.assert_alive();
    ordinary_round_trip(&nodes.addrs.clone());
    nodes.assert_alive();
}
