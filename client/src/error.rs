//! Errors of the Runnel client.

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid broker address {0}")]
    InvalidAddress(String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The broker refused or failed the call; the status carries the code and its message.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the publisher is closed")]
    Closed,
    #[error("invalid sensor reading: {0}")]
    InvalidReading(String),
}

impl ClientError {
    /// The gRPC status code, if the broker answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}
