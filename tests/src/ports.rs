//! Free loopback ports for test servers.
//!
//! The OS picks a free port (bind to port 0), and a process-wide set makes
//! sure two tests in the same process never get the same one. Another process
//! can still take the port between our probe and the server's bind; the
//! server harness retries on "address in use" for that reason.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago and that this process has
/// not handed out before.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _attempt in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port in 1000 attempts");
}
