//! One trial: a primary `p` and standbys `s1`, `s2`; K clients writing; a
//! fault at a seeded moment; promotion of the standby with the highest
//! flushed LSN; the other standby re-pointed; the old primary back as a
//! standby of the new one (rewinding if it went past the fork); convergence;
//! every key read back from every node and judged against what was written.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::load::{value_for, Load, Op, Outcome};
use super::netns::{DelayProxy, Netns};
use super::node::{Info, Node, Placement};
use super::{Fault, Mode};
use crate::ports::free_port;
use crate::resp::Reply;

/// Failure guards (not speed claims): standbys streaming, convergence,
/// the promoted node's first write.
const STREAMING_GUARD: Duration = Duration::from_secs(20);
const CONVERGE_GUARD: Duration = Duration::from_secs(30);
const PROBE_GUARD: Duration = Duration::from_secs(20);
/// The injected link delay of the `delay` fault.
pub const DELAY_MS: u32 = 5;
/// The fault comes this many ms into the load (uniform, seeded).
const FAULT_AT_MS: std::ops::Range<u64> = 300..1000;
/// Keys listed per kind of finding in a trial's record.
const KEYS_LISTED_MAX: usize = 10;

/// What a trial needs.
pub struct TrialSpec<'a> {
    pub bin: &'a Path,
    pub mode: Mode,
    pub fault: Fault,
    pub clients: u32,
    /// Index of the trial in the whole run (keys carry it).
    pub trial: u64,
    pub seed: u64,
    pub work_dir: &'a Path,
    pub keep_all: bool,
}

/// What a trial found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrialResult {
    pub mode: String,
    pub fault: String,
    pub trial: u64,
    pub seed: u64,
    pub fault_at_ms: u64,
    pub attempted: u64,
    pub acked: u64,
    pub failed: u64,
    pub unknown: u64,
    pub acked_lost: u64,
    pub acked_lost_bytes: u64,
    /// Span of the acknowledgement times of the lost acknowledged writes.
    pub acked_lost_span_ms: f64,
    pub unknown_present: u64,
    pub unknown_absent: u64,
    pub failed_present: u64,
    pub failed_absent: u64,
    pub rewinds: u64,
    pub rewound_records: u64,
    pub rewound_bytes: u64,
    pub promoted: String,
    /// From the fault to the promoted node acknowledging its first write.
    pub promote_ms: Option<f64>,
    pub converged: bool,
    /// `node:key` for values nobody wrote.
    pub phantoms: Vec<String>,
    pub lost_keys: Vec<String>,
    /// `netem`, `proxy` (user space), or empty.
    pub delay_via: String,
    /// Why the trial could not finish, or why it did not converge.
    pub error: Option<String>,
    /// Where its logs are, when kept.
    pub kept_dir: Option<String>,
}

impl TrialResult {
    /// A broken invariant, in words; `None` when the trial is clean.
    pub fn violation(&self, mode: Mode) -> Option<String> {
        if mode.is_synchronous() && self.acked_lost > 0 {
            return Some(format!(
                "{} acknowledged writes lost in synchronous mode {mode}",
                self.acked_lost
            ));
        }
        if !self.phantoms.is_empty() {
            return Some(format!("values nobody wrote: {:?}", self.phantoms));
        }
        if !self.converged {
            return Some(format!(
                "nodes did not converge: {}",
                self.error.as_deref().unwrap_or("?")
            ));
        }
        None
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn wait_for(guard: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + guard;
    let mut last_err = None;
    while Instant::now() < deadline {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        thread::sleep(Duration::from_millis(5));
    }
    match last_err {
        Some(e) => Err(e.context(format!("still not true after {guard:?}"))),
        None => bail!("still not true after {guard:?}"),
    }
}

/// Both standbys are listed `online` by the primary.
fn streaming_count(info: &Info) -> usize {
    info.0
        .iter()
        .filter(|(k, v)| {
            k.strip_prefix("slave")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                && v.contains("state=online")
        })
        .count()
}

fn addr_str(a: SocketAddr) -> (String, String) {
    (a.ip().to_string(), a.port().to_string())
}

/// Runs one trial; harness failures are reported in the result, not panics.
pub fn run(spec: &TrialSpec<'_>, netns: Option<&mut Netns>) -> TrialResult {
    let dir = spec
        .work_dir
        .join(format!("{}-{}-{}", spec.mode, spec.fault, spec.trial));
    let mut result = TrialResult {
        mode: spec.mode.to_string(),
        fault: spec.fault.to_string(),
        trial: spec.trial,
        seed: spec.seed,
        ..TrialResult::default()
    };
    let outcome = run_inner(spec, netns, &dir, &mut result);
    if let Err(e) = outcome {
        result.converged = false;
        result.error = Some(format!("{e:#}"));
    }
    let failed = result.violation(spec.mode).is_some();
    if failed || spec.keep_all {
        result.kept_dir = Some(dir.display().to_string());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_inner(
    spec: &TrialSpec<'_>,
    mut netns: Option<&mut Netns>,
    dir: &Path,
    result: &mut TrialResult,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Outside nodes bind the host end of the veth when there is one, so the
    // primary inside the namespace can reach them after the failover.
    let (outside_ip, p_place) = match netns.as_deref() {
        Some(ns) => (
            IpAddr::V4(ns.host_addr),
            Placement {
                netns: Some(ns.name.clone()),
                bind: ns.ns_addr.to_string(),
                addr: SocketAddr::new(IpAddr::V4(ns.ns_addr), free_port()),
            },
        ),
        None => (
            loopback,
            Placement {
                netns: None,
                bind: loopback.to_string(),
                addr: SocketAddr::new(loopback, free_port()),
            },
        ),
    };
    let outside = |port| Placement {
        netns: None,
        bind: outside_ip.to_string(),
        addr: SocketAddr::new(outside_ip, port),
    };
    let mut p = Node::new(spec.bin, "p", dir.join("p"), p_place)?;
    let mut s1 = Node::new(spec.bin, "s1", dir.join("s1"), outside(free_port()))?;
    let mut s2 = Node::new(spec.bin, "s2", dir.join("s2"), outside(free_port()))?;

    let mut p_args: Vec<String> = vec!["--synchronous-commit".into(), "on".into()];
    if spec.mode.is_synchronous() {
        p_args.extend([
            "--synchronous-standby-names".into(),
            spec.mode.standby_names().into(),
        ]);
    }
    p.start(&p_args)?;

    // The standbys' route to the primary: direct, or through a delay.
    let mut _proxy = None;
    let mut replicate_from = p.addr();
    if spec.fault == Fault::Delay {
        let ns = netns
            .as_deref_mut()
            .context("the delay fault needs a namespace")?;
        if ns.add_netem_delay(DELAY_MS)? {
            result.delay_via = "netem".into();
        } else {
            let proxy = DelayProxy::start(
                ns.host_addr,
                p.addr(),
                Duration::from_millis(u64::from(DELAY_MS)),
            )?;
            replicate_from = proxy.addr;
            _proxy = Some(proxy);
            result.delay_via = "proxy".into();
        }
    }
    let standby_args = |from: SocketAddr| -> Vec<String> {
        vec![
            "--replicate-from".into(),
            from.to_string(),
            "--synchronous-commit".into(),
            "on".into(),
        ]
    };
    s1.start(&standby_args(replicate_from))?;
    s2.start(&standby_args(replicate_from))?;
    wait_for(STREAMING_GUARD, || Ok(streaming_count(&p.info()?) == 2))
        .context("waiting for both standbys to stream")?;
    if spec.fault == Fault::Powerloss {
        // A primary on the simulated device cannot serve a base backup (the
        // WAL sender reads the checkpoint file from the real disk), so the
        // standbys are seeded first; then the primary restarts on the
        // simulator and they resume streaming from their slots. (With fsync
        // always and no writes yet, a SIGKILL loses nothing here.)
        p.kill();
        p_args.push("--simulate-power-loss".into());
        p.start(&p_args)?;
        wait_for(STREAMING_GUARD, || Ok(streaming_count(&p.info()?) == 2))
            .context("waiting for both standbys to stream from the simulated primary")?;
    }

    // Load, then the fault at a seeded moment.
    let t0 = Instant::now();
    let load = Load::start(p.addr(), spec.clients, spec.trial, t0);
    let fault_at_ms = rng.gen_range(FAULT_AT_MS);
    result.fault_at_ms = fault_at_ms;
    thread::sleep(Duration::from_millis(fault_at_ms));
    let victim_is_s1 = rng.gen_bool(0.5);
    let t_fault = inject(
        spec,
        &mut p,
        &mut s1,
        &mut s2,
        victim_is_s1,
        netns.as_deref(),
    )?;
    let ops = load.stop();
    if let Some(ns) = netns.as_deref_mut() {
        ns.clear_delay();
    }
    drop(_proxy);

    if spec.fault == Fault::Kill2 {
        // The operator brings the machine back before choosing whom to promote.
        let victim = if victim_is_s1 { &mut s1 } else { &mut s2 };
        victim.start(&standby_args(replicate_from))?;
    }

    // Promote the standby with the highest flushed LSN.
    let lsn1 = s1.info()?.num("walship_flushed_lsn");
    let lsn2 = s2.info()?.num("walship_flushed_lsn");
    let promote_s1 = lsn1 > lsn2 || (lsn1 == lsn2 && rng.gen_bool(0.5));
    let (new, other) = if promote_s1 {
        (&mut s1, &mut s2)
    } else {
        (&mut s2, &mut s1)
    };
    result.promoted = new.name.clone();
    let reply = new.command(&["REPLICAOF", "NO", "ONE"])?;
    if !matches!(&reply, Reply::Simple(s) if s.starts_with("OK")) {
        bail!("REPLICAOF NO ONE on {} replied {reply:?}", new.name);
    }
    let probe_key = format!("t{}:probe", spec.trial);
    let probe_value = value_for(&probe_key);
    wait_for(PROBE_GUARD, || {
        Ok(new.command(&["SET", &probe_key, &probe_value])? == Reply::Simple("OK".into()))
    })
    .context("the promoted node's first write")?;
    result.promote_ms = Some(ms(t_fault.elapsed()));

    // Re-point the other standby, bring the old primary back as a standby.
    let (host, port) = addr_str(new.addr());
    let reply = other.command(&["REPLICAOF", &host, &port])?;
    if reply.is_error() {
        bail!("REPLICAOF on {} replied {reply:?}", other.name);
    }
    match spec.fault {
        Fault::Partition => {
            let ns = netns.as_deref().context("partition needs a namespace")?;
            ns.set_link(true)?;
            // The healed link may take a moment to carry connections again.
            let mut reply = None;
            wait_for(PROBE_GUARD, || {
                reply = Some(p.command(&["REPLICAOF", &host, &port])?);
                Ok(true)
            })
            .context("reaching the old primary after healing the partition")?;
            if let Some(reply) = reply.filter(Reply::is_error) {
                bail!("REPLICAOF on the old primary replied {reply:?}");
            }
        }
        _ => p.start(&standby_args(new.addr()))?,
    }

    let converge = converge(new, other, &p);
    let nodes: [&Node; 3] = [new, other, &p];
    judge(result, &ops, (&probe_key, &probe_value), &nodes)?;
    match converge {
        Ok(()) => result.converged = true,
        Err(e) => {
            result.converged = false;
            let mut why = format!("{e:#}");
            for n in nodes {
                if let Ok(info) = n.info() {
                    why.push_str(&format!(
                        "; {}: role={} lsn={} epoch={} link={} last_error={}",
                        n.name,
                        info.get("role").unwrap_or("?"),
                        info.num("walship_flushed_lsn"),
                        info.num("walship_epoch"),
                        info.get("master_link_status").unwrap_or("-"),
                        info.get("walship_last_error").unwrap_or("-"),
                    ));
                }
            }
            result.error = Some(why);
        }
    }
    Ok(())
}

/// Injects the fault; returns its instant.
fn inject(
    spec: &TrialSpec<'_>,
    p: &mut Node,
    s1: &mut Node,
    s2: &mut Node,
    victim_is_s1: bool,
    netns: Option<&Netns>,
) -> Result<Instant> {
    Ok(match spec.fault {
        Fault::Kill | Fault::Delay => {
            p.signal_kill();
            let t = Instant::now();
            p.kill();
            t
        }
        Fault::Kill2 => {
            let victim = if victim_is_s1 { s1 } else { s2 };
            p.signal_kill();
            victim.signal_kill();
            let t = Instant::now();
            p.kill();
            victim.kill();
            t
        }
        Fault::Powerloss => {
            let mut con = p.connect()?;
            con.send(&crate::resp::encode(&[
                "DEBUG",
                "POWERLOSS",
                &spec.seed.to_string(),
            ]))?;
            let t = Instant::now();
            let status = p
                .wait_exit(Duration::from_secs(30))
                .context("the primary did not exit after DEBUG POWERLOSS")?;
            if status.code() != Some(137) {
                bail!("DEBUG POWERLOSS: the primary exited with {status}");
            }
            t
        }
        Fault::Partition => {
            netns
                .context("partition needs a namespace")?
                .set_link(false)?;
            Instant::now()
        }
    })
}

/// Waits until every standby streams from `new` at its flushed LSN and all
/// three keyspaces are identical.
fn converge(new: &Node, other: &Node, old: &Node) -> Result<()> {
    let mut last = String::new();
    let r = wait_for(CONVERGE_GUARD, || {
        let want = new.info()?.num("walship_flushed_lsn");
        for s in [other, old] {
            let info = s.info()?;
            let lsn = info.num("walship_flushed_lsn");
            if info.get("master_link_status") != Some("up") || lsn != want {
                last = format!("{} at LSN {lsn}, primary at {want}", s.name);
                return Ok(false);
            }
        }
        let a = new.keyspace()?;
        for s in [other, old] {
            if s.keyspace()? != a {
                last = format!("{}'s keyspace differs from the new primary's", s.name);
                return Ok(false);
            }
        }
        Ok(true)
    });
    r.with_context(|| format!("convergence ({last})"))
}

/// Accounts for every write against the new primary's keyspace, and checks
/// every node for values nobody wrote.
fn judge(
    result: &mut TrialResult,
    ops: &[Op],
    probe: (&str, &str),
    nodes: &[&Node; 3],
) -> Result<()> {
    let mut invoked: HashMap<&str, &str> = ops
        .iter()
        .map(|o| (o.key.as_str(), o.value.as_str()))
        .collect();
    invoked.insert(probe.0, probe.1);
    // The new primary must answer; a node that did not rejoin may not.
    let primary_keyspace = nodes[0].keyspace()?;
    let mut keyspaces = vec![(nodes[0], primary_keyspace)];
    for n in &nodes[1..] {
        if let Ok(ks) = n.keyspace() {
            keyspaces.push((n, ks));
        }
    }
    for (node, ks) in &keyspaces {
        for (k, v) in ks {
            let k = String::from_utf8_lossy(k);
            if invoked.get(k.as_ref()).map(|w| w.as_bytes()) != Some(v.as_slice()) {
                result.phantoms.push(format!("{}:{k}", node.name));
            }
        }
    }
    let primary = &keyspaces[0].1;
    let (mut first_lost_ack, mut last_lost_ack) = (u64::MAX, 0);
    for op in ops {
        result.attempted += 1;
        let present =
            primary.get(op.key.as_bytes()).map(Vec::as_slice) == Some(op.value.as_bytes());
        match op.outcome {
            Outcome::Acked => {
                result.acked += 1;
                if !present {
                    result.acked_lost += 1;
                    result.acked_lost_bytes += (op.key.len() + op.value.len()) as u64;
                    first_lost_ack = first_lost_ack.min(op.done_us);
                    last_lost_ack = last_lost_ack.max(op.done_us);
                    if result.lost_keys.len() < KEYS_LISTED_MAX {
                        result.lost_keys.push(op.key.clone());
                    }
                }
            }
            Outcome::Failed => {
                result.failed += 1;
                *if present {
                    &mut result.failed_present
                } else {
                    &mut result.failed_absent
                } += 1;
            }
            Outcome::Unknown => {
                result.unknown += 1;
                *if present {
                    &mut result.unknown_present
                } else {
                    &mut result.unknown_absent
                } += 1;
            }
        }
    }
    if result.acked_lost > 0 {
        result.acked_lost_span_ms = (last_lost_ack - first_lost_ack) as f64 / 1000.0;
    }
    for n in nodes {
        if let Ok(info) = n.info() {
            result.rewinds += info.num("walship_rewinds");
            result.rewound_records += info.num("walship_rewound_records");
            result.rewound_bytes += info.num("walship_rewound_bytes");
        }
    }
    Ok(())
}

/// The directory trials of this run work in.
pub fn work_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("work-{seed}"))
}
