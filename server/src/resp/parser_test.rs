use super::*;
use proptest::prelude::*;

fn parser() -> Parser {
    Parser::new(Limits::new(512 * 1024 * 1024))
}

type Requests = Vec<Vec<Vec<u8>>>;

fn parse_all(p: &mut Parser, buf: &[u8]) -> Result<(Requests, usize), ProtocolError> {
    let mut req = Request::new();
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match p.parse(&buf[at..], &mut req, true)? {
            Parsed::Complete { consumed } => {
                out.push(req.args(&buf[at..]).iter().map(|a| a.to_vec()).collect());
                at += consumed;
            }
            Parsed::Empty { consumed } => at += consumed,
            Parsed::Incomplete => return Ok((out, at)),
        }
    }
}

fn words(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn bulk_whose_length_disagrees_with_its_data_is_refused_whole() {
    // Longer than declared: "abcdef" with `$3`.
    let err = parse_all(
        &mut parser(),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabcdef\r\n",
    )
    .unwrap_err();
    assert_eq!(err, ProtocolError::BulkNotTerminated);
    // Shorter than declared: the CRLF is taken as data, then comes more.
    let err = parse_all(&mut parser(), b"*2\r\n$3\r\nGET\r\n$4\r\nab\r\nxy").unwrap_err();
    assert_eq!(err, ProtocolError::BulkNotTerminated);
    // A lone `\n` is not a terminator either.
    let err = parse_all(&mut parser(), b"*1\r\n$4\r\nPING\n\n").unwrap_err();
    assert_eq!(err, ProtocolError::BulkNotTerminated);
    // Until both bytes arrived, it is only incomplete.
    let (reqs, used) = parse_all(&mut parser(), b"*1\r\n$4\r\nPING\r").unwrap();
    assert!(reqs.is_empty());
    assert_eq!(used, 0);
}

#[test]
fn complete_array_is_parsed() {
    let (reqs, used) = parse_all(&mut parser(), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    assert_eq!(reqs, vec![words(&["GET", "k"])]);
    assert_eq!(used, 20);
}

#[test]
fn pipelined_requests_are_all_parsed() {
    let buf = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$0\r\n\r\nPING\r\n*1\r\n$4\r\nPI";
    let (reqs, used) = parse_all(&mut parser(), buf).unwrap();
    assert_eq!(
        reqs,
        vec![words(&["PING"]), words(&["SET", "a", ""]), words(&["PING"])]
    );
    assert_eq!(&buf[used..], b"*1\r\n$4\r\nPI");
}

#[test]
fn every_split_point_of_a_frame_gives_incomplete_then_the_same_request() {
    let frame = b"*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$11\r\nhello world\r\n";
    for cut in 0..frame.len() {
        let mut p = parser();
        let mut req = Request::new();
        assert_eq!(
            p.parse(&frame[..cut], &mut req, true).unwrap(),
            Parsed::Incomplete,
            "cut at {cut}"
        );
        match p.parse(frame, &mut req, true).unwrap() {
            Parsed::Complete { consumed } => assert_eq!(consumed, frame.len()),
            other => panic!("cut at {cut}: {other:?}"),
        }
        let args: Vec<_> = req.args(frame).iter().map(|a| a.to_vec()).collect();
        assert_eq!(args, words(&["SET", "hello", "hello world"]));
    }
}

#[test]
fn inline_commands_are_parsed() {
    let (reqs, _) = parse_all(&mut parser(), b"PING\r\nSET k \"v 1\"\nECHO x\r\n").unwrap();
    assert_eq!(
        reqs,
        vec![
            words(&["PING"]),
            words(&["SET", "k", "v 1"]),
            words(&["ECHO", "x"])
        ]
    );
}

#[test]
fn empty_inline_lines_and_empty_arrays_are_skipped() {
    let (reqs, used) = parse_all(&mut parser(), b"\r\n\n*0\r\n*-1\r\n*-3\r\nPING\r\n").unwrap();
    assert_eq!(reqs, vec![words(&["PING"])]);
    assert_eq!(used, 23);
}

#[test]
fn absurd_multibulk_length_is_refused_without_allocating() {
    let mut req = Request::new();
    let err = parser()
        .parse(b"*2147483648\r\n", &mut req, true)
        .unwrap_err();
    assert_eq!(err, ProtocolError::InvalidMultibulkLength);
    assert_eq!(err.to_string(), "Protocol error: invalid multibulk length");
    assert!(req.ranges.capacity() <= 1024);
}

#[test]
fn large_but_allowed_multibulk_length_reserves_little() {
    let mut req = Request::new();
    let r = parser().parse(b"*1048576\r\n", &mut req, true).unwrap();
    assert_eq!(r, Parsed::Incomplete);
    assert!(req.ranges.capacity() <= 1024);
}

#[test]
fn negative_and_garbage_lengths_are_refused() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"*abc\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*+1\r\n", ProtocolError::InvalidMultibulkLength),
        (
            b"*99999999999999999999999\r\n",
            ProtocolError::InvalidMultibulkLength,
        ),
        (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$x\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$536870913\r\n", ProtocolError::InvalidBulkLength),
        (
            b"*1\r\n$99999999999999\r\n",
            ProtocolError::InvalidBulkLength,
        ),
        (b"*1\r\n:1\r\n", ProtocolError::ExpectedDollar(b':')),
    ];
    for (input, want) in cases {
        let mut req = Request::new();
        let got = parser().parse(input, &mut req, true);
        assert_eq!(
            got,
            Err(*want),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        ProtocolError::InvalidBulkLength.to_string(),
        "Protocol error: invalid bulk length"
    );
}

#[test]
fn overlong_inline_and_header_lines_are_refused() {
    let long = vec![b'a'; 64 * 1024 + 1];
    let mut req = Request::new();
    assert_eq!(
        parser().parse(&long, &mut req, true),
        Err(ProtocolError::TooBigInline)
    );
    assert_eq!(
        ProtocolError::TooBigInline.to_string(),
        "Protocol error: too big inline request"
    );
    let mut star = b"*".to_vec();
    star.extend(std::iter::repeat_n(b'1', 64 * 1024 + 1));
    assert_eq!(
        parser().parse(&star, &mut req, true),
        Err(ProtocolError::TooBigMultibulkCount)
    );
    let mut dollar = b"*1\r\n$".to_vec();
    dollar.extend(std::iter::repeat_n(b'1', 64 * 1024 + 1));
    assert_eq!(
        parser().parse(&dollar, &mut req, true),
        Err(ProtocolError::TooBigBulkCount)
    );
}

#[test]
fn unauthenticated_clients_get_small_limits() {
    let mut req = Request::new();
    assert_eq!(
        parser().parse(b"*11\r\n", &mut req, false),
        Err(ProtocolError::UnauthenticatedMultibulkLength)
    );
    assert_eq!(
        parser().parse(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n", &mut req, false),
        Err(ProtocolError::UnauthenticatedBulkLength)
    );
    assert!(matches!(
        parser().parse(b"*2\r\n$4\r\nAUTH\r\n$3\r\npwd\r\n", &mut req, false),
        Ok(Parsed::Complete { .. })
    ));
}

#[test]
fn configured_bulk_limit_applies() {
    let mut p = Parser::new(Limits::new(10));
    let mut req = Request::new();
    assert!(matches!(
        p.parse(b"*1\r\n$10\r\n0123456789\r\n", &mut req, true),
        Ok(Parsed::Complete { .. })
    ));
    assert_eq!(
        p.parse(b"*1\r\n$11\r\n", &mut req, true),
        Err(ProtocolError::InvalidBulkLength)
    );
}

#[test]
fn parse_i64_is_strict() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"-12"), Some(-12));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"+1",
        b"01",
        b"-0",
        b" 1",
        b"1 ",
        b"9223372036854775808",
        b"1a",
    ] {
        assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut p = Parser::new(Limits::new(1024));
        let _ = parse_all(&mut p, &data);
    }

    #[test]
    fn arbitrary_bytes_after_a_star_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = b"*3\r\n$".to_vec();
        buf.extend(data);
        let mut p = Parser::new(Limits::new(1024));
        let _ = parse_all(&mut p, &buf);
    }

    #[test]
    fn encoded_requests_round_trip_at_any_split(
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
        cut in 0usize..400,
    ) {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for a in &args {
            frame.extend(format!("${}\r\n", a.len()).bytes());
            frame.extend(a);
            frame.extend(b"\r\n");
        }
        let cut = cut.min(frame.len());
        let mut p = parser();
        let mut req = Request::new();
        let first = p.parse(&frame[..cut], &mut req, true).unwrap();
        if cut < frame.len() {
            prop_assert_eq!(first, Parsed::Incomplete);
            prop_assert_eq!(p.parse(&frame, &mut req, true).unwrap(), Parsed::Complete { consumed: frame.len() });
        } else {
            prop_assert_eq!(first, Parsed::Complete { consumed: frame.len() });
        }
        let got: Vec<Vec<u8>> = req.args(&frame).iter().map(|a| a.to_vec()).collect();
        prop_assert_eq!(got, args);
    }
}
