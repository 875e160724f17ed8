//! The one error type service handlers return, and its single mapping to a
//! gRPC `Status` (handlers never build `Status` values by hand).

/// What went wrong in a service call, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request itself is wrong: which field, and what would be valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing (stream, shard, member) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The service cannot serve right now; the message names the cause.
    #[error("{0}")]
    Unavailable(String),
    /// A resource (memory, buffer space) ran out.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
    /// An error passed through from a downstream gRPC call, code kept.
    /// Shown as its message alone, so it reads as one link of a cause chain.
    #[error("{}", .0.message())]
    Upstream(tonic::Status),
}

impl ServiceError {
    /// Shorthand for [`ServiceError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// Shorthand for [`ServiceError::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }

    /// Shorthand for [`ServiceError::Unavailable`].
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::Unavailable(msg.into())
    }

    /// The message of the `Status` this maps to, without building it.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidArgument(m)
            | Self::NotFound(m)
            | Self::AlreadyExists(m)
            | Self::Unavailable(m)
            | Self::ResourceExhausted(m)
            | Self::Internal(m) => m,
            Self::Upstream(s) => s.message(),
        }
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(s: tonic::Status) -> Self {
        Self::Upstream(s)
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ServiceError::NotFound(m) => tonic::Status::not_found(m),
            ServiceError::AlreadyExists(m) => tonic::Status::already_exists(m),
            ServiceError::Unavailable(m) => tonic::Status::unavailable(m),
            ServiceError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            ServiceError::Internal(m) => tonic::Status::internal(m),
            ServiceError::Upstream(s) => s,
        }
    }
}
