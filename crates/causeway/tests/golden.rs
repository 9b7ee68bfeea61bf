//! Golden values: the key-to-shard mapping and the on-disk and wire encodings, pinned
//! byte for byte. A refactor that changes any of them would silently move every stored
//! key to another shard, or make nodes unable to read their own disks or talk to nodes
//! of the previous build. If one of these fails, the change needs a migration (or a
//! versioned encoding), not a new golden value.

use causeway_server::causal::context::key_tag;
use causeway_server::causal::{Context, Deps, Dot, Recent, Value, Version, WriteId};
use causeway_server::placement::{jump_hash, key_hash, View};
use causeway_server::transport::{Envelope, Forwarding, KeyOp, KeyRequest, Rpc};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn view(shards: usize) -> View {
    let nodes = (1..=shards).map(|i| format!("10.0.0.{i}:13800")).collect();
    View::new(3, nodes, 1)
}

/// Shard of `key0`..`key39` for 1 to 8 shards, one digit per key.
fn shard_table() -> Vec<String> {
    (1..=8)
        .map(|n| {
            let v = view(n);
            (0..40)
                .map(|i| v.shard_of_key(&format!("key{i}")).to_string())
                .collect()
        })
        .collect()
}

#[test]
fn key_to_shard_mapping_is_pinned() {
    assert_eq!(key_hash(""), GOLDEN_HASH_EMPTY);
    assert_eq!(key_hash("hello"), GOLDEN_HASH_HELLO);
    assert_eq!(jump_hash(GOLDEN_HASH_HELLO, 1000), GOLDEN_JUMP_HELLO_1000);
    let table = shard_table();
    assert_eq!(
        table, GOLDEN_SHARDS,
        "the key-to-shard mapping moved:\n{table:#?}"
    );
}

fn sample_version() -> Version {
    let mut past = Deps::new();
    past.add(
        2,
        Dot {
            origin: 0xfeed,
            counter: 9,
        },
    );
    Version {
        id: WriteId {
            ts: 1_839_130_360_471_552,
            origin: 0xabc,
            counter: 7,
        },
        dot: Dot {
            origin: 0xabc,
            counter: 7,
        },
        epoch: 3,
        past,
        value: Some(Value::Str("v".into())),
    }
}

#[test]
fn stored_encodings_are_pinned() {
    let v = sample_version();
    let bytes = postcard::to_allocvec(&v).unwrap();
    assert_eq!(
        hex(&bytes),
        GOLDEN_VERSION,
        "the stored version encoding changed"
    );
    assert_eq!(postcard::from_bytes::<Version>(&bytes).unwrap(), v);
    let mut tomb = v.clone();
    tomb.value = None;
    assert_eq!(
        hex(&postcard::to_allocvec(&tomb).unwrap()),
        GOLDEN_TOMBSTONE
    );
    let num = Version {
        value: Some(Value::number("10").unwrap()),
        ..v
    };
    assert_eq!(hex(&postcard::to_allocvec(&num).unwrap()), GOLDEN_NUMBER);
    let stored_view = postcard::to_allocvec(&view(2)).unwrap();
    assert_eq!(
        hex(&stored_view),
        GOLDEN_VIEW,
        "the stored view encoding changed"
    );
}

#[test]
fn wire_encodings_are_pinned() {
    let mut deps = Deps::new();
    deps.add(
        1,
        Dot {
            origin: 0x9f2c,
            counter: 5,
        },
    );
    let ctx = Context {
        epoch: 3,
        ts: 123,
        deps,
        recent: vec![Recent {
            shard: 2,
            dot: Dot {
                origin: 0xabc,
                counter: 7,
            },
            key: key_tag("k"),
            live: true,
        }],
    };
    assert_eq!(key_tag("k"), GOLDEN_TAG_K);
    assert_eq!(
        ctx.to_json().to_string(),
        r#"{"deps":{"1":{"9f2c":5}},"epoch":3,"recent":[[2,"abc",7,2337405611,1]],"ts":123}"#,
        "the client context's JSON form changed"
    );
    let env = Envelope {
        from: "10.0.0.1:13800".into(),
        rpc: Rpc::Key {
            epoch: 3,
            hops: 1,
            fwd: Forwarding {
                budget_ms: 1800,
                sent_ms: 42,
                sender: 0x77,
                write_id: Some(sample_version().id),
            },
            req: KeyRequest {
                key: "k".into(),
                op: KeyOp::Put(Value::Str("v".into())),
                ctx,
            },
        },
    };
    let bytes = postcard::to_allocvec(&env).unwrap();
    assert_eq!(
        hex(&bytes),
        GOLDEN_ENVELOPE,
        "the node-to-node encoding changed"
    );
}

/// A full transfer's run (appended after the earlier kinds, whose encodings stay).
#[test]
fn the_sync_run_encoding_is_pinned() {
    let clock: causeway_server::causal::VClock = [(0x9f2c, 5)].into_iter().collect();
    let env = Envelope {
        from: "10.0.0.1:13800".into(),
        rpc: Rpc::SyncRun {
            epoch: 3,
            versions: vec![("k".into(), sample_version())],
            run: causeway_core::changes::KeyRun {
                after: Some("a".into()),
                through: None,
            },
            clock: clock.clone(),
            claim: Some((clock, Default::default())),
        },
    };
    let bytes = postcard::to_allocvec(&env).unwrap();
    assert_eq!(
        hex(&bytes),
        GOLDEN_SYNC_RUN,
        "the node-to-node encoding changed"
    );
}

const GOLDEN_HASH_EMPTY: u64 = 17665956581633026203;
const GOLDEN_HASH_HELLO: u64 = 1656767905311477007;
const GOLDEN_JUMP_HELLO_1000: u32 = 66;
/// Read down a column: a key only ever moves to the shard that was just added.
const GOLDEN_SHARDS: [&str; 8] = [
    "1111111111111111111111111111111111111111",
    "1122121212111122221221212212212122211212",
    "1133133332111122231223212212212133313332",
    "1143133342414142231244412212214133314432",
    "1143135345414142231244455252514155314455",
    "1143135345466166231264455252514155314455",
    "1743135345466166231264455252514755314755",
    "8743135345866166231264855252514755314758",
];
const GOLDEN_VERSION: &str = "80c0d3bede95a203bc1507bc150703010201edfd030901000176";
const GOLDEN_TOMBSTONE: &str = "80c0d3bede95a203bc1507bc150703010201edfd030900";
const GOLDEN_NUMBER: &str = "80c0d3bede95a203bc1507bc150703010201edfd03090101023130";
const GOLDEN_VIEW: &str = "03020e31302e302e302e313a31333830300e31302e302e302e323a313338303001";
const GOLDEN_TAG_K: u32 = 2337405611;
const GOLDEN_ENVELOPE: &str = "0e31302e302e302e313a3133383030000301880e2a770180c0d3bede95a203bc1507016b01000176037b010101acbe02050102bc1507abf5c7da0801";
const GOLDEN_SYNC_RUN: &str = "0e31302e302e302e313a3133383030100301016b80c0d3bede95a203bc1507bc150703010201edfd0309010001760101610001acbe02050101acbe020500";
