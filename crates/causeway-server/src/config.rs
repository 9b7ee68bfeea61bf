//! Node configuration: flags and the environment variables of `API.md`, validated
//! into a [`ServeConfig`]. Bad configuration is a [`ConfigError`] with a one-line
//! message naming the problem; the binary prints it and exits, never panics.

use crate::api::Limits;
use crate::node::NodeConfig;
use crate::placement::View;
use crate::storage::Durability;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `causeway serve` options. Every flag can also come from the environment.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// This node's own ip:port, as other nodes reach it.
    #[arg(long, env = "ADDRESS", default_value = "127.0.0.1:13800")]
    pub address: String,
    /// Comma-separated ip:port of every node in the cluster (default: ADDRESS alone).
    #[arg(long, env = "VIEW")]
    pub view: Option<String>,
    /// Replicas per shard; the number of nodes in VIEW must be a multiple of it.
    #[arg(long, env = "REPL_FACTOR", default_value = "1")]
    pub repl_factor: String,
    /// Port to listen on (default: the port of ADDRESS).
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// Address to bind (default: ADDRESS's ip with PORT; use 0.0.0.0:13800 in containers).
    #[arg(long, env = "LISTEN")]
    pub listen: Option<String>,
    /// Data directory (default: ./causeway-data-<ip>-<port>).
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// When a write counts as durable: `sync` (synced to disk before it is acknowledged)
    /// or `os` (handed to the OS before it is acknowledged, synced every 50 ms).
    #[arg(long, env = "DURABILITY", value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,
    /// Keep everything in memory (nothing survives a restart; for tests and demos).
    #[arg(long, env = "IN_MEMORY")]
    pub in_memory: bool,
    /// Start even if other nodes saw this node in a later view than its data directory
    /// holds (a restored backup), at the risk of bringing back keys deleted since.
    #[arg(long, env = "ALLOW_STALE_DISK")]
    pub allow_stale_disk: bool,
    /// Shared secret required on internal node-to-node routes.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Largest client request body in bytes (413 above).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest value in bytes (413 above).
    #[arg(long, env = "MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Largest node-to-node message in bytes; at least 64 MiB (replication messages
    /// carry up to 32 MiB, plus one value).
    #[arg(long, env = "MAX_INTERNAL_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_internal_bytes: usize,
    /// How long a write's `Idempotency-Key` is remembered: `90s`, `10m`, `1h` (plain
    /// numbers are seconds). Tombstones are kept at least twice as long.
    #[arg(long, env = "IDEMPOTENCY_WINDOW", default_value = "10m")]
    pub idempotency_window: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("ADDRESS '{0}' is not an ip:port address")]
    Address(String),
    #[error("VIEW entry '{0}' is not an ip:port address")]
    ViewEntry(String),
    #[error("VIEW lists '{0}' twice")]
    ViewDuplicate(String),
    #[error("REPL_FACTOR '{0}' is not a positive integer")]
    ReplFactor(String),
    #[error("VIEW has {nodes} nodes, which is not a multiple of REPL_FACTOR {repl}")]
    NotMultiple { nodes: usize, repl: usize },
    #[error("PORT '{0}' is not a port number")]
    Port(String),
    #[error("LISTEN '{0}' is not an ip:port address")]
    Listen(String),
    #[error("MAX_INTERNAL_BYTES {0} is below the 64 MiB that replication messages need")]
    InternalLimit(usize),
    #[error("IDEMPOTENCY_WINDOW '{0}' is not a duration from 1s to 7d (90s, 10m, 1h)")]
    IdempotencyWindow(String),
}

/// Parses a duration such as `90s`, `10m`, `1h`, `2d`, or plain seconds.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = n * match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

/// The smallest node-to-node message limit a node accepts.
const MIN_INTERNAL_BYTES: usize = 64 * 1024 * 1024;

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub node: NodeConfig,
    pub view: View,
    pub listen: SocketAddr,
    /// `None`: in memory.
    pub data_dir: Option<PathBuf>,
    pub durability: Durability,
    pub secret: Option<String>,
    pub limits: Limits,
    /// Start on a data directory that went back in time (see `node::recall`).
    pub allow_stale_disk: bool,
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let address: SocketAddr = self
            .address
            .trim()
            .parse()
            .map_err(|_| ConfigError::Address(self.address.clone()))?;
        let repl: usize = match self.repl_factor.trim().parse() {
            Ok(r) if r >= 1 => r,
            _ => return Err(ConfigError::ReplFactor(self.repl_factor.clone())),
        };
        let nodes: Vec<String> = match &self.view {
            Some(v) if !v.trim().is_empty() => {
                let mut out: Vec<String> = Vec::new();
                for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let a: SocketAddr = n
                        .parse()
                        .map_err(|_| ConfigError::ViewEntry(n.to_string()))?;
                    let a = a.to_string();
                    if out.contains(&a) {
                        return Err(ConfigError::ViewDuplicate(a));
                    }
                    out.push(a);
                }
                out
            }
            _ => vec![address.to_string()],
        };
        if !nodes.len().is_multiple_of(repl) {
            return Err(ConfigError::NotMultiple {
                nodes: nodes.len(),
                repl,
            });
        }
        let port = match &self.port {
            Some(p) if !p.trim().is_empty() => p
                .trim()
                .parse::<u16>()
                .map_err(|_| ConfigError::Port(p.clone()))?,
            _ => address.port(),
        };
        let listen = match &self.listen {
            Some(l) if !l.trim().is_empty() => l
                .trim()
                .parse()
                .map_err(|_| ConfigError::Listen(l.clone()))?,
            _ => SocketAddr::new(address.ip(), port),
        };
        if self.max_internal_bytes < MIN_INTERNAL_BYTES.max(self.max_value_bytes * 2) {
            return Err(ConfigError::InternalLimit(self.max_internal_bytes));
        }
        let data_dir = if self.in_memory {
            None
        } else {
            Some(self.data_dir.clone().unwrap_or_else(|| {
                PathBuf::from(format!("causeway-data-{}-{}", address.ip(), address.port()))
            }))
        };
        let window = match self.idempotency_window.trim() {
            "" => crate::idempotency::DEFAULT_WINDOW,
            w => parse_duration(w)
                .filter(|d| (1..=7 * 86_400).contains(&d.as_secs()))
                .ok_or_else(|| ConfigError::IdempotencyWindow(w.to_string()))?,
        };
        let mut node = NodeConfig::new(address.to_string());
        node.idempotency_window = window;
        Ok(ServeConfig {
            node,
            view: View::new(0, nodes, repl),
            listen,
            data_dir,
            durability: self.durability,
            secret: self.cluster_secret.filter(|s| !s.is_empty()),
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_value_bytes: self.max_value_bytes,
                max_internal_bytes: self.max_internal_bytes,
            },
            allow_stale_disk: self.allow_stale_disk,
        })
    }
}

impl ServeConfig {
    /// An in-memory single-node configuration for tests.
    pub fn for_test(address: &str) -> ServeConfig {
        ServeArgs {
            address: address.to_string(),
            repl_factor: "1".into(),
            in_memory: true,
            max_body_bytes: Limits::default().max_body_bytes,
            max_value_bytes: Limits::default().max_value_bytes,
            max_internal_bytes: Limits::default().max_internal_bytes,
            ..ServeArgs::default()
        }
        .resolve()
        .expect("valid test configuration")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_a_unit_or_are_seconds() {
        use super::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "m", "10 years", "-1s", "x"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    use super::*;

    fn args(address: &str, view: Option<&str>, repl: &str) -> ServeArgs {
        ServeArgs {
            address: address.into(),
            view: view.map(Into::into),
            repl_factor: repl.into(),
            max_internal_bytes: Limits::default().max_internal_bytes,
            ..ServeArgs::default()
        }
    }

    #[test]
    fn defaults_to_a_single_node_cluster() {
        let c = args("127.0.0.1:13800", None, "1").resolve().unwrap();
        assert_eq!(c.view.nodes, vec!["127.0.0.1:13800"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:13800");
        assert_eq!(
            c.data_dir.unwrap().to_str().unwrap(),
            "causeway-data-127.0.0.1-13800"
        );
    }

    #[test]
    fn bad_configuration_is_named() {
        assert_eq!(
            args("nope", None, "1").resolve().unwrap_err(),
            ConfigError::Address("nope".into())
        );
        assert_eq!(
            args("1.2.3.4:1", None, "0").resolve().unwrap_err(),
            ConfigError::ReplFactor("0".into())
        );
        assert_eq!(
            args("1.2.3.4:1", Some("1.2.3.4:1,1.2.3.5:1,1.2.3.6:1"), "2")
                .resolve()
                .unwrap_err(),
            ConfigError::NotMultiple { nodes: 3, repl: 2 }
        );
        assert!(matches!(
            args("1.2.3.4:1", Some("1.2.3.4:1,x"), "1").resolve(),
            Err(ConfigError::ViewEntry(_))
        ));
    }

    #[test]
    fn a_node_outside_its_view_is_valid() {
        let c = args("1.2.3.9:1", Some("1.2.3.4:1,1.2.3.5:1"), "2")
            .resolve()
            .unwrap();
        assert!(!c.view.contains("1.2.3.9:1"));
    }
}
