//! The errors of the detection stage.

/// Errors of the detection stage: a bad config (the user's fault, fix the file), a batch that
/// is not a flow-record batch (the producer's fault; retrying the same batch won't help), or
/// saved state that does not fit.
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
    /// Saved state (a checkpoint, a partial aggregate from another instance) can't be used:
    /// taken under another window config, or inconsistent. Not retriable: the state must be
    /// discarded (or the config set back).
    #[error("saved state: {0}")]
    State(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
