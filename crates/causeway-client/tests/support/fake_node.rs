//! A scripted stand-in for a node: answers each HTTP request with whatever the
//! test's handler says (any status, any body, or no answer at all) and records
//! the requests, so failover and context handling can be checked exactly.
//! One request per connection (`Connection: close`), enough for a client test.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request as the fake node received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// The body exactly as sent.
    pub raw: String,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
}

/// What the fake node does with a request.
pub enum Reply {
    /// Answer with this status and JSON body.
    Json(u16, Value),
    /// Answer with this status and raw text body.
    Text(u16, &'static str),
    /// Never answer (keep the connection open).
    Hang,
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct FakeNode {
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl FakeNode {
    /// Listens on a port of the OS's choosing (the listener is kept, so no race).
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move { serve(stream, &*handler, &recorded).await });
            }
        });
        FakeNode {
            addr,
            requests,
            task,
        }
    }

    /// Requests received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, handler: &Handler, recorded: &Mutex<Vec<Request>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..header_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let idempotency_key = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
        .map(|(_, v)| v.trim().to_owned());
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap_or(0);
    while data.len() < header_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let raw = &data[header_end..header_end + length];
    let body = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let raw = String::from_utf8_lossy(raw).into_owned();
    let request = Request {
        method,
        path,
        body,
        raw,
        idempotency_key,
    };
    recorded.lock().unwrap().push(request.clone());
    let (status, text) = match handler(&request) {
        Reply::Json(status, body) => (status, body.to_string()),
        Reply::Text(status, text) => (status, text.to_owned()),
        Reply::Hang => {
            // Hold the connection open without answering until the client gives up.
            let _ = stream.read(&mut buf).await;
            return;
        }
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
