//! Local users: argon2id verification, a keyed cache of verified credentials,
//! and per-user failure back-off.
//!
//! argon2 costs tens of milliseconds and ~19 MiB per verification by design,
//! so it runs on a blocking thread behind a small semaphore: a flood of bad
//! logins queues up instead of stalling the runtime or eating memory. A
//! verified credential is remembered as HMAC-SHA256(process key, password) so a
//! program that logs in for every message costs microseconds after the first
//! time (the idea of Dovecot's auth cache). The cache lives as long as this
//! `Users` value, which is rebuilt whenever the configuration is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::config::{Limits, User};
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Why a login failed. Deliberately coarse: the client learns nothing about
/// whether the user exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("invalid user name or password")]
    Invalid,
    #[error("password check failed internally")]
    Internal,
}

/// Failure bookkeeping for one user name.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Key under which failures for user names that do not exist are counted, so
/// guessing names cannot grow the map.
const UNKNOWN_USER: &str = "\0unknown";

pub struct Users {
    users: BTreeMap<String, Arc<User>>,
    key: [u8; 32],
    cache: DashMap<String, [u8; 32]>,
    failures: DashMap<String, Failures>,
    argon_slots: Semaphore,
    failure_delay: Duration,
    backoff_max: Duration,
}

impl Users {
    pub fn new(users: &BTreeMap<String, User>, limits: &Limits) -> Users {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Users {
            users: users
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect(),
            key,
            cache: DashMap::new(),
            failures: DashMap::new(),
            // Two at a time: enough to keep logins moving on 2 cores, and the
            // memory bound is 2 × ~19 MiB whatever the load.
            argon_slots: Semaphore::new(2),
            failure_delay: limits.auth_failure_delay,
            backoff_max: limits.auth_backoff_max,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    fn mac(&self, user: &str, password: &Secret) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(user.as_bytes());
        m.update(&[0]);
        m.update(password.expose().as_bytes());
        m.finalize().into_bytes().into()
    }

    /// Check a local login. A failure returns only after the failure delay,
    /// which doubles with each further failure for the same user name (up to
    /// `auth_backoff_max`) and resets after a success.
    pub async fn verify(&self, name: &str, password: &Secret) -> Result<Arc<User>, LoginError> {
        let result = self.check(name, password).await;
        let key = if self.users.contains_key(name) {
            name
        } else {
            UNKNOWN_USER
        };
        match result {
            Ok(user) => {
                self.failures.remove(key);
                Ok(user)
            }
            Err(e) => {
                let delay = self.record_failure(key);
                tracing::info!(user = %crate::smtp::codec::sanitize(name, 64), delay_ms = delay.as_millis() as u64, "local login failed");
                tokio::time::sleep(delay).await;
                Err(e)
            }
        }
    }

    async fn check(&self, name: &str, password: &Secret) -> Result<Arc<User>, LoginError> {
        let Some(user) = self.users.get(name) else {
            return Err(LoginError::Invalid);
        };
        let mac = self.mac(name, password);
        if let Some(known) = self.cache.get(name) {
            if constant_time_eq(&known, &mac) {
                return Ok(user.clone());
            }
        }
        let _slot = self
            .argon_slots
            .acquire()
            .await
            .map_err(|_| LoginError::Internal)?;
        let hash = user.password_hash.clone();
        let pw = password.clone();
        let ok = tokio::task::spawn_blocking(move || verify_hash(&hash, &pw))
            .await
            .map_err(|_| LoginError::Internal)??;
        if ok {
            self.cache.insert(name.to_owned(), mac);
            Ok(user.clone())
        } else {
            Err(LoginError::Invalid)
        }
    }

    fn record_failure(&self, key: &str) -> Duration {
        let now = Instant::now();
        let mut entry = self.failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            last: now,
        });
        // Forget old failures: after a quiet spell as long as the longest
        // back-off, a user starts again from the base delay.
        if now.duration_since(entry.last) > self.backoff_max.max(Duration::from_secs(60)) {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let factor = 1u32 << (entry.count - 1).min(16);
        self.failure_delay
            .saturating_mul(factor)
            .min(self.backoff_max.max(self.failure_delay))
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn verify_hash(hash: &str, password: &Secret) -> Result<bool, LoginError> {
    let parsed = PasswordHash::new(hash).map_err(|_| LoginError::Internal)?;
    Ok(Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok())
}

/// An argon2id PHC string for `password` (what `postern hash-password` prints).
pub fn hash_password(password: &Secret) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(limits: &Limits) -> Users {
        let mut m = BTreeMap::new();
        m.insert(
            "app".to_owned(),
            User {
                name: "app".into(),
                password_hash: hash_password(&Secret::new("right")),
                send_via: None,
                read_via: None,
            },
        );
        Users::new(&m, limits)
    }

    #[tokio::test]
    async fn verify_and_cache() {
        let limits = Limits {
            auth_failure_delay: Duration::from_millis(1),
            auth_backoff_max: Duration::from_millis(8),
            ..Limits::default()
        };
        let u = users(&limits);
        assert!(u.verify("app", &Secret::new("right")).await.is_ok());
        assert!(u.cache.contains_key("app"));
        // Second time: from the cache (fast path), same answer.
        assert!(u.verify("app", &Secret::new("right")).await.is_ok());
        assert_eq!(
            u.verify("app", &Secret::new("wrong")).await.unwrap_err(),
            LoginError::Invalid
        );
        assert_eq!(
            u.verify("nobody", &Secret::new("right")).await.unwrap_err(),
            LoginError::Invalid
        );
        assert!(u.failures.len() <= 2);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let limits = Limits {
            auth_failure_delay: Duration::from_millis(100),
            auth_backoff_max: Duration::from_millis(500),
            ..Limits::default()
        };
        let u = users(&limits);
        let d: Vec<u128> = (0..5)
            .map(|_| u.record_failure("app").as_millis())
            .collect();
        assert_eq!(d, vec![100, 200, 400, 500, 500]);
        // Another user is not affected.
        assert_eq!(u.record_failure("other").as_millis(), 100);
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password(&Secret::new("pw"));
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify_hash(&h, &Secret::new("pw")), Ok(true));
        assert_eq!(verify_hash(&h, &Secret::new("px")), Ok(false));
    }
}
