//! Server configuration: command-line flags, an optional TOML file with the
//! same names, and defaults. A flag always wins over the file.
//!
//! ```toml
//! # walship.toml
//! data-dir = "/var/lib/walship"
//! port = 7379
//! fsync = "interval:10"
//! max-value-size = "64MiB"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::Deserialize;
use walship_engine::{CommitDelay, WalSyncMethod};
use walship_replication::{SyncStandbyNames, SynchronousCommit};

pub const DEFAULT_PORT: u16 = 7379;
pub const DEFAULT_BIND: &str = "127.0.0.1";
pub const DEFAULT_DATA_DIR: &str = "./walship-data";
pub const DEFAULT_MAX_CLIENTS: u64 = 10_000;
/// How long a standby waits for any message from its primary before it
/// ends the link and reconnects (the primary's keepalives come every second).
pub const DEFAULT_WAL_RECEIVER_TIMEOUT_MS: u64 = 30_000;

/// Group-commit delay in microseconds (PostgreSQL's `commit_delay`); see
/// docs/performance.md for how it was chosen.
pub const DEFAULT_COMMIT_DELAY_US: u64 = 200;
/// Writers that must already wait for a flush before it is delayed
/// (PostgreSQL's `commit_siblings`).
pub const DEFAULT_COMMIT_SIBLINGS: u64 = 5;
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 512 * 1024 * 1024;
pub const DEFAULT_MAX_KEY_BYTES: u64 = 512 * 1024 * 1024;
pub const DEFAULT_PROTO_MAX_BULK_LEN_BYTES: u64 = 512 * 1024 * 1024;
pub const DEFAULT_CLIENT_QUERY_BUFFER_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_CLIENT_OUTPUT_BUFFER_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;

/// A byte count written as `1024`, `64k`, `64KiB`, `512mb`, `1g` (all
/// multiples are powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{s}' is not a size (examples: 4096, 64k, 64MiB, 1g)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "'{s}' has an unknown unit (use k, m, g or t, e.g. 64MiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{s}' is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// When the WAL is fsynced, and so when a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncSetting {
    /// fsync before acknowledging every write (group commit batches them).
    Always,
    /// fsync at most every N ms; a crash may lose the last N ms of writes.
    IntervalMs(u64),
    /// Never fsync; the OS decides. A crash of the machine may lose anything.
    Never,
}

impl FromStr for FsyncSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<FsyncSetting, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "always" => return Ok(FsyncSetting::Always),
            "never" | "no" => return Ok(FsyncSetting::Never),
            "everysec" => return Ok(FsyncSetting::IntervalMs(1000)),
            _ => {}
        }
        if let Some(ms) = t.strip_prefix("interval:") {
            let ms = ms.trim_end_matches("ms");
            if let Ok(ms) = ms.parse::<u64>() {
                if ms > 0 {
                    return Ok(FsyncSetting::IntervalMs(ms));
                }
            }
        }
        Err(format!(
            "'{s}' is not an fsync policy (use always, interval:<ms> or never)"
        ))
    }
}

impl fmt::Display for FsyncSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncSetting::Always => f.write_str("always"),
            FsyncSetting::IntervalMs(ms) => write!(f, "interval:{ms}"),
            FsyncSetting::Never => f.write_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for FsyncSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FsyncSetting, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An optional setting written as a string its type parses.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err = String>,
{
    String::deserialize(d)?
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `walship server` flags. Every setting is optional here so that the TOML
/// file can fill in what the command line leaves out.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Directory holding the WAL and checkpoints [default: ./walship-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TCP port for Redis-protocol clients [default: 7379]
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// TOML file with the same settings; flags given here win over it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// WAL fsync policy: always, interval:<ms> or never [default: always]
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<FsyncSetting>,
    /// How a durable WAL write is made under --fsync always: open_datasync
    /// (one O_DIRECT|O_DSYNC write) or fdatasync (pwrite, then fdatasync)
    /// [default: open_datasync]
    #[arg(long, value_name = "METHOD")]
    pub wal_sync_method: Option<WalSyncMethod>,
    /// WAL segment size, e.g. 64MiB [default: the engine's]
    #[arg(long, value_name = "SIZE")]
    pub segment_size: Option<ByteSize>,
    /// Write a checkpoint after this much WAL, e.g. 256MiB [default: the engine's]
    #[arg(long, value_name = "SIZE")]
    pub checkpoint_every: Option<ByteSize>,
    /// Maximum simultaneous client connections [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u64>,
    /// Largest value accepted, e.g. 16MiB [default: 512MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_value_size: Option<ByteSize>,
    /// Largest key accepted [default: 512MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_key_size: Option<ByteSize>,
    /// Password clients must give with AUTH (or set WALSHIP_REQUIREPASS)
    #[arg(
        long,
        env = "WALSHIP_REQUIREPASS",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub requirepass: Option<String>,
    /// Port of the HTTP admin server (/metrics, /health, /status); off when absent
    #[arg(long, value_name = "PORT")]
    pub admin_port: Option<u16>,
    /// Close a client whose pending replies exceed this size [default: 1GiB]
    #[arg(long, value_name = "SIZE")]
    pub client_output_buffer_limit: Option<ByteSize>,
    /// Close a client whose unparsed request exceeds this size [default: 1GiB]
    #[arg(long, value_name = "SIZE")]
    pub client_query_buffer_limit: Option<ByteSize>,
    /// Largest bulk string a client may send (a longer value cannot be sent, whatever max-value-size says) [default: 512MiB, or max-value-size / max-key-size if larger]
    #[arg(long, value_name = "SIZE")]
    pub proto_max_bulk_len: Option<ByteSize>,
    /// Run as a standby of this primary (its client port)
    #[arg(long, value_name = "HOST:PORT")]
    pub replicate_from: Option<String>,
    /// This node's name, matched by synchronous_standby_names [default: walship-<port>]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Password for the primary when it has requirepass [default: this node's requirepass]
    #[arg(
        long,
        env = "WALSHIP_REPLICATE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub replicate_password: Option<String>,
    /// Standbys that confirm writes: 'FIRST k (a, b)', 'ANY k (a, b, c)', '*' [default: none]
    #[arg(long, value_name = "RULE")]
    pub synchronous_standby_names: Option<String>,
    /// off, local, remote_write, on or remote_apply [default: on]
    #[arg(long, value_name = "LEVEL")]
    pub synchronous_commit: Option<String>,
    /// Give up waiting for synchronous standbys after this many ms; 0 waits for ever [default: 0]
    #[arg(long, value_name = "MS")]
    pub synchronous_commit_timeout_ms: Option<u64>,
    /// On a standby: end the link to a primary silent this long (it sends a
    /// keepalive every second) and reconnect; 0 = never [default: 30000]
    #[arg(long, value_name = "MS")]
    pub wal_receiver_timeout_ms: Option<u64>,
    /// On a primary: drop a standby silent this long (it reports at least
    /// every 100 ms) and keep its slot; 0 = never [default: 30000]
    #[arg(long, value_name = "MS")]
    pub wal_sender_timeout_ms: Option<u64>,
    /// Most WAL a replication slot may hold back, e.g. 1GiB; 0 = unlimited [default: 0]
    #[arg(long, value_name = "SIZE")]
    pub max_slot_wal_keep_size: Option<ByteSize>,
    /// Microseconds the WAL flusher waits for more writers to join a group
    /// commit, when at least commit-siblings already wait; 0 = off [default: see docs]
    #[arg(long, value_name = "US")]
    pub commit_delay_us: Option<u64>,
    /// Writers that must already wait for a flush before it is delayed [default: 5]
    #[arg(long, value_name = "N")]
    pub commit_siblings: Option<u64>,
    /// TESTING AID, never for real data: run the engine on the in-memory
    /// power-loss simulator loaded from the data directory, and accept
    /// DEBUG POWERLOSS [seed] (cut the power, write what survived back, exit)
    #[arg(long)]
    pub simulate_power_loss: bool,
}

/// The TOML file. Names are the flags' names; `snake_case` spellings are
/// accepted too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    #[serde(alias = "data_dir")]
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub bind: Option<String>,
    pub fsync: Option<FsyncSetting>,
    #[serde(alias = "wal_sync_method", default, deserialize_with = "parsed")]
    pub wal_sync_method: Option<WalSyncMethod>,
    #[serde(alias = "segment_size")]
    pub segment_size: Option<ByteSize>,
    #[serde(alias = "checkpoint_every")]
    pub checkpoint_every: Option<ByteSize>,
    #[serde(alias = "max_clients")]
    pub max_clients: Option<u64>,
    #[serde(alias = "max_value_size")]
    pub max_value_size: Option<ByteSize>,
    #[serde(alias = "max_key_size")]
    pub max_key_size: Option<ByteSize>,
    pub requirepass: Option<String>,
    #[serde(alias = "admin_port")]
    pub admin_port: Option<u16>,
    #[serde(alias = "client_output_buffer_limit")]
    pub client_output_buffer_limit: Option<ByteSize>,
    #[serde(alias = "client_query_buffer_limit")]
    pub client_query_buffer_limit: Option<ByteSize>,
    #[serde(alias = "proto_max_bulk_len")]
    pub proto_max_bulk_len: Option<ByteSize>,
    #[serde(alias = "replicate_from")]
    pub replicate_from: Option<String>,
    pub name: Option<String>,
    #[serde(alias = "replicate_password")]
    pub replicate_password: Option<String>,
    #[serde(alias = "synchronous_standby_names")]
    pub synchronous_standby_names: Option<String>,
    #[serde(alias = "synchronous_commit")]
    pub synchronous_commit: Option<String>,
    #[serde(alias = "synchronous_commit_timeout_ms")]
    pub synchronous_commit_timeout_ms: Option<u64>,
    #[serde(alias = "wal_receiver_timeout_ms")]
    pub wal_receiver_timeout_ms: Option<u64>,
    #[serde(alias = "wal_sender_timeout_ms")]
    pub wal_sender_timeout_ms: Option<u64>,
    #[serde(alias = "max_slot_wal_keep_size")]
    pub max_slot_wal_keep_size: Option<ByteSize>,
    #[serde(alias = "commit_delay_us")]
    pub commit_delay_us: Option<u64>,
    #[serde(alias = "commit_siblings")]
    pub commit_siblings: Option<u64>,
    #[serde(alias = "simulate_power_loss")]
    pub simulate_power_loss: Option<bool>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// The settings the server runs with, after merging flags, file and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind: String,
    pub port: u16,
    pub config_file: Option<PathBuf>,
    pub fsync: FsyncSetting,
    pub wal_sync_method: WalSyncMethod,
    /// `None`: the engine's default.
    pub segment_size_bytes: Option<u64>,
    /// `None`: the engine's default.
    pub checkpoint_every_bytes: Option<u64>,
    pub max_clients: u64,
    pub max_value_bytes: u64,
    pub max_key_bytes: u64,
    pub requirepass: Option<String>,
    pub admin_port: Option<u16>,
    pub client_output_buffer_limit_bytes: u64,
    pub client_query_buffer_limit_bytes: u64,
    pub proto_max_bulk_len_bytes: u64,
    /// `host:port` of the primary when this node is a standby.
    pub replicate_from: Option<String>,
    /// This node's name (standbys send it to their primary).
    pub name: String,
    pub replicate_password: Option<String>,
    /// PostgreSQL's syntax; validated.
    pub synchronous_standby_names: String,
    pub synchronous_commit: SynchronousCommit,
    pub synchronous_commit_timeout_ms: u64,
    /// PostgreSQL's `wal_receiver_timeout`; 0 = never.
    pub wal_receiver_timeout_ms: u64,
    /// PostgreSQL's `wal_sender_timeout`; 0 = never.
    pub wal_sender_timeout_ms: u64,
    /// 0 = unlimited.
    pub max_slot_wal_keep_size_bytes: u64,
    /// Group-commit delay (PostgreSQL's `commit_delay`), in microseconds.
    pub commit_delay_us: u64,
    /// PostgreSQL's `commit_siblings`.
    pub commit_siblings: u64,
    /// Testing aid: the engine runs on the power-loss simulator, loaded from
    /// `data_dir`, and `DEBUG POWERLOSS` is allowed.
    pub simulate_power_loss: bool,
}

impl ServerConfig {
    /// Reads `--config` if given and merges it under the flags.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        ServerConfig::merge(args, &file)
    }

    /// Flag, else file, else default; then checks that the result makes sense.
    pub fn merge(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<ServerConfig> {
        let size = |flag: Option<ByteSize>, file: Option<ByteSize>| flag.or(file).map(|s| s.0);
        let max_value_bytes =
            size(args.max_value_size, file.max_value_size).unwrap_or(DEFAULT_MAX_VALUE_BYTES);
        let max_key_bytes =
            size(args.max_key_size, file.max_key_size).unwrap_or(DEFAULT_MAX_KEY_BYTES);
        let proto_max_bulk_len_bytes = size(args.proto_max_bulk_len, file.proto_max_bulk_len)
            .unwrap_or(
                DEFAULT_PROTO_MAX_BULK_LEN_BYTES
                    .max(max_value_bytes)
                    .max(max_key_bytes),
            );
        let cfg = ServerConfig {
            data_dir: args
                .data_dir
                .clone()
                .or_else(|| file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            bind: args
                .bind
                .clone()
                .or_else(|| file.bind.clone())
                .unwrap_or_else(|| DEFAULT_BIND.to_string()),
            port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
            config_file: args.config.clone(),
            fsync: args.fsync.or(file.fsync).unwrap_or(FsyncSetting::Always),
            wal_sync_method: args
                .wal_sync_method
                .or(file.wal_sync_method)
                .unwrap_or_default(),
            segment_size_bytes: size(args.segment_size, file.segment_size),
            checkpoint_every_bytes: size(args.checkpoint_every, file.checkpoint_every),
            max_clients: args
                .max_clients
                .or(file.max_clients)
                .unwrap_or(DEFAULT_MAX_CLIENTS),
            max_value_bytes,
            max_key_bytes,
            requirepass: args
                .requirepass
                .clone()
                .or_else(|| file.requirepass.clone())
                .filter(|p| !p.is_empty()),
            admin_port: args.admin_port.or(file.admin_port),
            client_output_buffer_limit_bytes: size(
                args.client_output_buffer_limit,
                file.client_output_buffer_limit,
            )
            .unwrap_or(DEFAULT_CLIENT_OUTPUT_BUFFER_LIMIT_BYTES),
            client_query_buffer_limit_bytes: size(
                args.client_query_buffer_limit,
                file.client_query_buffer_limit,
            )
            .unwrap_or(
                DEFAULT_CLIENT_QUERY_BUFFER_LIMIT_BYTES.max(proto_max_bulk_len_bytes + 64 * 1024),
            ),
            proto_max_bulk_len_bytes,
            replicate_from: args
                .replicate_from
                .clone()
                .or_else(|| file.replicate_from.clone()),
            name: args
                .name
                .clone()
                .or_else(|| file.name.clone())
                .unwrap_or_else(|| {
                    format!(
                        "walship-{}",
                        args.port.or(file.port).unwrap_or(DEFAULT_PORT)
                    )
                }),
            replicate_password: args
                .replicate_password
                .clone()
                .or_else(|| file.replicate_password.clone()),
            synchronous_standby_names: args
                .synchronous_standby_names
                .clone()
                .or_else(|| file.synchronous_standby_names.clone())
                .unwrap_or_default(),
            synchronous_commit: match args
                .synchronous_commit
                .clone()
                .or_else(|| file.synchronous_commit.clone())
            {
                Some(s) => s
                    .parse()
                    .map_err(|e| anyhow::anyhow!("synchronous_commit: {e}"))?,
                None => SynchronousCommit::On,
            },
            synchronous_commit_timeout_ms: args
                .synchronous_commit_timeout_ms
                .or(file.synchronous_commit_timeout_ms)
                .unwrap_or(0),
            wal_receiver_timeout_ms: args
                .wal_receiver_timeout_ms
                .or(file.wal_receiver_timeout_ms)
                .unwrap_or(DEFAULT_WAL_RECEIVER_TIMEOUT_MS),
            wal_sender_timeout_ms: args
                .wal_sender_timeout_ms
                .or(file.wal_sender_timeout_ms)
                .unwrap_or(walship_replication::DEFAULT_SENDER_TIMEOUT_MS),
            max_slot_wal_keep_size_bytes: size(
                args.max_slot_wal_keep_size,
                file.max_slot_wal_keep_size,
            )
            .unwrap_or(0),
            commit_delay_us: args
                .commit_delay_us
                .or(file.commit_delay_us)
                .unwrap_or(DEFAULT_COMMIT_DELAY_US),
            commit_siblings: args
                .commit_siblings
                .or(file.commit_siblings)
                .unwrap_or(DEFAULT_COMMIT_SIBLINGS),
            simulate_power_loss: args.simulate_power_loss
                || file.simulate_power_loss.unwrap_or(false),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        SyncStandbyNames::parse(&self.synchronous_standby_names)
            .map_err(|e| anyhow::anyhow!("synchronous_standby_names: {e}"))?;
        walship_replication::check_standby_name(&self.name)
            .map_err(|e| anyhow::anyhow!("name: {e}"))?;
        if let Some(p) = &self.replicate_from {
            let Some((host, port)) = p.rsplit_once(':') else {
                bail!("replicate-from must be HOST:PORT, got '{p}'");
            };
            let bind = self
                .bind
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
            if port.parse() == Ok(self.port)
                && crate::replication::is_own_address(host, self.port, bind)
            {
                bail!(
                    "replicate-from {p} is this node itself: a node cannot replicate from itself"
                );
            }
        }
        if self.max_clients == 0 {
            bail!("max-clients must be at least 1");
        }
        CommitDelay::new(self.commit_delay_us, self.commit_siblings)
            .map_err(|e| anyhow::anyhow!("commit-delay-us / commit-siblings: {e}"))?;
        if self.max_value_bytes == 0 || self.max_key_bytes == 0 {
            bail!("max-value-size and max-key-size must be at least 1 byte");
        }
        if self.proto_max_bulk_len_bytes < 1024 * 1024 {
            bail!("proto-max-bulk-len must be at least 1MiB");
        }
        if self.client_query_buffer_limit_bytes < self.proto_max_bulk_len_bytes {
            bail!(
                "client-query-buffer-limit ({}) must be at least proto-max-bulk-len ({}), \
                 or the largest allowed argument could never arrive",
                self.client_query_buffer_limit_bytes,
                self.proto_max_bulk_len_bytes
            );
        }
        if self.admin_port.is_some() && self.admin_port == Some(self.port) && self.port != 0 {
            bail!("admin-port must differ from port ({})", self.port);
        }
        Ok(())
    }

    /// `bind:port`, for the listener.
    pub fn listen_addr(&self) -> String {
        if self.bind.contains(':') && !self.bind.starts_with('[') {
            format!("[{}]:{}", self.bind, self.port)
        } else {
            format!("{}:{}", self.bind, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn args(list: &[&str]) -> ServerArgs {
        let mut v = vec!["walship"];
        v.extend_from_slice(list);
        TestCli::try_parse_from(v).unwrap().args
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let cfg = ServerConfig::merge(&args(&[]), &FileConfig::default()).unwrap();
        assert_eq!(cfg.port, 7379);
        assert_eq!(cfg.bind, "127.0.0.1");
        assert_eq!(cfg.data_dir, PathBuf::from("./walship-data"));
        assert_eq!(cfg.fsync, FsyncSetting::Always);
        assert_eq!(cfg.max_clients, 10_000);
        assert_eq!(cfg.admin_port, None);
        assert_eq!(cfg.requirepass, None);
        assert_eq!(cfg.proto_max_bulk_len_bytes, 512 * 1024 * 1024);
    }

    #[test]
    fn flag_wins_over_toml_and_toml_over_default() {
        let file: FileConfig = toml::from_str(
            r#"
            port = 9000
            bind = "0.0.0.0"
            fsync = "interval:5"
            max_clients = 7
            segment-size = "1MiB"
            max-value-size = 4096
            "#,
        )
        .unwrap();
        let cfg =
            ServerConfig::merge(&args(&["--port", "9100", "--fsync", "never"]), &file).unwrap();
        assert_eq!(cfg.port, 9100);
        assert_eq!(cfg.fsync, FsyncSetting::Never);
        assert_eq!(cfg.bind, "0.0.0.0");
        assert_eq!(cfg.max_clients, 7);
        assert_eq!(cfg.segment_size_bytes, Some(1 << 20));
        assert_eq!(cfg.max_value_bytes, 4096);
    }

    #[test]
    fn config_file_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "port = 9200\nrequirepass = \"s3cret\"\nadmin-port = 9201\n",
        )
        .unwrap();
        let cfg = ServerConfig::from_args(&args(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(cfg.port, 9200);
        assert_eq!(cfg.requirepass.as_deref(), Some("s3cret"));
        assert_eq!(cfg.admin_port, Some(9201));
    }

    #[test]
    fn simulate_power_loss_is_off_unless_a_flag_or_the_file_asks() {
        let off = ServerConfig::merge(&args(&[]), &FileConfig::default()).unwrap();
        assert!(!off.simulate_power_loss);
        let flag =
            ServerConfig::merge(&args(&["--simulate-power-loss"]), &FileConfig::default()).unwrap();
        assert!(flag.simulate_power_loss);
        let file: FileConfig = toml::from_str("simulate-power-loss = true").unwrap();
        assert!(
            ServerConfig::merge(&args(&[]), &file)
                .unwrap()
                .simulate_power_loss
        );
    }

    #[test]
    fn wal_sync_method_comes_from_flags_or_file_and_is_checked() {
        let d = ServerConfig::merge(&args(&[]), &FileConfig::default()).unwrap();
        assert_eq!(d.wal_sync_method, WalSyncMethod::OpenDatasync);
        let file: FileConfig = toml::from_str("wal-sync-method = \"fdatasync\"").unwrap();
        let f = ServerConfig::merge(&args(&[]), &file).unwrap();
        assert_eq!(f.wal_sync_method, WalSyncMethod::Fdatasync);
        let a = ServerConfig::merge(&args(&["--wal-sync-method", "open_datasync"]), &file).unwrap();
        assert_eq!(a.wal_sync_method, WalSyncMethod::OpenDatasync);
        let err = toml::from_str::<FileConfig>("wal_sync_method = \"fsync\"").unwrap_err();
        assert!(
            err.to_string().contains("open_datasync or fdatasync"),
            "{err}"
        );
        assert!(TestCli::try_parse_from(["walship", "--wal-sync-method", "osync"]).is_err());
    }

    #[test]
    fn commit_delay_comes_from_flags_or_file_and_is_checked() {
        let d = ServerConfig::merge(&args(&[]), &FileConfig::default()).unwrap();
        assert_eq!(
            (d.commit_delay_us, d.commit_siblings),
            (DEFAULT_COMMIT_DELAY_US, DEFAULT_COMMIT_SIBLINGS)
        );
        let file: FileConfig = toml::from_str("commit-delay-us = 50\ncommit_siblings = 2").unwrap();
        let f = ServerConfig::merge(&args(&[]), &file).unwrap();
        assert_eq!((f.commit_delay_us, f.commit_siblings), (50, 2));
        let a = ServerConfig::merge(&args(&["--commit-delay-us", "0"]), &file).unwrap();
        assert_eq!((a.commit_delay_us, a.commit_siblings), (0, 2));
        let err = ServerConfig::merge(&args(&["--commit-delay-us", "100001"]), &file).unwrap_err();
        assert!(err.to_string().contains("commit-delay-us"), "{err}");
        let err = ServerConfig::merge(&args(&["--commit-siblings", "0"]), &file).unwrap_err();
        assert!(err.to_string().contains("between 1 and 1000"), "{err}");
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("prot = 1").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn sizes_and_fsync_policies_parse() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("1g".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("12".parse::<ByteSize>().unwrap(), ByteSize(12));
        assert!("12x".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert_eq!(
            "interval:10".parse::<FsyncSetting>().unwrap(),
            FsyncSetting::IntervalMs(10)
        );
        assert_eq!(
            "ALWAYS".parse::<FsyncSetting>().unwrap(),
            FsyncSetting::Always
        );
        assert!("interval:0".parse::<FsyncSetting>().is_err());
        assert!("sometimes".parse::<FsyncSetting>().is_err());
        assert_eq!(FsyncSetting::IntervalMs(10).to_string(), "interval:10");
    }

    #[test]
    fn nonsense_limits_are_refused() {
        assert!(
            ServerConfig::merge(&args(&["--max-clients", "0"]), &FileConfig::default()).is_err()
        );
        assert!(ServerConfig::merge(
            &args(&["--port", "1", "--admin-port", "1"]),
            &FileConfig::default()
        )
        .is_err());
    }
}
