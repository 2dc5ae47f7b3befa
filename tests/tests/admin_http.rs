//! The admin HTTP endpoints: /metrics (Prometheus text with per-command and
//! WAL fsync counters), /health, /status (JSON).

use walship_tests::http;
use walship_tests::TestServer;

/// One Prometheus sample: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough to catch malformed
/// lines: every non-comment, non-empty line must be a sample.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1);
                assert!(
                    matches!(
                        kind,
                        Some("counter" | "gauge" | "histogram" | "summary" | "untyped")
                    ),
                    "bad TYPE line {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
                let labels = body
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

#[test]
fn metrics_count_commands_and_wal_fsyncs() {
    const SETS: usize = 25;
    const GETS: usize = 7;
    let server = TestServer::start().expect("start walship");
    let mut con = server.connection();
    for i in 0..SETS {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    for i in 0..GETS {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut con)
            .unwrap();
    }
    let response = http::get(server.admin_port(), "/metrics").expect("GET /metrics");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "Content-Type {content_type:?}"
    );
    let samples = parse_metrics(&response.body);

    // Per-command counters: a `*command*_total` series with a label naming
    // the command, counting at least the calls made above.
    let per_command = |command: &str| -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name.contains("command")
                    && s.name.ends_with("_total")
                    && !s.name.contains("error")
                    && s.labels
                        .iter()
                        .any(|(_, v)| v.eq_ignore_ascii_case(command))
            })
            .map(|s| s.value)
    };
    let sets = per_command("set")
        .unwrap_or_else(|| panic!("no per-command counter for SET:\n{}", response.body));
    let gets = per_command("get")
        .unwrap_or_else(|| panic!("no per-command counter for GET:\n{}", response.body));
    assert!(sets >= SETS as f64, "SET counter {sets} < {SETS}");
    assert!(gets >= GETS as f64, "GET counter {gets} < {GETS}");

    // WAL fsync counter: at least one fsync, since writes were acknowledged
    // durable (fsync=always).
    let fsyncs: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name.contains("fsync") && s.name.ends_with("_total"))
        .collect();
    assert!(
        !fsyncs.is_empty(),
        "no WAL fsync counter in /metrics:\n{}",
        response.body
    );
    assert!(
        fsyncs.iter().any(|s| s.value >= 1.0),
        "WAL fsync counter is 0 after {SETS} durable SETs: {fsyncs:?}"
    );

    // Counters only grow.
    for i in 0..SETS {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let again = parse_metrics(&http::get(server.admin_port(), "/metrics").unwrap().body);
    let sets_again = again
        .iter()
        .find(|s| {
            s.name.contains("command")
                && s.name.ends_with("_total")
                && !s.name.contains("error")
                && s.labels.iter().any(|(_, v)| v.eq_ignore_ascii_case("set"))
        })
        .map(|s| s.value)
        .unwrap();
    assert!(
        sets_again >= sets + SETS as f64,
        "SET counter went from {sets} to {sets_again}"
    );
}

#[test]
fn health_is_200() {
    let server = TestServer::start().expect("start walship");
    let response = http::get(server.admin_port(), "/health").expect("GET /health");
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn status_is_a_json_object() {
    let server = TestServer::start().expect("start walship");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut server.connection())
        .unwrap();
    let response = http::get(server.admin_port(), "/status").expect("GET /status");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "Content-Type {content_type:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {:?}", response.body));
    assert!(json.is_object(), "/status must be a JSON object: {json}");
    assert!(
        !json.as_object().unwrap().is_empty(),
        "/status is an empty object"
    );
}

#[test]
fn unknown_admin_path_is_404() {
    let server = TestServer::start().expect("start walship");
    let response = http::get(server.admin_port(), "/no-such-page").expect("GET /no-such-page");
    assert_eq!(response.status, 404, "{response:?}");
}

#[test]
fn admin_port_survives_garbage_requests() {
    use std::io::Write;
    let server = TestServer::start().expect("start walship");
    for garbage in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
    ] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.admin_port())).unwrap();
        let _ = stream.write_all(garbage);
    }
    let mut big = b"GET /".to_vec();
    big.resize(1024 * 1024, b'a');
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", server.admin_port())) {
        let _ = stream.write_all(&big);
    }
    assert_eq!(
        http::get(server.admin_port(), "/health").unwrap().status,
        200
    );
    let pong: String = redis::cmd("PING").query(&mut server.connection()).unwrap();
    assert_eq!(pong, "PONG");
}

/// Connections that never send a request (a port scanner, a load balancer's
/// idle pool) must not keep a health check waiting: at the connection cap
/// the oldest idle one is closed for the newcomer, and the rest stay open.
#[test]
fn idle_admin_connections_do_not_starve_a_health_check() {
    use std::io::Read;
    const IDLE: usize = 100;
    let server = TestServer::start().expect("start walship");
    let idle: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", server.admin_port())).unwrap())
        .collect();
    let response = http::get(server.admin_port(), "/health").expect("GET /health");
    assert_eq!(response.status, 200, "{response:?}");
    // Served by closing idle ones, not by waiting for them to time out: the
    // newest idle connections are still open.
    let open = idle
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            matches!(
                (&**stream).read(&mut byte),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            )
        })
        .count();
    assert!(
        open >= 60,
        "only {open} of {IDLE} idle admin connections still open: \
         the health check waited for idle connections to time out"
    );
}
