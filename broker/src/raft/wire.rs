//! The node-to-node wire format (Raft messages and small RPCs between brokers), sans-io.
//!
//! Bytes in, frames out: no tokio, no sockets (`net::peers` owns those). A partial frame is
//! "need more bytes" (`Ok(None)`), never an error; errors are reserved for input that can never
//! become a valid frame, after which the connection is closed.
//!
//! ```text
//! frame    := len:u32be body                      (len = body length, checked against max_frame)
//! body     := format:u8 (= 1) tag:u8 fields       (the whole body must be consumed)
//!   tag 0  Hello     str cluster, uv node_id
//!   tag 1  Raft      group message
//!   tag 2  Request   uv id, bytes payload
//!   tag 3  Response  uv id, bytes payload
//! group    := 0 (meta) | 1 str topic, i32be partition
//! message  := uv from, uv to, uv term, kind:u8, ...
//!   kind 0 PreVote          uv last_index, uv last_term
//!   kind 1 PreVoteResponse  bool granted
//!   kind 2 Vote             uv last_index, uv last_term
//!   kind 3 VoteResponse     bool granted
//!   kind 4 Append           uv prev_index, uv prev_term, uv commit, uv count, entry*count
//!   kind 5 AppendResponse   uv index, bool success, uv rejected
//!   kind 6 Snapshot         uv last_index, uv last_term, bytes payload
//! entry    := uv term, uv index, kind:u8 (0 normal, 1 noop), bytes payload
//! str      := uv len, UTF-8 bytes;  bytes := uv len, raw bytes;  bool := u8 0 | 1
//! uv       := unsigned LEB128, at most 10 bytes
//! ```
//!
//! Integers are varints because most of them (indexes, terms, node ids) are small; the bulk of
//! an `Append` is its entries' payloads (record batches, up to ~1 MiB each), which
//! [`decode`] splits out of the frame buffer without copying. No allocation is sized by a wire
//! length before that length is checked against `max_frame` or the bytes actually present.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Entry, EntryKind, Message, MessageBody, NodeId};

/// The format byte every frame body starts with. A receiver refuses any other value.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of the length prefix in front of every frame body.
pub const LEN_PREFIX: usize = 4;

/// The smallest possible encoding of one entry (four one-byte fields), used to bound the
/// entry count announced by an `Append` by the bytes present before allocating for it.
const MIN_ENTRY_LEN: usize = 4;

const TAG_HELLO: u8 = 0;
const TAG_RAFT: u8 = 1;
const TAG_REQUEST: u8 = 2;
const TAG_RESPONSE: u8 = 3;

const GROUP_META: u8 = 0;
const GROUP_PARTITION: u8 = 1;

const MSG_PRE_VOTE: u8 = 0;
const MSG_PRE_VOTE_RESPONSE: u8 = 1;
const MSG_VOTE: u8 = 2;
const MSG_VOTE_RESPONSE: u8 = 3;
const MSG_APPEND: u8 = 4;
const MSG_APPEND_RESPONSE: u8 = 5;
const MSG_SNAPSHOT: u8 = 6;

const ENTRY_NORMAL: u8 = 0;
const ENTRY_NOOP: u8 = 1;

/// Which Raft group a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// The cluster-metadata group (topics, assignments).
    Meta,
    /// One replicated partition.
    Partition {
        /// The topic name.
        topic: String,
        /// The partition index.
        partition: i32,
    },
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupKey::Meta => f.write_str("meta"),
            GroupKey::Partition { topic, partition } => write!(f, "{topic}-{partition}"),
        }
    }
}

/// One unit of the node-to-node protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame on every connection: who is dialing, in which cluster.
    Hello {
        /// The cluster name; a node refuses connections from another cluster.
        cluster: String,
        /// The dialing node.
        node_id: NodeId,
    },
    /// A Raft message for one group.
    Raft {
        /// The group it belongs to.
        group: GroupKey,
        /// The message.
        msg: Message,
    },
    /// A request; answered by a [`Frame::Response`] with the same `id` on the same connection.
    Request {
        /// Chosen by the requester, echoed in the response.
        id: u64,
        /// Opaque to the transport.
        payload: Bytes,
    },
    /// The answer to the [`Frame::Request`] with this `id`.
    Response {
        /// The request's id.
        id: u64,
        /// Opaque to the transport.
        payload: Bytes,
    },
}

/// Why bytes cannot be (or a frame cannot be encoded as) a frame; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds the limit (or, on encode, the body does not fit a `u32`).
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced (or encoded) body length.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The frame body is empty.
    #[error("empty frame")]
    Empty,
    /// The frame's format byte is not [`FORMAT_VERSION`].
    #[error("unsupported wire format version {0}")]
    UnsupportedVersion(u8),
    /// A tag byte has no meaning.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which tag.
        what: &'static str,
        /// Its value.
        tag: u8,
    },
    /// A field runs past the end of the frame.
    #[error("frame ends inside {0}")]
    Truncated(&'static str),
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("varint overflow in {0}")]
    VarintOverflow(&'static str),
    /// A boolean byte other than 0 or 1.
    #[error("invalid boolean byte {0}")]
    BadBool(u8),
    /// A string is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    /// An `Append` announces more entries than its bytes can hold.
    #[error("append announces {count} entries but only {remaining} bytes follow")]
    TooManyEntries {
        /// The announced count.
        count: u64,
        /// The bytes left in the frame.
        remaining: usize,
    },
    /// The frame body continues after its last field.
    #[error("{0} unexpected bytes after the frame's last field")]
    TrailingBytes(usize),
}

/// `usize` → `u64`, lossless on every platform Rust supports (saturating otherwise).
fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Append `frame` (length prefix and body) to `out`.
///
/// Fails only if the body does not fit a `u32` length; `out` is then left as it was. Whether
/// the frame fits the receiver's `max_frame` is the caller's check (see [`frame_len`]).
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), WireError> {
    let start = out.len();
    out.put_u32(0); // patched below, once the body length is known
    out.put_u8(FORMAT_VERSION);
    match frame {
        Frame::Hello { cluster, node_id } => {
            out.put_u8(TAG_HELLO);
            put_str(out, cluster);
            put_uv(out, *node_id);
        }
        Frame::Raft { group, msg } => {
            out.put_u8(TAG_RAFT);
            put_group(out, group);
            put_message(out, msg);
        }
        Frame::Request { id, payload } => {
            out.put_u8(TAG_REQUEST);
            put_uv(out, *id);
            put_bytes(out, payload);
        }
        Frame::Response { id, payload } => {
            out.put_u8(TAG_RESPONSE);
            put_uv(out, *id);
            put_bytes(out, payload);
        }
    }
    let body = out.len() - start - LEN_PREFIX;
    match u32::try_from(body) {
        Ok(len) => {
            out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(WireError::TooLarge {
                size: len_u64(body),
                max: u64::from(u32::MAX),
            })
        }
    }
}

/// The body length of the whole frame at the front of `buf`, if its prefix is there.
pub fn frame_len(buf: &[u8]) -> Option<u64> {
    let prefix: [u8; LEN_PREFIX] = buf.get(..LEN_PREFIX)?.try_into().ok()?;
    Some(u64::from(u32::from_be_bytes(prefix)))
}

/// Split one whole frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
///
/// `max_frame` bounds the body length (the prefix excluded); a longer announced length is an
/// error before anything is reserved. Payloads ([`Entry::payload`], request and response
/// payloads) are slices of `buf`'s memory, not copies.
pub fn decode(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, WireError> {
    let Some(announced) = frame_len(buf) else {
        return Ok(None);
    };
    let too_large = WireError::TooLarge {
        size: announced,
        max: len_u64(max_frame),
    };
    let size = usize::try_from(announced).map_err(|_| too_large.clone())?;
    if size > max_frame {
        return Err(too_large);
    }
    let total = size.checked_add(LEN_PREFIX).ok_or(too_large)?;
    if buf.len() < total {
        // Bounded by max_frame, checked above.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    let body = buf.split_to(size).freeze();
    decode_body(body).map(Some)
}

/// Decode one frame body (what follows the length prefix).
fn decode_body(body: Bytes) -> Result<Frame, WireError> {
    let mut r = Reader(body);
    if r.0.is_empty() {
        return Err(WireError::Empty);
    }
    let version = r.u8("format version")?;
    if version != FORMAT_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let frame = match r.u8("frame tag")? {
        TAG_HELLO => Frame::Hello {
            cluster: r.str("cluster name")?,
            node_id: r.uv("node id")?,
        },
        TAG_RAFT => Frame::Raft {
            group: r.group()?,
            msg: r.message()?,
        },
        TAG_REQUEST => Frame::Request {
            id: r.uv("request id")?,
            payload: r.bytes("request payload")?,
        },
        TAG_RESPONSE => Frame::Response {
            id: r.uv("response id")?,
            payload: r.bytes("response payload")?,
        },
        tag => return Err(WireError::UnknownTag { what: "frame", tag }),
    };
    if !r.0.is_empty() {
        return Err(WireError::TrailingBytes(r.0.len()));
    }
    Ok(frame)
}

fn put_uv(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        // Truncation intended: the low seven bits plus the continuation bit.
        out.put_u8(u8::try_from(v & 0x7f).unwrap_or(0) | 0x80);
        v >>= 7;
    }
    out.put_u8(u8::try_from(v).unwrap_or(0));
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_uv(out, len_u64(b.len()));
    out.put_slice(b);
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bool(out: &mut BytesMut, b: bool) {
    out.put_u8(u8::from(b));
}

fn put_group(out: &mut BytesMut, group: &GroupKey) {
    match group {
        GroupKey::Meta => out.put_u8(GROUP_META),
        GroupKey::Partition { topic, partition } => {
            out.put_u8(GROUP_PARTITION);
            put_str(out, topic);
            out.put_i32(*partition);
        }
    }
}

fn put_message(out: &mut BytesMut, msg: &Message) {
    put_uv(out, msg.from);
    put_uv(out, msg.to);
    put_uv(out, msg.term);
    match &msg.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            out.put_u8(MSG_PRE_VOTE);
            put_uv(out, *last_index);
            put_uv(out, *last_term);
        }
        MessageBody::PreVoteResponse { granted } => {
            out.put_u8(MSG_PRE_VOTE_RESPONSE);
            put_bool(out, *granted);
        }
        MessageBody::Vote {
            last_index,
            last_term,
        } => {
            out.put_u8(MSG_VOTE);
            put_uv(out, *last_index);
            put_uv(out, *last_term);
        }
        MessageBody::VoteResponse { granted } => {
            out.put_u8(MSG_VOTE_RESPONSE);
            put_bool(out, *granted);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.put_u8(MSG_APPEND);
            put_uv(out, *prev_index);
            put_uv(out, *prev_term);
            put_uv(out, *commit);
            put_uv(out, len_u64(entries.len()));
            let payloads: usize = entries.iter().map(|e| e.payload.len()).sum();
            out.reserve(payloads.saturating_add(entries.len().saturating_mul(16)));
            for e in entries {
                put_uv(out, e.term);
                put_uv(out, e.index);
                out.put_u8(match e.kind {
                    EntryKind::Normal => ENTRY_NORMAL,
                    EntryKind::Noop => ENTRY_NOOP,
                });
                put_bytes(out, &e.payload);
            }
        }
        MessageBody::AppendResponse {
            index,
            success,
            rejected,
        } => {
            out.put_u8(MSG_APPEND_RESPONSE);
            put_uv(out, *index);
            put_bool(out, *success);
            put_uv(out, *rejected);
        }
        MessageBody::Snapshot {
            last_index,
            last_term,
            payload,
        } => {
            out.put_u8(MSG_SNAPSHOT);
            put_uv(out, *last_index);
            put_uv(out, *last_term);
            put_bytes(out, payload);
        }
    }
}

/// A cursor over one frame body; every read checks the bytes present first.
struct Reader(Bytes);

impl Reader {
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        if self.0.is_empty() {
            return Err(WireError::Truncated(what));
        }
        Ok(self.0.get_u8())
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        if self.0.len() < 4 {
            return Err(WireError::Truncated(what));
        }
        Ok(self.0.get_i32())
    }

    fn uv(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10u32 {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && (byte & 0x80 != 0 || bits > 1) {
                return Err(WireError::VarintOverflow(what));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow(what))
    }

    fn len(&mut self, what: &'static str) -> Result<usize, WireError> {
        let n = self.uv(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.0.len() => Ok(n),
            _ => Err(WireError::Truncated(what)),
        }
    }

    /// A length-prefixed byte field, as a slice of the frame (no copy).
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let n = self.len(what)?;
        Ok(self.0.split_to(n))
    }

    fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = self.len(what)?;
        let s = std::str::from_utf8(&self.0[..n]).map_err(|_| WireError::BadUtf8(what))?;
        let s = s.to_owned();
        self.0.advance(n);
        Ok(s)
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::BadBool(b)),
        }
    }

    fn group(&mut self) -> Result<GroupKey, WireError> {
        match self.u8("group tag")? {
            GROUP_META => Ok(GroupKey::Meta),
            GROUP_PARTITION => Ok(GroupKey::Partition {
                topic: self.str("topic name")?,
                partition: self.i32("partition")?,
            }),
            tag => Err(WireError::UnknownTag { what: "group", tag }),
        }
    }

    fn message(&mut self) -> Result<Message, WireError> {
        let from = self.uv("message sender")?;
        let to = self.uv("message receiver")?;
        let term = self.uv("message term")?;
        let body = match self.u8("message kind")? {
            MSG_PRE_VOTE => MessageBody::PreVote {
                last_index: self.uv("last index")?,
                last_term: self.uv("last term")?,
            },
            MSG_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse {
                granted: self.bool("granted")?,
            },
            MSG_VOTE => MessageBody::Vote {
                last_index: self.uv("last index")?,
                last_term: self.uv("last term")?,
            },
            MSG_VOTE_RESPONSE => MessageBody::VoteResponse {
                granted: self.bool("granted")?,
            },
            MSG_APPEND => {
                let prev_index = self.uv("prev index")?;
                let prev_term = self.uv("prev term")?;
                let commit = self.uv("commit")?;
                let count = self.uv("entry count")?;
                let remaining = self.0.len();
                let count = usize::try_from(count)
                    .ok()
                    .filter(|&c| c <= remaining / MIN_ENTRY_LEN)
                    .ok_or(WireError::TooManyEntries { count, remaining })?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let term = self.uv("entry term")?;
                    let index = self.uv("entry index")?;
                    let kind = match self.u8("entry kind")? {
                        ENTRY_NORMAL => EntryKind::Normal,
                        ENTRY_NOOP => EntryKind::Noop,
                        tag => return Err(WireError::UnknownTag { what: "entry", tag }),
                    };
                    let payload = self.bytes("entry payload")?;
                    entries.push(Entry {
                        term,
                        index,
                        kind,
                        payload,
                    });
                }
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
            MSG_APPEND_RESPONSE => MessageBody::AppendResponse {
                index: self.uv("index")?,
                success: self.bool("success")?,
                rejected: self.uv("rejected index")?,
            },
            MSG_SNAPSHOT => MessageBody::Snapshot {
                last_index: self.uv("snapshot index")?,
                last_term: self.uv("snapshot term")?,
                payload: self.bytes("snapshot payload")?,
            },
            tag => {
                return Err(WireError::UnknownTag {
                    what: "message",
                    tag,
                })
            }
        };
        Ok(Message {
            from,
            to,
            term,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn enc(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        encode(frame, &mut out).unwrap();
        out
    }

    fn append(entries: Vec<Entry>) -> Frame {
        Frame::Raft {
            group: GroupKey::Partition {
                topic: "orders".into(),
                partition: 3,
            },
            msg: Message {
                from: 1,
                to: 2,
                term: 7,
                body: MessageBody::Append {
                    prev_index: 10,
                    prev_term: 6,
                    entries,
                    commit: 9,
                },
            },
        }
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (any::<u64>(), any::<u64>(), any::<bool>(), arb_bytes()).prop_map(
            |(term, index, noop, payload)| Entry {
                term,
                index,
                kind: if noop {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                payload,
            },
        )
    }

    fn arb_body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(last_index, last_term)| {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (any::<u64>(), any::<u64>()).prop_map(|(last_index, last_term)| MessageBody::Vote {
                last_index,
                last_term
            }),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(arb_entry(), 0..6),
                any::<u64>()
            )
                .prop_map(|(prev_index, prev_term, entries, commit)| {
                    MessageBody::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                    }
                }),
            (any::<u64>(), any::<bool>(), any::<u64>()).prop_map(|(index, success, rejected)| {
                MessageBody::AppendResponse {
                    index,
                    success,
                    rejected,
                }
            }),
            (any::<u64>(), any::<u64>(), arb_bytes()).prop_map(
                |(last_index, last_term, payload)| MessageBody::Snapshot {
                    last_index,
                    last_term,
                    payload,
                }
            ),
        ]
    }

    fn arb_group() -> impl Strategy<Value = GroupKey> {
        prop_oneof![
            Just(GroupKey::Meta),
            (any::<String>(), any::<i32>())
                .prop_map(|(topic, partition)| GroupKey::Partition { topic, partition }),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<String>(), any::<u64>())
                .prop_map(|(cluster, node_id)| Frame::Hello { cluster, node_id }),
            (
                arb_group(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                arb_body()
            )
                .prop_map(|(group, from, to, term, body)| Frame::Raft {
                    group,
                    msg: Message {
                        from,
                        to,
                        term,
                        body
                    },
                }),
            (any::<u64>(), arb_bytes()).prop_map(|(id, payload)| Frame::Request { id, payload }),
            (any::<u64>(), arb_bytes()).prop_map(|(id, payload)| Frame::Response { id, payload }),
        ]
    }

    #[test]
    fn payloads_are_slices_of_the_frame_buffer() {
        let big = Bytes::from(vec![0xabu8; 256 * 1024]);
        let frame = append(vec![
            Entry {
                term: 7,
                index: 11,
                kind: EntryKind::Normal,
                payload: big.clone(),
            },
            Entry {
                term: 7,
                index: 12,
                kind: EntryKind::Normal,
                payload: big,
            },
        ]);
        let mut buf = enc(&frame);
        let base = buf.as_ptr().addr();
        let range = base..base + buf.len();
        let Some(Frame::Raft { msg, .. }) = decode(&mut buf, MAX).unwrap() else {
            panic!("not a raft frame");
        };
        let MessageBody::Append { entries, .. } = msg.body else {
            panic!("not an append");
        };
        for e in &entries {
            let p = e.payload.as_ptr().addr();
            assert!(range.contains(&p), "payload was copied out of the frame");
            assert!(range.contains(&(p + e.payload.len() - 1)));
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let cap = buf.capacity();
        assert_eq!(
            decode(&mut buf, MAX),
            Err(WireError::TooLarge {
                size: u64::from(u32::MAX),
                max: len_u64(MAX)
            })
        );
        assert_eq!(buf.capacity(), cap, "nothing reserved for a refused length");
        // One byte over the limit is refused; exactly the limit waits for more bytes.
        let mut over = BytesMut::from(&(1025u32).to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut over, 1024),
            Err(WireError::TooLarge { .. })
        ));
        let mut at = BytesMut::from(&(1024u32).to_be_bytes()[..]);
        assert_eq!(decode(&mut at, 1024), Ok(None));
    }

    #[test]
    fn huge_entry_count_is_refused_without_allocating() {
        // A valid Append header claiming u64::MAX entries, followed by a few bytes.
        let mut buf = enc(&append(vec![]));
        // The count is the last byte of an empty append (varint 0); replace it.
        buf.truncate(buf.len() - 1);
        let mut tail = BytesMut::new();
        put_uv(&mut tail, u64::MAX);
        tail.extend_from_slice(&[0; 12]);
        buf.extend_from_slice(&tail);
        let body = u32::try_from(buf.len() - LEN_PREFIX).unwrap();
        buf[..4].copy_from_slice(&body.to_be_bytes());
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(WireError::TooManyEntries {
                count: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn bad_version_tags_and_trailing_bytes_are_errors() {
        let mut good = enc(&Frame::Request {
            id: 5,
            payload: Bytes::from_static(b"x"),
        });
        let mut v2 = good.clone();
        v2[LEN_PREFIX] = 2;
        assert_eq!(decode(&mut v2, MAX), Err(WireError::UnsupportedVersion(2)));
        let mut tag = good.clone();
        tag[LEN_PREFIX + 1] = 9;
        assert_eq!(
            decode(&mut tag, MAX),
            Err(WireError::UnknownTag {
                what: "frame",
                tag: 9
            })
        );
        let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(decode(&mut empty, MAX), Err(WireError::Empty));
        good.put_u8(0);
        let body = u32::try_from(good.len() - LEN_PREFIX).unwrap();
        good[..4].copy_from_slice(&body.to_be_bytes());
        assert_eq!(decode(&mut good, MAX), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn snapshot_with_extreme_indexes_round_trips() {
        for (last_index, last_term) in [(0, 0), (u64::MAX, u64::MAX), (u64::MAX, 0), (1, u64::MAX)]
        {
            let frame = Frame::Raft {
                group: GroupKey::Meta,
                msg: Message {
                    from: u64::MAX,
                    to: 0,
                    term: u64::MAX,
                    body: MessageBody::Snapshot {
                        last_index,
                        last_term,
                        payload: Bytes::from_static(&[0xff; 9]),
                    },
                },
            };
            let mut buf = enc(&frame);
            assert_eq!(decode(&mut buf, MAX), Ok(Some(frame)));
        }
    }

    #[test]
    fn snapshot_payload_longer_than_the_frame_is_refused() {
        let frame = Frame::Raft {
            group: GroupKey::Meta,
            msg: Message {
                from: 1,
                to: 2,
                term: 3,
                body: MessageBody::Snapshot {
                    last_index: 4,
                    last_term: 3,
                    payload: Bytes::new(),
                },
            },
        };
        let mut buf = enc(&frame);
        // The payload length is the last byte (varint 0): announce u64::MAX bytes instead.
        buf.truncate(buf.len() - 1);
        let mut tail = BytesMut::new();
        put_uv(&mut tail, u64::MAX);
        buf.extend_from_slice(&tail);
        let body = u32::try_from(buf.len() - LEN_PREFIX).unwrap();
        buf[..4].copy_from_slice(&body.to_be_bytes());
        assert_eq!(
            decode(&mut buf, MAX),
            Err(WireError::Truncated("snapshot payload"))
        );
    }

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut out = BytesMut::new();
            put_uv(&mut out, v);
            assert!(out.len() <= 10);
            assert_eq!(Reader(out.freeze()).uv("v"), Ok(v));
        }
        // Eleven continuation bytes, and a tenth byte carrying more than one bit.
        let long = Bytes::from(vec![0x80u8; 11]);
        assert_eq!(Reader(long).uv("v"), Err(WireError::VarintOverflow("v")));
        let mut wide = vec![0xffu8; 9];
        wide.push(0x02);
        assert_eq!(
            Reader(Bytes::from(wide)).uv("v"),
            Err(WireError::VarintOverflow("v"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn round_trip(frames in proptest::collection::vec(arb_frame(), 1..5), chunk in 1usize..64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode(f, &mut wire).unwrap();
            }
            // Fed in arbitrary chunks, the stream decodes to exactly the frames encoded.
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = decode(&mut buf, MAX).unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn every_prefix_needs_more_bytes(frame in arb_frame()) {
            let wire = enc(&frame);
            for n in 0..wire.len() {
                let mut buf = BytesMut::from(&wire[..n]);
                prop_assert_eq!(decode(&mut buf, MAX), Ok(None));
                prop_assert_eq!(buf.len(), n, "nothing consumed while incomplete");
            }
            let mut buf = BytesMut::from(&wire[..]);
            prop_assert_eq!(decode(&mut buf, MAX), Ok(Some(frame)));
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, 1024) {}
        }

        #[test]
        fn garbage_after_a_valid_header_never_panics(
            tag in 0u8..5,
            data in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            // Past the length and version checks, so the field decoders see the garbage.
            let mut buf = BytesMut::new();
            buf.put_u32(u32::try_from(data.len() + 2).unwrap());
            buf.put_u8(FORMAT_VERSION);
            buf.put_u8(tag);
            buf.extend_from_slice(&data);
            let _ = decode(&mut buf, MAX);
        }

        #[test]
        fn bit_flips_never_panic(frame in arb_frame(), bit in any::<prop::sample::Index>()) {
            let mut wire = enc(&frame);
            let bit = bit.index(wire.len() * 8);
            wire[bit / 8] ^= 1 << (bit % 8);
            match decode(&mut wire, MAX) {
                Ok(Some(_)) | Err(_) => {}
                // Only a longer length prefix can leave the frame incomplete.
                Ok(None) => prop_assert!(bit < LEN_PREFIX * 8),
            }
        }
    }
}
