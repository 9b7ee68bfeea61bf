//! The real transport: postcard-encoded [`Envelope`]s over HTTP/1.1 to
//! `POST /internal/rpc`, on pooled keep-alive connections (reqwest), with the cluster
//! secret in the `x-causeway-secret` header when one is configured.
//!
//! On a loopback address the node binds its outgoing connections to its own IP, so
//! several nodes on one machine (127.0.0.2, 127.0.0.3, ...) can be cut off from each
//! other by address with packet filters while clients still reach all of them.

use super::{Envelope, RpcFuture, RpcReply, Transport, TransportError};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const RPC_PATH: &str = "/internal/rpc";
pub const SECRET_HEADER: &str = "x-causeway-secret";

pub struct HttpTransport {
    client: reqwest::Client,
    secret: Option<String>,
    /// Parsed RPC URL per peer (parsing one per call showed in profiles).
    urls: parking_lot::RwLock<std::collections::HashMap<String, reqwest::Url>>,
}

impl HttpTransport {
    fn url(&self, to: &str) -> Result<reqwest::Url, TransportError> {
        if let Some(u) = self.urls.read().get(to) {
            return Ok(u.clone());
        }
        let u = reqwest::Url::parse(&format!("http://{to}{RPC_PATH}"))
            .map_err(|e| TransportError::Unreachable(to.to_string(), e.to_string()))?;
        self.urls.write().insert(to.to_string(), u.clone());
        Ok(u)
    }
}

impl HttpTransport {
    pub fn new(own_address: &str, secret: Option<String>) -> HttpTransport {
        let mut b = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .no_proxy();
        if let Ok(addr) = own_address.parse::<SocketAddr>() {
            if addr.ip().is_loopback() {
                b = b.local_address(Some::<IpAddr>(addr.ip()));
            }
        }
        HttpTransport {
            client: b.build().expect("http client"),
            secret,
            urls: Default::default(),
        }
    }
}

impl Transport for HttpTransport {
    fn call(&self, to: &str, msg: Envelope, timeout: Duration) -> RpcFuture {
        let url = match self.url(to) {
            Ok(u) => u,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let body = postcard::to_allocvec(&msg).expect("envelopes always encode");
        let mut req = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(s) = &self.secret {
            req = req.header(SECRET_HEADER, s);
        }
        let to = to.to_string();
        Box::pin(async move {
            let resp = req.send().await.map_err(|e| classify(&to, e))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| classify(&to, e))?;
            if !status.is_success() {
                return Err(TransportError::Refused(
                    to,
                    format!("{status}: {}", String::from_utf8_lossy(&bytes)),
                ));
            }
            postcard::from_bytes::<RpcReply>(&bytes)
                .map_err(|e| TransportError::Refused(to, format!("bad reply: {e}")))
        })
    }
}

fn classify(to: &str, e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout(to.to_string())
    } else {
        TransportError::Unreachable(to.to_string(), e.to_string())
    }
}
