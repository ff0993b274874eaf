//! A minimal, independent Kafka Fetch v4 client, to see the record batches a broker serves.
//!
//! Clients decompress transparently, so a producer that silently fell back to no compression
//! (old librdkafka does when Produce v0 is not advertised) or a broker that rewrote batches
//! would go unnoticed. This reads the batch headers as stored: base offset, record count and
//! the codec in `attributes`. It shares no code with the broker on purpose.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// Compression codec names by the low three bits of a batch's `attributes`.
pub const CODEC_NAMES: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// The header of one record batch as served by Fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// `baseOffset`.
    pub base_offset: i64,
    /// `magic` (2 for record batches).
    pub magic: i8,
    /// Codec name from `attributes & 7`.
    pub codec: &'static str,
    /// `recordsCount`.
    pub records: i32,
}

/// Fetches partition `partition` of `topic` from offset 0 to its high watermark and returns
/// the header of every batch, in order.
pub fn fetch_batches(bootstrap: &str, topic: &str, partition: i32) -> Result<Vec<BatchInfo>> {
    let mut conn = TcpStream::connect(bootstrap).with_context(|| format!("connect {bootstrap}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut batches: Vec<BatchInfo> = Vec::new();
    let mut offset = 0i64;
    for correlation_id in 1.. {
        let (high_watermark, records) =
            fetch_once(&mut conn, correlation_id, topic, partition, offset)?;
        let mut rest = &records[..];
        let mut progressed = false;
        while rest.len() >= 61 {
            let base_offset = i64::from_be_bytes(rest[0..8].try_into()?);
            let len = usize::try_from(i32::from_be_bytes(rest[8..12].try_into()?))
                .context("negative batch length")?;
            if rest.len() < 12 + len {
                break; // a partial batch at the end of the response
            }
            let magic = i8::from_be_bytes([rest[16]]);
            ensure!(
                magic == 2,
                "batch at offset {base_offset} has magic {magic}"
            );
            let attributes = i16::from_be_bytes(rest[21..23].try_into()?);
            let last_offset_delta = i32::from_be_bytes(rest[23..27].try_into()?);
            let codec = CODEC_NAMES
                .get(usize::try_from(attributes & 7)?)
                .copied()
                .with_context(|| {
                    format!("batch at {base_offset}: bad codec in attributes {attributes:#x}")
                })?;
            let records = i32::from_be_bytes(rest[57..61].try_into()?);
            let next = base_offset + i64::from(last_offset_delta) + 1;
            if next > offset {
                batches.push(BatchInfo {
                    base_offset,
                    magic,
                    codec,
                    records,
                });
                offset = next;
                progressed = true;
            }
            rest = &rest[12 + len..];
        }
        if offset >= high_watermark {
            break;
        }
        ensure!(
            progressed,
            "fetch at offset {offset} (high watermark {high_watermark}) returned no whole batch"
        );
    }
    Ok(batches)
}

/// One Fetch v4 round trip; returns (high watermark, records bytes).
fn fetch_once(
    conn: &mut TcpStream,
    correlation_id: i32,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(i64, Vec<u8>)> {
    let mut req = Vec::new();
    req.extend_from_slice(&1i16.to_be_bytes()); // api key: Fetch
    req.extend_from_slice(&4i16.to_be_bytes()); // api version
    req.extend_from_slice(&correlation_id.to_be_bytes());
    put_str(&mut req, "runnel-conformance-raw")?;
    req.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    req.extend_from_slice(&100i32.to_be_bytes()); // max wait ms
    req.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    req.extend_from_slice(&(8i32 << 20).to_be_bytes()); // max bytes
    req.push(0); // isolation level: read uncommitted
    req.extend_from_slice(&1i32.to_be_bytes()); // one topic
    put_str(&mut req, topic)?;
    req.extend_from_slice(&1i32.to_be_bytes()); // one partition
    req.extend_from_slice(&partition.to_be_bytes());
    req.extend_from_slice(&offset.to_be_bytes());
    req.extend_from_slice(&(8i32 << 20).to_be_bytes()); // partition max bytes
    let size = i32::try_from(req.len())?;
    conn.write_all(&size.to_be_bytes())?;
    conn.write_all(&req)?;

    let mut size = [0u8; 4];
    conn.read_exact(&mut size)
        .context("read Fetch response size")?;
    let size = usize::try_from(i32::from_be_bytes(size)).context("negative response size")?;
    let mut buf = vec![0u8; size];
    conn.read_exact(&mut buf).context("read Fetch response")?;
    let mut r = Reader { buf: &buf, pos: 0 };
    ensure!(r.i32()? == correlation_id, "correlation id mismatch");
    let _throttle = r.i32()?;
    ensure!(r.i32()? == 1, "expected one topic in the Fetch response");
    let _topic = r.string()?;
    ensure!(
        r.i32()? == 1,
        "expected one partition in the Fetch response"
    );
    ensure!(
        r.i32()? == partition,
        "wrong partition in the Fetch response"
    );
    let error = r.i16()?;
    if error != 0 {
        bail!("Fetch {topic}/{partition} at {offset}: error code {error}");
    }
    let high_watermark = r.i64()?;
    let _last_stable = r.i64()?;
    let aborted = r.i32()?;
    for _ in 0..aborted.max(0) {
        r.i64()?;
        r.i64()?;
    }
    let len = r.i32()?;
    let records = if len < 0 {
        Vec::new()
    } else {
        r.take(usize::try_from(len)?)?.to_vec()
    };
    Ok((high_watermark, records))
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    out.extend_from_slice(&i16::try_from(s.len())?.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).context("overflow")?;
        ensure!(end <= self.buf.len(), "Fetch response truncated");
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
    }
    fn string(&mut self) -> Result<String> {
        let len = usize::try_from(self.i16()?).context("null string")?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}
