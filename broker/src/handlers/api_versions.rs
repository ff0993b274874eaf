//! ApiVersions (key 18): the advertised API ranges.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::{code, RequestContext, SUPPORTED};
use crate::broker::Broker;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub async fn handle(_: &Broker, _: &RequestContext, _: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(code::NONE)
        .with_api_keys(api_keys())
}

/// The reply to an ApiVersions version we do not support: response header v0 and the v0 body
/// layout (`error_code i16, [api_key i16, min i16, max i16]`), whatever version was asked for.
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let count = i32::try_from(SUPPORTED.len()).unwrap_or(i32::MAX);
    let body_len = 4 + 2 + 4 + SUPPORTED.len() * 6;
    let mut out = BytesMut::with_capacity(body_len + 4);
    out.put_i32(i32::try_from(body_len).unwrap_or(i32::MAX));
    out.put_i32(correlation_id);
    out.put_i16(code::UNSUPPORTED_VERSION);
    out.put_i32(count);
    for (key, min, max) in SUPPORTED {
        out.put_i16(*key as i16);
        out.put_i16(*min);
        out.put_i16(*max);
    }
    out
}
