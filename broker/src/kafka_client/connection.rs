//! One TCP connection to a Kafka broker: length-prefixed request/response framing with
//! kafka-protocol's message types, one request in flight, every answer bounded in size and
//! checked against its correlation id. [`Connection::call`] bounds the whole exchange by a
//! timeout; [`Connection::send`] alone is for requests that get no answer (Produce acks=0).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::KafkaClientError;

/// Largest response frame accepted from a broker.
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// The name of a Kafka API, for messages.
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::InitProducerId) => "InitProducerId",
        _ => "Kafka",
    }
}

/// An open connection. A failed call leaves the stream in an unknown state: the caller drops
/// the connection and opens a new one.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    correlation: i32,
    client_id: StrBytes,
}

impl Connection {
    /// Connects to `addr` (`host:port`) within `timeout`.
    pub async fn open(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, KafkaClientError> {
        let connect = |error| KafkaClientError::Connect {
            addr: addr.to_owned(),
            error,
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))
            })?
            .map_err(connect)?;
        // Best effort: requests are small and answered one at a time.
        let _ = stream.set_nodelay(true);
        Ok(Self {
            addr: addr.to_owned(),
            stream,
            correlation: 0,
            client_id: StrBytes::from_string(client_id.to_owned()),
        })
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn io(&self, api: &'static str, error: std::io::Error) -> KafkaClientError {
        KafkaClientError::Io {
            api,
            addr: self.addr.clone(),
            error,
        }
    }

    fn bad(&self, api: &'static str, message: String) -> KafkaClientError {
        KafkaClientError::Decode {
            api,
            addr: self.addr.clone(),
            message,
        }
    }

    /// Sends `req` as `version` and reads its answer, all within `timeout`.
    ///
    /// `Err(Io)` after the request was written means the broker may have acted on it.
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, KafkaClientError> {
        let api = api_name(R::KEY);
        match tokio::time::timeout(timeout, self.call_inner(req, version)).await {
            Ok(r) => r,
            Err(_) => Err(self.io(
                api,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                ),
            )),
        }
    }

    async fn call_inner<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, KafkaClientError> {
        let correlation = self.send(req, version).await?;
        self.receive::<R>(version, correlation).await
    }

    /// Writes `req` as `version`; returns its correlation id. No timeout: the caller bounds
    /// the wait if it needs to.
    pub async fn send<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<i32, KafkaClientError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let frame = encode_request(req, version, correlation, &self.client_id)?;
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| self.io(api_name(R::KEY), e))?;
        Ok(correlation)
    }

    /// Reads the answer to the request [`Connection::send`] numbered `correlation`.
    pub async fn receive<R: Request>(
        &mut self,
        version: i16,
        correlation: i32,
    ) -> Result<R::Response, KafkaClientError> {
        let api = api_name(R::KEY);
        let len = self.stream.read_i32().await.map_err(|e| self.io(api, e))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RESPONSE)
            .ok_or_else(|| self.bad(api, format!("response frame length {len}")))?;
        let mut buf = vec![0u8; len];
        self.stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| self.io(api, e))?;
        decode_response::<R>(Bytes::from(buf), version, correlation)
            .map_err(|message| self.bad(api, message))
    }
}

/// A whole request frame (length prefix, header v1/v2, body) for `req` as `version`.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
    client_id: &StrBytes,
) -> Result<BytesMut, KafkaClientError> {
    let api = api_name(R::KEY);
    let key = ApiKey::try_from(R::KEY).map_err(|_| KafkaClientError::Encode {
        api,
        message: "unknown api key".into(),
    })?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(client_id.clone()));
    let enc = |e: anyhow::Error| KafkaClientError::Encode {
        api,
        message: e.to_string(),
    };
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .map_err(enc)?;
    req.encode(&mut body, version).map_err(enc)?;
    let len = i32::try_from(body.len()).map_err(|_| KafkaClientError::Encode {
        api,
        message: "request larger than 2 GiB".into(),
    })?;
    let mut frame = BytesMut::with_capacity(body.len().saturating_add(4));
    frame.put_i32(len);
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The response to `R` in `frame` (a response frame without its length prefix), which must
/// answer request `correlation`; the error says what is wrong.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation: i32,
) -> Result<R::Response, String> {
    let key = ApiKey::try_from(R::KEY).map_err(|_| "unknown api key".to_owned())?;
    let rh = ResponseHeader::decode(&mut frame, key.response_header_version(version))
        .map_err(|e| e.to_string())?;
    if rh.correlation_id != correlation {
        return Err(format!(
            "correlation id {} answers request {correlation}",
            rh.correlation_id
        ));
    }
    R::Response::decode(&mut frame, version).map_err(|e| e.to_string())
}

/// The highest version of `R` the broker offers within `min..=max`.
pub fn pick<R: Request>(
    addr: &str,
    versions: &ApiVersionsResponse,
    min: i16,
    max: i16,
) -> Result<i16, KafkaClientError> {
    let offered = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == R::KEY)
        .map(|k| (k.min_version, k.max_version));
    match offered {
        Some((lo, hi)) if hi >= min && lo <= max => Ok(hi.min(max)),
        other => Err(KafkaClientError::Unsupported {
            addr: addr.to_owned(),
            api: api_name(R::KEY),
            min,
            max,
            offered: other.map_or(-1, |o| o.1),
        }),
    }
}
