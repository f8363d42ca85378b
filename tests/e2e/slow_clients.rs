//! Slow and greedy clients cost only their own connections: request heads
//! trickled a byte at a time, connections that send nothing, and bodies that
//! stop arriving are cut off by the HTTP timeout while healthy clients are
//! served (latency under this load: `./dev.sh bench --only stalls`).

use crate::support::{msg, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const TRICKLERS: usize = 200;
const IDLE: usize = 100;
const STALLED_BODIES: usize = 20;
/// Longer than the server's timeout (1 s) by far: a read that waits this
/// long means the server kept the connection.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(15);

fn connect(addr: &str) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connects");
    c.set_read_timeout(Some(CUT_OFF_WITHIN))
        .expect("sets timeout");
    c
}

/// Read until the server closes; what it sent. Fails if it kept the
/// connection open for [`CUT_OFF_WITHIN`].
fn until_closed(mut c: TcpStream, what: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{what}: the server kept the connection ({e})"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn slow_clients_are_cut_off_while_healthy_ones_are_served() {
    let s = Server::start_args(&["--http-timeout-secs", "1"]);
    s.topic("t", 1);
    let addr = s.base.trim_start_matches("http://").to_string();
    let head = b"POST /v1/topics/t/messages HTTP/1.1\r\nHost: test\r\nX-Slow: ";
    let tricklers: Vec<TcpStream> = (0..TRICKLERS)
        .map(|_| {
            let mut c = connect(&addr);
            c.write_all(head).expect("writes");
            c
        })
        .collect();
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(&addr)).collect();
    let stalled: Vec<TcpStream> = (0..STALLED_BODIES)
        .map(|_| {
            let mut c = connect(&addr);
            c.write_all(
                b"POST /v1/topics/t/messages HTTP/1.1\r\nHost: test\r\n\
                  Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"payload\"",
            )
            .expect("writes");
            c
        })
        .collect();
    // One byte per connection every 100 ms, until the server hangs up.
    let writers: Vec<TcpStream> = tricklers
        .iter()
        .map(|c| c.try_clone().expect("clones"))
        .collect();
    let trickle = std::thread::spawn(move || {
        let mut open = writers;
        for _ in 0..200 {
            open.retain_mut(|c| c.write_all(b"a").is_ok());
            if open.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Meanwhile healthy clients are served, every one.
    for i in 0..50 {
        let r = s.publish("t", vec![msg(&format!("k{i}"), "healthy")]);
        assert_eq!(r[0]["offset"], i, "{r:?}");
    }
    for c in tricklers {
        until_closed(c, "a request head trickled a byte at a time");
    }
    for c in idle {
        until_closed(c, "a connection that sends nothing");
    }
    for c in stalled {
        let answer = until_closed(c, "a body that stopped arriving");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"timeout\""), "{answer}");
    }
    trickle.join().expect("trickler");
    // Nothing of the slow clients was stored.
    let topic = s.ok("GET", "/v1/topics/t", crate::support::Body::None);
    assert_eq!(topic["offsets"][0], 50, "{topic}");
}
