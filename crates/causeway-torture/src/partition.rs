//! Network partitions between nodes: iptables DROP rules on the INPUT chain
//! between two nodes' loopback addresses, in both directions. Clients talk
//! from 127.0.0.1, which no rule names, so they still reach every node.
//!
//! Every rule carries the comment `causeway-torture`: rules left behind by a
//! campaign that was itself killed are removed when the next one starts, and
//! `Firewall` removes its own rules when dropped.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

/// The comment that marks this tool's rules.
pub const RULE_COMMENT: &str = "causeway-torture";

/// Errors driving iptables.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} {args} failed: {stderr}")]
    Failed {
        program: String,
        args: String,
        stderr: String,
    },
}

/// The rules this campaign has in force, keyed by (source ip, dest ip), with
/// how many overlapping partitions want each one.
pub struct Firewall {
    program: String,
    tag: String,
    rules: Mutex<BTreeMap<(String, String), usize>>,
}

impl Firewall {
    /// A firewall driving `program` (normally `iptables`), after removing
    /// every stale rule of an earlier run.
    pub fn new(program: &str) -> Result<Self, FirewallError> {
        Self::with_tag(program, RULE_COMMENT)
    }

    /// Like `new`, with rules marked by `tag` instead of `RULE_COMMENT`
    /// (tests use their own tag so they never touch a campaign's rules).
    pub fn with_tag(program: &str, tag: &str) -> Result<Self, FirewallError> {
        let fw = Firewall {
            program: program.to_string(),
            tag: tag.to_string(),
            rules: Mutex::new(BTreeMap::new()),
        };
        fw.remove_stale()?;
        Ok(fw)
    }

    fn run(&self, args: &[&str]) -> Result<String, FirewallError> {
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|source| FirewallError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(FirewallError::Failed {
                program: self.program.clone(),
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn rule_args<'a>(&'a self, op: &'a str, src: &'a str, dst: &'a str) -> Vec<&'a str> {
        vec![
            "-w",
            op,
            "INPUT",
            "-s",
            src,
            "-d",
            dst,
            "-m",
            "comment",
            "--comment",
            &self.tag,
            "-j",
            "DROP",
        ]
    }

    /// Removes every rule tagged with this firewall's tag from the INPUT chain.
    pub fn remove_stale(&self) -> Result<usize, FirewallError> {
        let listing = self.run(&["-w", "-S", "INPUT"])?;
        let mut removed = 0;
        for line in listing.lines() {
            let Some(rest) = line.strip_prefix("-A INPUT") else {
                continue;
            };
            let spec: Vec<String> = rest
                .split_whitespace()
                .map(|s| s.trim_matches('"').to_string())
                .collect();
            let tagged = spec
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1] == self.tag);
            if !tagged {
                continue;
            }
            let mut args = vec!["-w", "-D", "INPUT"];
            args.extend(spec.iter().map(String::as_str));
            self.run(&args)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Drops all traffic between the ips of `a` and `b` (both directions).
    pub fn cut(&self, a: &str, b: &str) -> Result<(), FirewallError> {
        let (a, b) = (ip_of(a), ip_of(b));
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for (src, dst) in [(a, b), (b, a)] {
            let wanted = rules.entry((src.to_string(), dst.to_string())).or_insert(0);
            *wanted += 1;
            if *wanted == 1 {
                self.run(&self.rule_args("-I", src, dst))?;
            }
        }
        Ok(())
    }

    /// Undoes one `cut(a, b)`; traffic flows again once no other partition
    /// still cuts the link.
    pub fn mend(&self, a: &str, b: &str) -> Result<(), FirewallError> {
        let (a, b) = (ip_of(a), ip_of(b));
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for (src, dst) in [(a, b), (b, a)] {
            let key = (src.to_string(), dst.to_string());
            if let Some(wanted) = rules.get_mut(&key) {
                *wanted -= 1;
                if *wanted == 0 {
                    rules.remove(&key);
                    self.run(&self.rule_args("-D", src, dst))?;
                }
            }
        }
        Ok(())
    }

    /// Removes every rule this firewall added.
    pub fn heal_all(&self) -> Result<(), FirewallError> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut first_error = None;
        for (src, dst) in std::mem::take(&mut *rules).into_keys() {
            if let Err(e) = self.run(&self.rule_args("-D", &src, &dst)) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Number of rules in force.
    pub fn active_rules(&self) -> usize {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = self.heal_all() {
            eprintln!("torture: could not remove partition rules: {e}");
        }
    }
}

/// The ip part of an `ip:port` address.
pub fn ip_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(ip, _)| ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_of_strips_the_port() {
        assert_eq!(ip_of("127.0.0.2:13800"), "127.0.0.2");
        assert_eq!(ip_of("127.0.0.2"), "127.0.0.2");
    }
}
