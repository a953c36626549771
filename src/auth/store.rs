//! The encrypted OAuth token store and the plain per-account state that
//! `postern status` reads. Owns everything under `data_dir/oauth/`:
//!
//! - `<account>.token`: the account's refresh token, last access token and
//!   its expiry, sealed with ChaCha20-Poly1305 (RFC 8439). Layout:
//!   `"PSTNTOK1"` (8 bytes) ‖ nonce (12 bytes, random per write) ‖
//!   ciphertext+tag; the associated data is the magic plus the account name,
//!   so a file copied onto another account's name does not open.
//! - `<account>.state.json`: no secrets, only facts (valid until, needs
//!   consent, last refresh error) for `postern status`.
//! - `key`: the 256-bit key as 64 hex characters, made on first use (mode
//!   0600) unless `POSTERN_KEY` (64 hex characters) or `POSTERN_KEY_FILE`
//!   (a file holding them) names one.
//!
//! Every file is written atomically (temporary file with mode 0600, fsync,
//! rename, fsync of the folder). A token file is one account's, so `postern
//! auth` and a running `postern run` never overwrite each other's accounts.
//! Nothing here logs or formats a token; knows nothing of HTTP or OAuth.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Environment variable holding the store key: 64 hex characters.
pub const KEY_ENV: &str = "POSTERN_KEY";
/// Environment variable naming a file that holds the key (64 hex characters).
pub const KEY_FILE_ENV: &str = "POSTERN_KEY_FILE";
const MAGIC: &[u8; 8] = b"PSTNTOK1";
const NONCE_LEN: usize = 12;
/// Token files are small; anything bigger is not ours.
const MAX_FILE: u64 = 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{KEY_ENV} must be 64 hexadecimal characters (a 256-bit key), e.g. from `openssl rand -hex 32`")]
    BadKeyEnv,
    #[error("key file {path} must hold 64 hexadecimal characters (a 256-bit key), e.g. from `openssl rand -hex 32`")]
    BadKeyFile { path: PathBuf },
    #[error("the token store key {path} is missing but {dir} holds encrypted tokens: restore the key file (or set {KEY_ENV}), or delete the .token files and run `postern auth` again")]
    KeyMissing { path: PathBuf, dir: PathBuf },
    #[error("cannot decrypt {path} with the key from {key_source}: wrong key or damaged file; restore the right key, or run `postern auth {account}` again")]
    Decrypt {
        path: PathBuf,
        key_source: String,
        account: String,
    },
    #[error("{path} is not a Postern token file")]
    Format { path: PathBuf },
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    to_unix(SystemTime::now())
}

pub fn to_unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(s)
}

/// What the store keeps for one account (encrypted at rest).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredToken {
    /// The OAuth client the tokens were issued to: a refresh token only
    /// works with the client (and token endpoint) that obtained it.
    pub client_id: String,
    pub token_url: String,
    /// `authorization_code`, `device` or `client_credentials`.
    pub grant: String,
    #[serde(default, with = "opt_secret")]
    pub refresh_token: Option<Secret>,
    #[serde(default, with = "opt_secret")]
    pub access_token: Option<Secret>,
    /// When the access token expires (Unix seconds).
    pub expires_at: Option<u64>,
    /// When the access token was issued (Unix seconds).
    pub issued_at: Option<u64>,
    /// When consent was given (Unix seconds).
    pub consented_at: u64,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url)
            .field("grant", &self.grant)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

mod opt_secret {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_some(x.expose()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Secret::new))
    }
}

/// Where the key came from, for error messages (never the key itself).
#[derive(Clone)]
struct StoreKey {
    bytes: [u8; 32],
    source: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey(<redacted>, from {})", self.source)
    }
}

fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 || !t.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The folder of the store inside `data_dir`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("oauth")
}

/// The encrypted token file of an account.
pub fn token_path(data_dir: &Path, account: &str) -> PathBuf {
    store_dir(data_dir).join(format!("{account}.token"))
}

/// The plain state file of an account.
pub fn state_path(data_dir: &Path, account: &str) -> PathBuf {
    store_dir(data_dir).join(format!("{account}.state.json"))
}

fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, e))
}

/// Write `bytes` to `path` atomically with mode 0600: a temporary file in
/// the same folder, fsync, rename over the target, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::rng().next_u32()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is durable once the folder is synced.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

fn read_capped(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(StoreError::Format {
            path: path.to_owned(),
        });
    }
    Ok(Some(buf))
}

/// The token store of one data_dir, with its key loaded.
pub struct TokenStore {
    data_dir: PathBuf,
    dir: PathBuf,
    key: StoreKey,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("dir", &self.dir)
            .field("key", &self.key)
            .finish()
    }
}

impl TokenStore {
    /// Open the store in `data_dir`, with the key from `POSTERN_KEY`,
    /// `POSTERN_KEY_FILE`, the config's `key_file`, or `data_dir/oauth/key`
    /// (made on first use), in that order.
    pub fn open(data_dir: &Path, config_key_file: Option<&Path>) -> Result<TokenStore, StoreError> {
        let env = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty());
        let file = std::env::var_os(KEY_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| config_key_file.map(Path::to_path_buf));
        Self::open_with(data_dir, env.as_deref(), file.as_deref())
    }

    /// Open with an explicit key (hex) or key file; neither: the default key file.
    pub fn open_with(
        data_dir: &Path,
        key_hex: Option<&str>,
        key_file: Option<&Path>,
    ) -> Result<TokenStore, StoreError> {
        let dir = store_dir(data_dir);
        let key = match (key_hex, key_file) {
            (Some(h), _) => StoreKey {
                bytes: parse_hex_key(h).ok_or(StoreError::BadKeyEnv)?,
                source: KEY_ENV.to_owned(),
            },
            (None, Some(path)) => {
                let text = read_capped(path)?.ok_or_else(|| StoreError::Io {
                    path: path.to_owned(),
                    reason: format!(
                        "key file (named by {KEY_FILE_ENV} or key_file) does not exist"
                    ),
                })?;
                StoreKey {
                    bytes: parse_hex_key(&String::from_utf8_lossy(&text)).ok_or_else(|| {
                        StoreError::BadKeyFile {
                            path: path.to_owned(),
                        }
                    })?,
                    source: format!("key file {}", path.display()),
                }
            }
            (None, None) => Self::default_key(&dir)?,
        };
        ensure_dir(&dir)?;
        Ok(TokenStore {
            data_dir: data_dir.to_owned(),
            dir,
            key,
        })
    }

    fn default_key(dir: &Path) -> Result<StoreKey, StoreError> {
        let path = dir.join("key");
        let source = format!("key file {}", path.display());
        if let Some(text) = read_capped(&path)? {
            warn_if_open(&path);
            let bytes = parse_hex_key(&String::from_utf8_lossy(&text))
                .ok_or_else(|| StoreError::BadKeyFile { path: path.clone() })?;
            return Ok(StoreKey { bytes, source });
        }
        // No key: refuse to make a new one over tokens sealed with the old one.
        if let Ok(rd) = fs::read_dir(dir) {
            let sealed = rd
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".token"));
            if sealed {
                return Err(StoreError::KeyMissing {
                    path,
                    dir: dir.to_owned(),
                });
            }
        }
        ensure_dir(dir)?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        // Write a temporary file, then hard-link it into place: linking fails
        // if another process made the key first, and then we use theirs.
        let tmp = dir.join(format!(".key.tmp-{}", std::process::id()));
        let made = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{}\n", hex(&bytes)).as_bytes())?;
            f.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        match made {
            Ok(()) => {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
                tracing::info!(path = %path.display(), "made a new token store key");
                Ok(StoreKey { bytes, source })
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::default_key(dir),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn token_path(&self, account: &str) -> PathBuf {
        token_path(&self.data_dir, account)
    }

    /// Where the key came from (for messages).
    pub fn key_source(&self) -> &str {
        &self.key.source
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.key.bytes))
    }

    fn aad(account: &str) -> Vec<u8> {
        let mut aad = MAGIC.to_vec();
        aad.extend_from_slice(account.as_bytes());
        aad
    }

    /// Seal a token record for `account`.
    pub fn seal(&self, account: &str, t: &StoredToken) -> Vec<u8> {
        let plain = serde_json::to_vec(t).expect("token record serialises");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &Self::aad(account),
                },
            )
            .expect("ChaCha20-Poly1305 encryption cannot fail for small inputs");
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open a sealed token record of `account` read from `path`.
    pub fn unseal(
        &self,
        account: &str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<StoredToken, StoreError> {
        if bytes.len() < MAGIC.len() + NONCE_LEN + 16 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StoreError::Format {
                path: path.to_owned(),
            });
        }
        let (nonce, sealed) = bytes[MAGIC.len()..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let plain = self
            .cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &Self::aad(account),
                },
            )
            .map_err(|_| StoreError::Decrypt {
                path: path.to_owned(),
                key_source: self.key.source.clone(),
                account: account.to_owned(),
            })?;
        serde_json::from_slice(&plain).map_err(|_| StoreError::Format {
            path: path.to_owned(),
        })
    }

    /// The account's record, if consent was ever given.
    pub fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        let path = self.token_path(account);
        match read_capped(&path)? {
            None => Ok(None),
            Some(bytes) => self.unseal(account, &path, &bytes).map(Some),
        }
    }

    /// Replace the account's record (atomically, mode 0600).
    pub fn save(&self, account: &str, t: &StoredToken) -> Result<(), StoreError> {
        write_atomic(&self.token_path(account), &self.seal(account, t))
    }
}

fn warn_if_open(path: &Path) {
    if let Ok(m) = fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the token store key is readable by other users; chmod 600 it");
        }
    }
}

/// Facts about an account's tokens for `postern status` (no secrets).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountState {
    /// When this was written (Unix seconds) and by which process.
    pub updated_at: u64,
    pub pid: u32,
    /// When the current access token expires (Unix seconds).
    pub valid_until: Option<u64>,
    /// The provider refused the saved authorization (or there is none).
    pub needs_consent: bool,
    pub consented_at: Option<u64>,
    pub last_refresh: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Token requests made by the process that wrote this.
    pub refreshes: u64,
}

/// Read an account's state file (None when missing or unreadable).
pub fn read_state(data_dir: &Path, account: &str) -> Option<AccountState> {
    let bytes = read_capped(&state_path(data_dir, account)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Write an account's state file atomically.
pub fn write_state(data_dir: &Path, account: &str, s: &AccountState) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(s).expect("state serialises");
    bytes.push(b'\n');
    write_atomic(&state_path(data_dir, account), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StoredToken {
        StoredToken {
            client_id: "cid".into(),
            token_url: "https://example.test/token".into(),
            grant: "authorization_code".into(),
            refresh_token: Some(Secret::new("refresh-SECRET-1")),
            access_token: Some(Secret::new("access-SECRET-2")),
            expires_at: Some(2_000_000_000),
            issued_at: Some(1_999_996_400),
            consented_at: 1_999_990_000,
            scopes: vec!["mail".into()],
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trip_sealed_and_private() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::open_with(d.path(), None, None).unwrap();
        assert_eq!(s.load("alice").unwrap(), None);
        s.save("alice", &record()).unwrap();
        let path = token_path(d.path(), "alice");
        let raw = fs::read(&path).unwrap();
        assert!(raw.starts_with(MAGIC));
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("SECRET") && !text.contains("cid") && !text.contains("mail"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&d.path().join("oauth/key")), 0o600);
        assert_eq!(mode(&d.path().join("oauth")), 0o700);
        assert_eq!(s.load("alice").unwrap(), Some(record()));
        // A second write uses a new nonce.
        s.save("alice", &record()).unwrap();
        assert_ne!(fs::read(&path).unwrap(), raw);
        // No temporary files left behind.
        let names: Vec<String> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        // Reopening finds the same key.
        let again = TokenStore::open_with(d.path(), None, None).unwrap();
        assert_eq!(again.load("alice").unwrap(), Some(record()));
        // Debug never shows a token.
        assert!(!format!("{:?} {:?}", record(), again).contains("SECRET"));
    }

    #[test]
    fn wrong_key_swapped_file_and_missing_key_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let k1 = "11".repeat(32);
        let k2 = "22".repeat(32);
        let s = TokenStore::open_with(d.path(), Some(&k1), None).unwrap();
        assert!(
            !d.path().join("oauth/key").exists(),
            "no key file with POSTERN_KEY"
        );
        s.save("alice", &record()).unwrap();
        let wrong = TokenStore::open_with(d.path(), Some(&k2), None).unwrap();
        let e = wrong.load("alice").unwrap_err();
        assert!(matches!(e, StoreError::Decrypt { .. }), "{e}");
        assert!(e.to_string().contains("POSTERN_KEY") && !e.to_string().contains(&k1));
        // A file moved onto another account's name does not open.
        fs::copy(token_path(d.path(), "alice"), token_path(d.path(), "bob")).unwrap();
        assert!(matches!(s.load("bob"), Err(StoreError::Decrypt { .. })));
        // Tokens exist but the default key file does not: refuse to make a new key.
        let e = TokenStore::open_with(d.path(), None, None).unwrap_err();
        assert!(matches!(e, StoreError::KeyMissing { .. }), "{e}");
        assert!(matches!(
            TokenStore::open_with(d.path(), Some("abc"), None),
            Err(StoreError::BadKeyEnv)
        ));
        // A key file holds the same hex form.
        let kf = d.path().join("k");
        fs::write(&kf, format!("{k1}\n")).unwrap();
        let via_file = TokenStore::open_with(d.path(), None, Some(&kf)).unwrap();
        assert_eq!(via_file.load("alice").unwrap(), Some(record()));
        fs::write(&kf, "nope").unwrap();
        assert!(matches!(
            TokenStore::open_with(d.path(), None, Some(&kf)),
            Err(StoreError::BadKeyFile { .. })
        ));
        // Garbage is a format error, not a panic.
        fs::write(token_path(d.path(), "carol"), b"hello").unwrap();
        assert!(matches!(s.load("carol"), Err(StoreError::Format { .. })));
    }

    #[test]
    fn state_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_state(d.path(), "a"), None);
        let st = AccountState {
            updated_at: 5,
            needs_consent: true,
            last_error: Some("invalid_grant".into()),
            ..Default::default()
        };
        write_state(d.path(), "a", &st).unwrap();
        assert_eq!(read_state(d.path(), "a"), Some(st));
        assert_eq!(mode(&state_path(d.path(), "a")), 0o600);
    }
}

#[cfg(test)]
mod key_file_tests {
    use super::*;

    /// The config's `key_file` is used when no environment variable names a key.
    #[test]
    fn config_key_file_is_used() {
        if std::env::var_os(KEY_ENV).is_some() || std::env::var_os(KEY_FILE_ENV).is_some() {
            return; // the environment overrides the config by design
        }
        let d = tempfile::tempdir().unwrap();
        let kf = d.path().join("k");
        fs::write(&kf, "ab".repeat(32)).unwrap();
        let s = TokenStore::open(d.path(), Some(&kf)).unwrap();
        assert!(format!("{s:?}").contains(&kf.display().to_string()));
        assert!(!d.path().join("oauth/key").exists(), "no default key made");
        let missing = d.path().join("nope");
        assert!(TokenStore::open(d.path(), Some(&missing)).is_err());
    }
}
