//! Quota arithmetic: windows, effective limits and "when does room return".
//!
//! Pure functions over timestamps in milliseconds since the Unix epoch (the
//! unit both stores keep). No I/O, no clock: every function takes `now`.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::Ramp;
use crate::providers::Window;

/// One day in milliseconds: the length of a rolling window and of a ramp step.
pub const DAY_MS: i64 = 86_400_000;

/// How long an observed ceiling stays in force.
pub const CEILING_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Units older than this are deleted from the stores. Both windows look back
/// at most 25 hours (a calendar day with a DST fall-back), so two days is
/// plenty.
pub const KEEP_MS: i64 = 2 * DAY_MS;

/// A window with its time zone resolved.
#[derive(Debug, Clone)]
pub enum QuotaWindow {
    /// Units with a timestamp after `now - length` count (ms; 24 hours
    /// unless `window_length` says otherwise).
    Rolling(i64),
    /// Units since local midnight in this zone count.
    CalendarDay(TimeZone),
}

impl QuotaWindow {
    pub fn kind(&self) -> Window {
        match self {
            QuotaWindow::Rolling(_) => Window::Rolling24h,
            QuotaWindow::CalendarDay(_) => Window::CalendarDay,
        }
    }

    /// Units whose timestamp (ms) is strictly greater than this count at `now`.
    pub fn cutoff_ms(&self, now: Timestamp) -> i64 {
        let now_ms = now.as_millisecond();
        match self {
            QuotaWindow::Rolling(len) => now_ms - len,
            QuotaWindow::CalendarDay(tz) => match local_midnight(tz, now) {
                Some(m) => m.as_millisecond() - 1,
                // Outside jiff's range (never in practice): behave as rolling.
                None => now_ms - DAY_MS,
            },
        }
    }

    /// When a unit counted at `now` leaves the window: for rolling windows the
    /// given unit's time + 24h, for calendar days the next local midnight.
    pub fn unit_expires_at(&self, unit_ms: i64, now: Timestamp) -> Option<Timestamp> {
        match self {
            QuotaWindow::Rolling(len) => ms_to_ts(unit_ms + len),
            QuotaWindow::CalendarDay(tz) => next_local_midnight(tz, now),
        }
    }
}

/// The start of the local day that contains `now`.
pub fn local_midnight(tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let z = now.to_zoned_datetime(tz.clone());
    z.start_of_day().ok().map(|d| d.timestamp())
}

/// The start of the next local day after the one that contains `now`. A DST
/// change makes that day 23 or 25 hours long; jiff takes care of it.
pub fn next_local_midnight(tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let z = now.to_zoned_datetime(tz.clone());
    z.tomorrow()
        .and_then(|t| t.start_of_day())
        .ok()
        .map(|d| d.timestamp())
}

/// "Never" / "until unparked": the latest instant that survives a round
/// trip through milliseconds (`Timestamp::MAX` has sub-millisecond digits and
/// does not), 9999-12-30T22:00:00Z.
pub const FOREVER: Timestamp = Timestamp::constant(253_402_207_200, 0);

/// Milliseconds to a timestamp, saturating at [`FOREVER`].
pub fn ms_to_ts(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms.min(FOREVER.as_millisecond())).ok()
}

/// `ts + d`, saturating at [`FOREVER`].
pub fn add(ts: Timestamp, d: Duration) -> Timestamp {
    match SignedDuration::try_from(d) {
        Ok(d) => ts.checked_add(d).map_or(FOREVER, |t| t.min(FOREVER)),
        Err(_) => FOREVER,
    }
}

/// Why a mailbox's limit is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LimitSource {
    /// No daily limit configured and no preset: only ramp and ceiling apply.
    Unlimited,
    /// `daily_limit` (or the preset's).
    Configured,
    /// The warm-up ramp on this day (0 = the day of the first send).
    Ramp { day: u32 },
    /// A quota reply seen below the configured limit, in force until `until`.
    Ceiling { until: Timestamp },
}

/// The effective limit of a mailbox now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// Units (recipients) the window may hold.
    pub value: u32,
    pub source: LimitSource,
}

/// A recorded observed ceiling (it may have expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ceiling {
    pub value: u32,
    pub until: Timestamp,
}

/// `min(daily_limit, ramp for today, ceiling if in force)`.
///
/// The ramp day is the number of whole 24-hour periods since the account's
/// first recorded send (day 0 before any send): `start + step × day`.
pub fn effective_limit(
    daily: Option<u32>,
    ramp: Option<Ramp>,
    first_send: Option<Timestamp>,
    ceiling: Option<Ceiling>,
    now: Timestamp,
) -> Limit {
    let mut limit = match daily {
        Some(d) => Limit {
            value: d,
            source: LimitSource::Configured,
        },
        None => Limit {
            value: u32::MAX,
            source: LimitSource::Unlimited,
        },
    };
    if let Some(r) = ramp {
        let day = ramp_day(first_send, now);
        let v = r.start.saturating_add(r.step.saturating_mul(day));
        if v < limit.value {
            limit = Limit {
                value: v,
                source: LimitSource::Ramp { day },
            };
        }
    }
    if let Some(c) = ceiling {
        if c.until > now && c.value < limit.value {
            limit = Limit {
                value: c.value,
                source: LimitSource::Ceiling { until: c.until },
            };
        }
    }
    limit
}

/// Whole days since the first send (0 before it, or when the clock went back).
pub fn ramp_day(first_send: Option<Timestamp>, now: Timestamp) -> u32 {
    match first_send {
        Some(f) => {
            let d = (now.as_millisecond() - f.as_millisecond()).max(0) / DAY_MS;
            u32::try_from(d).unwrap_or(u32::MAX)
        }
        None => 0,
    }
}

/// Everything `room_at` needs about one mailbox.
pub struct RoomInput<'a> {
    pub window: &'a QuotaWindow,
    pub daily: Option<u32>,
    pub ramp: Option<Ramp>,
    pub first_send: Option<Timestamp>,
    pub ceiling: Option<Ceiling>,
    /// Timestamps (ms, ascending) of the units counted at `now`.
    pub units: &'a [i64],
}

/// The earliest instant ≥ `now` at which `need` more units fit, or `None`
/// if no change we can foresee (units leaving the window, a ceiling expiring,
/// a ramp step) ever makes room for that many.
///
/// Room only changes at those instants, so it is enough to test each of
/// them in order.
pub fn room_at(input: &RoomInput<'_>, need: u32, now: Timestamp) -> Option<Timestamp> {
    let fits = |t: Timestamp| {
        let cutoff = input.window.cutoff_ms(t);
        // `units` is ascending: the counted ones are the tail after `cutoff`.
        let counted = input.units.len() - input.units.partition_point(|&u| u <= cutoff);
        let limit = effective_limit(input.daily, input.ramp, input.first_send, input.ceiling, t);
        (counted as u64) + u64::from(need) <= u64::from(limit.value)
    };
    if fits(now) {
        return Some(now);
    }
    let mut candidates: Vec<Timestamp> = Vec::new();
    match input.window {
        QuotaWindow::Rolling(len) => {
            candidates.extend(input.units.iter().filter_map(|&u| ms_to_ts(u + len)));
        }
        QuotaWindow::CalendarDay(tz) => candidates.extend(next_local_midnight(tz, now)),
    }
    if let Some(c) = input.ceiling {
        if c.until > now {
            candidates.push(c.until);
        }
    }
    if let (Some(r), Some(first)) = (input.ramp, input.first_send) {
        // Ramp steps until the ramp no longer binds; a year at most.
        let day0 = ramp_day(Some(first), now);
        for d in 1..=366u32 {
            let day = day0.saturating_add(d);
            let v = r.start.saturating_add(r.step.saturating_mul(day));
            let ms = first
                .as_millisecond()
                .saturating_add(i64::from(day) * DAY_MS);
            candidates.extend(ms_to_ts(ms));
            // Past this step the ramp no longer binds, or it already leaves
            // room for every unit plus the new ones.
            let enough = input.units.len() as u64 + u64::from(need);
            if input.daily.is_some_and(|dl| v >= dl) || u64::from(v) >= enough {
                break;
            }
        }
    }
    candidates.retain(|&t| t > now);
    candidates.sort();
    candidates.dedup();
    candidates.into_iter().find(|&t| fits(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").expect("system tz database has America/New_York")
    }

    #[test]
    fn rolling_cutoff_is_24h_back() {
        let now = ts("2024-05-01T12:00:00Z");
        let w = QuotaWindow::Rolling(DAY_MS);
        assert_eq!(
            w.cutoff_ms(now),
            ts("2024-04-30T12:00:00Z").as_millisecond()
        );
    }

    #[test]
    fn calendar_cutoff_is_local_midnight() {
        let now = ts("2024-05-01T02:00:00Z"); // 22:00 EDT on April 30
        let w = QuotaWindow::CalendarDay(ny());
        // Local midnight of April 30 EDT = 04:00Z.
        assert_eq!(
            w.cutoff_ms(now),
            ts("2024-04-30T04:00:00Z").as_millisecond() - 1
        );
        let utc = QuotaWindow::CalendarDay(TimeZone::UTC);
        assert_eq!(
            utc.cutoff_ms(now),
            ts("2024-05-01T00:00:00Z").as_millisecond() - 1
        );
    }

    #[test]
    fn calendar_day_across_dst() {
        let tz = ny();
        // 2024-03-10: clocks go forward at 02:00 EST; the day is 23 hours.
        let noon = ts("2024-03-10T16:00:00Z"); // 12:00 EDT
        let start = local_midnight(&tz, noon).unwrap();
        let next = next_local_midnight(&tz, noon).unwrap();
        assert_eq!(start, ts("2024-03-10T05:00:00Z"));
        assert_eq!(next, ts("2024-03-11T04:00:00Z"));
        assert_eq!((next - start).as_hours(), 23);
        // 2024-11-03: clocks go back; the day is 25 hours.
        let noon = ts("2024-11-03T17:00:00Z"); // 12:00 EST
        let start = local_midnight(&tz, noon).unwrap();
        let next = next_local_midnight(&tz, noon).unwrap();
        assert_eq!(start, ts("2024-11-03T04:00:00Z"));
        assert_eq!(next, ts("2024-11-04T05:00:00Z"));
        assert_eq!((next - start).as_hours(), 25);
    }

    #[test]
    fn limits_configured_ramp_ceiling() {
        let now = ts("2024-05-10T00:00:00Z");
        let ramp = Some(Ramp {
            start: 20,
            step: 10,
        });
        // No send yet: day 0.
        let l = effective_limit(Some(400), ramp, None, None, now);
        assert_eq!(l.value, 20);
        assert_eq!(l.source, LimitSource::Ramp { day: 0 });
        // 23h59 after the first send: still day 0; 24h after: day 1.
        let first = ts("2024-05-09T00:00:01Z");
        assert_eq!(
            effective_limit(Some(400), ramp, Some(first), None, now).value,
            20
        );
        let first = ts("2024-05-09T00:00:00Z");
        assert_eq!(
            effective_limit(Some(400), ramp, Some(first), None, now).value,
            30
        );
        // Day 5: 70.
        let first = ts("2024-05-05T00:00:00Z");
        let l = effective_limit(Some(400), ramp, Some(first), None, now);
        assert_eq!((l.value, l.source), (70, LimitSource::Ramp { day: 5 }));
        // Capped at the daily limit.
        let first = ts("2023-05-05T00:00:00Z");
        let l = effective_limit(Some(400), ramp, Some(first), None, now);
        assert_eq!((l.value, l.source), (400, LimitSource::Configured));
        // No limit at all.
        let l = effective_limit(None, None, None, None, now);
        assert_eq!((l.value, l.source), (u32::MAX, LimitSource::Unlimited));
    }

    #[test]
    fn ceiling_applies_for_seven_days_then_expires() {
        let seen = ts("2024-05-01T10:00:00Z");
        let c = Ceiling {
            value: 120,
            until: add(seen, CEILING_TTL),
        };
        let l = effective_limit(Some(500), None, None, Some(c), seen);
        assert_eq!(l.value, 120);
        assert_eq!(
            l.source,
            LimitSource::Ceiling {
                until: ts("2024-05-08T10:00:00Z")
            }
        );
        let almost = ts("2024-05-08T09:59:59Z");
        assert_eq!(
            effective_limit(Some(500), None, None, Some(c), almost).value,
            120
        );
        let after = ts("2024-05-08T10:00:00Z");
        let l = effective_limit(Some(500), None, None, Some(c), after);
        assert_eq!((l.value, l.source), (500, LimitSource::Configured));
    }

    fn ms(s: &str) -> i64 {
        ts(s).as_millisecond()
    }

    #[test]
    fn room_rolling_waits_for_the_right_unit() {
        let w = QuotaWindow::Rolling(DAY_MS);
        let units = [
            ms("2024-05-01T01:00:00Z"),
            ms("2024-05-01T02:00:00Z"),
            ms("2024-05-01T03:00:00Z"),
        ];
        let input = RoomInput {
            window: &w,
            daily: Some(3),
            ramp: None,
            first_send: None,
            ceiling: None,
            units: &units,
        };
        let now = ts("2024-05-01T12:00:00Z");
        assert_eq!(room_at(&input, 1, now), Some(ts("2024-05-02T01:00:00Z")));
        assert_eq!(room_at(&input, 2, now), Some(ts("2024-05-02T02:00:00Z")));
        assert_eq!(room_at(&input, 3, now), Some(ts("2024-05-02T03:00:00Z")));
        assert_eq!(room_at(&input, 4, now), None);
        let input = RoomInput {
            daily: Some(5),
            ..input
        };
        assert_eq!(room_at(&input, 2, now), Some(now));
    }

    #[test]
    fn room_calendar_returns_at_local_midnight() {
        let w = QuotaWindow::CalendarDay(ny());
        let units = [ms("2024-03-10T06:00:00Z"), ms("2024-03-10T07:00:00Z")];
        let input = RoomInput {
            window: &w,
            daily: Some(2),
            ramp: None,
            first_send: None,
            ceiling: None,
            units: &units,
        };
        let now = ts("2024-03-10T20:00:00Z");
        assert_eq!(room_at(&input, 1, now), Some(ts("2024-03-11T04:00:00Z")));
    }

    #[test]
    fn room_waits_for_ceiling_or_ramp() {
        let w = QuotaWindow::Rolling(DAY_MS);
        let now = ts("2024-05-01T12:00:00Z");
        // Ceiling 1 until 2024-05-01T15:00, one unit sent at 11:00:
        // need 2 → the ceiling's end (limit 10, one unit counted).
        let units = [ms("2024-05-01T11:00:00Z")];
        let c = Ceiling {
            value: 1,
            until: ts("2024-05-01T15:00:00Z"),
        };
        let input = RoomInput {
            window: &w,
            daily: Some(10),
            ramp: None,
            first_send: None,
            ceiling: Some(c),
            units: &units,
        };
        assert_eq!(room_at(&input, 2, now), Some(c.until));
        // Ramp start 1 step 1, first send 2024-05-01T00:00: day 0 limit 1.
        // Need 3 with one unit counted: day 1 (limit 2) is not enough even
        // after the unit expires at 2024-05-02T11:00; day 2 (limit 3) is.
        let input = RoomInput {
            ceiling: None,
            ramp: Some(Ramp { start: 1, step: 1 }),
            first_send: Some(ts("2024-05-01T00:00:00Z")),
            ..input
        };
        assert_eq!(room_at(&input, 3, now), Some(ts("2024-05-03T00:00:00Z")));
    }
}
