//! Quorum reads (W + R > N), served by a primary: `WALSHIP
//! QUORUMGET key` reads the key locally and from R - 1 standbys and returns
//! the reply with the highest LSN ([`walship_replication::quorum::quorum_read`]).
//!
//! N is this node plus its standbys (every one with a replication slot
//! here, or connected), and R = W = a majority
//! ([`walship_replication::quorum::quorum_config`]). Each standby is asked
//! over its client port with `WALSHIP GETLSN key` by the small RESP client
//! below: one connection per standby, `AUTH` first when this node has a
//! replication password, every step bounded by one deadline.
//!
//! A missing key has no LSN of its own, so a node that does not have it
//! answers with the LSN it has applied up to (its *horizon*): "absent as of
//! LSN h". That is a tombstone, and it outranks any value older than `h` —
//! otherwise a lagging standby could resurrect a deleted key. The primary's
//! horizon is its WAL end; a standby's is the replay LSN it last reported,
//! a lower bound of what it had applied when it answered.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use walship_replication::quorum::{quorum_read, QuorumError};
use walship_replication::StandbyView;

/// The whole quorum read (all standbys, connections included) must finish
/// within this time.
pub const QUORUM_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// One node's answer: `Some(value)` or `None` (absent), and the LSN that
/// orders it (the write's LSN, or the node's horizon when absent).
pub type NodeReply = (Option<Bytes>, u64);

/// A standby to ask.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its name (for logs).
    pub name: String,
    /// Its client address.
    pub addr: SocketAddr,
    /// The LSN it had applied when last reported: its horizon for a missing key.
    pub horizon: u64,
}

/// The standbys worth asking, best first: streaming before catching up,
/// then the most advanced. A standby receiving a base backup, or that did
/// not tell its client port, cannot answer.
pub fn peers(views: &[StandbyView]) -> Vec<Peer> {
    let mut v: Vec<&StandbyView> = views
        .iter()
        .filter(|v| v.state != "backup" && v.listening_port.is_some_and(|p| p != 0))
        .collect();
    v.sort_by_key(|v| (v.state != "streaming", std::cmp::Reverse(v.replay_lsn)));
    v.into_iter()
        .map(|v| Peer {
            name: v.name.clone(),
            addr: SocketAddr::new(v.addr.ip(), v.listening_port.unwrap_or(0)),
            horizon: v.replay_lsn,
        })
        .collect()
}

/// The quorum's answer from the replies gathered (the local one included):
/// `Ok(Some(value))`, `Ok(None)` for a missing key, or the error naming how
/// many answered.
pub fn decide(replies: &[NodeReply], r: usize) -> Result<Option<Bytes>, QuorumError> {
    let as_options: Vec<Option<NodeReply>> = replies.iter().cloned().map(Some).collect();
    quorum_read(&as_options, r).map(Option::flatten)
}

/// Asks `peers` concurrently for `key` and returns as soon as `needed`
/// answered (or all failed, or the deadline passed), with the answers
/// gathered. Failures are logged at debug level and simply not counted.
pub async fn ask_peers(
    peers: Vec<Peer>,
    key: Bytes,
    password: Option<String>,
    needed: usize,
    max_reply_bytes: usize,
    timeout: Duration,
) -> Vec<NodeReply> {
    let mut got = Vec::new();
    if needed == 0 || peers.is_empty() {
        return got;
    }
    let mut set = JoinSet::new();
    for peer in peers {
        let (key, password) = (key.clone(), password.clone());
        set.spawn(async move {
            let r = get_lsn(peer.addr, password.as_deref(), &key, max_reply_bytes).await;
            (peer, r)
        });
    }
    let gather = async {
        while let Some(joined) = set.join_next().await {
            let Ok((peer, result)) = joined else { continue };
            match result {
                Ok(Some((value, lsn))) => got.push((Some(value), lsn)),
                Ok(None) => got.push((None, peer.horizon)),
                Err(e) => {
                    tracing::debug!(standby = %peer.name, addr = %peer.addr, error = %e, "quorum read: no answer");
                }
            }
            if got.len() >= needed {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, gather).await;
    set.abort_all();
    got
}

/// A reply to `WALSHIP GETLSN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetLsnReply {
    /// `*2 $value :lsn`.
    Entry(Bytes, u64),
    /// `*-1` (or `$-1`, `_`): no such key.
    Nil,
    /// `+...`.
    Simple(String),
    /// `-...`.
    Error(String),
}

/// Parses one reply at the start of `buf`: `Ok(None)` if more bytes are
/// needed, otherwise the reply and how many bytes it took. Anything but the
/// shapes of [`GetLsnReply`] is a protocol error.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(GetLsnReply, usize)>, String> {
    let Some((first, mut pos)) = line(buf, 0)? else {
        return Ok(None);
    };
    let (kind, rest) = match first.split_first() {
        Some((k, rest)) => (*k, rest),
        None => return Err("empty reply line".into()),
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Some((GetLsnReply::Simple(text()), pos))),
        b'-' => Ok(Some((GetLsnReply::Error(text()), pos))),
        b'_' => Ok(Some((GetLsnReply::Nil, pos))),
        b'$' | b'*' if rest == b"-1" => Ok(Some((GetLsnReply::Nil, pos))),
        b'*' if rest == b"2" => {
            let Some((head, p)) = line(buf, pos)? else {
                return Ok(None);
            };
            pos = p;
            let len: usize = match head.split_first() {
                Some((b'$', n)) => parse_num(n)?
                    .try_into()
                    .map_err(|_| "bad bulk length".to_string())?,
                _ => return Err("expected a bulk string value".into()),
            };
            let end = pos.checked_add(len).ok_or("bulk length overflows")?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            let value = Bytes::copy_from_slice(&buf[pos..end]);
            pos = end + 2;
            let Some((lsn_line, p)) = line(buf, pos)? else {
                return Ok(None);
            };
            let lsn = match lsn_line.split_first() {
                Some((b':', n)) => u64::try_from(parse_num(n)?).map_err(|_| "negative LSN")?,
                _ => return Err("expected an integer LSN".into()),
            };
            Ok(Some((GetLsnReply::Entry(value, lsn), p)))
        }
        _ => Err(format!(
            "unexpected reply '{}'",
            String::from_utf8_lossy(first)
                .chars()
                .take(64)
                .collect::<String>()
        )),
    }
}

/// The line starting at `from` (without CRLF) and the offset after it.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[from.min(buf.len())..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&rest[..i], from + i + 2))),
        None if rest.len() > 64 * 1024 => Err("reply line too long".into()),
        None => Ok(None),
    }
}

fn parse_num(n: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(n)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number '{}'", String::from_utf8_lossy(n)))
}

fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// `WALSHIP GETLSN key` against the node at `addr`: `Some((value, lsn))`,
/// `None` when it has no such key. With `password`, `AUTH` is pipelined
/// first; its error is ignored (a node without requirepass refuses AUTH),
/// and the GETLSN reply decides. The caller bounds the time.
pub async fn get_lsn(
    addr: SocketAddr,
    password: Option<&str>,
    key: &[u8],
    max_reply_bytes: usize,
) -> Result<Option<(Bytes, u64)>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut req = Vec::with_capacity(64 + key.len());
    if let Some(p) = password {
        encode_command(&mut req, &[b"AUTH", p.as_bytes()]);
    }
    encode_command(&mut req, &[b"WALSHIP", b"GETLSN", key]);
    stream
        .write_all(&req)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut skip_auth_reply = password.is_some();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match parse_reply(&buf)? {
            Some((reply, used)) => {
                buf.drain(..used);
                if skip_auth_reply {
                    skip_auth_reply = false;
                    continue;
                }
                return match reply {
                    GetLsnReply::Entry(v, lsn) => Ok(Some((v, lsn))),
                    GetLsnReply::Nil => Ok(None),
                    GetLsnReply::Error(e) => Err(e),
                    GetLsnReply::Simple(s) => Err(format!("unexpected reply +{s}")),
                };
            }
            None => {
                if buf.len() > max_reply_bytes {
                    return Err(format!("reply larger than {max_reply_bytes} bytes"));
                }
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed before the reply".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entry_nil_and_errors_incrementally() {
        let full = b"*2\r\n$5\r\nhello\r\n:42\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_reply(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse_reply(full).unwrap(),
            Some((
                GetLsnReply::Entry(Bytes::from_static(b"hello"), 42),
                full.len()
            ))
        );
        // Binary values, CRLF inside.
        let bin = b"*2\r\n$4\r\na\r\nb\r\n:7\r\n+OK\r\n";
        assert_eq!(
            parse_reply(bin).unwrap(),
            Some((
                GetLsnReply::Entry(Bytes::from_static(b"a\r\nb"), 7),
                bin.len() - 5
            ))
        );
        assert_eq!(
            parse_reply(b"*-1\r\n").unwrap(),
            Some((GetLsnReply::Nil, 5))
        );
        assert_eq!(parse_reply(b"_\r\n").unwrap(), Some((GetLsnReply::Nil, 3)));
        assert_eq!(
            parse_reply(b"-NOAUTH Authentication required.\r\n").unwrap(),
            Some((
                GetLsnReply::Error("NOAUTH Authentication required.".into()),
                34
            ))
        );
        assert_eq!(
            parse_reply(b"+OK\r\n").unwrap(),
            Some((GetLsnReply::Simple("OK".into()), 5))
        );
        assert!(parse_reply(b"*2\r\n:1\r\n:2\r\n").is_err());
        assert!(parse_reply(b"*2\r\n$1\r\nab\r\n:2\r\n").is_err());
        assert!(parse_reply(b"*2\r\n$1\r\na\r\n:-2\r\n").is_err());
        assert!(parse_reply(b"%1\r\n").is_err());
    }

    #[test]
    fn a_tombstone_outranks_an_older_value_and_loses_to_a_newer_one() {
        let v = |s: &'static str, lsn| (Some(Bytes::from_static(s.as_bytes())), lsn);
        // The primary deleted the key (horizon 100); a lagging standby still has it at 50.
        assert_eq!(decide(&[(None, 100), v("old", 50)], 2), Ok(None));
        // A standby applied a write newer than the primary's horizon read.
        assert_eq!(
            decide(&[(None, 100), v("new", 120)], 2),
            Ok(Some(Bytes::from_static(b"new")))
        );
        assert_eq!(
            decide(&[v("a", 10), v("b", 30), v("c", 20)], 2),
            Ok(Some(Bytes::from_static(b"b")))
        );
        assert_eq!(
            decide(&[v("a", 10)], 2),
            Err(QuorumError::NotEnoughReplies { got: 1, needed: 2 })
        );
    }

    #[tokio::test]
    async fn get_lsn_speaks_resp_with_pipelined_auth() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in [
                &b"-ERR AUTH <password> called without any password configured\r\n*2\r\n$2\r\nhi\r\n:9\r\n"[..],
                &b"*-1\r\n"[..],
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(buf[..n].to_vec());
                s.write_all(reply).await.unwrap();
            }
            seen
        });
        let got = get_lsn(addr, Some("pw"), b"k", 1 << 20).await.unwrap();
        assert_eq!(got, Some((Bytes::from_static(b"hi"), 9)));
        assert_eq!(get_lsn(addr, None, b"k", 1 << 20).await.unwrap(), None);
        let seen = server.await.unwrap();
        assert_eq!(
            seen[0],
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*3\r\n$7\r\nWALSHIP\r\n$6\r\nGETLSN\r\n$1\r\nk\r\n"
        );
        assert_eq!(
            seen[1],
            b"*3\r\n$7\r\nWALSHIP\r\n$6\r\nGETLSN\r\n$1\r\nk\r\n"
        );
    }

    #[tokio::test]
    async fn ask_peers_skips_dead_nodes_and_uses_horizons() {
        // A port nothing listens on.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"*-1\r\n").await.unwrap();
        });
        let peers = vec![
            Peer {
                name: "dead".into(),
                addr: dead,
                horizon: 1,
            },
            Peer {
                name: "live".into(),
                addr: live,
                horizon: 77,
            },
        ];
        let got = ask_peers(
            peers,
            Bytes::from_static(b"k"),
            None,
            2,
            1 << 20,
            QUORUM_READ_TIMEOUT,
        )
        .await;
        assert_eq!(got, vec![(None, 77)]);
    }
}
