//! synchronous_commit and synchronous_standby_names: parsing, sync states and
//! the confirmed LSN, against PostgreSQL's documented behaviour.

use proptest::prelude::*;
use walship_replication::sync_rule::{
    StandbyPattern, StandbyProgress, SyncMethod, SyncStandbyNames, SyncStandbyNamesError,
    SyncState, SynchronousCommit,
};

use SyncState::{Async, Potential, Quorum, Sync};
use SynchronousCommit::{Local, Off, On, RemoteApply, RemoteWrite};

fn rule(s: &str) -> SyncStandbyNames {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

/// A streaming standby whose write/flush/apply positions are all `lsn`.
fn up(name: &str, lsn: u64) -> StandbyProgress {
    StandbyProgress {
        name: name.into(),
        streaming: true,
        write_lsn: lsn,
        flush_lsn: lsn,
        apply_lsn: lsn,
    }
}

fn catching_up(name: &str, lsn: u64) -> StandbyProgress {
    StandbyProgress {
        streaming: false,
        ..up(name, lsn)
    }
}

// ---------------------------------------------------------------- synchronous_commit

#[test]
fn synchronous_commit_accepts_postgres_spellings() {
    let table = [
        ("off", Off),
        ("local", Local),
        ("remote_write", RemoteWrite),
        ("on", On),
        ("remote_apply", RemoteApply),
        ("true", On),
        ("yes", On),
        ("1", On),
        ("false", Off),
        ("no", Off),
        ("0", Off),
        ("ON", On),
        (" Remote_Apply ", RemoteApply),
    ];
    for (text, level) in table {
        assert_eq!(text.parse::<SynchronousCommit>(), Ok(level), "{text:?}");
    }
}

#[test]
fn synchronous_commit_rejects_other_words() {
    for text in ["", "of", "remote", "remote-write", "2", "sync", "tru"] {
        let err = text.parse::<SynchronousCommit>().unwrap_err();
        assert!(err.to_string().contains("remote_apply"), "{err}");
    }
}

#[test]
fn synchronous_commit_displays_canonical_name_and_roundtrips() {
    for level in SynchronousCommit::ALL {
        assert_eq!(level.to_string().parse::<SynchronousCommit>(), Ok(level));
    }
    assert_eq!(RemoteWrite.to_string(), "remote_write");
    assert_eq!(SynchronousCommit::default(), On);
}

// ---------------------------------------------------------------- parsing

#[test]
fn each_form_parses_to_method_count_and_list() {
    let table: &[(&str, SyncMethod, usize, &[&str])] = &[
        (
            "FIRST 2 (a, b, c)",
            SyncMethod::Priority,
            2,
            &["a", "b", "c"],
        ),
        ("first 1 (a)", SyncMethod::Priority, 1, &["a"]),
        ("ANY 2 (a, b, c)", SyncMethod::Quorum, 2, &["a", "b", "c"]),
        ("any 1(a,b)", SyncMethod::Quorum, 1, &["a", "b"]),
        ("2 (a, b)", SyncMethod::Priority, 2, &["a", "b"]),
        ("a, b", SyncMethod::Priority, 1, &["a", "b"]),
        ("a", SyncMethod::Priority, 1, &["a"]),
        ("*", SyncMethod::Priority, 1, &["*"]),
        ("ANY 3 (a, *)", SyncMethod::Quorum, 3, &["a", "*"]),
        ("1, 2", SyncMethod::Priority, 1, &["1", "2"]),
        (
            "  FIRST   1   (  standby-1 ,standby_2 )  ",
            SyncMethod::Priority,
            1,
            &["standby-1", "standby_2"],
        ),
    ];
    for (text, method, num_sync, names) in table {
        let r = rule(text);
        assert_eq!(r.method(), *method, "{text:?}");
        assert_eq!(r.num_sync(), *num_sync, "{text:?}");
        let shown: Vec<String> = r.patterns().iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, *names, "{text:?}");
        assert!(!r.is_empty());
    }
}

#[test]
fn empty_setting_means_no_synchronous_standbys() {
    for text in ["", "   ", "\t\n"] {
        let r = rule(text);
        assert!(r.is_empty());
        assert_eq!(r.num_sync(), 0);
        assert_eq!(r.to_string(), "");
        assert_eq!(r, SyncStandbyNames::default());
    }
}

#[test]
fn unquoted_names_are_lowercased_quoted_names_keep_case_spaces_and_commas() {
    let r = rule(r#"FIRST 2 (Alpha, "Beta Two", "x, y", "say ""hi""", "first")"#);
    assert_eq!(
        r.patterns(),
        &[
            StandbyPattern::Name("alpha".into()),
            StandbyPattern::Quoted("Beta Two".into()),
            StandbyPattern::Quoted("x, y".into()),
            StandbyPattern::Quoted("say \"hi\"".into()),
            StandbyPattern::Quoted("first".into()),
        ]
    );
    assert_eq!(
        r.to_string(),
        r#"FIRST 2 (alpha, "Beta Two", "x, y", "say ""hi""", "first")"#
    );
}

#[test]
fn canonical_display_roundtrips() {
    for text in ["a, b", "2 (a, b)", "any 1 (*)", r#"First 1 ("A", b, *)"#] {
        let r = rule(text);
        let shown = r.to_string();
        assert_eq!(rule(&shown), r, "{text:?} displayed as {shown:?}");
    }
    assert_eq!(rule("a, B").to_string(), "FIRST 1 (a, b)");
    assert_eq!(rule("3 (a, b, c)").to_string(), "FIRST 3 (a, b, c)");
}

#[test]
fn parse_errors_are_specific() {
    use SyncStandbyNamesError as E;
    type Check = fn(&E) -> bool;
    let cases: &[(&str, Check)] = &[
        ("FIRST 0 (a)", |e| matches!(e, E::ZeroNumSync)),
        ("ANY 0 (a, b)", |e| matches!(e, E::ZeroNumSync)),
        ("0 (a)", |e| matches!(e, E::ZeroNumSync)),
        ("FIRST 3 (a, b)", |e| {
            matches!(
                e,
                E::NumSyncExceedsList {
                    num_sync: 3,
                    names: 2
                }
            )
        }),
        ("ANY 4 (a, b, c)", |e| {
            matches!(
                e,
                E::NumSyncExceedsList {
                    num_sync: 4,
                    names: 3
                }
            )
        }),
        ("FIRST 1 (a, b", |e| matches!(e, E::UnclosedParen { at: 8 })),
        ("FIRST 1 (a))", |e| {
            matches!(e, E::UnmatchedCloseParen { at: 11 })
        }),
        ("a, b)", |e| matches!(e, E::UnmatchedCloseParen { at: 4 })),
        ("FIRST 1 ()", |e| matches!(e, E::EmptyList)),
        (r#"FIRST 1 ("a)"#, |e| {
            matches!(e, E::UnterminatedQuote { at: 9 })
        }),
        (r#"FIRST 1 ("")"#, |e| {
            matches!(e, E::EmptyQuotedName { at: 9 })
        }),
        ("first", |e| matches!(e, E::KeywordAsName { .. })),
        ("any, b", |e| matches!(e, E::KeywordAsName { .. })),
        ("a, first", |e| matches!(e, E::KeywordAsName { .. })),
        ("FIRST (a)", |e| matches!(e, E::Syntax { .. })),
        ("FIRST 1", |e| matches!(e, E::Syntax { .. })),
        ("FIRST 1 (a b)", |e| matches!(e, E::Syntax { .. })),
        ("FIRST 1 (a, )", |e| matches!(e, E::Syntax { .. })),
        ("a,", |e| matches!(e, E::Syntax { .. })),
        (",a", |e| matches!(e, E::Syntax { .. })),
        ("(a, b)", |e| matches!(e, E::Syntax { .. })),
        ("FIRST 1 (a) b", |e| matches!(e, E::Syntax { .. })),
        ("a*b", |e| matches!(e, E::Syntax { .. })),
        ("FIRST 99999999999999999999999 (*)", |e| {
            matches!(e, E::NumSyncOverflow { .. })
        }),
    ];
    for (text, check) in cases {
        let err = SyncStandbyNames::parse(text).expect_err(text);
        assert!(check(&err), "{text:?} gave {err:?}");
        assert!(
            err.to_string().contains("synchronous_standby_names"),
            "{err}"
        );
    }
}

#[test]
fn num_sync_may_exceed_the_list_when_it_holds_a_wildcard() {
    let r = rule("ANY 5 (a, *)");
    assert_eq!(r.num_sync(), 5);
}

#[test]
fn too_many_entries_are_refused() {
    let text = vec!["s"; 5000].join(", ");
    assert!(matches!(
        SyncStandbyNames::parse(&text),
        Err(SyncStandbyNamesError::TooManyEntries { .. })
    ));
}

#[test]
fn new_checks_what_parse_checks() {
    use StandbyPattern::*;
    assert!(SyncStandbyNames::new(SyncMethod::Quorum, 1, vec![Name("Upper".into())]).is_err());
    assert!(SyncStandbyNames::new(SyncMethod::Quorum, 1, vec![Name("any".into())]).is_err());
    assert!(SyncStandbyNames::new(SyncMethod::Quorum, 1, vec![Quoted(String::new())]).is_err());
    assert!(SyncStandbyNames::new(SyncMethod::Quorum, 2, vec![Name("a".into())]).is_err());
    assert!(SyncStandbyNames::new(SyncMethod::Quorum, 2, vec![Wildcard]).is_ok());
}

// ---------------------------------------------------------------- matching

#[test]
fn unquoted_names_match_any_case_quoted_names_match_exactly() {
    let r = rule(r#"ANY 1 (alpha, "Beta")"#);
    assert_eq!(r.sync_priority("ALPHA"), Some(1));
    assert_eq!(r.sync_priority("Alpha"), Some(1));
    assert_eq!(r.sync_priority("Beta"), Some(1));
    assert_eq!(r.sync_priority("beta"), None);
    let r = rule(r#"FIRST 1 (alpha, "Beta")"#);
    assert_eq!(r.sync_priority("Beta"), Some(2));
    assert_eq!(r.sync_priority("gamma"), None);
}

#[test]
fn wildcard_matches_everyone_at_its_position() {
    let r = rule("FIRST 1 (a, *, b)");
    assert_eq!(r.sync_priority("a"), Some(1));
    assert_eq!(r.sync_priority("zzz"), Some(2));
    // b matches `*` first, like PostgreSQL.
    assert_eq!(r.sync_priority("b"), Some(2));
}

// ---------------------------------------------------------------- FIRST k

#[test]
fn first_k_picks_the_first_k_streaming_in_list_order() {
    let r = rule("FIRST 2 (s1, s2, s3)");
    // Given in connection order, not list order.
    let standbys = [
        up("s3", 300),
        up("s2", 200),
        up("s1", 100),
        up("other", 999),
    ];
    assert_eq!(r.states(&standbys), vec![Potential, Sync, Sync, Async]);
    // min(s1, s2)
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(100));
}

#[test]
fn first_k_fails_over_to_a_potential_standby_when_a_sync_one_disconnects() {
    let r = rule("FIRST 1 (s1, s2, s3)");
    let mut standbys = vec![up("s1", 50), up("s2", 80), up("s3", 90)];
    assert_eq!(r.states(&standbys), vec![Sync, Potential, Potential]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(50));

    // s1 drops out of streaming (reconnecting): s2 takes over.
    standbys[0].streaming = false;
    assert_eq!(r.states(&standbys), vec![Potential, Sync, Potential]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(80));

    // s1 disconnects entirely and s2 too: s3.
    let standbys = vec![up("s3", 90)];
    assert_eq!(r.states(&standbys), vec![Sync]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(90));
}

#[test]
fn first_k_waits_when_fewer_than_k_are_streaming() {
    let r = rule("FIRST 2 (s1, s2, s3)");
    let standbys = [up("s1", 100), catching_up("s2", 100), up("x", 100)];
    assert_eq!(r.states(&standbys), vec![Sync, Potential, Async]);
    assert_eq!(r.confirmed_lsn(On, &standbys), None);
    assert_eq!(r.confirmed_lsn(On, &[]), None);
}

#[test]
fn bare_list_is_first_one() {
    let r = rule("s1, s2");
    let standbys = [up("s2", 20), up("s1", 10)];
    assert_eq!(r.states(&standbys), vec![Potential, Sync]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(10));
}

#[test]
fn wildcard_under_first_prefers_earlier_connections() {
    let r = rule("FIRST 2 (*)");
    let standbys = [up("a", 10), up("b", 30), up("c", 20)];
    assert_eq!(r.states(&standbys), vec![Sync, Sync, Potential]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(10));
}

#[test]
fn named_entry_outranks_wildcard() {
    let r = rule("FIRST 1 (*, b)");
    // `*` comes first, so every standby has priority 1; earliest wins.
    let standbys = [up("a", 10), up("b", 30)];
    assert_eq!(r.states(&standbys), vec![Sync, Potential]);
    let r = rule("FIRST 1 (b, *)");
    assert_eq!(r.states(&standbys), vec![Potential, Sync]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(30));
}

// ---------------------------------------------------------------- ANY k

#[test]
fn any_k_waits_for_the_kth_fastest() {
    let r = rule("ANY 2 (s1, s2, s3)");
    let standbys = [up("s1", 100), up("s2", 300), up("s3", 200), up("x", 999)];
    assert_eq!(r.states(&standbys), vec![Quorum, Quorum, Quorum, Async]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(200));
}

#[test]
fn any_k_is_not_held_back_by_a_straggler() {
    let r = rule("ANY 2 (s1, s2, s3)");
    let standbys = [up("s1", 1000), up("s2", 5), up("s3", 990)];
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(990));
    // With the straggler gone entirely, the quorum still forms.
    let standbys = [up("s1", 1000), catching_up("s2", 5), up("s3", 990)];
    assert_eq!(r.states(&standbys), vec![Quorum, Potential, Quorum]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(990));
    // But not with two gone.
    let standbys = [up("s1", 1000)];
    assert_eq!(r.confirmed_lsn(On, &standbys), None);
}

#[test]
fn any_with_wildcard_counts_every_standby() {
    let r = rule("ANY 3 (*)");
    let standbys = [up("a", 1), up("b", 2), up("c", 3), up("d", 4)];
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(2));
    assert_eq!(r.states(&standbys), vec![Quorum; 4]);
}

// ---------------------------------------------------------------- levels

#[test]
fn each_level_reads_its_own_position() {
    let r = rule("ANY 1 (s1)");
    let standbys = [StandbyProgress {
        name: "s1".into(),
        streaming: true,
        write_lsn: 30,
        flush_lsn: 20,
        apply_lsn: 10,
    }];
    assert_eq!(r.confirmed_lsn(RemoteWrite, &standbys), Some(30));
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(20));
    assert_eq!(r.confirmed_lsn(RemoteApply, &standbys), Some(10));
    assert_eq!(r.confirmed_lsn(Local, &standbys), Some(u64::MAX));
    assert_eq!(r.confirmed_lsn(Off, &[]), Some(u64::MAX));
}

#[test]
fn no_synchronous_standbys_means_nothing_to_wait_for() {
    let r = rule("");
    let standbys = [up("a", 1)];
    for level in SynchronousCommit::ALL {
        assert_eq!(r.confirmed_lsn(level, &standbys), Some(u64::MAX));
    }
    assert_eq!(r.states(&standbys), vec![Async]);
}

// ---------------------------------------------------------------- duplicates and case

#[test]
fn duplicate_names_count_once_with_the_highest_lsn() {
    // A stale connection and a fresh one from the same standby must not
    // form a quorum of two on their own.
    let r = rule("ANY 2 (s1, s2)");
    let standbys = [up("s1", 10), up("s1", 50)];
    assert_eq!(r.confirmed_lsn(On, &standbys), None);
    assert_eq!(r.states(&standbys), vec![Potential, Quorum]);

    let standbys = [up("s1", 10), up("s1", 50), up("s2", 40)];
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(40));

    let r = rule("FIRST 1 (s1, s2)");
    let standbys = [up("s1", 10), up("s2", 99), up("s1", 50)];
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(50));
    assert_eq!(r.states(&standbys), vec![Potential, Potential, Sync]);
}

#[test]
fn case_variants_of_an_unquoted_name_are_different_standbys() {
    // Unquoted s1 matches both; they are two standbys, not duplicates.
    let r = rule("ANY 2 (s1, *)");
    let standbys = [up("S1", 10), up("s1", 20)];
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(10));
}

#[test]
fn quoted_name_does_not_match_other_case() {
    let r = rule(r#"FIRST 1 ("Standby")"#);
    let standbys = [up("standby", 10), up("Standby", 20)];
    assert_eq!(r.states(&standbys), vec![Async, Sync]);
    assert_eq!(r.confirmed_lsn(On, &standbys), Some(20));
}

// ---------------------------------------------------------------- properties

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn standby_strategy() -> impl Strategy<Value = StandbyProgress> {
    (
        0..NAMES.len(),
        any::<bool>(),
        0u64..1000,
        0u64..1000,
        0u64..1000,
    )
        .prop_map(|(n, streaming, x, y, z)| {
            // write >= flush >= apply, as a real standby reports.
            let mut v = [x, y, z];
            v.sort_unstable();
            StandbyProgress {
                name: NAMES[n].to_owned(),
                streaming,
                write_lsn: v[2],
                flush_lsn: v[1],
                apply_lsn: v[0],
            }
        })
}

fn pattern_strategy() -> impl Strategy<Value = StandbyPattern> {
    prop_oneof![
        4 => (0..NAMES.len()).prop_map(|n| StandbyPattern::Name(NAMES[n].to_owned())),
        1 => Just(StandbyPattern::Wildcard),
    ]
}

fn rule_strategy() -> impl Strategy<Value = SyncStandbyNames> {
    (
        prop_oneof![Just(SyncMethod::Priority), Just(SyncMethod::Quorum)],
        proptest::collection::vec(pattern_strategy(), 1..5),
        1usize..5,
    )
        .prop_filter_map("num_sync within the list", |(method, patterns, k)| {
            SyncStandbyNames::new(method, k, patterns).ok()
        })
}

fn level_strategy() -> impl Strategy<Value = SynchronousCommit> {
    prop_oneof![Just(RemoteWrite), Just(On), Just(RemoteApply)]
}

/// Distinct-name, streaming, matching standbys and their best position at
/// `level`: what the rule may count.
fn eligible_best(
    r: &SyncStandbyNames,
    level: SynchronousCommit,
    standbys: &[StandbyProgress],
) -> Vec<u64> {
    let mut best: std::collections::BTreeMap<&str, u64> = Default::default();
    for s in standbys {
        if s.streaming && r.sync_priority(&s.name).is_some() {
            let lsn = level.standby_lsn(s).unwrap();
            let e = best.entry(&s.name).or_insert(lsn);
            *e = (*e).max(lsn);
        }
    }
    best.into_values().collect()
}

fn quoted_name_strategy() -> impl Strategy<Value = StandbyPattern> {
    "[a-zA-Z0-9 ,()\"*é_-]{1,8}".prop_map(StandbyPattern::Quoted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The durability guarantee: a confirmed LSN is held by at least k
    /// distinct eligible standbys.
    #[test]
    fn confirmed_lsn_is_held_by_k_distinct_eligible_standbys(
        r in rule_strategy(),
        level in level_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 0..8),
    ) {
        let eligible = eligible_best(&r, level, &standbys);
        match r.confirmed_lsn(level, &standbys) {
            Some(lsn) => {
                let holders = eligible.iter().filter(|&&l| l >= lsn).count();
                prop_assert!(holders >= r.num_sync(), "{} holders < k = {}", holders, r.num_sync());
            }
            None => prop_assert!(eligible.len() < r.num_sync()),
        }
    }

    /// ANY k confirms exactly the k-th highest eligible position, and
    /// neither method ever exceeds it.
    #[test]
    fn confirmed_lsn_never_exceeds_the_kth_highest(
        r in rule_strategy(),
        level in level_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 0..8),
    ) {
        let mut eligible = eligible_best(&r, level, &standbys);
        eligible.sort_unstable_by(|a, b| b.cmp(a));
        let kth = eligible.get(r.num_sync() - 1).copied();
        let confirmed = r.confirmed_lsn(level, &standbys);
        match r.method() {
            SyncMethod::Quorum => prop_assert_eq!(confirmed, kth),
            SyncMethod::Priority => {
                prop_assert_eq!(confirmed.is_some(), kth.is_some());
                if let (Some(c), Some(k)) = (confirmed, kth) {
                    prop_assert!(c <= k);
                }
            }
        }
    }

    /// Same list: a priority rule never confirms more than a quorum rule.
    #[test]
    fn first_never_confirms_more_than_any(
        r in rule_strategy(),
        level in level_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 0..8),
    ) {
        let first = SyncStandbyNames::new(SyncMethod::Priority, r.num_sync(), r.patterns().to_vec()).unwrap();
        let any = SyncStandbyNames::new(SyncMethod::Quorum, r.num_sync(), r.patterns().to_vec()).unwrap();
        match (first.confirmed_lsn(level, &standbys), any.confirmed_lsn(level, &standbys)) {
            (Some(f), Some(a)) => prop_assert!(f <= a),
            (None, None) => {}
            (f, a) => prop_assert!(false, "FIRST {:?} vs ANY {:?}", f, a),
        }
    }

    /// Raising one standby's positions never lowers the confirmed LSN.
    #[test]
    fn raising_a_standby_lsn_never_lowers_confirmed_lsn(
        r in rule_strategy(),
        level in level_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 1..8),
        which in any::<prop::sample::Index>(),
        raise in 1u64..500,
    ) {
        let before = r.confirmed_lsn(level, &standbys);
        let mut raised = standbys.clone();
        let s = &mut raised[which.index(standbys.len())];
        s.write_lsn += raise;
        s.flush_lsn += raise;
        s.apply_lsn += raise;
        let after = r.confirmed_lsn(level, &raised);
        // `None < Some(_)` in Option's order.
        prop_assert!(after >= before, "{:?} -> {:?}", before, after);
    }

    /// Stronger levels never confirm more than weaker ones (write >= flush
    /// >= apply on every standby).
    #[test]
    fn stronger_levels_confirm_no_more(
        r in rule_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 0..8),
    ) {
        let w = r.confirmed_lsn(RemoteWrite, &standbys);
        let f = r.confirmed_lsn(On, &standbys);
        let a = r.confirmed_lsn(RemoteApply, &standbys);
        prop_assert!(w >= f && f >= a, "{:?} {:?} {:?}", w, f, a);
    }

    /// Standbys that are not streaming, or not listed, change nothing.
    #[test]
    fn ineligible_standbys_do_not_matter(
        r in rule_strategy(),
        level in level_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 0..8),
        lsn in 0u64..u64::MAX,
    ) {
        let before = r.confirmed_lsn(level, &standbys);
        let mut more = standbys.clone();
        more.push(catching_up("a", lsn));
        if !r.patterns().contains(&StandbyPattern::Wildcard) {
            more.push(up("not-listed", lsn));
        }
        prop_assert_eq!(r.confirmed_lsn(level, &more), before);
    }

    /// sync_state counts agree with the rule.
    #[test]
    fn states_agree_with_the_rule(
        r in rule_strategy(),
        standbys in proptest::collection::vec(standby_strategy(), 0..8),
    ) {
        let states = r.states(&standbys);
        prop_assert_eq!(states.len(), standbys.len());
        let eligible = eligible_best(&r, On, &standbys).len();
        let count = |state| states.iter().filter(|&&s| s == state).count();
        match r.method() {
            SyncMethod::Priority => {
                prop_assert_eq!(count(Sync), eligible.min(r.num_sync()));
                prop_assert_eq!(count(Quorum), 0);
            }
            SyncMethod::Quorum => {
                prop_assert_eq!(count(Quorum), eligible);
                prop_assert_eq!(count(Sync), 0);
            }
        }
        for (s, state) in standbys.iter().zip(&states) {
            prop_assert_eq!(*state == Async, r.sync_priority(&s.name).is_none());
            if matches!(state, Sync | Quorum) {
                prop_assert!(s.streaming);
            }
        }
    }

    #[test]
    fn display_parse_roundtrips(
        method in prop_oneof![Just(SyncMethod::Priority), Just(SyncMethod::Quorum)],
        patterns in proptest::collection::vec(prop_oneof![pattern_strategy(), quoted_name_strategy()], 1..6),
        k in 1usize..6,
    ) {
        if let Ok(r) = SyncStandbyNames::new(method, k, patterns) {
            let shown = r.to_string();
            prop_assert_eq!(SyncStandbyNames::parse(&shown), Ok(r));
        }
    }

    #[test]
    fn parser_never_panics(text in "[a-zA-Z0-9 ,()\"*_\\-é\t]{0,40}") {
        let _ = SyncStandbyNames::parse(&text);
        let _ = text.parse::<SynchronousCommit>();
    }

    #[test]
    fn parser_never_panics_on_any_string(text in any::<String>()) {
        let _ = SyncStandbyNames::parse(&text);
    }
}
