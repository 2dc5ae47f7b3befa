//! CONFIG GET/SET/RESETSTAT: walship's own settings under their flag names,
//! plus the Redis names that Redis tools ask for, answered sensibly.

use std::sync::atomic::Ordering;

use super::{glob_match, help_reply, unknown_subcommand, CmdError, CmdResult, Ctx};
use walship_replication::{SyncStandbyNames, SynchronousCommit};

use crate::config::{ByteSize, FsyncSetting};
use crate::resp::Args;
use crate::state::Shared;

type Getter = fn(&Shared) -> String;
type Setter = fn(&Shared, &str) -> Result<(), String>;

/// One CONFIG parameter: walship's own names first, then the Redis names
/// that tools (redis-benchmark, redis-cli) ask for.
struct Param {
    name: &'static str,
    get: Getter,
    set: Option<Setter>,
}

/// A timeout in milliseconds, 0 meaning none.
fn parse_ms(v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("'{v}' is not a number of milliseconds (0 waits for ever)"))
}

fn parse_size(v: &str) -> Result<u64, String> {
    v.parse::<ByteSize>().map(|b| b.0)
}

fn set_u64_min(
    target: &std::sync::atomic::AtomicU64,
    v: u64,
    min: u64,
    name: &str,
) -> Result<(), String> {
    if v < min {
        return Err(format!("{name} must be at least {min}"));
    }
    target.store(v, Ordering::Relaxed);
    Ok(())
}

const PARAMS: &[Param] = &[
    Param {
        name: "data-dir",
        get: |s| s.config.data_dir.display().to_string(),
        set: None,
    },
    Param {
        name: "port",
        get: |s| s.port.load(Ordering::Relaxed).to_string(),
        set: None,
    },
    Param {
        name: "bind",
        get: |s| s.config.bind.clone(),
        set: None,
    },
    Param {
        name: "fsync",
        get: |s| s.config.fsync.to_string(),
        set: None,
    },
    Param {
        name: "segment-size",
        get: |s| s.store.engine().config().segment_size_bytes.to_string(),
        set: None,
    },
    Param {
        name: "checkpoint-every",
        get: |s| s.store.engine().config().checkpoint_every_bytes.to_string(),
        set: None,
    },
    Param {
        name: "max-clients",
        get: |s| s.runtime.max_clients.load(Ordering::Relaxed).to_string(),
        set: Some(|s, v| {
            set_u64_min(
                &s.runtime.max_clients,
                v.parse().map_err(|_| "not a number")?,
                1,
                "max-clients",
            )
        }),
    },
    Param {
        name: "name",
        get: |s| s.config.name.clone(),
        set: None,
    },
    // The primary followed now (REPLICAOF changes it; set it with REPLICAOF,
    // not CONFIG SET), empty on a primary.
    Param {
        name: "replicate-from",
        get: |s| match s.replication.role() {
            crate::replication::Role::Standby { primary, .. } => primary,
            crate::replication::Role::Primary => String::new(),
        },
        set: None,
    },
    Param {
        name: "simulate-power-loss",
        get: |s| {
            if s.config.simulate_power_loss {
                "yes"
            } else {
                "no"
            }
            .into()
        },
        set: None,
    },
    Param {
        name: "max-value-size",
        get: |s| s.config.max_value_bytes.to_string(),
        set: None,
    },
    Param {
        name: "max-key-size",
        get: |s| s.config.max_key_bytes.to_string(),
        set: None,
    },
    Param {
        name: "masterauth",
        get: |s| s.replication.password().unwrap_or_default(),
        set: Some(set_replicate_password),
    },
    Param {
        name: "replicate-password",
        get: |s| s.replication.password().unwrap_or_default(),
        set: Some(set_replicate_password),
    },
    Param {
        name: "requirepass",
        get: |s| {
            s.runtime
                .requirepass()
                .map(|p| p.to_string())
                .unwrap_or_default()
        },
        set: Some(|s, v| {
            s.runtime.set_requirepass(Some(v));
            Ok(())
        }),
    },
    Param {
        name: "admin-port",
        get: |s| {
            s.config
                .admin_port
                .map(|p| p.to_string())
                .unwrap_or_default()
        },
        set: None,
    },
    Param {
        name: "client-output-buffer-limit",
        get: |s| {
            s.runtime
                .client_output_buffer_limit_bytes
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            set_u64_min(
                &s.runtime.client_output_buffer_limit_bytes,
                parse_size(v)?,
                1024 * 1024,
                "client-output-buffer-limit",
            )
        }),
    },
    Param {
        name: "client-query-buffer-limit",
        get: |s| {
            s.runtime
                .client_query_buffer_limit_bytes
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            let min = s.runtime.proto_max_bulk_len_bytes.load(Ordering::Relaxed);
            set_u64_min(
                &s.runtime.client_query_buffer_limit_bytes,
                parse_size(v)?,
                min,
                "client-query-buffer-limit (>= proto-max-bulk-len)",
            )
        }),
    },
    Param {
        name: "proto-max-bulk-len",
        get: |s| {
            s.runtime
                .proto_max_bulk_len_bytes
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            let v = parse_size(v)?;
            if v > s
                .runtime
                .client_query_buffer_limit_bytes
                .load(Ordering::Relaxed)
            {
                return Err("proto-max-bulk-len must not exceed client-query-buffer-limit".into());
            }
            set_u64_min(
                &s.runtime.proto_max_bulk_len_bytes,
                v,
                1024 * 1024,
                "proto-max-bulk-len",
            )
        }),
    },
    // Replication, under PostgreSQL's names (`-` spellings are accepted too).
    Param {
        name: "synchronous_standby_names",
        get: |s| s.replication.hub.sync_names().to_string(),
        set: Some(|s, v| {
            let names = SyncStandbyNames::parse(v).map_err(|e| e.to_string())?;
            s.replication.hub.set_sync_names(names);
            Ok(())
        }),
    },
    Param {
        name: "synchronous_commit",
        get: |s| s.replication.sync_commit().as_str().into(),
        set: Some(|s, v| {
            let level: SynchronousCommit = v.parse().map_err(|e| format!("{e}"))?;
            s.replication.set_sync_commit(level);
            Ok(())
        }),
    },
    Param {
        name: "synchronous_commit_timeout_ms",
        get: |s| {
            s.replication
                .sync_timeout_ms
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            s.replication
                .sync_timeout_ms
                .store(parse_ms(v)?, Ordering::Relaxed);
            Ok(())
        }),
    },
    Param {
        name: "wal_receiver_timeout_ms",
        get: |s| {
            s.replication
                .wal_receiver_timeout_ms
                .load(Ordering::Relaxed)
                .to_string()
        },
        set: Some(|s, v| {
            s.replication
                .wal_receiver_timeout_ms
                .store(parse_ms(v)?, Ordering::Relaxed);
            Ok(())
        }),
    },
    Param {
        name: "wal_sender_timeout_ms",
        get: |s| s.replication.hub.sender_timeout_ms().to_string(),
        set: Some(|s, v| {
            s.replication.hub.set_sender_timeout_ms(parse_ms(v)?);
            Ok(())
        }),
    },
    Param {
        name: "max_slot_wal_keep_size",
        get: |s| s.replication.slots.max_keep_bytes().to_string(),
        set: Some(|s, v| {
            let bytes = parse_size(v)?;
            s.replication.slots.set_max_keep_bytes(bytes);
            Ok(())
        }),
    },
    // Group commit, under PostgreSQL's names (with the unit spelled out).
    Param {
        name: "commit_delay_us",
        get: |s| s.store.commit_delay().delay_us().to_string(),
        set: Some(|s, v| {
            let us: u64 = v.trim().parse().map_err(|_| {
                format!("'{v}' is not a number of microseconds (0 turns the delay off)")
            })?;
            s.store.commit_delay().set_delay_us(us)
        }),
    },
    Param {
        name: "commit_siblings",
        get: |s| s.store.commit_delay().siblings().to_string(),
        set: Some(|s, v| {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("'{v}' is not a number of writers"))?;
            s.store.commit_delay().set_siblings(n)
        }),
    },
    // Redis names, answered so Redis tools see sensible values.
    Param {
        name: "save",
        get: |_| String::new(),
        set: None,
    },
    Param {
        name: "appendonly",
        get: |_| "yes".into(),
        set: None,
    },
    Param {
        name: "appendfsync",
        get: |s| {
            match s.config.fsync {
                FsyncSetting::Always => "always",
                FsyncSetting::IntervalMs(_) => "everysec",
                FsyncSetting::Never => "no",
            }
            .into()
        },
        set: None,
    },
    Param {
        name: "wal_sync_method",
        get: |s| s.config.wal_sync_method.to_string(),
        set: None,
    },
    Param {
        name: "maxclients",
        get: |s| s.runtime.max_clients.load(Ordering::Relaxed).to_string(),
        set: Some(|s, v| {
            set_u64_min(
                &s.runtime.max_clients,
                v.parse().map_err(|_| "not a number")?,
                1,
                "maxclients",
            )
        }),
    },
    Param {
        name: "dir",
        get: |s| absolute(&s.config.data_dir),
        set: None,
    },
    Param {
        name: "dbfilename",
        get: |_| String::new(),
        set: None,
    },
    Param {
        name: "databases",
        get: |_| "1".into(),
        set: None,
    },
    Param {
        name: "maxmemory",
        get: |_| "0".into(),
        set: None,
    },
    Param {
        name: "maxmemory-policy",
        get: |_| "noeviction".into(),
        set: None,
    },
    Param {
        name: "timeout",
        get: |_| "0".into(),
        set: None,
    },
    Param {
        name: "tcp-keepalive",
        get: |_| "0".into(),
        set: None,
    },
    Param {
        name: "cluster-enabled",
        get: |_| "no".into(),
        set: None,
    },
];

/// `masterauth` / `replicate-password`: the password for the primary; empty
/// for none.
fn set_replicate_password(s: &Shared, v: &str) -> Result<(), String> {
    let password = (!v.is_empty()).then(|| v.to_string());
    s.replication
        .set_password(password)
        .map_err(|e| e.to_string())
}

/// The parameter called `name` (lower case); the replication settings may
/// also be spelled with `-` like the command-line flags.
fn find_param(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name == name).or_else(|| {
        let underscored = name.replace('-', "_");
        PARAMS.iter().find(|p| p.name == underscored)
    })
}

fn absolute(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

pub fn config(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    if sub.eq_ignore_ascii_case(b"GET") {
        if args.len() < 3 {
            return Err(CmdError::arity("config|get"));
        }
        let mut hits: Vec<&Param> = Vec::new();
        for pat in args.iter().skip(2) {
            let pat = pat.to_ascii_lowercase();
            let before = hits.len();
            for p in PARAMS {
                if glob_match(&pat, p.name.as_bytes()) && !hits.iter().any(|h| h.name == p.name) {
                    hits.push(p);
                }
            }
            // `synchronous-commit` finds `synchronous_commit`.
            if hits.len() == before {
                if let Some(p) = std::str::from_utf8(&pat).ok().and_then(find_param) {
                    if !hits.iter().any(|h| h.name == p.name) {
                        hits.push(p);
                    }
                }
            }
        }
        ctx.out.map(hits.len());
        for p in hits {
            ctx.out.bulk(p.name.as_bytes());
            ctx.out.bulk((p.get)(ctx.shared).as_bytes());
        }
        Ok(())
    } else if sub.eq_ignore_ascii_case(b"SET") {
        if args.len() < 4 || !args.len().is_multiple_of(2) {
            return Err(CmdError::arity("config|set"));
        }
        // Check everything first so a failing pair changes nothing.
        let mut todo: Vec<(&Param, String)> = Vec::new();
        for pair in 0..(args.len() - 2) / 2 {
            let name = String::from_utf8_lossy(args.get(2 + 2 * pair)).to_ascii_lowercase();
            let value = String::from_utf8_lossy(args.get(3 + 2 * pair)).into_owned();
            let Some(p) = find_param(&name) else {
                return Err(CmdError::msg(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                )));
            };
            if p.set.is_none() {
                return Err(CmdError::msg(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
                )));
            }
            todo.push((p, value));
        }
        for (i, (p, _)) in todo.iter().enumerate() {
            if todo[..i].iter().any(|(q, _)| q.name == p.name) {
                return Err(CmdError::msg(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{}') - duplicate parameter",
                    p.name
                )));
            }
        }
        // Apply in order; if one fails, put back the ones already applied
        // (in reverse, so settings that constrain each other stay valid), so
        // a failing CONFIG SET changes nothing, as in Redis.
        let mut applied: Vec<(&Param, String)> = Vec::new();
        for (p, value) in todo {
            let set = p.set.expect("checked above");
            let old = (p.get)(ctx.shared);
            if let Err(e) = set(ctx.shared, &value) {
                for (q, old) in applied.into_iter().rev() {
                    let set = q.set.expect("checked above");
                    if let Err(e) = set(ctx.shared, &old) {
                        tracing::error!(param = q.name, error = %e, "CONFIG SET: could not restore the previous value");
                    }
                }
                return Err(CmdError::msg(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{}') - {e}",
                    p.name
                )));
            }
            applied.push((p, old));
        }
        ctx.out.ok();
        Ok(())
    } else if sub.eq_ignore_ascii_case(b"RESETSTAT") {
        if args.len() != 2 {
            return Err(CmdError::arity("config|resetstat"));
        }
        ctx.shared.metrics.reset();
        ctx.out.ok();
        Ok(())
    } else if sub.eq_ignore_ascii_case(b"REWRITE") {
        Err(CmdError::msg(
            "ERR CONFIG REWRITE is not supported: edit the TOML file given with --config",
        ))
    } else if sub.eq_ignore_ascii_case(b"HELP") {
        help_reply(
            ctx.out,
            "CONFIG",
            &[
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
            ],
        );
        Ok(())
    } else {
        Err(unknown_subcommand(sub, "config"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use walship_replication::SynchronousCommit;

    use crate::commands::{execute, ClientState, Ctx};
    use crate::config::{FileConfig, FsyncSetting, ServerArgs, ServerConfig};
    use crate::reply::{Protocol, Reply};
    use crate::resp::Args;
    use crate::state::Shared;
    use crate::store::Store;

    struct T {
        shared: Arc<Shared>,
        client: ClientState,
        out: Reply,
        _dir: tempfile::TempDir,
    }

    impl T {
        fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            let args = ServerArgs {
                data_dir: Some(dir.path().to_path_buf()),
                fsync: Some(FsyncSetting::Never),
                ..ServerArgs::default()
            };
            let cfg = ServerConfig::merge(&args, &FileConfig::default()).unwrap();
            let shared = Arc::new(Shared::new(Store::open(&cfg).unwrap(), cfg));
            let a = "127.0.0.1:1".parse().unwrap();
            let client = ClientState::new(shared.clients.register(a, a), &shared);
            T {
                shared,
                client,
                out: Reply::new(Protocol::Resp2),
                _dir: dir,
            }
        }

        fn cmd(&mut self, args: &[&str]) -> String {
            let mut data = Vec::new();
            let mut ranges = Vec::new();
            for a in args {
                let start = data.len();
                data.extend_from_slice(a.as_bytes());
                ranges.push((start, data.len()));
            }
            let mut ctx = Ctx::new(&self.shared, &mut self.client, &mut self.out);
            execute(&mut ctx, Args::from_owned(&data, &ranges));
            let s = String::from_utf8_lossy(self.out.as_bytes()).into_owned();
            self.out.clear();
            s
        }

        fn get(&mut self, name: &str) -> String {
            let r = self.cmd(&["CONFIG", "GET", name]);
            let lines: Vec<&str> = r.split("\r\n").collect();
            assert_eq!(lines[0], "*2", "CONFIG GET {name}: {r:?}");
            lines[4].to_string()
        }
    }

    /// Every startup setting is shown; those fixed at startup are refused
    /// with Redis's immutable-config error, not as unknown.
    #[test]
    fn startup_only_settings_are_shown_and_immutable() {
        let mut t = T::new();
        assert!(t.get("name").starts_with("walship-"));
        assert_eq!(t.get("replicate-from"), "", "a primary follows nobody");
        assert_eq!(t.get("simulate-power-loss"), "no");
        for name in ["name", "replicate-from", "simulate-power-loss"] {
            let r = t.cmd(&["CONFIG", "SET", name, "x"]);
            assert!(r.contains("can't set immutable config"), "{name}: {r:?}");
        }
    }

    #[test]
    fn synchronous_standby_names_is_validated_applied_and_shown_canonically() {
        let mut t = T::new();
        assert_eq!(t.get("synchronous_standby_names"), "");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "synchronous_standby_names", "2 (a, b, c)"]),
            "+OK\r\n"
        );
        assert_eq!(t.get("synchronous_standby_names"), "FIRST 2 (a, b, c)");
        assert_eq!(
            t.shared.replication.hub.sync_names().to_string(),
            "FIRST 2 (a, b, c)"
        );
        let bad = t.cmd(&["CONFIG", "SET", "synchronous_standby_names", "FIRST 3 (a)"]);
        assert!(
            bad.starts_with("-ERR CONFIG SET failed (possibly related to argument 'synchronous_standby_names') - invalid synchronous_standby_names"),
            "{bad:?}"
        );
        assert_eq!(t.get("synchronous_standby_names"), "FIRST 2 (a, b, c)");
        // The flag's spelling works too, and '' turns synchronous replication off.
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "synchronous-standby-names", ""]),
            "+OK\r\n"
        );
        assert!(t.shared.replication.hub.sync_names().is_empty());
        assert_eq!(t.get("synchronous-standby-names"), "");
    }

    #[test]
    fn commit_delay_and_siblings_reach_the_engine_and_bad_values_change_nothing() {
        let mut t = T::new();
        let delay = t.shared.store.commit_delay();
        assert_eq!(
            t.get("commit_delay_us"),
            crate::config::DEFAULT_COMMIT_DELAY_US.to_string()
        );
        assert_eq!(t.get("commit_siblings"), "5");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "commit_delay_us", "150"]),
            "+OK\r\n"
        );
        assert_eq!(t.cmd(&["CONFIG", "SET", "commit-siblings", "3"]), "+OK\r\n");
        assert_eq!((delay.delay_us(), delay.siblings()), (150, 3));
        for (name, v, says) in [
            (
                "commit_delay_us",
                "100001",
                "above the maximum of 100000 us",
            ),
            ("commit_delay_us", "-1", "not a number of microseconds"),
            ("commit_siblings", "0", "between 1 and 1000"),
            ("commit_siblings", "many", "not a number of writers"),
        ] {
            let bad = t.cmd(&["CONFIG", "SET", name, v]);
            assert!(
                bad.starts_with("-ERR") && bad.contains(says),
                "{name} {v}: {bad:?}"
            );
        }
        assert_eq!(t.get("commit_delay_us"), "150");
        assert_eq!(t.get("commit_siblings"), "3");
        assert_eq!((delay.delay_us(), delay.siblings()), (150, 3));
    }

    #[test]
    fn synchronous_commit_and_its_timeout() {
        let mut t = T::new();
        assert_eq!(t.get("synchronous_commit"), "on");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "synchronous_commit", "remote_apply"]),
            "+OK\r\n"
        );
        assert_eq!(
            t.shared.replication.sync_commit(),
            SynchronousCommit::RemoteApply
        );
        let bad = t.cmd(&["CONFIG", "SET", "synchronous_commit", "sometimes"]);
        assert!(bad.contains("invalid synchronous_commit"), "{bad:?}");
        assert_eq!(t.get("synchronous_commit"), "remote_apply");

        assert_eq!(t.get("synchronous_commit_timeout_ms"), "0");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "synchronous_commit_timeout_ms", "250"]),
            "+OK\r\n"
        );
        assert_eq!(
            t.shared
                .replication
                .sync_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed),
            250
        );
        for v in ["-1", "1s", ""] {
            let bad = t.cmd(&["CONFIG", "SET", "synchronous_commit_timeout_ms", v]);
            assert!(
                bad.contains("is not a number of milliseconds"),
                "{v}: {bad:?}"
            );
        }
        assert_eq!(t.get("synchronous_commit_timeout_ms"), "250");

        assert_eq!(t.get("wal_receiver_timeout_ms"), "30000");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "wal-receiver-timeout-ms", "5000"]),
            "+OK\r\n"
        );
        assert_eq!(t.get("wal_receiver_timeout_ms"), "5000");
        let bad = t.cmd(&["CONFIG", "SET", "wal_receiver_timeout_ms", "5s"]);
        assert!(bad.contains("is not a number of milliseconds"), "{bad:?}");

        assert_eq!(t.get("wal_sender_timeout_ms"), "30000");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "wal-sender-timeout-ms", "0"]),
            "+OK\r\n"
        );
        assert_eq!(t.shared.replication.hub.sender_timeout_ms(), 0);
        let bad = t.cmd(&["CONFIG", "SET", "wal_sender_timeout_ms", "-1"]);
        assert!(bad.contains("is not a number of milliseconds"), "{bad:?}");
        assert_eq!(t.get("wal_sender_timeout_ms"), "0");
    }

    #[test]
    fn max_slot_wal_keep_size_takes_sizes() {
        let mut t = T::new();
        assert_eq!(t.get("max_slot_wal_keep_size"), "0");
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "max_slot_wal_keep_size", "1GiB"]),
            "+OK\r\n"
        );
        assert_eq!(t.shared.replication.slots.max_keep_bytes(), 1 << 30);
        assert_eq!(t.get("max_slot_wal_keep_size"), (1u64 << 30).to_string());
        let bad = t.cmd(&["CONFIG", "SET", "max_slot_wal_keep_size", "3 parsecs"]);
        assert!(bad.contains("unknown unit"), "{bad:?}");
        assert_eq!(t.shared.replication.slots.max_keep_bytes(), 1 << 30);
        assert_eq!(
            t.cmd(&["CONFIG", "SET", "max_slot_wal_keep_size", "0"]),
            "+OK\r\n"
        );
        assert_eq!(t.shared.replication.slots.max_keep_bytes(), 0);
    }

    #[test]
    fn a_failing_pair_leaves_every_setting_unchanged() {
        let mut t = T::new();
        let r = t.cmd(&[
            "CONFIG",
            "SET",
            "synchronous_commit",
            "local",
            "synchronous_standby_names",
            "ANY 1 (a, b)",
            "max_slot_wal_keep_size",
            "lots",
        ]);
        assert!(
            r.starts_with(
                "-ERR CONFIG SET failed (possibly related to argument 'max_slot_wal_keep_size')"
            ),
            "{r:?}"
        );
        assert_eq!(t.get("synchronous_commit"), "on");
        assert_eq!(t.get("synchronous_standby_names"), "");
        assert_eq!(t.get("max_slot_wal_keep_size"), "0");
        let dup = t.cmd(&[
            "CONFIG",
            "SET",
            "synchronous_commit",
            "local",
            "synchronous-commit",
            "off",
        ]);
        assert!(dup.contains("duplicate parameter"), "{dup:?}");
        assert_eq!(t.get("synchronous_commit"), "on");
        // All together, when all are valid.
        assert_eq!(
            t.cmd(&[
                "CONFIG",
                "SET",
                "synchronous_commit",
                "remote_write",
                "synchronous_standby_names",
                "ANY 1 (a, b)",
            ]),
            "+OK\r\n"
        );
        assert_eq!(t.get("synchronous_standby_names"), "ANY 1 (a, b)");
        assert_eq!(t.get("synchronous_commit"), "remote_write");
        let all = t.cmd(&["CONFIG", "GET", "synchronous*"]);
        assert!(all.starts_with("*6\r\n"), "{all:?}");
    }
}
