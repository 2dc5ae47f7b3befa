//! Reply encoding, in RESP2 or RESP3 depending on what the connection
//! negotiated with `HELLO`.
//!
//! Commands write straight into the connection's output buffer through
//! [`Reply`]; nothing is allocated per reply beyond buffer growth. Types that
//! only RESP3 has (maps, doubles, booleans, verbatim strings, `_` null) fall
//! back to their RESP2 equivalents, as Redis does.

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// An output buffer plus the protocol to encode in.
#[derive(Debug)]
pub struct Reply {
    buf: Vec<u8>,
    proto: Protocol,
}

/// Formats `v` in decimal into `tmp`, returning the digits.
fn fmt_i64(v: i64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        tmp[i] = b'-';
    }
    &tmp[i..]
}

/// Formats a double the way Redis prints them (`inf`, `-inf`, `nan`, or the
/// shortest representation that round-trips).
pub fn format_double(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v}")
    }
}

impl Reply {
    pub fn new(proto: Protocol) -> Reply {
        Reply {
            buf: Vec::with_capacity(16 * 1024),
            proto,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.proto
    }

    pub fn set_protocol(&mut self, proto: Protocol) {
        self.proto = proto;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drops everything after the first `len` bytes (used to replace replies
    /// of writes that turned out not to be durable).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Empties the buffer after it was written to the socket, returning
    /// memory that a single huge reply made it hold.
    pub fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > 1024 * 1024 {
            self.buf.shrink_to(16 * 1024);
        }
    }

    fn header(&mut self, tag: u8, n: i64) {
        let mut tmp = [0u8; 20];
        self.buf.push(tag);
        self.buf.extend_from_slice(fmt_i64(n, &mut tmp));
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string. Must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        debug_assert!(!s.contains(['\r', '\n']));
        self.buf.push(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error; `msg` starts with its code (`ERR ...`, `NOAUTH ...`).
    /// CR and LF are replaced by spaces so the reply stays one line.
    pub fn error(&mut self, msg: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, v: i64) {
        self.header(b':', v);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.header(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string of an integer (INFO-style numbers in arrays).
    pub fn bulk_int(&mut self, v: i64) {
        let mut tmp = [0u8; 20];
        let digits = fmt_i64(v, &mut tmp);
        let mut len_tmp = [0u8; 20];
        self.buf.push(b'$');
        self.buf
            .extend_from_slice(fmt_i64(digits.len() as i64, &mut len_tmp));
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(digits);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// The null bulk string (`$-1` in RESP2, `_` in RESP3).
    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// The null array (`*-1` in RESP2, `_` in RESP3).
    pub fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.extend_from_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    pub fn optional_bulk(&mut self, data: Option<&[u8]>) {
        match data {
            Some(d) => self.bulk(d),
            None => self.null(),
        }
    }

    /// Announces an array of `n` elements; the caller writes them next.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// Announces a map of `n` pairs (`%n` in RESP3, a flat `*2n` array in RESP2).
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', 2 * n as i64),
            Protocol::Resp3 => self.header(b'%', n as i64),
        }
    }

    /// Announces a set of `n` elements (`~n` in RESP3, an array in RESP2).
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', n as i64),
            Protocol::Resp3 => self.header(b'~', n as i64),
        }
    }

    /// A double (`,` in RESP3, a bulk string in RESP2).
    pub fn double(&mut self, v: f64) {
        let s = format_double(v);
        match self.proto {
            Protocol::Resp2 => self.bulk(s.as_bytes()),
            Protocol::Resp3 => {
                self.buf.push(b',');
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A boolean (`#t`/`#f` in RESP3, `:1`/`:0` in RESP2).
    pub fn boolean(&mut self, v: bool) {
        match (self.proto, v) {
            (Protocol::Resp2, v) => self.int(i64::from(v)),
            (Protocol::Resp3, true) => self.buf.extend_from_slice(b"#t\r\n"),
            (Protocol::Resp3, false) => self.buf.extend_from_slice(b"#f\r\n"),
        }
    }

    /// A verbatim string with a three-letter format (`txt`), as INFO replies
    /// in RESP3; a plain bulk string in RESP2.
    pub fn verbatim(&mut self, format: &str, text: &[u8]) {
        debug_assert_eq!(format.len(), 3);
        match self.proto {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                self.header(b'=', (text.len() + 4) as i64);
                self.buf.extend_from_slice(format.as_bytes());
                self.buf.push(b':');
                self.buf.extend_from_slice(text);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(proto: Protocol, f: impl FnOnce(&mut Reply)) -> String {
        let mut r = Reply::new(proto);
        f(&mut r);
        String::from_utf8(r.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn scalars_encode_as_redis_does() {
        assert_eq!(enc(Protocol::Resp2, |r| r.ok()), "+OK\r\n");
        assert_eq!(enc(Protocol::Resp2, |r| r.int(-42)), ":-42\r\n");
        assert_eq!(
            enc(Protocol::Resp2, |r| r.int(i64::MIN)),
            ":-9223372036854775808\r\n"
        );
        assert_eq!(enc(Protocol::Resp2, |r| r.bulk(b"hi")), "$2\r\nhi\r\n");
        assert_eq!(enc(Protocol::Resp2, |r| r.bulk(b"")), "$0\r\n\r\n");
        assert_eq!(enc(Protocol::Resp2, |r| r.bulk_int(1234)), "$4\r\n1234\r\n");
    }

    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(
            enc(Protocol::Resp2, |r| r.error("ERR a\r\nb")),
            "-ERR a  b\r\n"
        );
    }

    #[test]
    fn nulls_depend_on_protocol() {
        assert_eq!(enc(Protocol::Resp2, |r| r.null()), "$-1\r\n");
        assert_eq!(enc(Protocol::Resp2, |r| r.null_array()), "*-1\r\n");
        assert_eq!(enc(Protocol::Resp3, |r| r.null()), "_\r\n");
        assert_eq!(enc(Protocol::Resp3, |r| r.null_array()), "_\r\n");
    }

    #[test]
    fn maps_are_flat_arrays_in_resp2() {
        let f = |r: &mut Reply| {
            r.map(1);
            r.bulk(b"k");
            r.int(1);
        };
        assert_eq!(enc(Protocol::Resp2, f), "*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(Protocol::Resp3, f), "%1\r\n$1\r\nk\r\n:1\r\n");
    }

    #[test]
    fn resp3_only_types_fall_back_in_resp2() {
        assert_eq!(enc(Protocol::Resp3, |r| r.double(1.5)), ",1.5\r\n");
        assert_eq!(enc(Protocol::Resp2, |r| r.double(1.5)), "$3\r\n1.5\r\n");
        assert_eq!(
            enc(Protocol::Resp3, |r| r.double(f64::INFINITY)),
            ",inf\r\n"
        );
        assert_eq!(enc(Protocol::Resp3, |r| r.boolean(true)), "#t\r\n");
        assert_eq!(enc(Protocol::Resp2, |r| r.boolean(false)), ":0\r\n");
        assert_eq!(enc(Protocol::Resp3, |r| r.set(2)), "~2\r\n");
        assert_eq!(
            enc(Protocol::Resp3, |r| r.verbatim("txt", b"a:1")),
            "=7\r\ntxt:a:1\r\n"
        );
        assert_eq!(
            enc(Protocol::Resp2, |r| r.verbatim("txt", b"a:1")),
            "$3\r\na:1\r\n"
        );
    }
}
