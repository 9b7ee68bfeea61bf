//! The transport for the request path: forwarded key operations and read fetches go
//! over one long-lived, multiplexed connection per peer instead of one HTTP exchange
//! each; bulk traffic (replication, resharding) stays on [`HttpTransport`].
//!
//! A connection starts as `GET /internal/stream` with `Upgrade: causeway-rpc` (and the
//! cluster secret, checked like every internal route), so nodes still listen on one
//! port. After `101 Switching Protocols` both directions carry frames: a little-endian
//! `u32` length, then postcard of `(request id, Envelope)` one way and
//! `(request id, RpcReply)` the other. The server handles every request in its own
//! task, so replies come back in any order; the writer batches whatever frames are
//! queued into one socket write. At most [`MAX_IN_FLIGHT`] requests of a connection are
//! handled at once; one over that is answered at once with [`RpcReply::Error`] (the
//! caller fails over as it would from a busy replica), never dropped.
//!
//! Invariants:
//! - every call is bounded by its timeout, connecting included (at most 500 ms);
//! - a connection that failed (reset, closed, undecodable frame) is never reused: the
//!   next call dials again; one on which nothing has been heard for [`STALL`] while a
//!   call timed out (a partitioned or paused peer) is dropped the same way;
//! - on a loopback address the connection is bound to the node's own IP, as with HTTP,
//!   so packet filters can cut nodes apart by address.

use super::http::{HttpTransport, SECRET_HEADER};
use super::{Envelope, Rpc, RpcFuture, RpcReply, Transport, TransportError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub const STREAM_PATH: &str = "/internal/stream";
pub const UPGRADE_PROTOCOL: &str = "causeway-rpc";

/// Longest wait for a connection (TCP and upgrade) to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Silence after which a connection with a timed-out call is considered stuck.
const STALL: Duration = Duration::from_secs(2);
/// Frames queued for one connection before calls fail fast instead of queueing more.
const QUEUE: usize = 8192;

/// Most requests of one connection handled at once (each is a task; a stalled disk
/// must not let a peer pile up tasks without end).
pub const MAX_IN_FLIGHT: usize = 1024;

/// Requests that take the stream: small, latency-bound, on a client's path. A watch
/// does not: it may be held for a minute, and must not fill the stream's
/// [`MAX_IN_FLIGHT`] slots.
fn uses_stream(rpc: &Rpc) -> bool {
    match rpc {
        Rpc::Key { req, .. } => !matches!(req.op, crate::transport::KeyOp::Watch { .. }),
        Rpc::Fetch { .. } | Rpc::GetView | Rpc::KeyCount => true,
        _ => false,
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

pub struct StreamTransport {
    http: HttpTransport,
    own_ip: Option<IpAddr>,
    secret: Option<String>,
    peers: Mutex<HashMap<String, Slot>>,
}

impl StreamTransport {
    pub fn new(own_address: &str, secret: Option<String>) -> StreamTransport {
        let own_ip = own_address
            .parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(IpAddr::is_loopback);
        StreamTransport {
            http: HttpTransport::new(own_address, secret.clone()),
            own_ip,
            secret,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, to: &str) -> Slot {
        self.peers.lock().entry(to.to_string()).or_default().clone()
    }
}

impl Transport for StreamTransport {
    fn call(&self, to: &str, msg: Envelope, timeout: Duration) -> RpcFuture {
        if !uses_stream(&msg.rpc) {
            return self.http.call(to, msg, timeout);
        }
        let slot = self.slot(to);
        let (own_ip, secret, to) = (self.own_ip, self.secret.clone(), to.to_string());
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            let conn = connection(&slot, &to, own_ip, secret.as_deref(), deadline).await?;
            conn.call(&to, &msg, deadline).await
        })
    }
}

/// The live connection to `to`, dialled if there is none (or the last one failed).
async fn connection(
    slot: &Slot,
    to: &str,
    own_ip: Option<IpAddr>,
    secret: Option<&str>,
    deadline: Instant,
) -> Result<Arc<Conn>, TransportError> {
    let mut guard = tokio::time::timeout_at(deadline, slot.lock())
        .await
        .map_err(|_| TransportError::Timeout(to.to_string()))?;
    if let Some(c) = guard
        .as_ref()
        .filter(|c| !c.shared.closed.load(Ordering::Acquire))
    {
        return Ok(c.clone());
    }
    *guard = None;
    let by = deadline.min(Instant::now() + CONNECT_TIMEOUT);
    let conn = match tokio::time::timeout_at(by, dial(to, own_ip, secret)).await {
        Ok(Ok(c)) => Arc::new(c),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(TransportError::Timeout(to.to_string())),
    };
    *guard = Some(conn.clone());
    Ok(conn)
}

/// What a connection's reader task shares with its callers.
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<RpcReply>>>,
    closed: AtomicBool,
    last_heard: Mutex<Instant>,
}

impl Shared {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Dropping the senders fails every waiting call at once.
        self.pending.lock().clear();
    }
}

/// One multiplexed connection to a peer. Dropping it stops its tasks and closes it.
struct Conn {
    frames: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Conn {
    async fn call(
        &self,
        to: &str,
        msg: &Envelope,
        deadline: Instant,
    ) -> Result<RpcReply, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().insert(id, tx);
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.pending.lock().remove(&id);
            return Err(TransportError::Unreachable(
                to.to_string(),
                "connection closed".into(),
            ));
        }
        if self.frames.try_send(frame(&(id, msg))).is_err() {
            self.shared.pending.lock().remove(&id);
            return Err(TransportError::Unreachable(
                to.to_string(),
                "connection backlog full".into(),
            ));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(TransportError::Unreachable(
                to.to_string(),
                "connection closed".into(),
            )),
            Err(_) => {
                self.shared.pending.lock().remove(&id);
                if self.shared.last_heard.lock().elapsed() > STALL {
                    self.shared.close();
                }
                Err(TransportError::Timeout(to.to_string()))
            }
        }
    }
}

/// Connects to `to` and upgrades the connection; starts its reader and writer.
async fn dial(
    to: &str,
    own_ip: Option<IpAddr>,
    secret: Option<&str>,
) -> Result<Conn, TransportError> {
    let unreachable =
        |e: std::io::Error| TransportError::Unreachable(to.to_string(), e.to_string());
    let addr = tokio::net::lookup_host(to)
        .await
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| TransportError::Unreachable(to.to_string(), "no address".into()))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(unreachable)?;
    if let Some(ip) = own_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0)).map_err(unreachable)?;
    }
    let stream = socket.connect(addr).await.map_err(unreachable)?;
    stream.set_nodelay(true).map_err(unreachable)?;
    let (r, mut w) = stream.into_split();
    let mut hello = format!(
        "GET {STREAM_PATH} HTTP/1.1\r\nHost: {to}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n"
    );
    if let Some(s) = secret {
        hello.push_str(&format!("{SECRET_HEADER}: {s}\r\n"));
    }
    hello.push_str("\r\n");
    w.write_all(hello.as_bytes()).await.map_err(unreachable)?;
    let mut r = BufReader::new(r);
    let mut status = String::new();
    r.read_line(&mut status).await.map_err(unreachable)?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.map_err(unreachable)? == 0 || line == "\r\n" {
            break;
        }
    }
    if !status.starts_with("HTTP/1.1 101") {
        return Err(TransportError::Refused(
            to.to_string(),
            format!("stream upgrade refused: {}", status.trim()),
        ));
    }
    let shared = Arc::new(Shared {
        pending: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
        last_heard: Mutex::new(Instant::now()),
    });
    let (frames, queued) = mpsc::channel(QUEUE);
    let reader = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Ok(bytes) = read_frame(&mut r, usize::MAX).await {
                *shared.last_heard.lock() = Instant::now();
                let Ok((id, reply)) = postcard::from_bytes::<(u64, RpcReply)>(&bytes) else {
                    break;
                };
                if let Some(tx) = shared.pending.lock().remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            shared.close();
        })
    };
    let writer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            write_frames(w, queued).await;
            shared.close();
        })
    };
    Ok(Conn {
        frames,
        shared,
        next_id: AtomicU64::new(0),
        tasks: [reader.abort_handle(), writer.abort_handle()],
    })
}

/// Serves an upgraded connection: every request frame is handled in its own task (at
/// most [`MAX_IN_FLIGHT`] at once; see [`admit`]) and answered on the same connection.
/// Ends when the peer closes it or sends garbage.
pub async fn serve<S, H>(io: S, node: Arc<H>, max_frame: usize)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: super::Handler,
{
    let (r, w) = tokio::io::split(io);
    let (replies, queued) = mpsc::channel(QUEUE);
    let writer = tokio::spawn(write_frames(w, queued));
    let mut r = BufReader::new(r);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Ok(bytes) = read_frame(&mut r, max_frame).await {
        let Ok((id, env)) = postcard::from_bytes::<(u64, Envelope)>(&bytes) else {
            tracing::debug!("undecodable frame on an internal stream; closing it");
            break;
        };
        let permit = match admit(in_flight.clone().try_acquire_owned().ok()) {
            Ok(permit) => permit,
            Err(busy) => {
                // Waits only while the reply queue is full (the peer reads slowly).
                if replies.send(frame(&(id, busy))).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let node = node.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let reply = node.handle(env).await;
            let _ = replies.send(frame(&(id, reply))).await;
            drop(permit);
        });
    }
    // The writer ends once every handler still running has sent its reply.
    drop(replies);
    let _ = writer.await;
}

/// Whether a request frame is handled: with a slot among the connection's
/// [`MAX_IN_FLIGHT`], yes; without one, the reply that refuses it.
fn admit<P>(slot: Option<P>) -> Result<P, RpcReply> {
    slot.ok_or_else(|| {
        RpcReply::Error(format!(
            "busy: {MAX_IN_FLIGHT} requests already in progress on this connection"
        ))
    })
}

/// One frame: length, then the postcard encoding of `msg`.
fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(msg).expect("frames always encode");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame over the size limit",
        ));
    }
    // Grown as bytes arrive: a length alone does not get memory reserved.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Writes queued frames, as many per socket write as are waiting.
async fn write_frames<W: AsyncWrite + Unpin>(w: W, mut queued: mpsc::Receiver<Vec<u8>>) {
    let mut w = tokio::io::BufWriter::with_capacity(64 * 1024, w);
    while let Some(f) = queued.recv().await {
        if w.write_all(&f).await.is_err() {
            return;
        }
        while let Ok(f) = queued.try_recv() {
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_over_the_bound_is_refused_with_a_reply() {
        assert!(matches!(admit(Some(())), Ok(())));
        assert!(matches!(admit::<()>(None), Err(RpcReply::Error(e)) if e.contains("busy")));
    }
}
