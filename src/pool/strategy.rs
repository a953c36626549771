//! Rotation strategies: pure functions over a snapshot of the pool.
//!
//! A strategy sees one [`Candidate`] per mailbox, in the pool's configured
//! order, and picks one of the eligible ones. It keeps its own small state
//! (a cursor, or smooth-weighted-round-robin weights) in memory; the state
//! only steers the order, never the limits, so losing it at a restart is
//! harmless.

use crate::config::Strategy;

/// One mailbox as a strategy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Not parked, not paced out, has room for the units asked for, not excluded.
    pub eligible: bool,
    /// Units counting in the window now (sent + reserved).
    pub counted: u32,
    /// The effective limit now.
    pub limit: u32,
    /// Weight (1 unless `strategy = "weighted"` gives another).
    pub weight: u32,
}

/// In-memory state of one pool's strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyState {
    /// Index of the mailbox to try first next time.
    RoundRobin {
        cursor: usize,
    },
    LeastUsed,
    /// nginx's smooth weighted round-robin: one running weight per mailbox.
    Weighted {
        current: Vec<i64>,
    },
}

impl StrategyState {
    pub fn new(strategy: Strategy, members: usize) -> StrategyState {
        match strategy {
            Strategy::RoundRobin => StrategyState::RoundRobin { cursor: 0 },
            Strategy::LeastUsed => StrategyState::LeastUsed,
            Strategy::Weighted => StrategyState::Weighted {
                current: vec![0; members],
            },
        }
    }

    /// Picks one eligible candidate, or `None` if none is.
    pub fn choose(&mut self, cands: &[Candidate]) -> Option<usize> {
        match self {
            StrategyState::RoundRobin { cursor } => round_robin(cursor, cands),
            StrategyState::LeastUsed => least_used(cands),
            StrategyState::Weighted { current } => smooth_weighted(current, cands),
        }
    }
}

/// The first eligible mailbox at or after the cursor, cyclically; the cursor
/// then moves past it.
pub fn round_robin(cursor: &mut usize, cands: &[Candidate]) -> Option<usize> {
    let n = cands.len();
    if n == 0 {
        return None;
    }
    let start = *cursor % n;
    let i = (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| cands[i].eligible)?;
    *cursor = (i + 1) % n;
    Some(i)
}

/// The eligible mailbox with the lowest `counted / limit`; ties go to the
/// one listed first.
pub fn least_used(cands: &[Candidate]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        if !c.eligible {
            continue;
        }
        best = match best {
            None => Some(i),
            Some(b) => {
                let bc = &cands[b];
                // c.counted / c.limit < bc.counted / bc.limit, without floats.
                let lhs = u64::from(c.counted) * u64::from(bc.limit.max(1));
                let rhs = u64::from(bc.counted) * u64::from(c.limit.max(1));
                if lhs < rhs {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

/// Smooth weighted round-robin (nginx `ngx_http_upstream_get_peer`): every
/// eligible mailbox's running weight grows by its weight, the largest wins
/// (first listed on a tie) and gives back the total. Over any whole cycle
/// each mailbox is chosen exactly `weight` times, spread out evenly.
/// Ineligible mailboxes sit the round out, as nginx does with down peers.
pub fn smooth_weighted(current: &mut Vec<i64>, cands: &[Candidate]) -> Option<usize> {
    current.resize(cands.len(), 0);
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for (i, c) in cands.iter().enumerate() {
        if !c.eligible {
            continue;
        }
        let w = i64::from(c.weight.max(1));
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(eligible: bool, counted: u32, limit: u32, weight: u32) -> Candidate {
        Candidate {
            eligible,
            counted,
            limit,
            weight,
        }
    }

    fn all(n: usize) -> Vec<Candidate> {
        vec![cand(true, 0, 100, 1); n]
    }

    #[test]
    fn round_robin_rotates_and_skips() {
        let mut s = StrategyState::new(Strategy::RoundRobin, 3);
        let c = all(3);
        let got: Vec<_> = (0..7).map(|_| s.choose(&c).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        // Mailbox 1 ineligible: 1 is skipped, the order continues.
        let mut c2 = all(3);
        c2[1].eligible = false;
        let got: Vec<_> = (0..4).map(|_| s.choose(&c2).unwrap()).collect();
        assert_eq!(got, [2, 0, 2, 0]);
        // Back to all eligible: continues after the last pick.
        assert_eq!(s.choose(&c), Some(1));
        let none = vec![cand(false, 0, 1, 1); 3];
        assert_eq!(s.choose(&none), None);
        assert_eq!(s.choose(&[]), None);
    }

    #[test]
    fn least_used_by_ratio_ties_by_order() {
        let mut s = StrategyState::new(Strategy::LeastUsed, 3);
        // 50/100 = 0.5, 10/20 = 0.5, 30/100 = 0.3
        let c = [
            cand(true, 50, 100, 1),
            cand(true, 10, 20, 1),
            cand(true, 30, 100, 1),
        ];
        assert_eq!(s.choose(&c), Some(2));
        // Tie between 0 and 1 (both 0.5): the first listed.
        let c = [
            cand(true, 50, 100, 1),
            cand(true, 10, 20, 1),
            cand(false, 0, 100, 1),
        ];
        assert_eq!(s.choose(&c), Some(0));
        // Simulate sending: each pick adds one unit; the picks spread so
        // the ratios stay level.
        let mut c = [
            cand(true, 0, 10, 1),
            cand(true, 0, 20, 1),
            cand(true, 0, 10, 1),
        ];
        let mut picks = [0u32; 3];
        for _ in 0..40 {
            let i = s.choose(&c).unwrap();
            picks[i] += 1;
            c[i].counted += 1;
            c[i].eligible = c[i].counted < c[i].limit;
        }
        assert_eq!(picks, [10, 20, 10]);
        assert_eq!(s.choose(&c), None);
    }

    #[test]
    fn weighted_shares_are_exact() {
        let mut s = StrategyState::new(Strategy::Weighted, 3);
        let c = [
            cand(true, 0, 1000, 2),
            cand(true, 0, 1000, 1),
            cand(true, 0, 1000, 1),
        ];
        let mut picks = [0u32; 3];
        let mut seq = Vec::new();
        for _ in 0..400 {
            let i = s.choose(&c).unwrap();
            picks[i] += 1;
            seq.push(i);
        }
        assert_eq!(picks, [200, 100, 100]);
        // Smooth: the cycle is 0,1,2,0 — the heavy mailbox's picks are spread.
        assert_eq!(&seq[..8], &[0, 1, 2, 0, 0, 1, 2, 0][..]);
        assert!(
            seq.windows(3).all(|w| w != [0, 0, 0]),
            "picks are spread out: {seq:?}"
        );
    }

    #[test]
    fn weighted_shares_uneven_and_with_a_gap() {
        let mut s = StrategyState::new(Strategy::Weighted, 3);
        let c = [
            cand(true, 0, 1000, 5),
            cand(true, 0, 1000, 3),
            cand(true, 0, 1000, 1),
        ];
        let mut picks = [0u32; 3];
        for _ in 0..900 {
            picks[s.choose(&c).unwrap()] += 1;
        }
        assert_eq!(picks, [500, 300, 100]);
        // While mailbox 0 is out, the others share 3:1.
        let mut gap = c;
        gap[0].eligible = false;
        let mut picks = [0u32; 3];
        for _ in 0..400 {
            picks[s.choose(&gap).unwrap()] += 1;
        }
        assert_eq!(picks, [0, 300, 100]);
    }
}
