//! Quorum arithmetic: W + R > N.
//!
//! With N replicas, a write is acknowledged once W of them hold it and a read
//! asks R of them. If W + R > N, every read set shares at least one node with
//! every write set (pigeonhole: W + R nodes picked from N cannot all be
//! distinct), so some node in every read quorum has seen the latest
//! acknowledged write; picking the reply with the highest LSN returns it.
//!
//! walship itself replicates by shipping the WAL from one primary (see
//! [`crate::sync_rule`]); this module is the textbook model it is compared
//! with, kept as plain arithmetic so that its claims are testable.

use thiserror::Error;

/// The sizes of a quorum system over `n` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumConfig {
    /// Number of replicas.
    pub n: usize,
    /// Replicas that must hold a write before it is acknowledged.
    pub w: usize,
    /// Replicas a read must hear from.
    pub r: usize,
}

impl QuorumConfig {
    /// True when every write quorum intersects every read quorum
    /// (`w + r > n`), with `1 <= w, r <= n`.
    pub fn read_sees_latest_write(&self) -> bool {
        self.w >= 1
            && self.r >= 1
            && self.w <= self.n
            && self.r <= self.n
            && self.w + self.r > self.n
    }

    /// How many nodes may be down while both writes and reads can still
    /// gather their quorum: `n - max(w, r)`.
    pub fn tolerated_failures(&self) -> usize {
        self.n.saturating_sub(self.w.max(self.r))
    }
}

/// Errors of quorum arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuorumError {
    /// A quorum system needs at least one node.
    #[error("a quorum needs at least one node, got n = 0")]
    NoNodes,
    /// A read quorum of zero would return without asking anybody.
    #[error("a read quorum must be at least 1, got r = 0")]
    ZeroReadQuorum,
    /// Fewer nodes answered than the read quorum needs.
    #[error("read quorum not reached: {got} nodes replied, {needed} needed")]
    NotEnoughReplies { got: usize, needed: usize },
}

/// Majority quorums over `n` nodes: `W = R = floor(n/2) + 1`, so `W + R > N`.
/// `n - W` nodes may be down and both quorums still form (1 of 3, 2 of 5).
///
/// Returns [`QuorumError::NoNodes`] for `n = 0`.
pub fn quorum_config(n: usize) -> Result<QuorumConfig, QuorumError> {
    if n == 0 {
        return Err(QuorumError::NoNodes);
    }
    let majority = n / 2 + 1;
    let config = QuorumConfig {
        n,
        w: majority,
        r: majority,
    };
    assert!(config.read_sees_latest_write());
    Ok(config)
}

/// Reads a key from a quorum.
///
/// `replies` holds one entry per node that answered: `None` when that node
/// has no value for the key, `Some((value, lsn))` where `lsn` is the LSN of
/// the write that set the value. Nodes that did not answer are simply
/// absent.
///
/// Requires at least `r` replies ([`QuorumError::NotEnoughReplies`]
/// otherwise; `r = 0` is [`QuorumError::ZeroReadQuorum`]). Returns the value
/// with the highest LSN, or `None` when no replying node has the key. Two
/// replies with the same LSN come from the same write and so hold the same
/// value; the first one is returned.
///
/// Why this returns the latest acknowledged write: that write reached `W`
/// nodes, these replies come from `R` nodes, and `W + R > N` forces at least
/// one node into both sets. That node reports the write's LSN (or a later
/// one), and no node can report a higher LSN for an older write, because
/// LSNs only grow.
pub fn quorum_read<V: Clone>(
    replies: &[Option<(V, u64)>],
    r: usize,
) -> Result<Option<V>, QuorumError> {
    if r == 0 {
        return Err(QuorumError::ZeroReadQuorum);
    }
    if replies.len() < r {
        return Err(QuorumError::NotEnoughReplies {
            got: replies.len(),
            needed: r,
        });
    }
    let mut best: Option<&(V, u64)> = None;
    for reply in replies.iter().flatten() {
        match best {
            Some((_, best_lsn)) if reply.1 <= *best_lsn => {}
            _ => best = Some(reply),
        }
    }
    Ok(best.map(|(value, _)| value.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_sizes_for_one_to_seven_nodes() {
        // (n, w = r, tolerated failures)
        let table = [
            (1, 1, 0),
            (2, 2, 0),
            (3, 2, 1),
            (4, 3, 1),
            (5, 3, 2),
            (6, 4, 2),
            (7, 4, 3),
        ];
        for (n, majority, failures) in table {
            let config = quorum_config(n).unwrap();
            assert_eq!(
                config,
                QuorumConfig {
                    n,
                    w: majority,
                    r: majority
                },
                "n = {n}"
            );
            assert!(config.w + config.r > config.n, "n = {n}");
            assert!(config.read_sees_latest_write(), "n = {n}");
            assert_eq!(config.tolerated_failures(), failures, "n = {n}");
        }
    }

    #[test]
    fn zero_nodes_is_an_error() {
        assert_eq!(quorum_config(0), Err(QuorumError::NoNodes));
    }

    #[test]
    fn non_overlapping_config_is_flagged() {
        let config = QuorumConfig { n: 4, w: 2, r: 2 };
        assert!(!config.read_sees_latest_write());
    }

    #[test]
    fn read_returns_value_with_highest_lsn() {
        let replies = [
            Some(("old", 10)),
            None,
            Some(("new", 30)),
            Some(("mid", 20)),
        ];
        assert_eq!(quorum_read(&replies, 3), Ok(Some("new")));
    }

    #[test]
    fn read_of_missing_key_is_none() {
        let replies: [Option<(&str, u64)>; 3] = [None, None, None];
        assert_eq!(quorum_read(&replies, 2), Ok(None));
    }

    #[test]
    fn read_with_too_few_replies_fails() {
        let replies = [Some(("a", 1))];
        assert_eq!(
            quorum_read(&replies, 2),
            Err(QuorumError::NotEnoughReplies { got: 1, needed: 2 })
        );
    }

    #[test]
    fn read_quorum_of_zero_is_refused() {
        let replies = [Some(("a", 1))];
        assert_eq!(quorum_read(&replies, 0), Err(QuorumError::ZeroReadQuorum));
    }

    #[test]
    fn equal_lsns_return_the_first_reply() {
        let replies = [Some(("first", 5)), Some(("second", 5))];
        assert_eq!(quorum_read(&replies, 2), Ok(Some("first")));
    }
}
