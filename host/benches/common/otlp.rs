//! An OTLP/HTTP receiver on 127.0.0.1: answers every request 200 and hands
//! each request body (an `ExportTraceServiceRequest`, protobuf) to a
//! callback. Shared by the core-path benchmark (which only counts) and the
//! end-to-end tests (which decode); each includes this file with `#[path]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// Start receiving; returns the endpoint URL to give `--otlp-endpoint`.
pub fn receive(on_body: impl Fn(Vec<u8>) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
    let address = listener.local_addr().expect("its address");
    let on_body = Arc::new(on_body);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let on_body = on_body.clone();
            std::thread::spawn(move || serve(stream, &*on_body));
        }
    });
    format!("http://{address}")
}

/// HTTP/1.1 requests with a `content-length` body, one after another on the
/// connection, until it closes.
fn serve(stream: TcpStream, on_body: &(dyn Fn(Vec<u8>) + Send + Sync)) {
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        on_body(body);
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}
