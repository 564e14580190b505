//! The error type of the actuate crate.

/// Errors of the actuate crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config value is out of range (the user's fault: fix the config file, retrying won't
    /// help). `key` is the key's path inside the `[actuate]` section, e.g.
    /// `policy[0].rate-fraction`.
    #[error("{key} = {value}: {reason}")]
    Config {
        /// Path of the offending key inside the actuate config, kebab-case as in the file.
        key: String,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// The signing key can't be read (`[actuate.signing]`): the file or variable is named.
    #[error("[actuate.signing] {what}: {reason}")]
    Key {
        /// The file or environment variable.
        what: String,
        /// Why it can't be used.
        reason: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
