//! Kafka request framing (`int32 length` + body) and the request-header peek, sans-io.
//!
//! A partial frame is "need more bytes" (`Ok(None)`), never an error. Errors are reserved for
//! frames that can never become valid: negative or oversized lengths.

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a frame cannot be accepted; the connection is closed after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    ShortHeader(usize),
    #[error("malformed request header: {0}")]
    BadHeader(String),
}

/// Split one whole frame body off the front of `buf`, or `Ok(None)` if more bytes are needed.
pub fn decode_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = usize::try_from(len).map_err(|_| FrameError::NegativeLength(len))?;
    if size > max_frame {
        return Err(FrameError::TooLarge {
            size,
            max: max_frame,
        });
    }
    let total = size + 4;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size)))
}

/// The fixed first eight bytes of every request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPeek {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Read api key, version and correlation id without decoding the rest.
pub fn peek_header(frame: &[u8]) -> Result<HeaderPeek, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::ShortHeader(frame.len()));
    }
    Ok(HeaderPeek {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decode the full request header of a known API, leaving `frame` at the request body.
pub fn decode_header(
    api: ApiKey,
    version: i16,
    frame: &mut BytesMut,
) -> Result<RequestHeader, FrameError> {
    let header_version = api.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|e| FrameError::BadHeader(e.to_string()))
}

/// Append a whole response frame (length, header, body) to `out`.
pub fn encode_response<M: Encodable>(
    out: &mut BytesMut,
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> anyhow::Result<()> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    out.reserve(size + 4);
    out.put_i32(i32::try_from(size)?);
    header.encode(out, header_version)?;
    body.encode(out, version)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partial_frame_needs_more_bytes() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 10, 1, 2][..]);
        assert_eq!(decode_frame(&mut buf, 100), Ok(None));
        assert_eq!(buf.len(), 6, "nothing consumed while incomplete");
    }

    #[test]
    fn negative_and_oversized_lengths_are_errors() {
        let mut neg = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(
            decode_frame(&mut neg, 100),
            Err(FrameError::NegativeLength(-5))
        );
        let mut big = BytesMut::from(&101i32.to_be_bytes()[..]);
        assert_eq!(
            decode_frame(&mut big, 100),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
    }

    proptest! {
        #[test]
        fn frames_split_exactly(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8), chunk in 1usize..17) {
            let mut wire = Vec::new();
            for b in &bodies {
                wire.extend_from_slice(&i32::try_from(b.len()).unwrap().to_be_bytes());
                wire.extend_from_slice(b);
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = decode_frame(&mut buf, 1 << 20).unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert_eq!(got, bodies);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = decode_frame(&mut buf, 1024) {
                let _ = peek_header(&f);
            }
        }
    }
}
