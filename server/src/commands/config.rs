//! CONFIG GET/SET/RESETSTAT: walship's own settings under their flag names,
//! plus the Redis names that Redis tools ask for, answered sensibly.

use std::sync::atomic::Ordering;

use super::{glob_match, help_reply, unknown_subcommand, CmdError, CmdResult, Ctx};
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
            for p in PARAMS {
                if glob_match(&pat, p.name.as_bytes()) && !hits.iter().any(|h| h.name == p.name) {
                    hits.push(p);
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
            let Some(p) = PARAMS.iter().find(|p| p.name == name) else {
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
        for (p, value) in todo {
            let set = p.set.expect("checked above");
            set(ctx.shared, &value).map_err(|e| {
                CmdError::msg(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{}') - {e}",
                    p.name
                ))
            })?;
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
