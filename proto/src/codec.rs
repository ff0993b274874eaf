//! The codec of the generated `runnel.v1` *servers*: tonic-prost's, except that a request
//! which does not parse (invalid UTF-8 in a string field, a truncated message, a wrong wire
//! type) is refused with INVALID_ARGUMENT instead of INTERNAL.
//!
//! tonic-prost answers every prost `DecodeError` with INTERNAL, which tells the caller the
//! server is broken; for a server decoding a *request*, the fault is the caller's, and the
//! Runnel API promises INVALID_ARGUMENT for bad input. The generated clients keep
//! tonic-prost's codec (`build.rs` generates them separately): a client that cannot parse a
//! *response* has no argument of its own to blame.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

/// [`ProstCodec`] with request decode errors mapped to INVALID_ARGUMENT. `T` is encoded (the
/// response), `U` decoded (the request).
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            _pd: PhantomData,
            buffer_settings: BufferSettings::default(),
        }
    }
}

/// Decodes a request message `U`; see [`RequestCodec`].
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _pd: PhantomData<U>,
    buffer_settings: BufferSettings,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| invalid_request(&e))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}

/// The status for a request that does not parse. prost's message names the message and
/// field ("failed to decode Protobuf message: PublishRequest.topic: invalid string value:
/// data is not UTF-8 encoded"), which is what the caller needs to find the fault.
fn invalid_request(e: &prost::DecodeError) -> Status {
    Status::invalid_argument(format!("the request is not a valid protobuf message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_string_is_invalid_argument_naming_the_field() {
        // PublishRequest { topic (1): "\xff" }
        let bytes: &[u8] = &[0x0a, 0x01, 0xff];
        let e = crate::v1::PublishRequest::decode(bytes).unwrap_err();
        let s = invalid_request(&e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().contains("PublishRequest.topic") && s.message().contains("UTF-8"),
            "{}",
            s.message()
        );
    }
}
