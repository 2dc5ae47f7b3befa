//! PostgreSQL's synchronous-commit rules, as plain code over plain data.
//!
//! Two settings decide when a write is acknowledged:
//!
//! - [`SynchronousCommit`] (`synchronous_commit`): which standby progress
//!   counts — written (`remote_write`), fsynced (`on`) or applied
//!   (`remote_apply`) — or none at all (`off`, `local`).
//! - [`SyncStandbyNames`] (`synchronous_standby_names`): which standbys
//!   count, and how many must confirm: `FIRST k (a, b, c)` (priority) or
//!   `ANY k (a, b, c)` (quorum).
//!
//! The WAL sender reports each standby's progress as a
//! [`StandbyProgress`]; [`SyncStandbyNames::confirmed_lsn`] turns those into
//! the highest LSN that the rule considers confirmed, and every waiting
//! write at or below it may be acknowledged. [`SyncStandbyNames::states`]
//! gives the `sync_state` column of PostgreSQL's `pg_stat_replication`.
//!
//! # Where walship differs from PostgreSQL
//! - A double-quoted name matches a standby name exactly (case-sensitive);
//!   an unquoted name matches ignoring ASCII case. PostgreSQL compares both
//!   ignoring case.
//! - Unquoted names may contain any character other than white space,
//!   `,`, `(`, `)`, `"` and `*` (so `standby-1` needs no quotes);
//!   PostgreSQL allows only identifier characters.
//! - A name is held by one standby connection at a time (a second standby
//!   under a name in use is refused at admission), so each name counts
//!   once. Should two entries with one name ever be evaluated, the one with
//!   the highest LSN stands for it.

use std::collections::HashMap;

/// Longest standby name accepted.
pub const MAX_STANDBY_NAME_BYTES: usize = 64;

/// Checks a standby's name (`--name`, and the name in a standby's Hello):
/// 1 to 64 ASCII letters, digits, `_`, `-` and `.`, so it can be written
/// unquoted in `synchronous_standby_names` and appear as-is in INFO lines,
/// metrics labels and slot file names. PostgreSQL limits slot names
/// likewise (`[a-z0-9_]`).
pub fn check_standby_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_STANDBY_NAME_BYTES {
        return Err(format!(
            "a standby name must be 1 to {MAX_STANDBY_NAME_BYTES} characters, got {} bytes",
            name.len()
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(c) => Err(format!(
            "a standby name may hold only ASCII letters, digits, '_', '-' and '.', not {c:?} (in {name:?})"
        )),
        None => Ok(()),
    }
}
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Most entries `synchronous_standby_names` may list.
pub const SYNC_STANDBY_NAMES_MAX_ENTRIES: usize = 1024;

/// PostgreSQL's `synchronous_commit`: what a write waits for before it is
/// acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SynchronousCommit {
    /// Acknowledge before the local WAL flush; a crash may lose recent
    /// acknowledged writes (never corrupt the store).
    Off,
    /// Wait for the local WAL flush only.
    Local,
    /// Wait for the local flush and for the synchronous standbys to have
    /// written (not fsynced) the WAL.
    RemoteWrite,
    /// Wait for the local flush and for the synchronous standbys to have
    /// fsynced the WAL. PostgreSQL's default.
    #[default]
    On,
    /// Wait for the local flush and for the synchronous standbys to have
    /// applied the WAL, so reads there see the write.
    RemoteApply,
}

impl SynchronousCommit {
    /// All levels, weakest first.
    pub const ALL: [SynchronousCommit; 5] = [
        SynchronousCommit::Off,
        SynchronousCommit::Local,
        SynchronousCommit::RemoteWrite,
        SynchronousCommit::On,
        SynchronousCommit::RemoteApply,
    ];

    /// The canonical spelling, as PostgreSQL shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::On => "on",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }

    /// True when this level waits for standbys (when any are configured).
    pub fn waits_for_standbys(self) -> bool {
        matches!(
            self,
            SynchronousCommit::RemoteWrite | SynchronousCommit::On | SynchronousCommit::RemoteApply
        )
    }

    /// The standby position this level waits for, or `None` for `off` and
    /// `local`.
    pub fn standby_lsn(self, standby: &StandbyProgress) -> Option<u64> {
        match self {
            SynchronousCommit::Off | SynchronousCommit::Local => None,
            SynchronousCommit::RemoteWrite => Some(standby.write_lsn),
            SynchronousCommit::On => Some(standby.flush_lsn),
            SynchronousCommit::RemoteApply => Some(standby.apply_lsn),
        }
    }
}

impl fmt::Display for SynchronousCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `synchronous_commit` value that is not one of PostgreSQL's spellings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid synchronous_commit {value:?}: expected one of off, local, remote_write, on, remote_apply (or true, false, yes, no, 1, 0)")]
pub struct ParseSynchronousCommitError {
    /// The rejected input.
    pub value: String,
}

impl FromStr for SynchronousCommit {
    type Err = ParseSynchronousCommitError;

    /// Accepts what PostgreSQL accepts for this enum, ignoring ASCII case
    /// and surrounding white space: `off`, `local`, `remote_write`, `on`,
    /// `remote_apply`, and the boolean spellings `true`/`yes`/`1` (= on) and
    /// `false`/`no`/`0` (= off).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s.trim().to_ascii_lowercase();
        Ok(match value.as_str() {
            "off" | "false" | "no" | "0" => SynchronousCommit::Off,
            "local" => SynchronousCommit::Local,
            "remote_write" => SynchronousCommit::RemoteWrite,
            "on" | "true" | "yes" | "1" => SynchronousCommit::On,
            "remote_apply" => SynchronousCommit::RemoteApply,
            _ => {
                return Err(ParseSynchronousCommitError {
                    value: s.to_owned(),
                })
            }
        })
    }
}

/// One connected standby, as the WAL sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyProgress {
    /// The name the standby sent in its `Hello`.
    pub name: String,
    /// True once the standby has caught up and streams live WAL; a standby
    /// still receiving a base backup or catching up never counts.
    pub streaming: bool,
    /// Last LSN written on the standby (not yet fsynced).
    pub write_lsn: u64,
    /// Last LSN fsynced on the standby.
    pub flush_lsn: u64,
    /// Last LSN applied (visible to reads) on the standby.
    pub apply_lsn: u64,
}

/// A standby's `sync_state`, as in PostgreSQL's `pg_stat_replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncState {
    /// Not listed in `synchronous_standby_names`; never waited for.
    Async,
    /// Listed, but not counted right now (not streaming, beyond the first
    /// `k` under FIRST, or a duplicate name); takes over when a synchronous
    /// standby goes away.
    Potential,
    /// One of the `k` standbys a FIRST rule waits for.
    Sync,
    /// A candidate of an ANY rule: any `k` of them confirm a write.
    Quorum,
}

impl SyncState {
    /// The lowercase name PostgreSQL shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Async => "async",
            SyncState::Potential => "potential",
            SyncState::Sync => "sync",
            SyncState::Quorum => "quorum",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the `k` synchronous standbys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncMethod {
    /// `FIRST k (...)`: the first `k` streaming standbys in list order.
    Priority,
    /// `ANY k (...)`: any `k` of the listed streaming standbys.
    Quorum,
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StandbyPattern {
    /// `*`: matches every standby name.
    Wildcard,
    /// An unquoted name, stored lowercased; matches ignoring ASCII case.
    Name(String),
    /// A double-quoted name, stored as written; matches exactly.
    Quoted(String),
}

impl StandbyPattern {
    /// True when a standby called `name` matches this entry.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            StandbyPattern::Wildcard => true,
            StandbyPattern::Name(pattern) => pattern.eq_ignore_ascii_case(name),
            StandbyPattern::Quoted(pattern) => pattern == name,
        }
    }
}

impl fmt::Display for StandbyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StandbyPattern::Wildcard => f.write_str("*"),
            StandbyPattern::Name(name) => f.write_str(name),
            StandbyPattern::Quoted(name) => write!(f, "\"{}\"", name.replace('"', "\"\"")),
        }
    }
}

/// A parsed `synchronous_standby_names`.
///
/// Accepted forms (keywords ignore case):
///
/// | setting | meaning |
/// |---|---|
/// | `FIRST k (a, b, c)` | priority: the first `k` streaming standbys in list order are `sync` |
/// | `k (a, b, c)` | same as `FIRST k (a, b, c)` |
/// | `a, b, c` | same as `FIRST 1 (a, b, c)` |
/// | `ANY k (a, b, c)` | quorum: a write waits for any `k` of the listed streaming standbys |
/// | `*` | any standby name (also allowed inside a list) |
/// | empty | no synchronous standbys: writes never wait for standbys |
///
/// Names may be double-quoted (`"Standby, One"`), which keeps case, allows
/// spaces, commas and keywords, and writes a `"` as `""`. Unquoted names
/// are lowercased. `k` must be at least 1 and, unless the list holds `*`,
/// at most the number of entries.
///
/// `Display` writes the canonical form (`FIRST k (...)` or `ANY k (...)`,
/// or the empty string), which parses back to an equal value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncStandbyNames {
    method: SyncMethod,
    num_sync: usize,
    patterns: Vec<StandbyPattern>,
}

/// A `synchronous_standby_names` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncStandbyNamesError {
    /// The grammar was not followed.
    #[error("invalid synchronous_standby_names at byte {at}: expected {expected}, found {found}")]
    Syntax {
        at: usize,
        expected: &'static str,
        found: String,
    },
    /// A `"` was opened and never closed.
    #[error("invalid synchronous_standby_names: the double quote at byte {at} is never closed")]
    UnterminatedQuote { at: usize },
    /// `""`: a name must have at least one character.
    #[error("invalid synchronous_standby_names: empty quoted name at byte {at}")]
    EmptyQuotedName { at: usize },
    /// A `(` was opened and never closed.
    #[error("invalid synchronous_standby_names: the parenthesis at byte {at} is never closed")]
    UnclosedParen { at: usize },
    /// A `)` without a matching `(`.
    #[error("invalid synchronous_standby_names: unmatched ')' at byte {at}")]
    UnmatchedCloseParen { at: usize },
    /// FIRST or ANY used as an unquoted standby name.
    #[error("invalid synchronous_standby_names: {word:?} at byte {at} is a keyword; write it as \"{word}\" to use it as a standby name")]
    KeywordAsName { word: String, at: usize },
    /// `k` is 0.
    #[error("invalid synchronous_standby_names: the number of synchronous standbys must be at least 1, got 0")]
    ZeroNumSync,
    /// `k` does not fit in a usize.
    #[error("invalid synchronous_standby_names: the number of synchronous standbys {value} is too large")]
    NumSyncOverflow { value: String },
    /// `k` is larger than the list and the list has no `*`.
    #[error("invalid synchronous_standby_names: waits for {num_sync} synchronous standbys but lists only {names} names (add names or \"*\")")]
    NumSyncExceedsList { num_sync: usize, names: usize },
    /// `FIRST k ()`.
    #[error("invalid synchronous_standby_names: the list of standby names is empty")]
    EmptyList,
    /// An entry given to [`SyncStandbyNames::new`] that parsing could never
    /// produce.
    #[error("invalid synchronous_standby_names entry {index}: {reason}")]
    InvalidEntry { index: usize, reason: &'static str },
    /// More entries than [`SYNC_STANDBY_NAMES_MAX_ENTRIES`].
    #[error(
        "invalid synchronous_standby_names: {entries} entries, more than the maximum of {max}"
    )]
    TooManyEntries { entries: usize, max: usize },
}

impl SyncStandbyNames {
    /// No synchronous standbys: writes never wait for standbys.
    pub fn empty() -> Self {
        SyncStandbyNames {
            method: SyncMethod::Priority,
            num_sync: 0,
            patterns: Vec::new(),
        }
    }

    /// Builds a rule from its parts, with the same checks as parsing.
    pub fn new(
        method: SyncMethod,
        num_sync: usize,
        patterns: Vec<StandbyPattern>,
    ) -> Result<Self, SyncStandbyNamesError> {
        if patterns.is_empty() {
            return Err(SyncStandbyNamesError::EmptyList);
        }
        if patterns.len() > SYNC_STANDBY_NAMES_MAX_ENTRIES {
            return Err(SyncStandbyNamesError::TooManyEntries {
                entries: patterns.len(),
                max: SYNC_STANDBY_NAMES_MAX_ENTRIES,
            });
        }
        if num_sync == 0 {
            return Err(SyncStandbyNamesError::ZeroNumSync);
        }
        let has_wildcard = patterns.contains(&StandbyPattern::Wildcard);
        if num_sync > patterns.len() && !has_wildcard {
            return Err(SyncStandbyNamesError::NumSyncExceedsList {
                num_sync,
                names: patterns.len(),
            });
        }
        for (index, pattern) in patterns.iter().enumerate() {
            let reason = match pattern {
                StandbyPattern::Wildcard => None,
                StandbyPattern::Name(name) => unquoted_name_problem(name),
                StandbyPattern::Quoted(name) if name.is_empty() => Some("a name must not be empty"),
                StandbyPattern::Quoted(_) => None,
            };
            if let Some(reason) = reason {
                return Err(SyncStandbyNamesError::InvalidEntry { index, reason });
            }
        }
        Ok(SyncStandbyNames {
            method,
            num_sync,
            patterns,
        })
    }

    /// Parses PostgreSQL's `synchronous_standby_names` syntax; see the type
    /// documentation.
    pub fn parse(s: &str) -> Result<Self, SyncStandbyNamesError> {
        Parser::new(s)?.parse()
    }

    /// True when no synchronous replication is configured.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// How many standbys must confirm a write (0 when empty).
    pub fn num_sync(&self) -> usize {
        self.num_sync
    }

    /// FIRST (priority) or ANY (quorum).
    pub fn method(&self) -> SyncMethod {
        self.method
    }

    /// The list, in order.
    pub fn patterns(&self) -> &[StandbyPattern] {
        &self.patterns
    }

    /// PostgreSQL's `sync_priority` for a standby called `name`: its
    /// 1-based position of the first matching entry under FIRST, 1 for any
    /// listed standby under ANY, `None` (PostgreSQL shows 0) when not listed.
    pub fn sync_priority(&self, name: &str) -> Option<usize> {
        let position = self.list_position(name)?;
        Some(match self.method {
            SyncMethod::Priority => position,
            SyncMethod::Quorum => 1,
        })
    }

    /// The `sync_state` of each standby, in the order of `standbys`.
    ///
    /// - Not matching any entry (or nothing configured): `Async`.
    /// - FIRST k: the first `k` eligible standbys by list position are
    ///   `Sync`; among standbys at the same position (matched by the same
    ///   `*`, say), the one earlier in `standbys` wins, so pass them in
    ///   connection order, as PostgreSQL orders by WAL sender slot. Other
    ///   listed standbys are `Potential`.
    /// - ANY k: every eligible standby is `Quorum`, other listed ones are
    ///   `Potential`.
    ///
    /// Eligible means streaming and listed. When several streaming
    /// standbys share a name, only the one with the highest `flush_lsn`
    /// (the earliest on a tie) is eligible; the others are `Potential`.
    pub fn states(&self, standbys: &[StandbyProgress]) -> Vec<SyncState> {
        let mut states: Vec<SyncState> = standbys
            .iter()
            .map(|s| match self.list_position(&s.name) {
                None => SyncState::Async,
                Some(_) => SyncState::Potential,
            })
            .collect();
        if self.is_empty() {
            return states;
        }
        let candidates = self.candidates(standbys, |s| s.flush_lsn);
        match self.method {
            SyncMethod::Priority => {
                for candidate in priority_order(candidates).into_iter().take(self.num_sync) {
                    states[candidate.index] = SyncState::Sync;
                }
            }
            SyncMethod::Quorum => {
                for candidate in candidates {
                    states[candidate.index] = SyncState::Quorum;
                }
            }
        }
        states
    }

    /// The highest LSN the rule considers confirmed at `level`: every write
    /// at or below it may be acknowledged (once also flushed locally).
    ///
    /// - `Off` and `Local`, or no synchronous standbys configured:
    ///   `Some(u64::MAX)`, nothing to wait for.
    /// - The standby position used is `write_lsn` for `RemoteWrite`,
    ///   `flush_lsn` for `On`, `apply_lsn` for `RemoteApply`.
    /// - FIRST k: the minimum over the `k` synchronous standbys (chosen as in
    ///   [`states`](Self::states)).
    /// - ANY k: the k-th highest position among the eligible standbys.
    /// - `None` when fewer than `k` eligible standbys are streaming: writes
    ///   wait until enough come back.
    ///
    /// Eligible means streaming and listed; several streaming standbys with
    /// the same name count once, with the highest position among them.
    ///
    /// Guarantee: when this returns `Some(lsn)` with a configured rule, at
    /// least `k` streaming standbys with distinct names, each matching the
    /// list, report a position `>= lsn`. Raising any standby's position
    /// never lowers the result.
    pub fn confirmed_lsn(
        &self,
        level: SynchronousCommit,
        standbys: &[StandbyProgress],
    ) -> Option<u64> {
        if !level.waits_for_standbys() || self.is_empty() {
            return Some(u64::MAX);
        }
        let candidates = self.candidates(standbys, |s| {
            level
                .standby_lsn(s)
                .expect("level waits for standbys, so it names a position")
        });
        if candidates.len() < self.num_sync {
            return None;
        }
        assert!(self.num_sync >= 1);
        match self.method {
            SyncMethod::Priority => priority_order(candidates)
                .into_iter()
                .take(self.num_sync)
                .map(|c| c.lsn)
                .min(),
            SyncMethod::Quorum => {
                let mut lsns: Vec<u64> = candidates.iter().map(|c| c.lsn).collect();
                lsns.sort_unstable_by(|a, b| b.cmp(a));
                Some(lsns[self.num_sync - 1])
            }
        }
    }

    /// 1-based position of the first entry matching `name`.
    fn list_position(&self, name: &str) -> Option<usize> {
        self.patterns
            .iter()
            .position(|p| p.matches(name))
            .map(|i| i + 1)
    }

    /// The eligible standbys: streaming, listed, one per distinct name (the
    /// one with the highest `lsn_of`, the earliest on a tie).
    fn candidates(
        &self,
        standbys: &[StandbyProgress],
        lsn_of: impl Fn(&StandbyProgress) -> u64,
    ) -> Vec<Candidate> {
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (index, standby) in standbys.iter().enumerate() {
            if !standby.streaming {
                continue;
            }
            let Some(position) = self.list_position(&standby.name) else {
                continue;
            };
            let lsn = lsn_of(standby);
            match by_name.get(standby.name.as_str()) {
                Some(&slot) => {
                    // Keep the group's first index as its place in the
                    // order, so that which duplicate wins never reorders the
                    // priority list (that would break monotonicity).
                    let existing = &mut candidates[slot];
                    if lsn > existing.lsn {
                        existing.index = index;
                        existing.lsn = lsn;
                    }
                }
                None => {
                    by_name.insert(&standby.name, candidates.len());
                    candidates.push(Candidate {
                        index,
                        order: index,
                        position,
                        lsn,
                    });
                }
            }
        }
        candidates
    }
}

/// An eligible standby.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// Index in the caller's slice of the standby standing for this name.
    index: usize,
    /// Index of the first streaming standby with this name: the tie-break
    /// among equal list positions.
    order: usize,
    /// 1-based list position of the first matching entry.
    position: usize,
    lsn: u64,
}

fn priority_order(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by_key(|c| (c.position, c.order));
    candidates
}

impl FromStr for SyncStandbyNames {
    type Err = SyncStandbyNamesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SyncStandbyNames::parse(s)
    }
}

impl Default for SyncStandbyNames {
    fn default() -> Self {
        SyncStandbyNames::empty()
    }
}

impl fmt::Display for SyncStandbyNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return Ok(());
        }
        let keyword = match self.method {
            SyncMethod::Priority => "FIRST",
            SyncMethod::Quorum => "ANY",
        };
        write!(f, "{keyword} {} (", self.num_sync)?;
        for (i, pattern) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{pattern}")?;
        }
        f.write_str(")")
    }
}

fn is_keyword(word: &str) -> bool {
    word.eq_ignore_ascii_case("first") || word.eq_ignore_ascii_case("any")
}

fn is_unquoted_name_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, ',' | '(' | ')' | '"' | '*'))
}

/// Why `name` cannot be an unquoted entry, if it cannot.
fn unquoted_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a name must not be empty")
    } else if !name.chars().all(is_unquoted_name_char) {
        Some("an unquoted name cannot contain white space , ( ) \" or *; quote it")
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some("an unquoted name is stored in lower case; lowercase it or quote it")
    } else if is_keyword(name) {
        Some("FIRST and ANY are keywords; quote them to use them as names")
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word: a name, a keyword or a number.
    Word(String),
    Quoted(String),
    Star,
    Comma,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Quoted(q) => format!("\"{q}\""),
            Token::Star => "'*'".to_owned(),
            Token::Comma => "','".to_owned(),
            Token::Open => "'('".to_owned(),
            Token::Close => "')'".to_owned(),
        }
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn new(input: &str) -> Result<Self, SyncStandbyNamesError> {
        let mut tokens = Vec::new();
        let mut chars = input.char_indices().peekable();
        while let Some(&(at, c)) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let token = match c {
                ',' | '(' | ')' | '*' => {
                    chars.next();
                    match c {
                        ',' => Token::Comma,
                        '(' => Token::Open,
                        ')' => Token::Close,
                        _ => Token::Star,
                    }
                }
                '"' => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(SyncStandbyNamesError::UnterminatedQuote { at }),
                            Some((_, '"')) => {
                                if matches!(chars.peek(), Some((_, '"'))) {
                                    chars.next();
                                    name.push('"');
                                } else {
                                    break;
                                }
                            }
                            Some((_, c)) => name.push(c),
                        }
                    }
                    if name.is_empty() {
                        return Err(SyncStandbyNamesError::EmptyQuotedName { at });
                    }
                    Token::Quoted(name)
                }
                _ => {
                    let mut word = String::new();
                    while let Some(&(_, c)) = chars.peek() {
                        if !is_unquoted_name_char(c) {
                            break;
                        }
                        word.push(c);
                        chars.next();
                    }
                    Token::Word(word)
                }
            };
            tokens.push((at, token));
        }
        Ok(Parser {
            tokens,
            next: 0,
            end: input.len(),
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.next + ahead).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(at, _)| *at)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end of the setting".to_owned(), Token::describe)
    }

    fn syntax(&self, expected: &'static str) -> SyncStandbyNamesError {
        SyncStandbyNamesError::Syntax {
            at: self.position(),
            expected,
            found: self.found(),
        }
    }

    fn parse(mut self) -> Result<SyncStandbyNames, SyncStandbyNamesError> {
        if self.tokens.is_empty() {
            return Ok(SyncStandbyNames::empty());
        }
        let result = match self.peek().cloned() {
            Some(Token::Word(w)) if is_keyword(&w) => {
                let method = if w.eq_ignore_ascii_case("first") {
                    SyncMethod::Priority
                } else {
                    SyncMethod::Quorum
                };
                if !matches!(self.peek_at(1), Some(Token::Word(n)) if is_number(n)) {
                    // `first` alone or first in a bare list is meant as a
                    // name; PostgreSQL rejects that too, so say how to quote.
                    if matches!(self.peek_at(1), None | Some(Token::Comma)) {
                        return Err(SyncStandbyNamesError::KeywordAsName {
                            word: w,
                            at: self.position(),
                        });
                    }
                    self.next += 1;
                    return Err(self.syntax("the number of synchronous standbys"));
                }
                self.next += 1;
                let num_sync = self.number()?;
                let patterns = self.parenthesised_list()?;
                SyncStandbyNames::new(method, num_sync, patterns)
            }
            Some(Token::Word(n)) if is_number(&n) && self.peek_at(1) == Some(&Token::Open) => {
                let num_sync = self.number()?;
                let patterns = self.parenthesised_list()?;
                SyncStandbyNames::new(SyncMethod::Priority, num_sync, patterns)
            }
            _ => {
                let patterns = self.list()?;
                SyncStandbyNames::new(SyncMethod::Priority, 1, patterns)
            }
        }?;
        match self.tokens.get(self.next) {
            None => Ok(result),
            Some((at, Token::Close)) => Err(SyncStandbyNamesError::UnmatchedCloseParen { at: *at }),
            Some(_) => Err(self.syntax("the end of the setting")),
        }
    }

    fn number(&mut self) -> Result<usize, SyncStandbyNamesError> {
        let Some(Token::Word(n)) = self.peek() else {
            return Err(self.syntax("the number of synchronous standbys"));
        };
        let value = n
            .parse::<usize>()
            .map_err(|_| SyncStandbyNamesError::NumSyncOverflow { value: n.clone() })?;
        self.next += 1;
        if value == 0 {
            return Err(SyncStandbyNamesError::ZeroNumSync);
        }
        Ok(value)
    }

    fn parenthesised_list(&mut self) -> Result<Vec<StandbyPattern>, SyncStandbyNamesError> {
        let open_at = self.position();
        if self.peek() != Some(&Token::Open) {
            return Err(self.syntax("'(' and a list of standby names"));
        }
        self.next += 1;
        if self.peek() == Some(&Token::Close) {
            return Err(SyncStandbyNamesError::EmptyList);
        }
        let patterns = self.list()?;
        match self.peek() {
            Some(Token::Close) => {
                self.next += 1;
                Ok(patterns)
            }
            None => Err(SyncStandbyNamesError::UnclosedParen { at: open_at }),
            Some(_) => Err(self.syntax("',' or ')'")),
        }
    }

    /// `name (, name)*`; stops before anything that is not a comma.
    fn list(&mut self) -> Result<Vec<StandbyPattern>, SyncStandbyNamesError> {
        let mut patterns = vec![self.name()?];
        while self.peek() == Some(&Token::Comma) {
            self.next += 1;
            patterns.push(self.name()?);
        }
        Ok(patterns)
    }

    fn name(&mut self) -> Result<StandbyPattern, SyncStandbyNamesError> {
        let at = self.position();
        let pattern = match self.peek() {
            Some(Token::Star) => StandbyPattern::Wildcard,
            Some(Token::Quoted(q)) => StandbyPattern::Quoted(q.clone()),
            Some(Token::Word(w)) if is_keyword(w) => {
                return Err(SyncStandbyNamesError::KeywordAsName {
                    word: w.clone(),
                    at,
                })
            }
            Some(Token::Word(w)) => StandbyPattern::Name(w.to_ascii_lowercase()),
            Some(Token::Open | Token::Close | Token::Comma) | None => {
                return Err(self.syntax("a standby name"))
            }
        };
        self.next += 1;
        Ok(pattern)
    }
}

fn is_number(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod name_tests {
    use super::check_standby_name;

    #[test]
    fn standby_names_are_identifier_like() {
        for good in ["s1", "standby-1", "db_2.east", "A"] {
            assert_eq!(check_standby_name(good), Ok(()), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\"b",
            "a,b",
            "a(b)",
            "*",
            "é",
            long.as_str(),
        ] {
            assert!(check_standby_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
