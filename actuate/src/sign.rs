//! Signed commands: HMAC-SHA256 (RFC 2104, with FIPS 180-4's SHA-256; the `hmac` and `sha2`
//! crates) over a command's canonical JSON (`RemediationCommand::canonical_json`, RFC 8785),
//! with a key id so that keys can rotate.
//!
//! graywatch signs with one key ([`Signer`]); an enforcement point verifies with every key it
//! holds ([`Keys`]), refusing a command whose key it doesn't know, whose MAC doesn't match
//! (forged, or altered on the way) or that carries none.
//!
//! The key is read from a file or an environment variable, never from the config text
//! (configs end up in repositories and tickets): at least 32 bytes (SHA-256's output size, as
//! RFC 2104 section 3 recommends), trailing white space (a newline) ignored, used as it is
//! (the 64 characters `openssl rand -hex 32` writes are a 64-byte key: verifiers must not
//! hex-decode it).
//!
//! ```
//! use actuate::sign::{Keys, Signer, Verify};
//! # let mut command: schemas::RemediationCommand = serde_json::from_str(
//! #   r#"{"schema_version":1,"kind":"remediation-command","id":"segmentation/sources/room2/1674982210000000","action":"issue","revision":0,"pattern":"segmentation","target":{"sources":["room1-client-0"],"destinations":["room2-relay-0"]},"parameters":{"status":403},"issued_at_us":1674982210000000,"ttl_us":300000000,"expires_at_us":1674982510000000,"reason":{"finding":"f","signature":"segmentation-violation","incident":"segmentation-violation/sources/room2","summary":"s"},"mode":"enforce"}"#).unwrap();
//! let key = b"0123456789abcdef0123456789abcdef".to_vec();
//! Signer::new("2026-12", key.clone()).unwrap().sign(&mut command);
//! let keys = Keys::from([("2026-12".to_owned(), key)]);
//! assert!(keys.verify(&command).is_ok());
//! command.target.sources.push("room1-client-1".into()); // altered on the way
//! assert!(keys.verify(&command).is_err());
//! ```

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use schemas::{CommandSignature, RemediationCommand};
use sha2::Sha256;

use crate::config::SigningConfig;
use crate::error::{Error, Result};

/// Shortest key accepted, bytes.
pub const MIN_KEY_BYTES: usize = 32;

fn too_short(len: usize) -> String {
    format!("{len} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")
}

/// A key's bytes as read from a file or a variable, trailing white space (a newline) removed.
fn trimmed(mut raw: Vec<u8>) -> Vec<u8> {
    while raw.last().is_some_and(u8::is_ascii_whitespace) {
        raw.pop();
    }
    raw
}

/// A key as graywatch's signer reads it from `raw` (a file's or a variable's bytes), for an
/// enforcement point that must read the same key the same way: trailing white space
/// removed, the rest used as it is.
///
/// # Errors
/// The reason, when it is shorter than [`MIN_KEY_BYTES`].
pub fn key_bytes(raw: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let key = trimmed(raw);
    if key.len() < MIN_KEY_BYTES {
        return Err(too_short(key.len()));
    }
    Ok(key)
}

/// Signs commands with one key.
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    /// The key id only: a key must not end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn mac(key: &[u8], bytes: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(bytes);
    mac
}

impl Signer {
    /// A signer with `key` named `key_id`.
    ///
    /// # Errors
    /// [`Error::Key`]: a key shorter than [`MIN_KEY_BYTES`], or an empty key id.
    pub fn new(key_id: &str, key: Vec<u8>) -> Result<Self> {
        if key_id.is_empty() {
            return Err(Error::Key {
                what: "key-id".into(),
                reason: "must name the key".into(),
            });
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::Key {
                what: format!("key {key_id:?}"),
                reason: too_short(key.len()),
            });
        }
        Ok(Signer {
            key_id: key_id.to_owned(),
            key,
        })
    }

    /// The signer `config` describes, reading its key; `None` when it names no key.
    ///
    /// # Errors
    /// [`Error::Key`] naming the file or variable that can't be read, a key given both ways,
    /// a key without a `key-id`, or a key too short.
    pub fn from_config(config: &SigningConfig) -> Result<Option<Self>> {
        let key = match (&config.key_file, &config.key_env) {
            (None, None) => {
                if config.key_id.is_some() {
                    return Err(Error::Key {
                        what: "key-id".into(),
                        reason: "set, but neither key-file nor key-env is".into(),
                    });
                }
                return Ok(None);
            }
            (Some(_), Some(_)) => {
                return Err(Error::Key {
                    what: "key-file and key-env".into(),
                    reason: "give the key one way only".into(),
                });
            }
            (Some(path), None) => std::fs::read(path).map_err(|e| Error::Key {
                what: format!("key-file {}", path.display()),
                reason: e.to_string(),
            })?,
            (None, Some(var)) => std::env::var_os(var)
                .ok_or_else(|| Error::Key {
                    what: format!("key-env {var}"),
                    reason: "the variable is not set".into(),
                })?
                .into_encoded_bytes(),
        };
        let key = trimmed(key);
        let Some(id) = &config.key_id else {
            return Err(Error::Key {
                what: "key-id".into(),
                reason: "missing: name the key (enforcement points look it up by name)".into(),
            });
        };
        Signer::new(id, key).map(Some)
    }

    /// The key's name.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Sets `command.signature` to the MAC of its canonical JSON.
    pub fn sign(&self, command: &mut RemediationCommand) {
        let tag = mac(&self.key, &command.canonical_json()).finalize();
        command.signature = Some(CommandSignature {
            key_id: self.key_id.clone(),
            hmac_sha256: hex::encode(tag.into_bytes()),
        });
    }
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// It carries no signature.
    #[error("command {0} is not signed")]
    Unsigned(String),
    /// Its key id is not one of the verifier's keys.
    #[error("command {id} is signed with an unknown key {key_id:?}")]
    UnknownKey {
        /// The command's id.
        id: String,
        /// The key id it names.
        key_id: String,
    },
    /// The MAC does not match: forged, or altered after signing.
    #[error("command {0}: signature does not match (forged or altered)")]
    Mismatch(String),
}

/// The keys an enforcement point verifies with, by key id.
pub type Keys = BTreeMap<String, Vec<u8>>;

/// Verifying commands with a set of [`Keys`].
pub trait Verify {
    /// Whether `command` is signed by one of these keys and unaltered (constant-time
    /// comparison of the MAC).
    ///
    /// # Errors
    /// [`VerifyError`] saying why not.
    fn verify(&self, command: &RemediationCommand) -> std::result::Result<(), VerifyError>;
}

impl Verify for Keys {
    fn verify(&self, command: &RemediationCommand) -> std::result::Result<(), VerifyError> {
        let Some(sig) = &command.signature else {
            return Err(VerifyError::Unsigned(command.id.clone()));
        };
        let Some(key) = self.get(&sig.key_id) else {
            return Err(VerifyError::UnknownKey {
                id: command.id.clone(),
                key_id: sig.key_id.clone(),
            });
        };
        let tag =
            hex::decode(&sig.hmac_sha256).map_err(|_| VerifyError::Mismatch(command.id.clone()))?;
        mac(key, &command.canonical_json())
            .verify_slice(&tag)
            .map_err(|_| VerifyError::Mismatch(command.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        // RFC 4231 section 4.3: key "Jefe", data "what do ya want for nothing?"
        let tag = mac(b"Jefe", b"what do ya want for nothing?").finalize();
        assert_eq!(
            hex::encode(tag.into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn keys_are_read_from_a_file_or_the_environment_and_checked() {
        let dir = std::env::temp_dir().join(format!("graywatch-sign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let config = SigningConfig {
            key_id: Some("k1".into()),
            key_file: Some(file.clone()),
            key_env: None,
        };
        let signer = Signer::from_config(&config).unwrap().unwrap();
        assert_eq!(signer.key.len(), 32, "the newline is not part of the key");
        assert_eq!(format!("{signer:?}"), "Signer { key_id: \"k1\", .. }");

        std::fs::write(&file, "short").unwrap();
        let e = Signer::from_config(&config).unwrap_err().to_string();
        assert!(e.contains("5 bytes; at least 32"), "{e}");
        let missing = SigningConfig {
            key_file: Some(dir.join("nope")),
            ..config.clone()
        };
        let e = Signer::from_config(&missing).unwrap_err().to_string();
        assert!(e.starts_with("[actuate.signing] key-file "), "{e}");
        let env = SigningConfig {
            key_id: Some("k1".into()),
            key_file: None,
            key_env: Some("GRAYWATCH_TEST_NO_SUCH_VARIABLE".into()),
        };
        let e = Signer::from_config(&env).unwrap_err().to_string();
        assert!(
            e.contains("GRAYWATCH_TEST_NO_SUCH_VARIABLE: the variable is not set"),
            "{e}"
        );
        assert!(
            Signer::from_config(&SigningConfig::default())
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
