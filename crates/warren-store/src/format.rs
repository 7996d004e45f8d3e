//! The on-disk log format: segment headers and CRC-framed records (see `docs/store-format.md`).
//!
//! Everything here is pure: bytes in, values out. Decoding never panics on bad input; a record
//! that is cut short or fails its CRC is a [`RecordError`], which recovery turns into a
//! truncation.

#[cfg(test)]
use bytes::Bytes;
use smallvec::SmallVec;

/// First eight bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"WARRENLG";
/// Version of the segment and record format written by this code.
pub const FORMAT_VERSION: u32 = 1;
/// `magic:8 | version:u32 | first_lsn:u64 | crc32c:u32` (CRC over the first 20 bytes).
pub const SEGMENT_HEADER_LEN: u64 = 24;
/// `len:u32 | crc32c:u32`, followed by `len` bytes: `type:u8 | payload`.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest `len` a record may have (type byte + payload). Larger values are treated as damage.
pub const MAX_RECORD_LEN: u32 = 1 << 30;
/// Most queues one publish record can name (the count is a u16 on disk).
pub const MAX_QUEUES_PER_MESSAGE: usize = u16::MAX as usize;

pub const REC_PUBLISH: u8 = 1;
pub const REC_ACK: u8 = 2;
pub const REC_DELIVERED: u8 = 3;
pub const REC_DROP_QUEUE: u8 = 4;
pub const REC_RELOCATE: u8 = 5;

/// File name of the segment whose first record has `first_lsn`.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("seg-{first_lsn:020}.log")
}

/// The first LSN encoded in a segment file name, if the name is one of ours.
/// The next segment, prepared ahead of time (zero-filled and synced) while it is written
/// under [`SPARE_SEGMENT_TMP`]; renamed to a segment's name when the log needs one.
pub const SPARE_SEGMENT: &str = "seg-next";
pub const SPARE_SEGMENT_TMP: &str = "seg-next.tmp";

pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns the first LSN it records.
/// The format version of an intact segment header (right magic and CRC), whatever it is;
/// None if the header is damaged.
pub fn segment_version(h: &[u8]) -> Option<u32> {
    if h.len() < SEGMENT_HEADER_LEN as usize || &h[0..8] != SEGMENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    (crc == crc32c::crc32c(&h[0..20])).then(|| u32::from_le_bytes([h[8], h[9], h[10], h[11]]))
}

pub fn decode_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!("segment header cut short ({} bytes)", h.len()));
    }
    if &h[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    if crc != crc32c::crc32c(&h[0..20]) {
        return Err("segment header CRC mismatch".into());
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    Ok(read_u64(&h[12..20]))
}

/// One logical log operation, as carried from the API to the writer and decoded by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A message stored once for several queues; its order is the record's own LSN.
    Publish {
        msg_id: u64,
        queues: SmallVec<[u64; 4]>,
    },
    /// The messages are settled for `queue`.
    Ack { queue: u64, ids: Vec<u64> },
    /// The messages were delivered (or requeued) from `queue` once more.
    Delivered { queue: u64, ids: Vec<u64> },
    /// Every message of `queue` is settled for it.
    DropQueue { queue: u64 },
    /// Compaction copied a live message's body here from `(old_segment, old_offset)`. `queues`
    /// carries the per-queue delivery counts at copy time, used only when the original record is
    /// gone and no checkpoint says otherwise.
    Relocate {
        msg_id: u64,
        order: u64,
        old_segment: u64,
        old_offset: u64,
        queues: Vec<(u64, u32)>,
    },
}

/// An encoded record: `head` is the frame header plus everything before the body; `body`
/// (possibly empty) follows it on disk unchanged. (The store encodes straight into its write
/// buffer with [`encode_head`]; this is for tests.)
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct Frame {
    pub head: Vec<u8>,
    pub body: Bytes,
}

#[cfg(test)]
impl Frame {
    /// Bytes the record occupies on disk.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.body.len()) as u64
    }
}

/// Encodes `op` (with `body` for publish and relocate records) as a framed, sealed record.
///
/// Fails only if the record would exceed [`MAX_RECORD_LEN`].
#[cfg(test)]
pub fn encode(op: &Op, body: Bytes) -> Result<Frame, &'static str> {
    let mut head = Vec::with_capacity(64);
    encode_head(op, &body, &mut head)?;
    Ok(Frame { head, body })
}

/// Length of the record's head: the frame header and everything before the body. Known
/// without encoding, so that the store can reserve the record's place in the log cheaply and
/// leave the encoding (and the checksums) to the writer thread.
pub fn head_len(op: &Op) -> usize {
    FRAME_HEADER_LEN
        + 1
        + match op {
            Op::Publish { queues, .. } => 8 + 2 + 8 * queues.len() + 4,
            Op::Ack { ids, .. } | Op::Delivered { ids, .. } => 8 + 4 + 8 * ids.len(),
            Op::DropQueue { .. } => 8,
            Op::Relocate { queues, .. } => 8 * 4 + 2 + 12 * queues.len() + 4,
        }
}

/// Bytes the record for `op` with a body of `body_len` bytes occupies on disk; fails if that
/// exceeds [`MAX_RECORD_LEN`].
pub fn record_len(op: &Op, body_len: usize) -> Result<u64, &'static str> {
    let head = head_len(op) as u64;
    if head - FRAME_HEADER_LEN as u64 + body_len as u64 > u64::from(MAX_RECORD_LEN) {
        return Err("record larger than the maximum record size");
    }
    Ok(head + body_len as u64)
}

/// Appends the sealed head of the record for `op` and `body` to `out` (the body itself is
/// written after it, unchanged). Fails only if the record would exceed [`MAX_RECORD_LEN`].
#[cfg(test)]
pub fn encode_head(op: &Op, body: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    encode_head_parts(op, &[body], out)
}

/// [`encode_head`] for a body given in pieces (written one after the other), so that the
/// writer can checksum a body it assembles without first joining it.
pub fn encode_head_parts(op: &Op, body: &[&[u8]], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let body_len: usize = body.iter().map(|b| b.len()).sum();
    let checksum = |crc: u32| body.iter().fold(crc, |c, b| crc32c::crc32c_append(c, b));
    let len = record_len(op, body_len)? - FRAME_HEADER_LEN as u64;
    let start = out.len();
    out.reserve(head_len(op));
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let mut body_crc = None;
    match op {
        Op::Publish { msg_id, queues } => {
            out.push(REC_PUBLISH);
            out.extend_from_slice(&msg_id.to_le_bytes());
            out.extend_from_slice(&(queues.len() as u16).to_le_bytes());
            for q in queues {
                out.extend_from_slice(&q.to_le_bytes());
            }
            let crc = checksum(0);
            out.extend_from_slice(&crc.to_le_bytes());
            body_crc = Some(crc);
        }
        Op::Ack { queue, ids } | Op::Delivered { queue, ids } => {
            out.push(if matches!(op, Op::Ack { .. }) {
                REC_ACK
            } else {
                REC_DELIVERED
            });
            out.extend_from_slice(&queue.to_le_bytes());
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        Op::DropQueue { queue } => {
            out.push(REC_DROP_QUEUE);
            out.extend_from_slice(&queue.to_le_bytes());
        }
        Op::Relocate {
            msg_id,
            order,
            old_segment,
            old_offset,
            queues,
        } => {
            out.push(REC_RELOCATE);
            out.extend_from_slice(&msg_id.to_le_bytes());
            out.extend_from_slice(&order.to_le_bytes());
            out.extend_from_slice(&old_segment.to_le_bytes());
            out.extend_from_slice(&old_offset.to_le_bytes());
            out.extend_from_slice(&(queues.len() as u16).to_le_bytes());
            for (q, count) in queues {
                out.extend_from_slice(&q.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            let crc = checksum(0);
            out.extend_from_slice(&crc.to_le_bytes());
            body_crc = Some(crc);
        }
    }
    debug_assert_eq!(out.len() - start, head_len(op));
    let head = &mut out[start..];
    let mut crc = crc32c::crc32c(&head[0..4]);
    crc = crc32c::crc32c_append(crc, &head[FRAME_HEADER_LEN..]);
    crc = match body_crc {
        // The body's own CRC is already known: combining it in has a fixed cost, which beats
        // checksumming a large body a second time.
        Some(body_crc) if body_len > RECHECKSUM_LIMIT => {
            crc32c_combine(crc, body_crc, body_len as u64)
        }
        _ => checksum(crc),
    };
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Bodies up to this size are checksummed a second time for the frame CRC (the CPU's CRC32C
/// instruction does that faster than [`crc32c_combine`]'s fixed cost); larger ones are
/// combined from the body CRC already computed.
const RECHECKSUM_LIMIT: usize = 4096;

/// The reflected CRC32C (Castagnoli) polynomial.
const POLY: u32 = 0x82F6_3B78;

/// `a * b` modulo the polynomial, both reflected (bit 31 is x^0).
const fn mult_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `X2N[k]` = x^(2^k) modulo the polynomial.
const X2N: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 32 {
        t[k] = p;
        p = mult_mod_p(p, p);
        k += 1;
    }
    t
};

/// CRC32C of `A ++ B` from `crc(A)`, `crc(B)` and `len(B)`: `crc(A) * x^(8 len) ^ crc(B)`.
/// A few hundred instructions whatever the length (the `crc32c` crate's zlib-1.2 port costs
/// tens of thousands, too much under the append lock).
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let mut n = len_b;
    let mut k = 3; // bytes: 8 = 2^3 bits each
    let mut p = 1u32 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = mult_mod_p(X2N[k & 31], p);
        }
        n >>= 1;
        k += 1;
    }
    mult_mod_p(p, crc_a) ^ crc_b
}

/// Why a record could not be decoded; recovery truncates the log at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes remain than the record needs: a write cut short by a crash.
    Torn(String),
    /// The bytes are all there but are not a record we wrote.
    Corrupt(String),
}

impl RecordError {
    pub fn reason(&self) -> String {
        match self {
            RecordError::Torn(s) => format!("torn record: {s}"),
            RecordError::Corrupt(s) => format!("corrupt record: {s}"),
        }
    }
}

/// A decoded record: the operation, where its body sits within the record (if any), and the
/// record's full length on disk.
#[derive(Debug)]
pub struct Decoded {
    pub op: Op,
    /// `(offset from record start, length)` of the body for publish and relocate records.
    pub body: Option<(u64, u32)>,
    pub rec_len: u64,
}

/// Decodes the record at the start of `buf` (the rest of the segment file).
pub fn decode(buf: &[u8]) -> Result<Decoded, RecordError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(RecordError::Torn(format!(
            "{} bytes left, frame header needs {FRAME_HEADER_LEN}",
            buf.len()
        )));
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(RecordError::Corrupt(format!("impossible length {len}")));
    }
    let end = FRAME_HEADER_LEN + len as usize;
    if buf.len() < end {
        return Err(RecordError::Torn(format!(
            "length {len} but only {} bytes left",
            buf.len() - FRAME_HEADER_LEN
        )));
    }
    let data = &buf[FRAME_HEADER_LEN..end];
    let actual = crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), data);
    if actual != crc {
        return Err(RecordError::Corrupt(format!(
            "CRC mismatch (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    let bad = |what: &str| RecordError::Corrupt(format!("malformed {what} record"));
    let mut r = Cursor {
        buf: &data[1..],
        pos: 0,
    };
    let base = (FRAME_HEADER_LEN + 1) as u64;
    let (op, body) = match data[0] {
        REC_PUBLISH => {
            let msg_id = r.u64().ok_or_else(|| bad("publish"))?;
            let n = r.u16().ok_or_else(|| bad("publish"))?;
            let mut queues = SmallVec::with_capacity(n as usize);
            for _ in 0..n {
                queues.push(r.u64().ok_or_else(|| bad("publish"))?);
            }
            let _body_crc = r.u32().ok_or_else(|| bad("publish"))?;
            let body = (base + r.pos as u64, (r.buf.len() - r.pos) as u32);
            (Op::Publish { msg_id, queues }, Some(body))
        }
        t @ (REC_ACK | REC_DELIVERED) => {
            let queue = r.u64().ok_or_else(|| bad("ack"))?;
            let n = r.u32().ok_or_else(|| bad("ack"))? as usize;
            if r.remaining() != n * 8 {
                return Err(bad("ack"));
            }
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(r.u64().ok_or_else(|| bad("ack"))?);
            }
            let op = if t == REC_ACK {
                Op::Ack { queue, ids }
            } else {
                Op::Delivered { queue, ids }
            };
            (op, None)
        }
        REC_DROP_QUEUE => {
            let queue = r.u64().ok_or_else(|| bad("drop-queue"))?;
            if r.remaining() != 0 {
                return Err(bad("drop-queue"));
            }
            (Op::DropQueue { queue }, None)
        }
        REC_RELOCATE => {
            let e = || bad("relocate");
            let msg_id = r.u64().ok_or_else(e)?;
            let order = r.u64().ok_or_else(e)?;
            let old_segment = r.u64().ok_or_else(e)?;
            let old_offset = r.u64().ok_or_else(e)?;
            let n = r.u16().ok_or_else(e)?;
            let mut queues = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let q = r.u64().ok_or_else(e)?;
                let c = r.u32().ok_or_else(e)?;
                queues.push((q, c));
            }
            let _body_crc = r.u32().ok_or_else(e)?;
            let body = (base + r.pos as u64, (r.buf.len() - r.pos) as u32);
            (
                Op::Relocate {
                    msg_id,
                    order,
                    old_segment,
                    old_offset,
                    queues,
                },
                Some(body),
            )
        }
        t => return Err(RecordError::Corrupt(format!("unknown record type {t}"))),
    };
    Ok(Decoded {
        op,
        body,
        rec_len: end as u64,
    })
}

pub fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.remaining() < n {
            return None;
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8).map(read_u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    fn whole(f: &Frame) -> Vec<u8> {
        let mut v = f.head.clone();
        v.extend_from_slice(&f.body);
        v
    }

    #[test]
    fn combining_crcs_matches_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for split in [0, 1, 7, 8, 100, 4096, 65_537, 70_000] {
            let (a, b) = data.split_at(split);
            let whole = crc32c::crc32c(&data);
            let combined = crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64);
            assert_eq!(combined, whole, "split at {split}");
        }
    }

    #[test]
    fn the_frame_crc_covers_the_whole_record_whatever_the_body_size() {
        let op = Op::Publish {
            msg_id: 123_456,
            queues: smallvec![4, 5],
        };
        for len in [0, 16, RECHECKSUM_LIMIT, RECHECKSUM_LIMIT + 1, 70_000] {
            let body = Bytes::from(vec![7u8; len]);
            let f = encode(&op, body.clone()).unwrap();
            assert_eq!(f.head.len(), head_len(&op));
            assert_eq!(f.len(), record_len(&op, len).unwrap());
            let bytes = whole(&f);
            assert_eq!(decode(&bytes).unwrap().op, op, "len {len}");
            let expect = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), &bytes[8..]);
            assert_eq!(bytes[4..8], expect.to_le_bytes(), "len {len}");
        }
    }

    #[test]
    fn every_record_type_round_trips() {
        let ops = [
            (
                Op::Publish {
                    msg_id: 7,
                    queues: smallvec![1, 2, 3],
                },
                Bytes::from_static(b"hello"),
            ),
            (
                Op::Ack {
                    queue: 9,
                    ids: vec![1, 2, 3],
                },
                Bytes::new(),
            ),
            (
                Op::Delivered {
                    queue: 9,
                    ids: vec![4],
                },
                Bytes::new(),
            ),
            (Op::DropQueue { queue: 5 }, Bytes::new()),
            (
                Op::Relocate {
                    msg_id: 1,
                    order: 2,
                    old_segment: 3,
                    old_offset: 4,
                    queues: vec![(5, 6), (7, 0)],
                },
                Bytes::from_static(b"body"),
            ),
        ];
        for (op, body) in ops {
            let f = encode(&op, body.clone()).unwrap();
            assert_eq!(f.head.len(), head_len(&op));
            let bytes = whole(&f);
            let d = decode(&bytes).unwrap();
            assert_eq!(d.op, op);
            assert_eq!(d.rec_len, bytes.len() as u64);
            if let Some((off, len)) = d.body {
                assert_eq!(&bytes[off as usize..off as usize + len as usize], &body[..]);
                assert_eq!(off as usize, f.head.len());
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let f = encode(
            &Op::Publish {
                msg_id: 1,
                queues: smallvec![1],
            },
            Bytes::from_static(b"payload"),
        )
        .unwrap();
        let bytes = whole(&f);
        for cut in 0..bytes.len() {
            assert!(matches!(decode(&bytes[..cut]), Err(RecordError::Torn(_))));
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i} not detected");
        }
        assert!(matches!(decode(&[0u8; 16]), Err(RecordError::Corrupt(_))));
    }

    #[test]
    fn segment_names_and_headers() {
        assert_eq!(segment_file_name(42), "seg-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("seg-42.log"), None);
        assert_eq!(decode_segment_header(&encode_segment_header(99)), Ok(99));
        let mut h = encode_segment_header(99);
        h[13] ^= 1;
        assert!(decode_segment_header(&h).is_err());
    }
}
