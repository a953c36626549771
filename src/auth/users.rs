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

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
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
#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

/// The per-user gate: every password check of one user name that the cache
/// cannot answer goes through it, one at a time, and each waits until the
/// back-off of the failures so far has run out. So however many connections
/// guess at once, a user name gets one check per back-off step, as over one
/// connection.
type Gate = Arc<tokio::sync::Mutex<Failures>>;

/// Key under which failures for user names that do not exist are counted, so
/// guessing names cannot grow the map.
const UNKNOWN_USER: &str = "\0unknown";

pub struct Users {
    users: BTreeMap<String, Arc<User>>,
    key: [u8; 32],
    cache: DashMap<String, [u8; 32]>,
    failures: DashMap<String, Gate>,
    argon_slots: Semaphore,
    /// argon2 work areas, one per slot, reused: without them every check
    /// allocates ~19 MiB afresh and the allocator keeps freed blocks resident.
    work_areas: Arc<std::sync::Mutex<Vec<Vec<argon2::Block>>>>,
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
            argon_slots: Semaphore::new(ARGON_SLOTS),
            work_areas: Arc::new(std::sync::Mutex::new(Vec::new())),
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
    ///
    /// A credential the cache knows is answered at once. Every other check
    /// waits for the user name's [`Gate`]: checks of one name run one at a
    /// time, the next only once the back-off of the last failure has passed,
    /// so many connections guessing together get no more answers than one.
    pub async fn verify(&self, name: &str, password: &Secret) -> Result<Arc<User>, LoginError> {
        if let Some(user) = self.cached(name, password) {
            crate::metrics::METRICS.login(Some(&user.name), true);
            return Ok(user);
        }
        let key = if self.users.contains_key(name) {
            name
        } else {
            UNKNOWN_USER
        };
        let gate = self.failures.entry(key.to_owned()).or_default().clone();
        let mut failures = gate.lock().await;
        if let Some(ready) = failures.last.map(|t| t + self.delay_for(failures.count)) {
            tokio::time::sleep_until(ready.into()).await;
        }
        // Another waiter may have logged this credential in meanwhile.
        let result = match self.cached(name, password) {
            Some(user) => Ok(user),
            None => self.check(name, password).await,
        };
        match result {
            Ok(user) => {
                *failures = Failures::default();
                crate::metrics::METRICS.login(Some(&user.name), true);
                Ok(user)
            }
            Err(e) => {
                // A name not in the config is not a label: it is the client's.
                let known = self.users.get_key_value(name).map(|(k, _)| k.as_str());
                crate::metrics::METRICS.login(known, false);
                let delay = self.record_failure(&mut failures);
                drop(failures);
                tracing::info!(user = %crate::text::sanitize(name, 64), delay_ms = delay.as_millis() as u64, "local login failed");
                tokio::time::sleep(delay).await;
                Err(e)
            }
        }
    }

    /// The user, when the cache knows this credential (microseconds).
    fn cached(&self, name: &str, password: &Secret) -> Option<Arc<User>> {
        let user = self.users.get(name)?;
        let known = self.cache.get(name)?;
        constant_time_eq(&known, &self.mac(name, password)).then(|| user.clone())
    }

    async fn check(&self, name: &str, password: &Secret) -> Result<Arc<User>, LoginError> {
        let Some(user) = self.users.get(name) else {
            return Err(LoginError::Invalid);
        };
        let mac = self.mac(name, password);
        let _slot = self
            .argon_slots
            .acquire()
            .await
            .map_err(|_| LoginError::Internal)?;
        let hash = user.password_hash.clone();
        let pw = password.clone();
        let areas = self.work_areas.clone();
        let ok = tokio::task::spawn_blocking(move || {
            // At most ARGON_SLOTS areas exist: one per permit.
            let mut area = areas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            let r = verify_hash_in(&hash, &pw, &mut area);
            areas.lock().unwrap_or_else(|e| e.into_inner()).push(area);
            r
        })
        .await
        .map_err(|_| LoginError::Internal)??;
        if ok {
            self.cache.insert(name.to_owned(), mac);
            Ok(user.clone())
        } else {
            Err(LoginError::Invalid)
        }
    }

    /// Counts one more failure; returns the delay before it is answered.
    fn record_failure(&self, f: &mut Failures) -> Duration {
        let now = Instant::now();
        // Forget old failures: after a quiet spell as long as the longest
        // back-off, a user starts again from the base delay.
        if f.last.is_some_and(|last| {
            now.duration_since(last) > self.backoff_max.max(Duration::from_secs(60))
        }) {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = Some(now);
        self.delay_for(f.count)
    }

    /// The delay after the `count`th failure in a row.
    fn delay_for(&self, count: u32) -> Duration {
        let factor = 1u32 << count.saturating_sub(1).min(16);
        self.failure_delay
            .saturating_mul(factor)
            .min(self.backoff_max.max(self.failure_delay))
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Concurrent argon2 checks (each holds one work area of ~19 MiB).
const ARGON_SLOTS: usize = 2;

#[cfg(test)]
fn verify_hash(hash: &str, password: &Secret) -> Result<bool, LoginError> {
    verify_hash_in(hash, password, &mut Vec::new())
}

/// Verify a PHC argon2 hash using `area` as the work memory (grown once to
/// the hash's memory cost and then reused).
fn verify_hash_in(
    hash: &str,
    password: &Secret,
    area: &mut Vec<argon2::Block>,
) -> Result<bool, LoginError> {
    let parsed = PasswordHash::new(hash).map_err(|_| LoginError::Internal)?;
    let algorithm =
        argon2::Algorithm::try_from(parsed.algorithm).map_err(|_| LoginError::Internal)?;
    let version = parsed
        .version
        .map(argon2::Version::try_from)
        .transpose()
        .map_err(|_| LoginError::Internal)?
        .unwrap_or_default();
    let params = argon2::Params::try_from(&parsed).map_err(|_| LoginError::Internal)?;
    let expected = parsed.hash.ok_or(LoginError::Internal)?;
    let mut salt_buf = [0u8; 64];
    let salt = parsed
        .salt
        .ok_or(LoginError::Internal)?
        .decode_b64(&mut salt_buf)
        .map_err(|_| LoginError::Internal)?;
    let blocks = params.block_count();
    if area.len() < blocks {
        area.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            salt,
            &mut out,
            &mut area[..blocks],
        )
        .map_err(|_| LoginError::Internal)?;
    let e = expected.as_bytes();
    Ok(out.len() == e.len() && out.iter().zip(e).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0)
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
                delivery: None,
                bounce: None,
                allowed_senders: Vec::new(),
                allowed_recipients: Vec::new(),
                inbox: "app".into(),
                sandbox: None,
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
        let mut app = Failures::default();
        let d: Vec<u128> = (0..5)
            .map(|_| u.record_failure(&mut app).as_millis())
            .collect();
        assert_eq!(d, vec![100, 200, 400, 500, 500]);
        // Another user is not affected.
        assert_eq!(u.record_failure(&mut Failures::default()).as_millis(), 100);
    }

    #[test]
    fn hashes_verify() {
        let h = hash_password(&Secret::new("pw"));
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify_hash(&h, &Secret::new("pw")), Ok(true));
        assert_eq!(verify_hash(&h, &Secret::new("px")), Ok(false));
    }
}
