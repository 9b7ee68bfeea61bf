//! Client for Causeway, a sharded, replicated, causally consistent key-value store.
//!
//! The library speaks the node's HTTP API (`/kv-store/...`, see the project's
//! `API.md`). A [`Client`] is one causal session:
//!
//! - it keeps the `causal-context` object of the last response it received and
//!   sends it with every request, so what it reads is never older than what it
//!   has written or seen, whichever node answers; [`Client::context`] and
//!   [`Client::set_context`] let a caller save the session and resume it later;
//! - it is given one or more node addresses (`ip:port`) and sends each request to
//!   the next one when a node is unreachable, does not answer within the
//!   per-request timeout (5 s by default), answers 503, or cannot yet satisfy the
//!   request's causal dependencies; it starts from the node that served last;
//! - failures are typed ([`Error`]): [`Error::KeyNotFound`], [`Error::BadRequest`],
//!   [`Error::Unsatisfiable`], [`Error::Unavailable`], [`Error::AllNodesFailed`], ...
//!
//! Reads go to the next node after any of those failures, and so do writes: every
//! write carries an `Idempotency-Key` (a new one per write) and the same context on
//! each attempt, so the store applies all its attempts as one write, even when a
//! timed-out attempt was applied after all. [`Client::execute_keyed`] sends a key of
//! the caller's choosing (to repeat a write later, within the store's window), or
//! none (then a write goes to the next node only when the first could not be reached).
//!
//! The [`cli`] module holds the `causeway get|put|...` subcommands, which keep
//! the context in a session file between invocations.
//!
//! # Example
//!
//! ```no_run
//! use causeway_client::{Client, Error};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::new(["10.10.0.2:13800", "10.10.0.3:13800"])?;
//!
//! let outcome = client.put("greeting", "hello").await?;
//! println!("replaced an older value: {}", outcome.replaced);
//! client.put("visits", 10).await?; // numbers are stored as numbers
//!
//! // Read-your-writes, whichever node answers.
//! assert_eq!(client.get("greeting").await?, json!("hello"));
//!
//! client.delete("greeting").await?;
//! match client.get("greeting").await {
//!     Err(Error::KeyNotFound { .. }) => println!("gone"),
//!     other => panic!("unexpected {other:?}"),
//! }
//!
//! for id in client.shards().await? {
//!     let shard = client.shard(&id).await?;
//!     println!("shard {id}: {} keys on {:?}", shard.key_count, shard.replicas);
//! }
//!
//! // Save the session; a later client continues it.
//! let saved = client.context();
//! let later = Client::builder()
//!     .nodes(["10.10.0.3:13800"])
//!     .timeout(std::time::Duration::from_secs(2))
//!     .context(saved)
//!     .build()?;
//! assert_eq!(later.get("visits").await?, json!(10));
//! # Ok(())
//! # }
//! ```

pub mod cli;
mod client;
mod error;
mod response;

pub use client::{
    empty_context, BatchOp, Client, ClientBuilder, Operation, DEFAULT_TIMEOUT,
    DEFAULT_VIEW_CHANGE_TIMEOUT,
};
pub use error::{Error, Result};
pub use response::{BatchResult, KeyCount, Page, PutOutcome, Response, ShardInfo, Watched};
