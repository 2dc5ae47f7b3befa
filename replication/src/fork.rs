//! Where two nodes' WAL histories part, from their epoch histories.
//!
//! Each node's history lists `(epoch, start LSN)` for every epoch its WAL
//! went through, oldest first. Two nodes hold the same WAL bytes up to the
//! LSN where their histories first disagree: the start of the first entry
//! they do not share, or, when one history is a prefix of the other, the
//! start of the next epoch the longer one entered. A standby whose WAL goes
//! past that LSN must rewind to it before it can follow the primary.
//!
//! Epoch numbers only grow and every promotion takes a number higher than
//! any its node has seen, so a standby that knows a higher epoch than the
//! primary has seen a promotion the primary has not: the primary has been
//! deposed and must stop taking writes.

use walship_engine::Lsn;

/// How a standby's history relates to the primary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// The standby's WAL is a prefix of the primary's: stream on.
    None,
    /// The standby's WAL went past `fork`, where the histories part.
    Fork(Lsn),
    /// The standby has seen `epoch`, newer than anything the primary knows.
    StandbyNewer(u64),
    /// The histories share no epoch at all.
    Unrelated,
}

/// Compares a standby's history and WAL end with the primary's.
pub fn divergence(
    primary: &[(u64, Lsn)],
    primary_end: Lsn,
    standby: &[(u64, Lsn)],
    standby_end: Lsn,
) -> Divergence {
    let newest = |h: &[(u64, Lsn)]| h.iter().map(|e| e.0).max().unwrap_or(0);
    if newest(standby) > newest(primary) {
        return Divergence::StandbyNewer(newest(standby));
    }
    let shared = primary
        .iter()
        .zip(standby)
        .take_while(|(p, s)| p == s)
        .count();
    if shared == 0 {
        return Divergence::Unrelated;
    }
    let primary_next = primary.get(shared).map_or(primary_end, |e| e.1);
    let standby_next = standby.get(shared).map_or(standby_end, |e| e.1);
    let fork = primary_next.min(standby_next).min(primary_end);
    if standby_end > fork {
        Divergence::Fork(fork)
    } else {
        Divergence::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_streams_on() {
        let p = [(1, 0), (2, 0), (3, 500)];
        assert_eq!(
            divergence(&p, 900, &[(1, 0), (2, 0)], 400),
            Divergence::None
        );
        assert_eq!(
            divergence(&p, 900, &[(1, 0), (2, 0)], 500),
            Divergence::None
        );
        assert_eq!(divergence(&p, 900, &p, 900), Divergence::None);
        assert_eq!(divergence(&p, 900, &p, 700), Divergence::None);
    }

    #[test]
    fn an_old_primary_that_kept_writing_rewinds_to_the_promotion() {
        // The standby was promoted at 500 (epoch 3); the old primary went on to 650.
        let new_primary = [(1, 0), (2, 0), (3, 500)];
        let old_primary = [(1, 0), (2, 0)];
        assert_eq!(
            divergence(&new_primary, 900, &old_primary, 650),
            Divergence::Fork(500)
        );
    }

    #[test]
    fn the_same_epoch_number_started_at_another_lsn_is_a_fork() {
        // Both nodes started an epoch 3, at different LSNs.
        let a = [(1, 0), (2, 0), (3, 500)];
        let b = [(1, 0), (2, 0), (3, 480)];
        assert_eq!(divergence(&a, 900, &b, 800), Divergence::Fork(480));
    }

    #[test]
    fn a_standby_ahead_on_the_primarys_own_epoch_is_cut_to_the_primarys_end() {
        let h = [(1, 0), (2, 0)];
        assert_eq!(divergence(&h, 300, &h, 350), Divergence::Fork(300));
    }

    #[test]
    fn a_newer_standby_deposes_the_primary() {
        let p = [(1, 0), (2, 0)];
        let s = [(1, 0), (2, 0), (7, 100)];
        assert_eq!(divergence(&p, 900, &s, 100), Divergence::StandbyNewer(7));
        assert_eq!(
            divergence(&p, 900, &[(9, 0)], 0),
            Divergence::StandbyNewer(9)
        );
    }

    #[test]
    fn unrelated_histories_are_refused() {
        assert_eq!(divergence(&[(1, 0)], 9, &[], 0), Divergence::Unrelated);
        assert_eq!(
            divergence(&[(1, 0), (2, 5)], 9, &[(2, 0)], 3),
            Divergence::Unrelated
        );
    }
}
