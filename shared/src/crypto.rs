//! API-key material (generation, prefix, SHA-256 hash, constant-time check) and the
//! AES-256-GCM envelope upstream Jet Admin uses for `datasourceOptions`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of the stored lookup prefix of an API key.
pub const API_KEY_PREFIX_LEN: usize = 8;

/// A raw API key: 32 random bytes as 64 lowercase hex chars. Shown to its owner once.
#[derive(Clone)]
pub struct RawApiKey(String);

impl std::fmt::Debug for RawApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawApiKey({}…)", self.prefix())
    }
}

impl RawApiKey {
    /// Draws a new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        Self(hex::encode(bytes))
    }

    /// Accepts exactly 64 hex characters (either case; stored and hashed lowercase).
    pub fn parse(candidate: &str) -> Option<Self> {
        let ok = candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Self(candidate.to_ascii_lowercase()))
    }

    /// The full key, for showing once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first 8 characters, stored in clear for lookup.
    pub fn prefix(&self) -> &str {
        &self.0[..API_KEY_PREFIX_LEN]
    }

    /// Lowercase hex SHA-256 of the key, as upstream stores it in `apiKeyHash`.
    pub fn hash_hex(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// Whether this key hashes to `stored_hash`, compared in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        let ours = self.hash_hex();
        ours.as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The 32-byte key of the datasource vault (`VAULT_ENCRYPTION_KEY`).
#[derive(Clone)]
pub struct VaultKey([u8; 32]);

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey(<redacted>)")
    }
}

/// Why an envelope could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A field is missing or not hex of the right length.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// Authentication failed: wrong key or tampered ciphertext.
    #[error("envelope failed authentication (wrong key or tampered data)")]
    Tampered,
    /// The decrypted bytes are not JSON.
    #[error("decrypted data is not JSON")]
    NotJson,
}

impl VaultKey {
    /// Parses 64 hex characters; the message says what is wrong otherwise.
    pub fn from_hex(hex_key: &str) -> Result<Self, String> {
        let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("not hex: {e}"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("must be 32 bytes (64 hex chars), got {}", b.len()))?;
        Ok(Self(key))
    }

    /// Draws a fresh key (for `jet dev`).
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        Self(key)
    }

    /// The key as 64 hex chars, to persist it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0))
    }

    /// Encrypts `JSON.stringify(value)` into `{__encrypted, iv, data, authTag}` (hex), the
    /// envelope upstream writes: 12-byte IV, ciphertext, 16-byte tag kept apart.
    pub fn seal(&self, value: &Value) -> Value {
        let mut iv = [0u8; 12];
        getrandom::fill(&mut iv).expect("the OS random source is available");
        self.seal_with_iv(value, iv)
    }

    fn seal_with_iv(&self, value: &Value, iv: [u8; 12]) -> Value {
        let plaintext = value.to_string();
        let mut sealed = self
            .cipher()
            .encrypt(&Nonce::from(iv), plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let tag = sealed.split_off(sealed.len() - 16);
        json!({
            "__encrypted": true,
            "iv": hex::encode(iv),
            "data": hex::encode(sealed),
            "authTag": hex::encode(tag),
        })
    }

    /// Opens an envelope. A value without `__encrypted: true` is plaintext from an older row
    /// and is returned as it is.
    pub fn open(&self, stored: &Value) -> Result<Value, EnvelopeError> {
        if stored.get("__encrypted") != Some(&Value::Bool(true)) {
            return Ok(stored.clone());
        }
        let field = |name: &'static str| {
            stored
                .get(name)
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .ok_or(EnvelopeError::Malformed(name))
        };
        let iv = field("iv")?;
        let mut data = field("data")?;
        let tag = field("authTag")?;
        let iv: [u8; 12] = iv.try_into().map_err(|_| EnvelopeError::Malformed("iv"))?;
        if tag.len() != 16 {
            return Err(EnvelopeError::Malformed("authTag"));
        }
        data.extend_from_slice(&tag);
        let plain = self
            .cipher()
            .decrypt(&Nonce::from(iv), data.as_slice())
            .map_err(|_| EnvelopeError::Tampered)?;
        serde_json::from_slice(&plain).map_err(|_| EnvelopeError::NotJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_64_lowercase_hex_and_match_their_hash() {
        let key = RawApiKey::generate();
        assert_eq!(key.expose().len(), 64);
        assert!(
            key.expose()
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_eq!(key.prefix(), &key.expose()[..8]);
        assert!(key.matches(&key.hash_hex()));
        assert!(!RawApiKey::generate().matches(&key.hash_hex()));
    }

    #[test]
    fn key_hash_is_sha256_of_the_hex_text() {
        // sha256("abc"), a published test vector, checks we hash the text as upstream does.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_rejects_wrong_length_and_non_hex() {
        assert!(RawApiKey::parse(&"a".repeat(63)).is_none());
        assert!(RawApiKey::parse(&"g".repeat(64)).is_none());
        let upper = "AB".repeat(32);
        assert_eq!(
            RawApiKey::parse(&upper).map(|k| k.expose().to_owned()),
            Some("ab".repeat(32))
        );
    }

    #[test]
    fn envelope_round_trips_and_detects_tampering() {
        let key = VaultKey::generate();
        let value = json!({"host": "db", "password": "s3cret", "port": 5432});
        let sealed = key.seal(&value);
        assert_eq!(sealed["__encrypted"], true);
        assert_eq!(sealed["iv"].as_str().map(str::len), Some(24));
        assert_eq!(sealed["authTag"].as_str().map(str::len), Some(32));
        assert_eq!(key.open(&sealed), Ok(value));

        let mut tampered = sealed.clone();
        let data = tampered["data"].as_str().expect("hex").to_owned();
        let flipped = format!(
            "{}{}",
            if data.starts_with('0') { "1" } else { "0" },
            &data[1..]
        );
        tampered["data"] = json!(flipped);
        assert_eq!(key.open(&tampered), Err(EnvelopeError::Tampered));
        assert_eq!(
            VaultKey::generate().open(&sealed),
            Err(EnvelopeError::Tampered)
        );
    }

    /// Computed by Python's `cryptography` (tests/fixtures/vault_vector.py), not by this code:
    /// an envelope upstream writes opens here, and ours is byte-identical to theirs.
    #[test]
    fn envelopes_match_an_independent_implementation() {
        let key =
            VaultKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
                .expect("key");
        let theirs = json!({
            "__encrypted": true,
            "iv": "cafebabefacedbaddecaf888",
            "data": "f181c849d90e6d21646f3ff31273fd5a7f4ea13dfd3548042fac7706d1fb01dd9772b275a2a67a160b98944a1ea1500a2b208b6b96bebbe25e",
            "authTag": "d5e1ffe77254a0e971841e2f1865cb0d",
        });
        let options = json!({"host": "db.internal", "password": "s3cr3t-ü", "port": 5432});
        assert_eq!(key.open(&theirs), Ok(options.clone()));
        let iv: [u8; 12] = hex::decode("cafebabefacedbaddecaf888")
            .expect("hex")
            .try_into()
            .expect("12 bytes");
        assert_eq!(key.seal_with_iv(&options, iv), theirs);
    }

    #[test]
    fn plaintext_rows_are_read_as_they_are() {
        let key = VaultKey::generate();
        let plain = json!({"host": "db"});
        assert_eq!(key.open(&plain), Ok(plain));
    }

    #[test]
    fn vault_key_must_be_32_bytes_of_hex() {
        assert!(VaultKey::from_hex(&"0".repeat(64)).is_ok());
        assert!(VaultKey::from_hex(&"0".repeat(62)).is_err());
        assert!(VaultKey::from_hex(&"z".repeat(64)).is_err());
    }
}
