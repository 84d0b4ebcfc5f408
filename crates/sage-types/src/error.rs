//! Errors of decoding wire types.

/// Why an envelope's fields could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The `payload` field is not standard base64.
    #[error("envelope payload is not valid base64")]
    PayloadEncoding,
    /// A `sig` field is not standard base64.
    #[error("signature {index} is not valid base64")]
    SignatureEncoding {
        /// Position of the signature in `signatures`.
        index: usize,
    },
}
