//! The protobuf codec of repdist's gRPC services: prost's (`tonic_prost::ProstCodec`), except
//! that a message which does not decode is answered `INVALID_ARGUMENT` naming the field prost
//! stopped at, not `INTERNAL` (tonic-prost's answer). Bytes a client sends that are not a valid
//! message are the client's mistake, and REST answers the same mistake with a 4xx naming the field.
//!
//! `build.rs` makes the generated servers and clients use it (`codec_path`).

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder};

/// [`ProstCodec`] with [`RequestDecoder`] in place of its decoder.
pub struct RequestCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

/// Decodes like [`ProstDecoder`]; a decode error becomes `INVALID_ARGUMENT` with a `field` entry.
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| match status.code() {
            Code::Internal => undecodable(status.message()),
            _ => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// prost's message is `failed to decode Protobuf message: Inner.field: Outer.field: reason`, the
/// innermost field first; the outermost is the request field to blame. Without one (the bytes are
/// not protobuf at all) the whole message is blamed.
fn undecodable(message: &str) -> Status {
    let field = blamed_field(message).unwrap_or("message");
    let reason = message.strip_prefix("failed to decode Protobuf message: ").unwrap_or(message);
    super::status::invalid(field, format!("the request message does not decode: {reason}"))
}

fn blamed_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("failed to decode Protobuf message: ")?;
    rest.split(": ")
        .filter_map(|segment| segment.split_once('.'))
        .filter(|(message, field)| is_identifier(message) && is_identifier(field))
        .map(|(_, field)| field)
        .last()
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outermost_field_is_blamed() {
        let message = "failed to decode Protobuf message: Inner.name: SubscriptionRequest.subscription_json: invalid string value: data is not UTF-8 encoded";
        assert_eq!(blamed_field(message), Some("subscription_json"));
        assert_eq!(blamed_field("failed to decode Protobuf message: invalid wire type value: 7"), None);
        let status = undecodable("failed to decode Protobuf message: DeliveryStatusRequest.delivery_id: invalid string value: data is not UTF-8 encoded");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.metadata().get("field").and_then(|v| v.to_str().ok()), Some("delivery_id"));
        assert!(status.message().contains("does not decode"), "{}", status.message());
    }
}
