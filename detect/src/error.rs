//! The errors of the detection stage.

/// Errors of the detection stage: a bad config (the user's fault, fix the file) or a batch that
/// is not a flow-record batch (the producer's fault; retrying the same batch won't help).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `[detect]` config value is invalid.
    #[error("invalid config {key}: {reason}")]
    Config {
        /// The offending key, as written in the config file (e.g. `window.length`).
        key: &'static str,
        /// What is wrong with it, naming the value.
        reason: String,
    },
    /// A batch does not have the flow-record schema's columns.
    #[error(transparent)]
    Schema(#[from] schemas::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
