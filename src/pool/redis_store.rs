//! The shared store: a redis-server that several Postern processes use.
//!
//! Per mailbox three keys, with the account name as a hash tag so they share
//! a cluster slot (`postern:{alice}:units`, `:inflight`, `:state`):
//! - `units`: ZSET of unit ids scored by time (ms): every unit that counts,
//!   reserved or sent;
//! - `inflight`: ZSET of the ids reserved and not yet committed;
//! - `state`: HASH with first_send, ceiling, ceiling_until, last_pick,
//!   pace_until, parked_until, parked_since, park_kind, park_reason,
//!   throttles, last_error, last_error_at.
//!
//! Reserve, pick claims and throttle parking are Lua scripts, so the check
//! and the write are one atomic step however many processes share the
//! server. Times come from the caller's clock (the processes sharing a pool
//! run on one machine or on NTP-synced ones), not from Redis `TIME`, so tests
//! can inject a clock; for the same reason parking, pacing and ceilings are
//! "until" fields compared with `now` rather than keys with a Redis TTL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::quota::Quota;
use super::record::{
    throttle_backoff, Claim, LastError, Loaded, ParkKind, Parked, Record, Reservation, Reserved,
    StoreError,
};
use super::window::{ms_to_ts, Ceiling, DAY_MS, FOREVER, KEEP_MS};

/// Units and in-flight sets expire (real time) this long after their last
/// reserve, so mailboxes that stop sending leave nothing behind.
const UNITS_TTL_MS: i64 = 3 * DAY_MS;

/// The effective limit inside a script; mirrors `window::effective_limit`.
const LIMIT_LUA: &str = r"
local function effective_limit(state, now, daily, rstart, rstep)
  local lim = daily
  if rstart >= 0 then
    local days = 0
    local first = redis.call('HGET', state, 'first_send')
    if first then
      days = math.floor((now - tonumber(first)) / 86400000)
      if days < 0 then days = 0 end
    end
    local r = rstart + rstep * days
    if r < lim then lim = r end
  end
  local c = redis.call('HMGET', state, 'ceiling', 'ceiling_until')
  if c[1] and c[2] and tonumber(c[2]) > now and tonumber(c[1]) < lim then
    lim = tonumber(c[1])
  end
  return lim
end
";

/// Scripts that count start with this: KEYS[1] is the epoch key, ARGV[1]
/// the epoch this process trusts; {-1} when the key holds anything else.
const EPOCH_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
";

/// KEYS: epoch, units, inflight, state.
/// ARGV: epoch, now, cutoff (count scores > cutoff), prune (drop scores <
/// prune), daily, ramp start (-1: none), ramp step, n, ttl ms, then n unit ids.
/// Returns {1, counted after}, {0, counted, limit} or {-1} (epoch).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LIMIT_LUA}{EPOCH_LUA}
local units, inflight, state = KEYS[2], KEYS[3], KEYS[4]
table.remove(ARGV, 1)
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', units, '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', inflight, '-inf', '(' .. ARGV[3])
local counted = redis.call('ZCOUNT', units, '(' .. ARGV[2], '+inf')
local lim = effective_limit(state, now, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
local n = tonumber(ARGV[7])
if counted + n > lim then
  return {{0, counted, lim}}
end
for i = 1, n do
  redis.call('ZADD', units, ARGV[1], ARGV[8 + i])
  redis.call('ZADD', inflight, ARGV[1], ARGV[8 + i])
end
redis.call('PEXPIRE', units, ARGV[8])
redis.call('PEXPIRE', inflight, ARGV[8])
return {{1, counted + n}}
"
    ))
});

/// KEYS: epoch, state. ARGV: epoch, now, pace_until ('' for a mailbox
/// without pacing: then pacing is neither checked nor claimed).
/// Returns {0} claimed, {1, parked_until}, {2, pace_until} or {-1} (epoch).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{EPOCH_LUA}
local state = KEYS[2]
local now = tonumber(ARGV[2])
local f = redis.call('HMGET', state, 'parked_until', 'pace_until')
if f[1] and tonumber(f[1]) > now then return {{1, tonumber(f[1])}} end
if ARGV[3] == '' then
  redis.call('HSET', state, 'last_pick', ARGV[2])
  redis.call('HDEL', state, 'pace_until')
  return {{0}}
end
if f[2] and tonumber(f[2]) > now then return {{2, tonumber(f[2])}} end
redis.call('HSET', state, 'last_pick', ARGV[2], 'pace_until', ARGV[3])
return {{0}}
"
    ))
});

/// KEYS: state. ARGV: now, reason, then the ladder in ms (1st, 2nd, …, last
/// repeats). Returns {throttles, parked_until}, or {0, parked_until,
/// parked_since} when the mailbox was parked already (a reply seen while
/// parked does not climb the ladder).
static THROTTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('HMGET', KEYS[1], 'parked_until', 'parked_since')
if p[1] and tonumber(p[1]) > tonumber(ARGV[1]) then
  return {0, tonumber(p[1]), tonumber(p[2] or p[1])}
end
local n = redis.call('HINCRBY', KEYS[1], 'throttles', 1)
local steps = #ARGV - 2
local i = n
if i > steps then i = steps end
local untl = tonumber(ARGV[1]) + tonumber(ARGV[2 + i])
redis.call('HSET', KEYS[1], 'parked_until', string.format('%d', untl),
  'parked_since', ARGV[1], 'park_kind', 'throttle', 'park_reason', ARGV[2])
return {n, untl}
",
    )
});

/// KEYS: state. ARGV: kind ('' for any). Returns 1 if it was parked.
static UNPARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = redis.call('HGET', KEYS[1], 'park_kind')
if not k then return 0 end
if ARGV[1] ~= '' and ARGV[1] ~= k then return 0 end
redis.call('HDEL', KEYS[1], 'parked_until', 'parked_since', 'park_kind', 'park_reason')
return 1
",
    )
});

/// HGETALL state, ZCOUNT units, ZCOUNT inflight, oldest unit with its score.
type LoadReply = (HashMap<String, String>, u32, u32, Vec<(String, f64)>);

/// What this process trusts of the store's epoch.
///
/// The epoch key (`postern:epoch`) is written once, when a store is first
/// used, as `new:<random>:<ms>`; `postern quota accept-reset` replaces it
/// with `reset:<random>:<ms>`. Every reserve and pick claim checks, in the
/// same script, that the key still holds the value this process trusts. A
/// Redis that restarted without persistence or was flushed has no key: its
/// counters say nothing was sent, which is false, so the store fails closed
/// ([`StoreError::Lost`]) until the operator accepts the reset. The value
/// last trusted is also kept in a file in `data_dir`, so a Postern that
/// restarts after the loss notices it too.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Epoch {
    Trusted(String),
    Lost(String),
}

/// The Redis store. Cloning shares the (auto-reconnecting) connection and
/// the epoch state.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    url: String,
    prefix: String,
    epoch: Arc<Mutex<Epoch>>,
    /// Where the trusted epoch is remembered across restarts.
    marker: Option<PathBuf>,
}

/// Whether an epoch value was written by `accept-reset`.
fn is_reset(value: &str) -> bool {
    value.starts_with("reset:")
}

fn new_epoch(kind: &str) -> String {
    format!(
        "{kind}:{:016x}:{}",
        rand::random::<u64>(),
        Timestamp::now().as_millisecond()
    )
}

impl RedisStore {
    /// Connects; the epoch is checked, and written if the store is new.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        Self::connect_with_marker(url, prefix, None).await
    }

    /// As [`RedisStore::connect`], remembering the epoch in `marker`.
    pub async fn connect_with_marker(
        url: &str,
        prefix: &str,
        marker: Option<PathBuf>,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let con = client.get_connection_manager_with_config(config).await?;
        let mut store = RedisStore {
            con,
            url: redact_url(url),
            prefix: prefix.to_owned(),
            epoch: Arc::new(Mutex::new(Epoch::Lost(String::new()))),
            marker,
        };
        let epoch = store.first_epoch().await?;
        if let Epoch::Lost(why) = &epoch {
            tracing::error!(store = %store.describe(), why = %why, "quota store lost its state: sends counted through it are refused until `postern quota accept-reset`");
        }
        store.epoch = Arc::new(Mutex::new(epoch));
        Ok(store)
    }

    pub fn describe(&self) -> String {
        format!("redis {} (prefix {})", self.url, self.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The epoch this process last trusted (from the marker file), if it
    /// was for this store.
    fn remembered(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.marker.as_ref()?).ok()?;
        let mut f = text.trim_end().splitn(3, '\t');
        let (url, prefix, epoch) = (f.next()?, f.next()?, f.next()?);
        (url == self.url && prefix == self.prefix).then(|| epoch.to_owned())
    }

    fn remember(&self, epoch: &str) {
        let Some(path) = &self.marker else { return };
        if self.remembered().as_deref() == Some(epoch) {
            return;
        }
        let tmp = path.with_extension("tmp");
        let text = format!("{}\t{}\t{epoch}\n", self.url, self.prefix);
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not remember the quota store's epoch");
        }
    }

    /// Whether Redis answers now (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        Ok(())
    }

    /// The epoch at start: the store's, or a new one for a new store.
    async fn first_epoch(&self) -> Result<Epoch, StoreError> {
        let mut con = self.con.clone();
        let key = self.epoch_key();
        let current: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
        let remembered = self.remembered();
        let epoch = match (current, remembered) {
            (Some(v), Some(r)) if v != r && !is_reset(&v) => Epoch::Lost(format!(
                "its epoch changed from {r} to {v} without `postern quota accept-reset`: it was emptied and taken up again by another instance"
            )),
            (Some(v), _) => Epoch::Trusted(v),
            (None, Some(r)) => Epoch::Lost(format!(
                "the epoch key {key} written when it was first used ({r}) is gone: Redis restarted without persistence or was flushed"
            )),
            (None, None) => {
                let v = new_epoch("new");
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&v)
                    .arg("NX")
                    .query_async(&mut con)
                    .await?;
                if set.is_some() {
                    Epoch::Trusted(v)
                } else {
                    // Another instance created it at the same moment.
                    let now: Option<String> =
                        redis::cmd("GET").arg(&key).query_async(&mut con).await?;
                    Epoch::Trusted(now.unwrap_or(v))
                }
            }
        };
        if let Epoch::Trusted(v) = &epoch {
            self.remember(v);
        }
        Ok(epoch)
    }

    fn lost_error(&self, why: String) -> StoreError {
        StoreError::Lost {
            store: self.describe(),
            why,
        }
    }

    /// The epoch to check in a script. While lost, the key is read again:
    /// an accepted reset puts the store back in service.
    async fn trusted(&self) -> Result<String, StoreError> {
        let state = self
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match state {
            Epoch::Trusted(v) => Ok(v),
            Epoch::Lost(why) => match self.adopt_reset().await? {
                Some(v) => Ok(v),
                None => Err(self.lost_error(why)),
            },
        }
    }

    /// Adopts the store's epoch if an operator accepted a reset.
    async fn adopt_reset(&self) -> Result<Option<String>, StoreError> {
        let mut con = self.con.clone();
        let current: Option<String> = redis::cmd("GET")
            .arg(self.epoch_key())
            .query_async(&mut con)
            .await?;
        let mut state = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        match current {
            Some(v) if is_reset(&v) && *state != Epoch::Trusted(v.clone()) => {
                tracing::warn!(store = %self.describe(), epoch = %v, "quota store reset accepted: counting again from what it holds now");
                *state = Epoch::Trusted(v.clone());
                drop(state);
                self.remember(&v);
                Ok(Some(v))
            }
            _ => Ok(None),
        }
    }

    /// A script found the epoch key not holding the trusted value: adopt an
    /// accepted reset (`Ok`, try again) or go into the lost state.
    async fn epoch_mismatch(&self) -> Result<(), StoreError> {
        if self.adopt_reset().await?.is_some() {
            return Ok(());
        }
        let mut con = self.con.clone();
        let current: Option<String> = redis::cmd("GET")
            .arg(self.epoch_key())
            .query_async(&mut con)
            .await?;
        let why = match current {
            None => format!(
                "the epoch key {} is gone: Redis restarted without persistence or was flushed",
                self.epoch_key()
            ),
            Some(v) => {
                format!("its epoch was replaced by {v} without `postern quota accept-reset`")
            }
        };
        let mut state = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        if !matches!(*state, Epoch::Lost(_)) {
            tracing::error!(store = %self.describe(), why = %why, "quota store lost its state: sends counted through it are refused until `postern quota accept-reset`");
        }
        *state = Epoch::Lost(why.clone());
        Err(self.lost_error(why))
    }

    /// Why the store is not trusted now, if it is not.
    pub fn lost(&self) -> Option<String> {
        match &*self.epoch.lock().unwrap_or_else(PoisonError::into_inner) {
            Epoch::Lost(why) => Some(why.clone()),
            Epoch::Trusted(_) => None,
        }
    }

    /// Writes a new (reset) epoch: every instance on this store resumes.
    pub async fn accept_reset(&self) -> Result<String, StoreError> {
        let v = new_epoch("reset");
        let mut con = self.con.clone();
        let old: Option<String> = redis::cmd("SET")
            .arg(self.epoch_key())
            .arg(&v)
            .arg("GET")
            .query_async(&mut con)
            .await?;
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = Epoch::Trusted(v.clone());
        self.remember(&v);
        Ok(match old {
            Some(o) => format!(
                "{}: epoch {o} replaced by {v}; instances using it resume counting from what it holds now",
                self.describe()
            ),
            None => format!(
                "{}: new epoch {v} written; instances using it resume counting from what it holds now (the counts it lost are not restored)",
                self.describe()
            ),
        })
    }

    fn key(&self, account: &str, what: &str) -> String {
        format!("{}{{{}}}:{}", self.prefix, account, what)
    }

    pub(crate) async fn load(
        &self,
        account: &str,
        quota: &Quota,
        need: u32,
        now: Timestamp,
    ) -> Result<Loaded, StoreError> {
        let (units, inflight, state) = (
            self.key(account, "units"),
            self.key(account, "inflight"),
            self.key(account, "state"),
        );
        let after = format!("({}", quota.window.cutoff_ms(now));
        let mut con = self.con.clone();
        let (fields, counted, reserved, oldest): LoadReply = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(&state)
            .cmd("ZCOUNT")
            .arg(&units)
            .arg(&after)
            .arg("+inf")
            .cmd("ZCOUNT")
            .arg(&inflight)
            .arg(&after)
            .arg("+inf")
            .cmd("ZRANGEBYSCORE")
            .arg(&units)
            .arg(&after)
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut con)
            .await?;
        let record = record_from_fields(&fields);
        let limit = quota.limit(&record, now);
        let mut all = Vec::new();
        if u64::from(counted) + u64::from(need) > u64::from(limit.value) {
            let scored: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(&units)
                .arg(&after)
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async(&mut con)
                .await?;
            all = scored.into_iter().map(|(_, s)| s as i64).collect();
        }
        Ok(Loaded {
            record,
            sent: counted.saturating_sub(reserved),
            reserved: reserved.min(counted),
            oldest: oldest.first().map(|(_, s)| *s as i64),
            units: all,
        })
    }

    pub(crate) async fn stale(
        &self,
        account: &str,
        after: i64,
        before: i64,
    ) -> Result<u32, StoreError> {
        let mut con = self.con.clone();
        Ok(redis::cmd("ZCOUNT")
            .arg(self.key(account, "inflight"))
            .arg(format!("({after}"))
            .arg(format!("({before}"))
            .query_async(&mut con)
            .await?)
    }

    pub(crate) async fn reserve(
        &self,
        account: &str,
        quota: &Quota,
        n: u32,
        now: Timestamp,
    ) -> Result<Reserved, StoreError> {
        let now_ms = now.as_millisecond();
        let ids: Vec<u64> = (0..n).map(|_| rand::random::<u64>()).collect();
        let (rstart, rstep) = match quota.ramp {
            Some(r) => (i64::from(r.start), i64::from(r.step)),
            None => (-1, 0),
        };
        let mut r = Vec::new();
        for _ in 0..2 {
            let epoch = self.trusted().await?;
            let mut inv = RESERVE.prepare_invoke();
            inv.key(self.epoch_key())
                .key(self.key(account, "units"))
                .key(self.key(account, "inflight"))
                .key(self.key(account, "state"))
                .arg(epoch)
                .arg(now_ms)
                .arg(quota.window.cutoff_ms(now))
                .arg(now_ms - KEEP_MS)
                .arg(quota.daily_limit.unwrap_or(u32::MAX))
                .arg(rstart)
                .arg(rstep)
                .arg(n)
                .arg(UNITS_TTL_MS);
            for id in &ids {
                inv.arg(id);
            }
            let mut con = self.con.clone();
            r = inv.invoke_async(&mut con).await?;
            if r.first() != Some(&-1) {
                break;
            }
            self.epoch_mismatch().await?;
        }
        let num = |i: usize| -> Result<u32, StoreError> {
            r.get(i)
                .map(|&v| u32::try_from(v.max(0)).unwrap_or(u32::MAX))
                .ok_or_else(|| StoreError::Invalid(format!("reserve script answered {r:?}")))
        };
        match r.first() {
            Some(1) => Ok(Reserved::Ok(ids)),
            Some(0) => Ok(Reserved::Full {
                counted: num(1)?,
                limit: num(2)?,
            }),
            _ => Err(StoreError::Invalid(format!(
                "reserve script answered {r:?}"
            ))),
        }
    }

    pub(crate) async fn commit(
        &self,
        rs: &[Reservation],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let trusted = self.trusted().await?;
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("GET").arg(self.epoch_key());
        for r in rs.iter().filter(|r| !r.ids.is_empty()) {
            let state = self.key(&r.account, "state");
            p.cmd("ZREM")
                .arg(self.key(&r.account, "inflight"))
                .arg(&r.ids)
                .ignore();
            p.cmd("HSETNX")
                .arg(&state)
                .arg("first_send")
                .arg(now.as_millisecond())
                .ignore();
            p.cmd("HSET").arg(&state).arg("throttles").arg(0).ignore();
        }
        let mut con = self.con.clone();
        let (epoch,): (Option<String>,) = p.query_async(&mut con).await?;
        if epoch.as_deref() != Some(trusted.as_str()) {
            // The units were reserved before the store lost them: nothing
            // counts them now.
            self.epoch_mismatch().await?;
        }
        Ok(())
    }

    pub(crate) async fn release(&self, rs: &[Reservation]) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        p.atomic();
        for r in rs.iter().filter(|r| !r.ids.is_empty()) {
            p.cmd("ZREM")
                .arg(self.key(&r.account, "units"))
                .arg(&r.ids)
                .ignore();
            p.cmd("ZREM")
                .arg(self.key(&r.account, "inflight"))
                .arg(&r.ids)
                .ignore();
        }
        let mut con = self.con.clone();
        p.query_async::<()>(&mut con).await?;
        Ok(())
    }

    pub(crate) async fn claim(
        &self,
        account: &str,
        now: Timestamp,
        pace_until: Option<Timestamp>,
    ) -> Result<Claim, StoreError> {
        let mut r = Vec::new();
        for _ in 0..2 {
            let epoch = self.trusted().await?;
            let mut con = self.con.clone();
            r = CLAIM
                .key(self.epoch_key())
                .key(self.key(account, "state"))
                .arg(epoch)
                .arg(now.as_millisecond())
                .arg(
                    pace_until
                        .map(|t| t.as_millisecond().to_string())
                        .unwrap_or_default(),
                )
                .invoke_async(&mut con)
                .await?;
            if r.first() != Some(&-1) {
                break;
            }
            self.epoch_mismatch().await?;
        }
        let at = || r.get(1).and_then(|&ms| ms_to_ts(ms)).unwrap_or(FOREVER);
        match r.first() {
            Some(0) => Ok(Claim::Claimed),
            Some(1) => Ok(Claim::Parked(at())),
            Some(2) => Ok(Claim::Paced(at())),
            _ => Err(StoreError::Invalid(format!("claim script answered {r:?}"))),
        }
    }

    pub(crate) async fn park(&self, account: &str, p: &Parked) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        redis::cmd("HSET")
            .arg(self.key(account, "state"))
            .arg("parked_until")
            .arg(p.until.as_millisecond())
            .arg("parked_since")
            .arg(p.since.as_millisecond())
            .arg("park_kind")
            .arg(p.kind.as_str())
            .arg("park_reason")
            .arg(&p.reason)
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    pub(crate) async fn park_throttled(
        &self,
        account: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Parked, StoreError> {
        let mut inv = THROTTLE.prepare_invoke();
        inv.key(self.key(account, "state"))
            .arg(now.as_millisecond())
            .arg(reason);
        for step in 1..=4 {
            inv.arg(throttle_backoff(step).as_millis() as i64);
        }
        let mut con = self.con.clone();
        let r: Vec<i64> = inv.invoke_async(&mut con).await?;
        let until = r
            .get(1)
            .and_then(|&ms| ms_to_ts(ms))
            .ok_or_else(|| StoreError::Invalid(format!("throttle script answered {r:?}")))?;
        if r.first() == Some(&0) {
            let (kind, reason): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(self.key(account, "state"))
                .arg("park_kind")
                .arg("park_reason")
                .query_async(&mut con)
                .await?;
            return Ok(Parked {
                until,
                since: r.get(2).and_then(|&ms| ms_to_ts(ms)).unwrap_or(now),
                kind: ParkKind::parse(kind.as_deref().unwrap_or("")),
                reason: reason.unwrap_or_default(),
            });
        }
        Ok(Parked {
            until,
            since: now,
            kind: ParkKind::Throttle,
            reason: reason.to_owned(),
        })
    }

    pub(crate) async fn unpark(
        &self,
        account: &str,
        kind: Option<ParkKind>,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let n: i64 = UNPARK
            .key(self.key(account, "state"))
            .arg(kind.map(ParkKind::as_str).unwrap_or(""))
            .invoke_async(&mut con)
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn record_ceiling(
        &self,
        account: &str,
        ceiling: Ceiling,
    ) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        redis::cmd("HSET")
            .arg(self.key(account, "state"))
            .arg("ceiling")
            .arg(ceiling.value)
            .arg("ceiling_until")
            .arg(ceiling.until.as_millisecond())
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    pub(crate) async fn record_error(
        &self,
        account: &str,
        error: &LastError,
    ) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        redis::cmd("HSET")
            .arg(self.key(account, "state"))
            .arg("last_error")
            .arg(&error.text)
            .arg("last_error_at")
            .arg(error.at.as_millisecond())
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }
}

/// A record from the fields of the `state` hash.
fn record_from_fields(f: &HashMap<String, String>) -> Record {
    let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
    let ts = |k: &str| int(k).and_then(ms_to_ts);
    let ceiling = match (int("ceiling"), ts("ceiling_until")) {
        (Some(v), Some(until)) => Some(Ceiling {
            value: u32::try_from(v.max(0)).unwrap_or(u32::MAX),
            until,
        }),
        _ => None,
    };
    let parked = match (ts("parked_until"), f.get("park_kind")) {
        (Some(until), Some(kind)) => Some(Parked {
            until,
            since: ts("parked_since").unwrap_or(until),
            kind: ParkKind::parse(kind),
            reason: f.get("park_reason").cloned().unwrap_or_default(),
        }),
        _ => None,
    };
    let last_error = match (ts("last_error_at"), f.get("last_error")) {
        (Some(at), Some(text)) => Some(LastError {
            at,
            text: text.clone(),
        }),
        _ => None,
    };
    Record {
        first_send: ts("first_send"),
        ceiling,
        last_pick: ts("last_pick"),
        pace_until: ts("pace_until"),
        parked,
        throttles: int("throttles")
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(0),
        last_error,
    }
}

/// The URL without a password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<redacted>@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            super::redact_url("redis://user:secret@127.0.0.1:6379/0"),
            "redis://<redacted>@127.0.0.1:6379/0"
        );
        assert_eq!(
            super::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
