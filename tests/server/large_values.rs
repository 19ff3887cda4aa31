//! Large values through the connection's input buffer, whose read size grows while reads fill
//! it and shrinks when they do not (`crates/server/src/input.rs`): pipelined batches of large
//! requests, cut anywhere by the network, must arrive intact whatever the buffer does.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::{Server, read_n, resp_command as command};

/// A value whose every byte depends on its key and position, so that a byte from the wrong
/// place (a partial request moved wrongly) is noticed.
fn value(key: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ key.wrapping_mul(7)) as u8)
        .collect()
}

/// Sends `wire` in pieces of the given sizes (cycled) from another thread, so that the replies
/// are read while the requests are still being written (neither side can block the other).
fn send_in_pieces(
    mut stream: std::net::TcpStream,
    wire: Vec<u8>,
    pieces: &'static [usize],
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut at = 0;
        for &size in pieces.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = at.saturating_add(size).min(wire.len());
            if stream.write_all(&wire[at..end]).is_err() {
                return;
            }
            at = end;
        }
    })
}

/// Pipelined SETs and GETs of values from 1 KiB to 3 MiB (larger than the largest read), sent
/// at once and then cut at awkward places, come back byte for byte, and the connection then
/// serves small requests as before.
#[test]
fn pipelined_large_values_arrive_intact_however_the_input_is_cut() {
    let s = Server::start();
    let sizes = [
        1024,
        16 * 1024,
        16 * 1024 + 7,
        70_000,
        3 * 1024 * 1024,
        16 * 1024,
        1,
    ];
    // Whole batch in one write, then pieces of odd sizes (one byte, within a header, more
    // than a read).
    let cuts: [&'static [usize]; 3] = [&[usize::MAX], &[1, 7, 4093, 65_537], &[16_411, 3]];
    for (round, pieces) in cuts.into_iter().enumerate() {
        let stream = s.tcp();
        let mut reader = stream.try_clone().expect("clone the stream");
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for rep in 0..3 {
            for (i, &len) in sizes.iter().enumerate() {
                let id = round * 1000 + rep * 100 + i;
                let key = format!("big:{id}");
                wire.extend(command(&[b"SET", key.as_bytes(), &value(id, len)]));
                expected.extend_from_slice(b"+OK\r\n");
            }
            for (i, &len) in sizes.iter().enumerate() {
                let id = round * 1000 + rep * 100 + i;
                let key = format!("big:{id}");
                wire.extend(command(&[b"GET", key.as_bytes()]));
                expected.extend_from_slice(format!("${len}\r\n").as_bytes());
                expected.extend(value(id, len));
                expected.extend_from_slice(b"\r\n");
            }
        }
        wire.extend(command(&[b"PING"]));
        expected.extend_from_slice(b"+PONG\r\n");
        let started = Instant::now();
        let writer = send_in_pieces(stream, wire, pieces);
        let got = read_n(&mut reader, expected.len(), Duration::from_secs(60));
        writer.join().expect("writer thread");
        assert_eq!(
            got.len(),
            expected.len(),
            "round {round}: replies cut short"
        );
        if let Some(at) = got.iter().zip(&expected).position(|(a, b)| a != b) {
            panic!(
                "round {round}: replies differ at byte {at} of {}",
                expected.len()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "round {round} took {:?}",
            started.elapsed()
        );
        // Afterwards (the read size back down or not) small requests are served as before.
        let mut small = reader;
        small
            .write_all(&command(&[b"GET", b"big:never"]))
            .expect("send GET");
        assert_eq!(read_n(&mut small, 5, Duration::from_secs(10)), b"$-1\r\n");
    }
}
