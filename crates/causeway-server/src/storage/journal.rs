//! The write-ahead journal: what makes a commit durable before the engine holds it.
//!
//! Owns the segment files under `<data dir>/journal/`, each a run of consecutive
//! records named by the sequence number of its first one. A record is one committed
//! batch: a frame `[payload length: u32][xxh3 of the payload: u64][payload]`, the
//! payload being its sequence number and its operations (see [`encode_frame`]).
//!
//! Invariants:
//! - records are numbered 1, 2, 3, ... without gaps, in the order they were committed;
//! - a record is written (and under `sync` durability synced) before the commit that
//!   made it returns, and before the engine is given it;
//! - replay reads segments in order; a segment's records start at the number in its
//!   name and run consecutively, and each segment must continue the one before; the
//!   first frame that is torn, fails its checksum or breaks the sequence ends it:
//!   nothing after a lost record is applied, so the store is always a prefix of what
//!   was committed;
//! - a segment is synced before the next one is started, so a later segment never
//!   survives a power loss that an earlier one did not;
//! - a segment is retired only once the engine has synced every record in it
//!   (`storage` decides when; the journal lists what may go): deleted, or kept as a
//!   spare and later renamed and written over from its start, its old frames told
//!   apart by their numbers;
//! - a segment's name is durable (directory synced) before any record is written to
//!   it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment grows to about this many bytes (a larger record still fits in one).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Segments the engine has synced are kept (up to this many) to be written over as
/// later segments: a file whose blocks are all written already is synced without a
/// change of its size or extents, so without a filesystem journal commit (about a third
/// less per sync on the disks measured, and far fewer slow ones).
pub const SPARES: usize = 2;

/// Frame header: payload length (u32) and checksum (u64).
const HEADER: usize = 12;

/// Which keyspace an operation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Kv,
    Meta,
}

/// One write of a record: `value` `None` removes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub space: Space,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Op {
    /// Bytes this operation holds in memory (for the bound on what awaits the engine).
    pub fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 16
    }
}

/// One committed batch, as read back from the journal.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub ops: Vec<Op>,
}

/// The frame of record `seq` holding `ops`.
pub fn encode_frame(seq: u64, ops: &[Op]) -> Vec<u8> {
    let payload_len: usize = 12 + ops.iter().map(|o| o.size() - 16 + 10).sum::<usize>();
    let mut out = Vec::with_capacity(HEADER + payload_len);
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        out.push(match op.space {
            Space::Kv => 0,
            Space::Meta => 1,
        });
        out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&op.key);
        match &op.value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    let len = (out.len() - HEADER) as u32;
    let sum = xxhash_rust::xxh3::xxh3_64(&out[HEADER..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..12].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Reads consecutive frames from the start of `bytes`: the records and the length of
/// the valid prefix (a torn or corrupt frame ends it).
pub fn decode_frames(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, len)) = decode_frame(&bytes[at..]) {
        records.push(record);
        at += len;
    }
    (records, at)
}

fn decode_frame(b: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?);
    let payload = b.get(HEADER..HEADER.checked_add(len)?)?;
    if len == 0 || xxhash_rust::xxh3::xxh3_64(payload) != sum {
        return None;
    }
    let mut r = Reader(payload);
    let seq = r.u64()?;
    let n = r.u32()? as usize;
    let mut ops = Vec::with_capacity(n.min(payload.len()));
    for _ in 0..n {
        let space = match r.u8()? {
            0 => Space::Kv,
            1 => Space::Meta,
            _ => return None,
        };
        let klen = r.u32()? as usize;
        let key = r.bytes(klen)?.to_vec();
        let value = match r.u8()? {
            0 => None,
            1 => {
                let vlen = r.u32()? as usize;
                Some(r.bytes(vlen)?.to_vec())
            }
            _ => return None,
        };
        ops.push(Op { space, key, value });
    }
    if !r.0.is_empty() {
        return None;
    }
    Some((Record { seq, ops }, HEADER + len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The segment files of `dir` with the number their first record must carry, oldest
/// first.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// What [`replay`] found.
pub struct Replayed {
    /// The last record in sequence (or `after` when the journal holds nothing newer).
    pub last_seq: u64,
    /// The segments read: deleted once their records are synced in the engine.
    pub segments: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error("journal: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal: the engine holds records up to {engine} but the journal resumes at {found}")]
    Gap { engine: u64, found: u64 },
    #[error(transparent)]
    Apply(E),
}

/// Calls `apply` with every record of the journal in `dir` newer than `after` (the
/// last record the engine holds), in order, until the first one that is torn,
/// corrupt or out of sequence.
pub fn replay<E>(
    dir: &Path,
    after: u64,
    mut apply: impl FnMut(Record) -> Result<(), E>,
) -> Result<Replayed, ReplayError<E>> {
    std::fs::create_dir_all(dir)?;
    let segments = segments(dir)?;
    // The number the next record must carry (none before the first segment read).
    let mut next: Option<u64> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        // A segment followed by one that starts at or before the engine's next record
        // holds nothing the engine lacks (or is a spare under an older name): skipped.
        if next.is_none() && segments.get(i + 1).is_some_and(|(f, _)| *f <= after + 1) {
            continue;
        }
        match next {
            // Deleted segments held only what the engine has synced: the oldest one
            // read starts at or before the record after the engine's last one.
            None if *first > after + 1 => {
                return Err(ReplayError::Gap {
                    engine: after,
                    found: *first,
                })
            }
            // A segment that does not continue the one before: nothing from it on.
            Some(n) if *first != n => break,
            _ => {}
        }
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        // The segment's records run from its first frame to the first one that is
        // torn, damaged or of another number (left from an earlier use of a recycled
        // file); the next segment, if any, must continue exactly there.
        let mut expect = *first;
        for record in decode_frames(&bytes).0 {
            if record.seq != expect {
                break;
            }
            expect += 1;
            if record.seq > after {
                apply(record).map_err(ReplayError::Apply)?;
            }
        }
        next = Some(expect);
    }
    let last = next.map_or(0, |n| n - 1);
    Ok(Replayed {
        last_seq: last.max(after),
        segments: segments.into_iter().map(|(_, p)| p).collect(),
    })
}

/// The journal being written: the current segment and the sealed ones not yet deleted.
pub struct Journal {
    dir: PathBuf,
    current: Arc<File>,
    /// The first record of the current segment.
    current_first: u64,
    current_bytes: u64,
    /// A segment is sealed once it would grow past this.
    segment_bytes: u64,
    next_seq: u64,
    /// Sealed segments, oldest first, with the last record each holds and its size.
    sealed: VecDeque<(u64, PathBuf, u64)>,
    /// Segments the engine no longer needs, kept to be written over (see [`SPARES`]).
    spares: Vec<PathBuf>,
}

impl Journal {
    /// Starts a new segment in `dir` whose first record will be `next_seq`. `old`: the
    /// segments of an earlier run, all of them in the engine (synced): a few are kept
    /// as spares, the others deleted.
    pub fn create(dir: &Path, next_seq: u64, old: Vec<PathBuf>) -> std::io::Result<Journal> {
        Journal::with_segment_bytes(dir, next_seq, old, SEGMENT_BYTES)
    }

    /// [`Journal::create`] with segments of about `segment_bytes`.
    pub fn with_segment_bytes(
        dir: &Path,
        next_seq: u64,
        old: Vec<PathBuf>,
        segment_bytes: u64,
    ) -> std::io::Result<Journal> {
        let name = dir.join(segment_name(next_seq));
        // One old segment becomes the new one (a file that already bears its name, if
        // any: it cannot also stay a spare); up to SPARES more are kept.
        let mut old = old;
        let mut reuse = old.iter().position(|p| *p == name).map(|i| old.remove(i));
        let mut spares = Vec::new();
        for path in old {
            if reuse.is_none() {
                reuse = Some(path);
            } else if spares.len() < SPARES {
                spares.push(path);
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            current: Arc::new(new_segment(dir, next_seq, reuse.as_deref())?),
            current_first: next_seq,
            current_bytes: 0,
            segment_bytes,
            next_seq,
            sealed: VecDeque::new(),
            spares,
        })
    }

    /// Appends one record (synced before returning when `sync`) and returns its number.
    pub fn append(&mut self, ops: &[Op], sync: bool) -> std::io::Result<u64> {
        let seq = self.next_seq;
        let frame = encode_frame(seq, ops);
        if self.current_bytes > 0 && self.current_bytes + frame.len() as u64 > self.segment_bytes {
            // Sealed only once synced: no later segment outlives an earlier one.
            self.current.sync_data()?;
            let spare = self.spares.pop();
            let next = new_segment(&self.dir, seq, spare.as_deref())?;
            let sealed = self.dir.join(segment_name(self.current_first));
            self.sealed.push_back((seq - 1, sealed, self.current_bytes));
            self.current = Arc::new(next);
            self.current_bytes = 0;
            self.current_first = seq;
        }
        (&*self.current).write_all(&frame)?;
        if sync {
            self.current.sync_data()?;
        }
        self.current_bytes += frame.len() as u64;
        self.next_seq += 1;
        Ok(seq)
    }

    /// The segment being written, for a background sync outside this journal's lock.
    pub fn current_file(&self) -> Arc<File> {
        self.current.clone()
    }

    /// Retires the sealed segments whose records are all at or before `synced` (the
    /// engine holds them durably): a few become spares, the others are returned, to be
    /// deleted.
    pub fn retire_through(&mut self, synced: u64) -> Vec<PathBuf> {
        let mut out = Vec::new();
        while self
            .sealed
            .front()
            .is_some_and(|(last, _, _)| *last <= synced)
        {
            if let Some((_, path, _)) = self.sealed.pop_front() {
                if self.spares.len() < SPARES {
                    self.spares.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    /// Bytes in the segments not yet deleted (spares included).
    pub fn bytes(&self) -> u64 {
        let spares: u64 = self
            .spares
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        // A segment written over is as large as its earlier use made it.
        let current = self
            .current
            .metadata()
            .map_or(self.current_bytes, |m| m.len().max(self.current_bytes));
        current + self.sealed.iter().map(|(_, _, b)| b).sum::<u64>() + spares
    }

    /// Whether some sealed segment awaits deletion once `synced` covers it.
    #[cfg(test)]
    pub fn oldest_sealed(&self) -> Option<u64> {
        self.sealed.front().map(|(last, _, _)| *last)
    }
}

/// Opens the segment whose first record is `first_seq`, written from its start: the
/// file `reuse` renamed (its old frames are told apart by their numbers, see
/// [`replay`]), else a new file. Its name is durable before anything is written to it.
fn new_segment(dir: &Path, first_seq: u64, reuse: Option<&Path>) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(segment_name(first_seq));
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    match reuse {
        Some(old) => {
            if old != path {
                std::fs::rename(old, &path)?;
            }
        }
        None => {
            open.create(true).truncate(true);
        }
    }
    let file = open.open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(i: u32) -> Op {
        Op {
            space: if i.is_multiple_of(3) {
                Space::Meta
            } else {
                Space::Kv
            },
            key: format!("key{i}").into_bytes(),
            value: (i % 4 != 1).then(|| vec![i as u8; (i as usize * 37) % 300]),
        }
    }

    fn ops(seq: u64) -> Vec<Op> {
        (0..(seq as u32 % 5)).map(|i| op(i + seq as u32)).collect()
    }

    /// The records a replay of `dir` after `after` applies, and what it reports.
    fn replay_all(dir: &Path, after: u64) -> (Vec<Record>, Replayed) {
        let mut seen = Vec::new();
        let r = replay::<()>(dir, after, |rec| {
            seen.push(rec);
            Ok(())
        })
        .unwrap();
        (seen, r)
    }

    fn seqs(records: Vec<Record>) -> Vec<u64> {
        records.into_iter().map(|r| r.seq).collect()
    }

    /// The frame encoding is what a restart reads back from an earlier build's journal:
    /// pinned byte for byte (a change needs a versioned format, not a new value here).
    #[test]
    fn the_frame_encoding_is_pinned() {
        let ops = [
            Op {
                space: Space::Kv,
                key: b"k".to_vec(),
                value: Some(b"vv".to_vec()),
            },
            Op {
                space: Space::Meta,
                key: b"m".to_vec(),
                value: None,
            },
        ];
        let hex: String = encode_frame(7, &ops)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, GOLDEN_FRAME);
    }

    const GOLDEN_FRAME: &str =
        "20000000bf5eb1b63b730d0607000000000000000200000000010000006b0102000000767601010000006d00";

    #[test]
    fn frames_read_back_as_written() {
        let mut bytes = Vec::new();
        for seq in 1..=20 {
            bytes.extend(encode_frame(seq, &ops(seq)));
        }
        let (records, valid) = decode_frames(&bytes);
        assert_eq!(valid, bytes.len());
        let expect: Vec<Record> = (1..=20).map(|seq| Record { seq, ops: ops(seq) }).collect();
        assert_eq!(records, expect);
    }

    #[test]
    fn a_torn_or_damaged_frame_ends_the_valid_prefix() {
        let first = encode_frame(1, &ops(4));
        let second = encode_frame(2, &ops(3));
        let whole = [first.clone(), second.clone()].concat();
        // Torn anywhere inside the second frame: only the first is read.
        for cut in first.len()..whole.len() {
            let (records, valid) = decode_frames(&whole[..cut]);
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(valid, first.len());
        }
        // One flipped bit anywhere in the second frame: the same.
        for at in first.len()..whole.len() {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x10;
            let (records, valid) = decode_frames(&damaged);
            assert_eq!(
                (records.len(), valid),
                (1, first.len()),
                "bit flipped at {at}"
            );
        }
        // Zeros (a preallocated or unwritten tail) end it too.
        let mut zeros = whole.clone();
        zeros.extend([0; 64]);
        assert_eq!(decode_frames(&zeros).1, whole.len());
    }

    #[test]
    fn replay_applies_what_follows_the_engine_across_segments_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::with_segment_bytes(dir.path(), 1, Vec::new(), 200).unwrap();
        for seq in 1..=30 {
            assert_eq!(j.append(&ops(seq), seq % 2 == 0).unwrap(), seq);
        }
        let segments: Vec<PathBuf> = segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert!(segments.len() > 3, "small segments: {segments:?}");
        drop(j);
        for after in [0, 1, 7, 29, 30] {
            let (seen, r) = replay_all(dir.path(), after);
            assert_eq!(r.last_seq, 30);
            assert_eq!(r.segments, segments);
            let expect: Vec<Record> = (after + 1..=30)
                .map(|seq| Record { seq, ops: ops(seq) })
                .collect();
            assert_eq!(seen, expect, "after {after}");
        }
        // An engine ahead of the journal (a power loss took the journal's tail).
        let r = replay::<()>(dir.path(), 40, |_| panic!("nothing to apply")).unwrap();
        assert_eq!(r.last_seq, 40);
    }

    #[test]
    fn retired_segments_are_written_over_and_replay_tells_their_old_frames_apart() {
        let dir = tempfile::tempdir().unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let mut j = Journal::with_segment_bytes(dir.path(), 1, Vec::new(), 200).unwrap();
        for seq in 1..=30 {
            j.append(&ops(seq), false).unwrap();
        }
        let first = j.oldest_sealed().expect("sealed segments");
        assert!(j.retire_through(first - 1).is_empty());
        let sealed = files() - 1;
        let gone = j.retire_through(30);
        assert_eq!(gone.len(), sealed - SPARES, "all but the spares go");
        for p in &gone {
            std::fs::remove_file(p).unwrap();
        }
        assert!(j.oldest_sealed().is_none());
        assert_eq!(files(), SPARES + 1);
        // The engine holds 1..=30: nothing to apply, spares and all.
        let r = replay::<()>(dir.path(), 30, |_| panic!("nothing to apply")).unwrap();
        assert_eq!(r.last_seq, 30);
        // New records go over the spares (rename, then written from the start, their
        // old frames behind): a replay applies exactly the new ones, in order.
        for seq in 31..=60 {
            j.append(&ops(seq), seq % 7 == 0).unwrap();
        }
        assert!(j.spares.is_empty(), "the spares were written over");
        drop(j);
        let (seen, r) = replay_all(dir.path(), 30);
        assert_eq!(r.last_seq, 60);
        let expect: Vec<Record> = (31..=60).map(|seq| Record { seq, ops: ops(seq) }).collect();
        assert_eq!(seen, expect);
        // The deleted records are gone: a replay from before them reports the gap.
        assert!(matches!(
            replay::<()>(dir.path(), 0, |_| Ok(())),
            Err(ReplayError::Gap { engine: 0, .. })
        ));
        // A new run keeps a few of the old segments as spares and starts over one.
        let j = Journal::with_segment_bytes(dir.path(), 61, r.segments, 200).unwrap();
        assert_eq!(files(), SPARES + 1);
        drop(j);
        let r = replay::<()>(dir.path(), 60, |_| panic!("nothing to apply")).unwrap();
        assert_eq!(r.last_seq, 60);
    }

    #[test]
    fn a_sequence_break_ends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), 1, Vec::new()).unwrap();
        for seq in 1..=3 {
            j.append(&ops(seq), false).unwrap();
        }
        drop(j);
        // A segment that does not continue the one before.
        std::fs::write(dir.path().join(segment_name(9)), encode_frame(9, &ops(9))).unwrap();
        let (seen, r) = replay_all(dir.path(), 0);
        assert_eq!(seqs(seen), [1, 2, 3]);
        assert_eq!(r.last_seq, 3);
        // A segment that continues it by name but holds frames of other numbers (a
        // file left from earlier): nothing of it is applied, nor anything after it.
        std::fs::write(
            dir.path().join(segment_name(4)),
            [encode_frame(2, &ops(2)), encode_frame(3, &ops(3))].concat(),
        )
        .unwrap();
        std::fs::write(dir.path().join(segment_name(5)), encode_frame(5, &ops(5))).unwrap();
        let (seen, r) = replay_all(dir.path(), 0);
        assert_eq!((seqs(seen), r.last_seq), (vec![1, 2, 3], 3));
    }
}
