//! `--requirepass`: NOAUTH before authentication, AUTH with and without a
//! user name, WRONGPASS, HELLO with AUTH, and clients that authenticate on
//! connect.

use walship_tests::resp::Reply;
use walship_tests::{ServerOptions, TestServer};

const PASS: &str = "s3cret pass";

fn server_with_password() -> TestServer {
    TestServer::start_with(ServerOptions {
        requirepass: Some(PASS.into()),
        ..ServerOptions::default()
    })
    .expect("start walship with --requirepass")
}

fn noauth() -> Reply {
    Reply::Error("NOAUTH Authentication required.".into())
}

fn wrongpass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

#[test]
fn commands_before_auth_get_noauth_and_change_nothing() {
    let server = server_with_password();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["SET", "k", "v"]), noauth());
    assert_eq!(raw.command(&["GET", "k"]), noauth());
    assert_eq!(raw.command(&["PING"]), noauth());
    assert_eq!(raw.command(&["FLUSHALL"]), noauth());
    assert_eq!(raw.command(&["AUTH", PASS]), Reply::Simple("OK".into()));
    assert_eq!(raw.command(&["GET", "k"]), Reply::Bulk(None));
}

#[test]
fn wrong_password_is_wrongpass_and_stays_unauthenticated() {
    let server = server_with_password();
    let mut raw = server.raw();
    assert_eq!(raw.command(&["AUTH", "nope"]), wrongpass());
    assert_eq!(raw.command(&["AUTH", "default", "nope"]), wrongpass());
    assert_eq!(raw.command(&["AUTH", "someone", PASS]), wrongpass());
    assert_eq!(raw.command(&["GET", "k"]), noauth());
    assert_eq!(
        raw.command(&["AUTH", "a", "b", "c"]),
        Reply::Error("ERR syntax error".into())
    );
}

#[test]
fn auth_with_password_or_default_user_grants_access() {
    let server = server_with_password();
    let mut one = server.raw();
    assert_eq!(one.command(&["AUTH", PASS]), Reply::Simple("OK".into()));
    assert_eq!(one.command(&["SET", "k", "v"]), Reply::Simple("OK".into()));
    let mut two = server.raw();
    assert_eq!(
        two.command(&["AUTH", "default", PASS]),
        Reply::Simple("OK".into())
    );
    assert_eq!(two.command(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    // Authentication is per connection.
    assert_eq!(server.raw().command(&["GET", "k"]), noauth());
}

#[test]
fn hello_3_with_auth_authenticates_and_switches_protocol() {
    let server = server_with_password();
    let mut raw = server.raw();
    match raw.command(&["HELLO", "3"]) {
        Reply::Error(text) => assert!(text.starts_with("NOAUTH"), "{text}"),
        other => panic!("HELLO 3 before AUTH must be refused with NOAUTH, got {other:?}"),
    }
    assert_eq!(
        raw.command(&["HELLO", "3", "AUTH", "default", "wrong"]),
        wrongpass()
    );
    assert_eq!(raw.command(&["GET", "k"]), noauth());
    let hello = raw.command(&["HELLO", "3", "AUTH", "default", PASS]);
    assert_eq!(
        hello.map_get("proto"),
        Some(&Reply::Integer(3)),
        "{hello:?}"
    );
    assert_eq!(raw.command(&["GET", "k"]), Reply::Null);
}

#[test]
fn redis_crate_client_with_password_works() {
    let server = server_with_password();
    let mut con = server.connection();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
    // With an explicit user name, too.
    let mut info = server.connection_info();
    info.redis.username = Some("default".into());
    let timeout = std::time::Duration::from_secs(20);
    let client = redis::Client::open(info).unwrap();
    let mut con = walship_tests::process::within(timeout, move || {
        client.get_connection_with_timeout(timeout)
    })
    .expect("AUTH default <pass> handshake hung")
    .expect("AUTH default <pass> on connect");
    con.set_read_timeout(Some(timeout)).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn auth_without_configured_password_is_an_error() {
    let server = TestServer::start().expect("start walship");
    let mut raw = server.raw();
    assert_eq!(
        raw.command(&["AUTH", "whatever"]),
        Reply::Error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
                .into()
        )
    );
    assert_eq!(raw.command(&["PING"]), Reply::Simple("PONG".into()));
}
