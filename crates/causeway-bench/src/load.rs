//! The load itself: one keep-alive HTTP/1.1 connection per worker (hyper's bare client
//! connection, no pool, no locks between workers), workers spread round-robin over the nodes,
//! each counting into its own [`Tally`]. A worker either sends back to back (closed loop) or
//! follows a fixed schedule (paced), in which case a server that falls behind is charged for the
//! queue it causes (see [`paced_latency`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::summary::{is_error, Failure, Op, Tally};

/// A worker's connection; `None` until (re)connected.
pub(crate) type Conn = Option<SendRequest<Full<Bytes>>>;

/// How long a request may take before it counts as a timeout (the API's client timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect, so a dead node is not hammered by a spinning worker.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Tries per key in the preload before its write counts as failed.
const PRELOAD_TRIES: u32 = 3;

/// What every worker shares, read-only.
#[derive(Debug)]
pub(crate) struct Workload {
    pub nodes: Vec<String>,
    pub keys: u64,
    pub read_ratio: f64,
    /// The PUT body, the same for every key: `{"value": "...", "causal-context": {}}`.
    pub put_body: Bytes,
    /// Requests per second offered in total, when paced.
    pub rate: Option<f64>,
    pub concurrency: usize,
}

impl Workload {
    pub fn new(
        nodes: Vec<String>,
        keys: u64,
        value_size: usize,
        read_ratio: f64,
        rate: Option<f64>,
        concurrency: usize,
    ) -> Self {
        let body = serde_json::json!({"value": "v".repeat(value_size), "causal-context": {}});
        Self {
            nodes,
            keys,
            read_ratio,
            put_body: Bytes::from(body.to_string()),
            rate,
            concurrency,
        }
    }

    /// The node worker `id` talks to.
    pub fn node_of(&self, id: usize) -> &str {
        &self.nodes[id % self.nodes.len()]
    }
}

/// When worker `id` of `concurrency` sends its `k`-th request, as an offset from the start, for
/// a total offered `rate`: each worker sends every `concurrency / rate` seconds, and the workers
/// are staggered evenly inside that interval so the union is a steady stream.
pub(crate) fn scheduled_offset(id: usize, k: u64, concurrency: usize, rate: f64) -> Duration {
    let interval = concurrency as f64 / rate;
    let stagger = interval * id as f64 / concurrency as f64;
    Duration::from_secs_f64(k as f64 * interval + stagger)
}

/// The latency to report for a paced request, and when the worker becomes free again, as if
/// every request had been sent exactly on time. The generator's timer ticks in milliseconds and
/// its thread may be descheduled, so actual send times drift; charging that drift to the server
/// would be wrong, and so would dropping the delay a slow answer causes to the requests queued
/// behind it (coordinated omission). So each request is taken to start at its scheduled time or
/// when the worker's previous request would have finished (whichever is later), and to take the
/// service time it actually took; its latency is counted from the scheduled time.
pub(crate) fn paced_latency(
    scheduled: Instant,
    free_at: Instant,
    service: Duration,
) -> (Duration, Instant) {
    let done = scheduled.max(free_at) + service;
    (done - scheduled, done)
}

/// Opens a keep-alive HTTP/1.1 connection to `node`.
pub(crate) async fn connect(node: &str) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(node).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the worker drops its sender or the server closes; either way the worker
        // sees it on its next request and reconnects.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request on `conn`, (re)connecting first if needed, and reads the whole answer so
/// the connection can be reused. Any failure drops the connection.
async fn send(conn: &mut Conn, node: &str, request: Request<Full<Bytes>>) -> Result<u16, Failure> {
    let exchange = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = None;
            *conn = Some(connect(node).await.map_err(|_| Failure::Connect)?);
        }
        let sender = conn.as_mut().expect("connected above");
        sender.ready().await.map_err(|_| Failure::Io)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Io)?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Io)?;
        Ok(status)
    };
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Timeout),
    };
    if outcome.is_err() {
        *conn = None;
    }
    if outcome == Err(Failure::Connect) {
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    outcome
}

fn key_request(node: &str, op: Op, key: u64, put_body: &Bytes) -> Request<Full<Bytes>> {
    let (method, body) = match op {
        Op::Get => (Method::GET, Bytes::from_static(b"{}")),
        Op::Put => (Method::PUT, put_body.clone()),
    };
    Request::builder()
        .method(method)
        .uri(format!("/kv-store/keys/key{key}"))
        .header(HOST, node)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("the request parts are valid")
}

/// A small fast generator (SplitMix64) so each worker draws keys without shared state.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Worker `id`'s measured phase: requests until `deadline`, closed loop or on schedule.
pub(crate) async fn measure(
    id: usize,
    mut conn: Conn,
    load: Arc<Workload>,
    start: Instant,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> (Tally, Conn) {
    let node = load.node_of(id);
    let mut rng = Rng(0x5EED ^ ((id as u64) << 32));
    let mut tally = Tally::default();
    // When this worker's previous request would have finished had every send been on time.
    let mut free_at = start;
    for k in 0u64.. {
        let scheduled = match load.rate {
            Some(rate) => {
                let at = start + scheduled_offset(id, k, load.concurrency, rate);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at).await;
                Some(at)
            }
            None if Instant::now() >= deadline => break,
            None => None,
        };
        let op = if rng.unit() < load.read_ratio {
            Op::Get
        } else {
            Op::Put
        };
        let key = 1 + rng.below(load.keys);
        let sent = Instant::now();
        let outcome = send(&mut conn, node, key_request(node, op, key, &load.put_body)).await;
        let mut latency = sent.elapsed();
        if let Some(at) = scheduled {
            (latency, free_at) = paced_latency(at, free_at, latency);
        }
        match outcome {
            Ok(status) => tally.record(op, status, latency),
            Err(failure) => tally.record_failure(failure),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (tally, conn)
}

/// Worker `id`'s share of the preload: keys `id+1`, `id+1+concurrency`, ... each written once
/// (retried on failure or error status). Returns how many keys could not be written.
pub(crate) async fn preload(
    id: usize,
    mut conn: Conn,
    load: Arc<Workload>,
    done: Arc<AtomicU64>,
) -> (u64, Conn) {
    let node = load.node_of(id);
    let mut failed = 0;
    let mut key = id as u64 + 1;
    while key <= load.keys {
        let mut written = false;
        for _ in 0..PRELOAD_TRIES {
            let request = key_request(node, Op::Put, key, &load.put_body);
            if let Ok(status) = send(&mut conn, node, request).await {
                if !is_error(Op::Put, status) {
                    written = true;
                    break;
                }
            }
        }
        if !written {
            failed += 1;
        }
        done.fetch_add(1, Ordering::Relaxed);
        key += load.concurrency as u64;
    }
    (failed, conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_offers_the_rate_evenly() {
        let (concurrency, rate, secs) = (8, 1000.0, 2.0);
        let mut offsets: Vec<f64> = (0..concurrency)
            .flat_map(|id| {
                (0u64..)
                    .map(move |k| scheduled_offset(id, k, concurrency, rate).as_secs_f64())
                    .take_while(|t| *t < secs)
            })
            .collect();
        assert_eq!(offsets.len(), 2000, "rate x duration requests");
        offsets.sort_by(f64::total_cmp);
        for pair in offsets.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((gap - 0.001).abs() < 1e-9, "gap {gap}: not a steady stream");
        }
    }

    #[test]
    fn slow_answers_delay_the_requests_behind_them_and_timer_drift_does_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // On time, idle worker: latency is the service time.
        let (latency, free) = paced_latency(t0, t0, ms(1));
        assert_eq!((latency, free), (ms(1), t0 + ms(1)));
        // A 25 ms answer to a request due at 0; the next ones are due every 10 ms and take
        // 1 ms each: they queue behind it, 16 ms then 7 ms, then the queue is gone.
        let (_, free) = paced_latency(t0, t0, ms(25));
        let (l1, free) = paced_latency(t0 + ms(10), free, ms(1));
        let (l2, free) = paced_latency(t0 + ms(20), free, ms(1));
        let (l3, _) = paced_latency(t0 + ms(30), free, ms(1));
        assert_eq!((l1, l2, l3), (ms(16), ms(7), ms(1)));
        // However late the timer actually woke the worker, only the service time counts.
        let (latency, _) = paced_latency(t0 + ms(10), t0 + ms(1), ms(2));
        assert_eq!(latency, ms(2));
    }

    #[test]
    fn keys_and_ratio_are_drawn_uniformly() {
        let mut rng = Rng(7);
        let mut hits = [0u32; 10];
        let mut reads = 0;
        for _ in 0..100_000 {
            hits[rng.below(10) as usize] += 1;
            if rng.unit() < 0.3 {
                reads += 1;
            }
        }
        for h in hits {
            assert!((9_500..10_500).contains(&h), "bucket {h} of 10000 expected");
        }
        assert!((29_000..31_000).contains(&reads), "reads {reads}");
    }

    #[test]
    fn put_body_is_the_api_shape() {
        let load = Workload::new(vec!["a:1".into()], 5, 4, 0.5, None, 1);
        let v: serde_json::Value = serde_json::from_slice(&load.put_body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"value": "vvvv", "causal-context": {}})
        );
    }

    #[test]
    fn workers_are_spread_round_robin_over_nodes() {
        let load = Workload::new(vec!["a:1".into(), "b:2".into()], 5, 1, 0.5, None, 4);
        let nodes: Vec<&str> = (0..4).map(|id| load.node_of(id)).collect();
        assert_eq!(nodes, ["a:1", "b:2", "a:1", "b:2"]);
    }
}
