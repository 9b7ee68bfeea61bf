//! The session file: the causal context kept between command-line invocations, so
//! that `causeway put` then `causeway get` (even on another node) read their writes.
//!
//! Format: a JSON object `{"causal-context": {...}}`. A missing file is an empty
//! session. Invariants:
//! - a reader never sees a half-written file: saves write a temporary file in the
//!   same directory and rename it over the session file;
//! - invocations sharing a session take turns: [`Session::open`] holds an exclusive
//!   lock on `<session>.lock` until the [`Session`] is dropped, so the context one
//!   invocation saves is never overwritten by an older one read before it was saved.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

const CONTEXT_FIELD: &str = "causal-context";

/// Why the session file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The lock file could not be created or locked.
    #[error("cannot lock session {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The session file exists but could not be read.
    #[error("cannot read session file {}: {source}", path.display())]
    Read {
        /// The session file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The session file is not what this program writes.
    #[error("session file {} is not valid ({reason}); delete it to start a new session", path.display())]
    Corrupt {
        /// The session file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The new context could not be saved.
    #[error("cannot save session file {}: {source}", path.display())]
    Write {
        /// The session file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// An open session: the context read from the file, and the lock that keeps other
/// invocations out until this one has saved.
#[derive(Debug)]
pub struct Session {
    path: PathBuf,
    context: Value,
    _lock: File,
}

impl Session {
    /// Locks the session (waiting for another invocation to finish with it) and
    /// reads its context; an empty context if the file does not exist.
    pub fn open(path: &Path) -> Result<Session, SessionError> {
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|source| SessionError::Lock {
                path: lock_path,
                source,
            })?;
        let context = read_context(path)?;
        Ok(Session {
            path: path.to_owned(),
            context,
            _lock: lock,
        })
    }

    /// The context saved by the previous invocation.
    pub fn context(&self) -> &Value {
        &self.context
    }

    /// Saves `context` for the next invocation, atomically (temp file + rename).
    /// Does nothing if it is the context that was read.
    pub fn save(&mut self, context: &Value) -> Result<(), SessionError> {
        if *context == self.context {
            return Ok(());
        }
        let mut body = Map::new();
        body.insert(CONTEXT_FIELD.into(), context.clone());
        let text = Value::Object(body).to_string();
        let temp = sibling(&self.path, &format!(".tmp.{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut file = File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp);
            SessionError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        self.context = context.clone();
        Ok(())
    }
}

/// Reads the context stored at `path`; `{}` if there is no file.
fn read_context(path: &Path) -> Result<Value, SessionError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Value::Object(Map::new())),
        Err(source) => {
            return Err(SessionError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let corrupt = |reason: String| SessionError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    match serde_json::from_str::<Value>(&text).map_err(|e| corrupt(e.to_string()))? {
        Value::Object(mut body) => match body.remove(CONTEXT_FIELD) {
            Some(context @ Value::Object(_)) => Ok(context),
            _ => Err(corrupt(format!("no {CONTEXT_FIELD:?} object"))),
        },
        _ => Err(corrupt("not a JSON object".into())),
    }
}

/// `path` with `suffix` appended to its file name, in the same directory (so a
/// rename from it is atomic).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fresh directory under the target's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "causeway-client-session-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn missing_file_is_an_empty_session_and_nothing_is_written_for_it() {
        let dir = TempDir::new("missing");
        let path = dir.0.join("s.json");
        let mut session = Session::open(&path).unwrap();
        assert_eq!(session.context(), &json!({}));
        session.save(&json!({})).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn saved_context_is_read_back_by_the_next_session() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("s.json");
        let ctx = json!({"clock": {"a:1": 3}, "deps": [["k", 2]]});
        {
            let mut session = Session::open(&path).unwrap();
            session.save(&ctx).unwrap();
        }
        let session = Session::open(&path).unwrap();
        assert_eq!(session.context(), &ctx);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| n == "s.json" || n == "s.json.lock"),
            "{names:?}"
        );
    }

    #[test]
    fn save_replaces_the_previous_context() {
        let dir = TempDir::new("replace");
        let path = dir.0.join("s.json");
        let mut session = Session::open(&path).unwrap();
        session.save(&json!({"n": 1})).unwrap();
        session.save(&json!({"n": 2})).unwrap();
        drop(session);
        assert_eq!(read_context(&path).unwrap(), json!({"n": 2}));
    }

    #[test]
    fn corrupt_files_are_reported_not_discarded() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("s.json");
        for bad in ["not json", "[1]", r#"{"causal-context": null}"#, "{}"] {
            fs::write(&path, bad).unwrap();
            let err = Session::open(&path).unwrap_err();
            assert!(matches!(err, SessionError::Corrupt { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn a_second_open_waits_for_the_first_to_finish() {
        let dir = TempDir::new("lock");
        let path = dir.0.join("s.json");
        let mut first = Session::open(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path2 = path.clone();
        let waiter = std::thread::spawn(move || {
            let second = Session::open(&path2).unwrap();
            tx.send(second.context().clone()).unwrap();
        });
        // While the first session is open the second cannot have read anything.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        first.save(&json!({"after": "first"})).unwrap();
        drop(first);
        let seen = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(seen, json!({"after": "first"}));
        waiter.join().unwrap();
    }
}
