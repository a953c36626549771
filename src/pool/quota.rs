//! One account's limits as the pool layer uses them ([`Quota`], resolved
//! from the config once), and the pool layer's error. Below the stores:
//! they take a `Quota` and know nothing of pools or rotation.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::record::{Record, StoreError};
use super::window::{effective_limit, Limit, QuotaWindow, DAY_MS};
use crate::config::{Account, Config, Ramp};
use crate::providers::Window;

/// A pool-layer failure.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no pool named `{0}`")]
    UnknownPool(String),
    #[error("no account named `{0}`")]
    UnknownAccount(String),
    #[error("account `{account}`: time_zone `{zone}` is not a known IANA time zone ({message})")]
    TimeZone {
        account: String,
        zone: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PoolError {
    /// Whether the store lost its state ([`StoreError::Lost`]).
    pub fn is_store_lost(&self) -> bool {
        matches!(self, PoolError::Store(e) if e.is_lost())
    }
}

/// One account's limits, resolved from the config (time zone looked up).
#[derive(Debug, Clone)]
pub struct Quota {
    /// `daily_limit`, or the preset's; `None`: no limit.
    pub daily_limit: Option<u32>,
    pub window: QuotaWindow,
    /// The IANA name, for calendar-day windows.
    pub time_zone: Option<String>,
    pub min_interval: Duration,
    pub jitter: Duration,
    pub ramp: Option<Ramp>,
}

impl Quota {
    /// Resolves an account's limits. Fails only on an unknown time zone, so
    /// `check-config` can call it too.
    pub fn from_account(config: &Config, account: &Account) -> Result<Quota, PoolError> {
        let window = match account.window {
            Window::Rolling24h => QuotaWindow::Rolling(
                i64::try_from(account.window_length.as_millis()).unwrap_or(DAY_MS),
            ),
            Window::CalendarDay => {
                let zone = account.time_zone.as_deref().unwrap_or("UTC");
                let tz = TimeZone::get(zone).map_err(|e| PoolError::TimeZone {
                    account: account.name.clone(),
                    zone: zone.to_owned(),
                    message: e.to_string(),
                })?;
                QuotaWindow::CalendarDay(tz)
            }
        };
        Ok(Quota {
            daily_limit: config.daily_limit(account),
            time_zone: match window {
                QuotaWindow::CalendarDay(_) => {
                    Some(account.time_zone.clone().unwrap_or_else(|| "UTC".into()))
                }
                QuotaWindow::Rolling(_) => None,
            },
            window,
            min_interval: account.min_interval.unwrap_or_default(),
            jitter: account.jitter.unwrap_or_default(),
            ramp: account.ramp,
        })
    }

    /// Whether sends from this mailbox are spaced out (`min_interval` or
    /// `jitter`). Without pacing a pick never waits for another session's
    /// pick: the pacing slot is neither checked nor claimed.
    pub fn paced(&self) -> bool {
        !self.min_interval.is_zero() || !self.jitter.is_zero()
    }

    /// The effective limit given what the store recorded.
    pub(crate) fn limit(&self, record: &Record, now: Timestamp) -> Limit {
        effective_limit(
            self.daily_limit,
            self.ramp,
            record.first_send,
            record.ceiling,
            now,
        )
    }
}
