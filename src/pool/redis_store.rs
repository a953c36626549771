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
use std::sync::LazyLock;
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::store::{
    throttle_backoff, Claim, LastError, Loaded, ParkKind, Parked, Record, Reservation, Reserved,
    StoreError,
};
use super::window::{ms_to_ts, Ceiling, DAY_MS, FOREVER, KEEP_MS};
use super::Quota;

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

/// KEYS: units, inflight, state.
/// ARGV: now, cutoff (count scores > cutoff), prune (drop scores < prune),
/// daily, ramp start (-1: none), ramp step, n, ttl ms, then n unit ids.
/// Returns {1, counted after} or {0, counted, limit}.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LIMIT_LUA}
local units, inflight, state = KEYS[1], KEYS[2], KEYS[3]
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

/// KEYS: state. ARGV: now, pace_until.
/// Returns {0} claimed, {1, parked_until} or {2, pace_until}.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'parked_until', 'pace_until')
if f[1] and tonumber(f[1]) > now then return {1, tonumber(f[1])} end
if f[2] and tonumber(f[2]) > now then return {2, tonumber(f[2])} end
redis.call('HSET', KEYS[1], 'last_pick', ARGV[1], 'pace_until', ARGV[2])
return {0}
",
    )
});

/// KEYS: state. ARGV: now, reason, then the ladder in ms (1st, 2nd, …, last
/// repeats). Returns {throttles, parked_until}.
static THROTTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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

/// The Redis store. Cloning shares the (auto-reconnecting) connection.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    url: String,
    prefix: String,
}

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let con = client.get_connection_manager_with_config(config).await?;
        Ok(RedisStore {
            con,
            url: redact_url(url),
            prefix: prefix.to_owned(),
        })
    }

    pub fn describe(&self) -> String {
        format!("redis {} (prefix {})", self.url, self.prefix)
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
        let record = Record::from_fields(&fields);
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
        let mut inv = RESERVE.prepare_invoke();
        inv.key(self.key(account, "units"))
            .key(self.key(account, "inflight"))
            .key(self.key(account, "state"))
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
        let r: Vec<i64> = inv.invoke_async(&mut con).await?;
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
        let mut p = redis::pipe();
        p.atomic();
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
        p.query_async::<()>(&mut con).await?;
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
        pace_until: Timestamp,
    ) -> Result<Claim, StoreError> {
        let mut con = self.con.clone();
        let r: Vec<i64> = CLAIM
            .key(self.key(account, "state"))
            .arg(now.as_millisecond())
            .arg(pace_until.as_millisecond())
            .invoke_async(&mut con)
            .await?;
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
