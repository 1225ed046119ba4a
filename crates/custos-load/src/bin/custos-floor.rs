//! `custos-floor`: the floor of an HTTP benchmark on this machine. A server
//! that does no work (a blocking thread per connection, keep-alive, the same
//! 470-byte `200` for every request) so that a benchmark can report how close
//! a real server comes to what the kernel and the loopback alone allow.
//!
//! `custos-floor SECONDS` listens on 127.0.0.1 (an ephemeral port, printed as
//! `listening on ADDR`) and exits by itself after SECONDS (at most 600).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The response body size: about one OCSP response.
const BODY_BYTES: usize = 470;

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(60).min(600);
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("custos-floor: cannot listen on 127.0.0.1: {e}");
            std::process::exit(2);
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on {a}"),
        Err(e) => {
            eprintln!("custos-floor: {e}");
            std::process::exit(2);
        }
    }
    let _ = std::io::stdout().flush();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        std::process::exit(0);
    });
    let mut response =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncontent-length: {BODY_BYTES}\r\n\r\n")
            .into_bytes();
    response.resize(response.len() + BODY_BYTES, 0x30);
    for stream in listener.incoming().flatten() {
        let response = response.clone();
        std::thread::spawn(move || answer(stream, &response));
    }
}

/// Reads requests (head, then a Content-Length body) and answers each with `response`.
fn answer(stream: TcpStream, response: &[u8]) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() || writer.write_all(response).is_err() {
            return;
        }
    }
}
