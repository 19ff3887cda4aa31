//! The framing every file of a data directory shares.
//!
//! ```text
//! file    = magic:4 version:u16 flags:u16 frame*          (magic "FLOG", "FSNP" or "FCAT")
//! frame   = len:u32 not_len:u32 crc:u32 payload[len]     (little endian; not_len = !len,
//!                                                          crc = CRC-32 of the payload)
//! ```
//!
//! The first frame of a file is its header. The length is stored twice (plain and inverted) so
//! that a damaged length is recognised as damage instead of being followed: a reader can then tell
//! a *torn tail* (the last write of a crashed process, cut short, or a tail the filesystem
//! zero-filled after a power loss), which is dropped, from *corruption* in the middle of a file,
//! which stops the server from starting and names the file and offset.
//!
//! A file whose header has [`FLAG_ZERO_TAIL`] (logs) may end in zero bytes the writer put there
//! ahead of its records: the frames end cleanly at an all-zero frame header that only zeros
//! follow. Logs are preallocated that way so that the fsync of a write into space already on
//! disk changes no metadata: on ext4 an `fdatasync` that must commit a new file size (every
//! append does) took about 145 µs on our VM against 90 µs for one that need not.

use std::io::{self, Read};

/// Format version of snapshots and the catalog this build writes and reads.
pub const VERSION: u16 = 1;
/// Format version of the logs this build writes. Version 2 added the predecessor record
/// (`record::PREDECESSOR`); version 1 logs (without it) still load.
pub const LOG_VERSION: u16 = 2;
pub const FILE_HEADER: usize = 8;
pub const FRAME_HEADER: usize = 12;
/// File header flag: the frames may be followed by a zero-filled tail (see the module doc).
pub const FLAG_ZERO_TAIL: u16 = 1;

/// The kinds of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Log,
    Snapshot,
    Catalog,
}

impl Kind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            Kind::Log => b"FLOG",
            Kind::Snapshot => b"FSNP",
            Kind::Catalog => b"FCAT",
        }
    }

    /// The newest format version of this kind (written, and the highest read).
    pub fn version(self) -> u16 {
        match self {
            Kind::Log => LOG_VERSION,
            Kind::Snapshot | Kind::Catalog => VERSION,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Log => "log",
            Kind::Snapshot => "snapshot",
            Kind::Catalog => "catalog",
        }
    }
}

/// Appends the 8-byte file header.
pub fn put_file_header(buf: &mut Vec<u8>, kind: Kind) {
    put_file_header_with(buf, kind, 0);
}

/// Appends the 8-byte file header with `flags` ([`FLAG_ZERO_TAIL`]).
pub fn put_file_header_with(buf: &mut Vec<u8>, kind: Kind, flags: u16) {
    buf.extend_from_slice(kind.magic());
    buf.extend_from_slice(&kind.version().to_le_bytes());
    buf.extend_from_slice(&flags.to_le_bytes());
}

/// Starts a frame in `buf`; write the payload after it, then call [`end_frame`].
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    start
}

/// Seals the frame started at `start`. Payloads are limited to 4 GiB - 1 by the format; the
/// writers split larger contents over several frames before they get here.
pub fn end_frame(buf: &mut [u8], start: usize) {
    let payload = &buf[start + FRAME_HEADER..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&(!len).to_le_bytes());
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one whole frame.
pub fn put_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let start = begin_frame(buf);
    buf.extend_from_slice(payload);
    end_frame(buf, start);
}

/// What went wrong at an offset of a file.
#[derive(Debug)]
pub enum FrameError {
    /// The end of the file is an incomplete last write: everything before `offset` is good.
    Torn {
        offset: u64,
        reason: &'static str,
    },
    /// Damage that is not a torn tail.
    Corrupt {
        offset: u64,
        reason: String,
    },
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Torn { offset, reason } => {
                write!(f, "torn tail at offset {offset} ({reason})")
            }
            FrameError::Corrupt { offset, reason } => {
                write!(f, "corrupt at offset {offset}: {reason}")
            }
            FrameError::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Reads the frames of one file in order, never trusting a length before it is checked against
/// the file's size (a damaged file cannot make it allocate more than the file holds).
pub struct FrameReader<R: Read> {
    r: R,
    offset: u64,
    /// Where the frames may end: the file's length, or the start of its zero-filled tail once
    /// that was found ([`FLAG_ZERO_TAIL`]).
    size: u64,
    /// The header has [`FLAG_ZERO_TAIL`].
    zero_tail: bool,
}

impl<R: Read> FrameReader<R> {
    /// Checks the file header; `size` is the file's length.
    pub fn open(mut r: R, size: u64, kind: Kind) -> Result<FrameReader<R>, FrameError> {
        if size < FILE_HEADER as u64 {
            return Err(FrameError::Torn {
                offset: 0,
                reason: "file shorter than its header",
            });
        }
        let mut h = [0u8; FILE_HEADER];
        r.read_exact(&mut h)?;
        if &h[0..4] != kind.magic() {
            return Err(FrameError::Corrupt {
                offset: 0,
                reason: format!("not a Ferrite {} file (bad magic)", kind.name()),
            });
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        let flags = u16::from_le_bytes([h[6], h[7]]);
        if version == 0 || version > kind.version() {
            return Err(FrameError::Corrupt {
                offset: 4,
                reason: format!(
                    "{} format version {version}; this build reads versions 1 to {}",
                    kind.name(),
                    kind.version()
                ),
            });
        }
        Ok(FrameReader {
            r,
            offset: FILE_HEADER as u64,
            size,
            zero_tail: flags & FLAG_ZERO_TAIL != 0,
        })
    }

    /// Offset of the next frame (= end of the last good one).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The length of the file without its zero-filled tail, once the frames ended cleanly
    /// (before that: the file's length).
    pub fn data_end(&self) -> u64 {
        self.size
    }

    /// Reads the next frame's payload into `buf`; returns its offset, or None at a clean end.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, FrameError> {
        let at = self.offset;
        let rest = self.size - at;
        if rest == 0 {
            return Ok(None);
        }
        if rest < FRAME_HEADER as u64 {
            if self.zero_tail && self.rest_is_zero()? {
                self.size = at;
                return Ok(None);
            }
            return Err(FrameError::Torn {
                offset: at,
                reason: "frame header cut short",
            });
        }
        let mut h = [0u8; FRAME_HEADER];
        self.r.read_exact(&mut h)?;
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let not_len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if len != !not_len {
            let zero_header = h.iter().all(|&b| b == 0);
            // The rest of the file after the header (a header cut short is followed by nothing).
            return match self.rest_is_zero() {
                Err(e) => Err(FrameError::Io(e)),
                Ok(true) if zero_header && self.zero_tail => {
                    // The preallocated tail: the frames end here.
                    self.size = at;
                    Ok(None)
                }
                // A header cut short or never written (zeros), or one half written before a
                // crash (its payload was not written either).
                Ok(true) => Err(FrameError::Torn {
                    offset: at,
                    reason: "damaged frame length",
                }),
                Ok(false) => Err(FrameError::Corrupt {
                    offset: at,
                    reason: "damaged frame length".into(),
                }),
            };
        }
        let end = at + FRAME_HEADER as u64 + u64::from(len);
        if end > self.size {
            return Err(FrameError::Torn {
                offset: at,
                reason: "last frame cut short",
            });
        }
        buf.clear();
        buf.resize(len as usize, 0);
        self.r.read_exact(buf)?;
        if crc32fast::hash(buf) != crc {
            // The last write, cut short: its frame is followed by nothing or by zeros (the
            // preallocated tail, or a tail the filesystem zero-filled).
            if self.rest_is_zero()? {
                return Err(FrameError::Torn {
                    offset: at,
                    reason: "last frame fails its checksum",
                });
            }
            return Err(FrameError::Corrupt {
                offset: at,
                reason: "frame checksum mismatch".into(),
            });
        }
        self.offset = end;
        Ok(Some(at))
    }

    /// Whether everything from the read position to the end of the file is zero (true at the
    /// end). Reads it.
    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.r.read(&mut chunk)? {
                0 => return Ok(true),
                n if chunk[..n].iter().all(|&b| b == 0) => {}
                _ => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(frames: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        put_file_header(&mut buf, Kind::Log);
        for f in frames {
            put_frame(&mut buf, f);
        }
        buf
    }

    fn read_all(data: &[u8]) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut r = match FrameReader::open(data, data.len() as u64, Kind::Log) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            match r.next_frame(&mut buf) {
                Ok(Some(_)) => out.push(buf.clone()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let data = file(&[b"one", b"", b"three"]);
        let (frames, err) = read_all(&data);
        assert!(err.is_none());
        assert_eq!(frames, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
    }

    #[test]
    fn a_cut_or_zero_filled_tail_is_torn_at_the_last_good_frame() {
        let data = file(&[b"one", b"two"]);
        let good = FILE_HEADER + FRAME_HEADER + 3;
        for cut in good + 1..data.len() {
            let (frames, err) = read_all(&data[..cut]);
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert!(
                matches!(err, Some(FrameError::Torn { offset, .. }) if offset == good as u64),
                "cut at {cut}: {err:?}"
            );
        }
        let mut zeroed = data[..good].to_vec();
        zeroed.extend_from_slice(&[0u8; 100]);
        let (frames, err) = read_all(&zeroed);
        assert_eq!(frames.len(), 1);
        assert!(matches!(err, Some(FrameError::Torn { .. })), "{err:?}");
        // A last frame whose payload was not written (power loss): torn too.
        let mut garbled = data.clone();
        let n = garbled.len();
        garbled[n - 1] ^= 0xff;
        assert!(matches!(
            read_all(&garbled).1,
            Some(FrameError::Torn { .. })
        ));
    }

    #[test]
    fn damage_in_the_middle_is_corruption_with_its_offset() {
        let data = file(&[b"one", b"two", b"three"]);
        let second = FILE_HEADER + FRAME_HEADER + 3;
        // A payload byte of the second frame.
        let mut bad = data.clone();
        bad[second + FRAME_HEADER] ^= 1;
        let (frames, err) = read_all(&bad);
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(err, Some(FrameError::Corrupt { offset, .. }) if offset == second as u64),
            "{err:?}"
        );
        // Its length: not followed, recognised as damage.
        let mut bad = data.clone();
        bad[second] ^= 0x40;
        assert!(matches!(
            read_all(&bad).1,
            Some(FrameError::Corrupt { offset, .. }) if offset == second as u64
        ));
        // The wrong kind of file, a future version.
        let mut other = data.clone();
        other[0] = b'X';
        assert!(matches!(
            read_all(&other).1,
            Some(FrameError::Corrupt { .. })
        ));
        let mut newer = data;
        newer[4] = 9;
        let err = read_all(&newer)
            .1
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("version 9"), "{err}");
    }

    /// A log as the writer leaves it: frames, then the preallocated zeros.
    fn preallocated(frames: &[&[u8]], zeros: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        put_file_header_with(&mut buf, Kind::Log, FLAG_ZERO_TAIL);
        for f in frames {
            put_frame(&mut buf, f);
        }
        buf.resize(buf.len() + zeros, 0);
        buf
    }

    #[test]
    fn a_preallocated_tail_is_a_clean_end_and_a_write_cut_short_in_it_is_torn() {
        let data = preallocated(&[b"one", b"two"], 0);
        let end = data.len();
        let good = FILE_HEADER + FRAME_HEADER + 3;
        for zeros in [0, 1, 11, 12, 13, 5000, 70_000] {
            let log = preallocated(&[b"one", b"two"], zeros);
            let mut r = FrameReader::open(&log[..], log.len() as u64, Kind::Log).expect("open");
            let mut buf = Vec::new();
            let mut n = 0;
            while r.next_frame(&mut buf).expect("clean").is_some() {
                n += 1;
            }
            assert_eq!(
                (n, r.offset(), r.data_end()),
                (2, end as u64, end as u64),
                "{zeros}"
            );
        }
        // The second frame's write cut short anywhere (the rest of it still zero): torn at the
        // end of the first, whether the header, its length or its payload was cut.
        for cut in good + 1..end {
            let mut log = preallocated(&[b"one", b"two"], 4096);
            log[cut..end].fill(0);
            let (frames, err) = read_all(&log);
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert!(
                matches!(err, Some(FrameError::Torn { offset, .. }) if offset == good as u64),
                "cut at {cut}: {err:?}"
            );
        }
        // Anything but zeros after the frames' end is damage, not a tail.
        let mut log = preallocated(&[b"one", b"two"], 4096);
        log[end + 3000] = 7;
        assert!(matches!(
            read_all(&log).1,
            Some(FrameError::Corrupt { offset, .. }) if offset == end as u64
        ));
        // Without the flag a zero tail is still a torn one (a tail the filesystem zero-filled).
        let mut plain = file(&[b"one", b"two"]);
        plain.resize(plain.len() + 100, 0);
        assert!(matches!(read_all(&plain).1, Some(FrameError::Torn { .. })));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut framed = file(&[]);
            framed.extend_from_slice(&data);
            let _ = read_all(&framed);
        }
    }
}
