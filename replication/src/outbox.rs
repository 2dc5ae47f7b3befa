//! The sending side of a replication connection, shared by the task that
//! owns the connection and the WAL flusher thread.
//!
//! Every frame a node sends on a replication connection goes through one
//! [`Outbox`], so frames never interleave. A sender locks it, queues a
//! frame behind anything still pending and writes what the socket takes at
//! once, without blocking. Whatever the socket did not take stays pending;
//! the owning task is woken ([`Outbox::wake`]) and writes it when the
//! socket is writable again ([`Outbox::drain`]).
//!
//! This lets the WAL flusher put a batch on the wire (primary) or a status
//! report (standby) the moment it has one, on its own thread, instead of
//! waking a task to do it: on a 2-core machine each such hand-off costs
//! tens of microseconds of scheduling, on the path every synchronous write
//! waits for (docs/profiling.md).

use crate::protocol::Message;
use crate::stream::ReplError;
use bytes::{Buf, BytesMut};
use parking_lot::{Mutex, MutexGuard};
use std::io;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// The write half of a replication connection plus the sender's state `S`,
/// both behind one lock.
pub struct Outbox<S> {
    wr: OwnedWriteHalf,
    inner: Mutex<Inner<S>>,
    /// Notified when bytes are left pending or a sender asks the owning
    /// task to act; the task waits on it.
    pub wake: Notify,
}

struct Inner<S> {
    /// Encoded frames the socket has not taken yet, oldest first.
    pending: BytesMut,
    /// The first write error; every later send fails with it.
    failed: Option<(io::ErrorKind, String)>,
    state: S,
}

/// The locked outbox: the sender's state and the means to send.
pub struct OutboxGuard<'a, S> {
    wr: &'a OwnedWriteHalf,
    inner: MutexGuard<'a, Inner<S>>,
    wake: &'a Notify,
}

impl<S> Outbox<S> {
    /// Takes over `wr`: from now on everything sent on it goes through here.
    pub fn new(wr: OwnedWriteHalf, state: S) -> Self {
        Outbox {
            wr,
            inner: Mutex::new(Inner {
                pending: BytesMut::new(),
                failed: None,
                state,
            }),
            wake: Notify::new(),
        }
    }

    /// Locks the outbox. Never held across an `.await`.
    pub fn lock(&self) -> OutboxGuard<'_, S> {
        OutboxGuard {
            wr: &self.wr,
            inner: self.inner.lock(),
            wake: &self.wake,
        }
    }

    /// Locks the outbox unless someone else holds it: for the WAL flusher,
    /// which must never wait for a task.
    pub fn try_lock(&self) -> Option<OutboxGuard<'_, S>> {
        Some(OutboxGuard {
            wr: &self.wr,
            inner: self.inner.try_lock()?,
            wake: &self.wake,
        })
    }

    /// Writes everything pending, waiting for the socket as needed.
    pub async fn drain(&self) -> Result<(), ReplError> {
        loop {
            {
                let mut g = self.lock();
                g.write_some();
                if let Some((kind, msg)) = &g.inner.failed {
                    return Err(ReplError::Io(io::Error::new(*kind, msg.clone())));
                }
                if g.inner.pending.is_empty() {
                    return Ok(());
                }
            }
            self.wr.writable().await?;
        }
    }

    /// Sends one message, after anything pending, and waits until the
    /// socket took all of it.
    pub async fn send(&self, m: &Message) -> Result<(), ReplError> {
        self.lock().push(m);
        self.drain().await
    }
}

impl<S> OutboxGuard<'_, S> {
    /// The sender's state.
    pub fn state(&mut self) -> &mut S {
        &mut self.inner.state
    }

    /// Queues `m` and writes what the socket takes now. Returns true when
    /// nothing is left pending; otherwise the owning task was woken to
    /// finish the job (or to see the write error).
    pub fn push(&mut self, m: &Message) -> bool {
        if self.inner.failed.is_none() {
            m.encode(&mut self.inner.pending);
        }
        self.flush_now()
    }

    /// [`OutboxGuard::push`] for a frame already encoded
    /// ([`Message::encode`]), e.g. one batch sent to several standbys.
    pub fn push_frame(&mut self, frame: &[u8]) -> bool {
        if self.inner.failed.is_none() {
            self.inner.pending.extend_from_slice(frame);
        }
        self.flush_now()
    }

    /// Whether bytes wait for the socket.
    pub fn has_pending(&self) -> bool {
        !self.inner.pending.is_empty()
    }

    fn flush_now(&mut self) -> bool {
        self.write_some();
        let done = self.inner.pending.is_empty() && self.inner.failed.is_none();
        if !done {
            self.wake.notify_one();
        }
        done
    }

    /// Writes pending bytes until the socket would block or fails.
    fn write_some(&mut self) {
        let inner = &mut *self.inner;
        while !inner.pending.is_empty() && inner.failed.is_none() {
            match self.wr.try_write(&inner.pending) {
                Ok(0) => {
                    inner.failed = Some((
                        io::ErrorKind::WriteZero,
                        "the socket accepted no bytes".into(),
                    ))
                }
                Ok(n) => inner.pending.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => inner.failed = Some((e.kind(), e.to_string())),
            }
        }
        if inner.failed.is_some() {
            inner.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outbox;
    use crate::protocol::Message;
    use crate::stream::read_message;
    use bytes::{Bytes, BytesMut};
    use std::sync::Arc;
    use tokio::net::{TcpListener, TcpStream};

    fn wal(start_lsn: u64, len: usize) -> Message {
        Message::WalData {
            epoch: 1,
            start_lsn,
            primary_flushed_lsn: 0,
            data: Bytes::from(vec![(start_lsn % 251) as u8; len]),
        }
    }

    /// Frames pushed from other threads while the socket is full (nobody
    /// reads) and from the task arrive whole and in order once the reader
    /// starts; nothing is lost or interleaved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_from_several_threads_arrive_whole_and_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_rd, wr) = client.into_split();
        let outbox = Arc::new(Outbox::new(wr, 0u64));
        // 3 threads x 200 frames of 64 KiB: far more than the socket buffers
        // hold, so most pushes leave bytes pending.
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let outbox = outbox.clone();
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let mut g = outbox.lock();
                        // The state is the next sequence number: taken and
                        // sent under one lock, so the order on the wire is
                        // the order of the numbers.
                        let seq = *g.state();
                        *g.state() += 1;
                        g.push(&wal(seq, 64 * 1024 + (t * 200 + i) as usize % 7));
                    }
                })
            })
            .collect();
        let drainer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                loop {
                    outbox.drain().await.unwrap();
                    if *outbox.lock().state() == 600 && !outbox.lock().has_pending() {
                        return;
                    }
                    // A push that wrote everything notifies nobody: poll too.
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_millis(10),
                        outbox.wake.notified(),
                    )
                    .await;
                }
            })
        };
        let (mut rd, _wr) = server.into_split();
        let mut buf = BytesMut::new();
        for want in 0..600u64 {
            match read_message(&mut rd, &mut buf).await.unwrap().unwrap() {
                Message::WalData {
                    start_lsn, data, ..
                } => {
                    assert_eq!(start_lsn, want);
                    assert!(data.iter().all(|&b| b == (want % 251) as u8));
                    assert!(data.len() >= 64 * 1024);
                }
                other => panic!("unexpected {}", other.name()),
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        drainer.await.unwrap();
    }

    /// After the peer is gone every send fails with the write error, and
    /// nothing stays pending.
    #[tokio::test]
    async fn a_closed_peer_fails_every_later_send() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        drop(server);
        let (_rd, wr) = client.into_split();
        let outbox = Outbox::new(wr, ());
        let mut failed = false;
        for i in 0..100 {
            if outbox.send(&wal(i, 64 * 1024)).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writing to a closed peer never failed");
        assert!(outbox.send(&wal(0, 10)).await.is_err());
        assert!(!outbox.lock().has_pending());
    }
}
