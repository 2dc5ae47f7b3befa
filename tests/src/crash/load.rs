//! K client threads writing unique keys to the primary, each recording every
//! write: invoked, then acknowledged (`+OK`), failed (an error reply) or
//! unknown (no reply: the connection died, was cut, or timed out).

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::resp::{RawConn, Reply};

/// A client gives up on a reply after this long (failure guard: the harness
/// normally ends the load by closing the sockets).
const CLIENT_IO_GUARD: Duration = Duration::from_secs(10);

/// Bytes of each value (key, a separator, padding).
pub const VALUE_BYTES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Acked,
    Failed,
    Unknown,
}

/// One write as the client saw it. Times are µs since the trial began.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Op {
    pub client: u32,
    pub key: String,
    pub value: String,
    pub invoked_us: u64,
    /// When the reply came (or the client gave up).
    pub done_us: u64,
    pub outcome: Outcome,
}

/// The value written under `key`: the key itself, padded to [`VALUE_BYTES`].
pub fn value_for(key: &str) -> String {
    let mut v = format!("{key}=");
    while v.len() < VALUE_BYTES {
        v.push(char::from(b'a' + (v.len() % 26) as u8));
    }
    v
}

/// The running clients.
pub struct Load {
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    clients: Vec<JoinHandle<Vec<Op>>>,
}

impl Load {
    /// Starts `clients` writers against `addr`; keys are `t<trial>:c<c>:<n>`.
    pub fn start(addr: SocketAddr, clients: u32, trial: u64, t0: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                let sockets = sockets.clone();
                thread::spawn(move || client(addr, c, trial, t0, &stop, &sockets))
            })
            .collect();
        Load {
            stop,
            sockets,
            clients,
        }
    }

    /// Stops the clients: a write without its reply yet becomes unknown.
    pub fn stop(self) -> Vec<Op> {
        self.stop.store(true, Ordering::SeqCst);
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        let mut ops = Vec::new();
        for c in self.clients {
            ops.extend(c.join().expect("client thread"));
        }
        ops
    }
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

fn client(
    addr: SocketAddr,
    c: u32,
    trial: u64,
    t0: Instant,
    stop: &AtomicBool,
    sockets: &Mutex<Vec<TcpStream>>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let Ok(mut con) = RawConn::connect_addr(addr, Duration::from_secs(2), CLIENT_IO_GUARD) else {
        return ops;
    };
    if let Ok(clone) = con.stream().try_clone() {
        sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(clone);
    }
    // A stop that came before the socket was registered must still end us.
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("t{trial}:c{c}:{n}");
        let value = value_for(&key);
        let invoked_us = micros(t0);
        let outcome = match con.try_command(&["SET", &key, &value]) {
            Ok(Reply::Simple(ok)) if ok == "OK" => Outcome::Acked,
            Ok(_) => Outcome::Failed,
            Err(_) => Outcome::Unknown,
        };
        let done = outcome.clone();
        ops.push(Op {
            client: c,
            key,
            value,
            invoked_us,
            done_us: micros(t0),
            outcome,
        });
        match done {
            Outcome::Unknown => break,
            // A refusing server (poisoned, read-only) answers at once: do not spin.
            Outcome::Failed => thread::sleep(Duration::from_millis(5)),
            Outcome::Acked => {}
        }
    }
    ops
}
