//! Quorum arithmetic: every write quorum meets every read quorum, so a read
//! returns the latest acknowledged write.

use proptest::prelude::*;
use walship_replication::quorum::{quorum_config, quorum_read};

/// A random subset of `0..n` of exactly `size` nodes.
fn subset(n: usize, size: usize) -> impl Strategy<Value = Vec<usize>> {
    Just((0..n).collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(move |nodes| nodes[..size].to_vec())
}

fn config_and_sets() -> impl Strategy<Value = (usize, Vec<usize>, Vec<usize>)> {
    (1usize..=15).prop_flat_map(|n| {
        let c = quorum_config(n).unwrap();
        (Just(n), subset(n, c.w), subset(n, c.r))
    })
}

#[test]
fn quorum_read_over_one_to_seven_nodes_sees_the_last_majority_write() {
    for n in 1..=7usize {
        let c = quorum_config(n).unwrap();
        // Write "new" at LSN 2 to the first W nodes; the rest hold "old".
        let nodes: Vec<Option<(&str, u64)>> = (0..n)
            .map(|i| {
                if i < c.w {
                    Some(("new", 2))
                } else {
                    Some(("old", 1))
                }
            })
            .collect();
        // Read from the last R nodes: the overlap is as small as it gets.
        let replies = &nodes[n - c.r..];
        assert_eq!(quorum_read(replies, c.r), Ok(Some("new")), "n = {n}");
        // One reply short of R is refused.
        assert!(quorum_read(&replies[1..], c.r).is_err(), "n = {n}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_write_quorum_meets_every_read_quorum((n, write_set, read_set) in config_and_sets()) {
        let c = quorum_config(n).unwrap();
        prop_assert!(c.w + c.r > c.n);
        prop_assert!(write_set.iter().any(|node| read_set.contains(node)),
            "n = {} W = {:?} R = {:?} do not meet", n, write_set, read_set);
    }

    /// Model: a sequence of writes, each acknowledged once W random nodes
    /// hold it; then a read from R random nodes returns the last write.
    #[test]
    fn quorum_read_returns_the_last_acknowledged_write(
        (n, writes, read_set) in (1usize..=9).prop_flat_map(|n| {
            let c = quorum_config(n).unwrap();
            (Just(n), proptest::collection::vec(subset(n, c.w), 0..6), subset(n, c.r))
        })
    ) {
        let c = quorum_config(n).unwrap();
        let mut nodes: Vec<Option<(usize, u64)>> = vec![None; n];
        for (i, write_set) in writes.iter().enumerate() {
            let lsn = (i as u64 + 1) * 100;
            for &node in write_set {
                nodes[node] = Some((i, lsn));
            }
        }
        let replies: Vec<_> = read_set.iter().map(|&node| nodes[node]).collect();
        let expected = writes.len().checked_sub(1);
        prop_assert_eq!(quorum_read(&replies, c.r), Ok(expected));
    }
}
