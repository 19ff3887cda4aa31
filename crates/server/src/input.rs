//! How much a connection reads from its socket at a time.
//!
//! A read gets at most the room left at the end of the input buffer. With a fixed 16 KiB of
//! room, a client pipelining large values (16 SETs of 16 KiB are 262 KiB) was read about one
//! request per `recvfrom`, and each read ended inside the next request, whose start then had to
//! be moved to the front of the buffer before the next read: one extra copy of every value, and
//! one read and one write syscall per request where Redis 7 (which reads as much as its query
//! buffer holds) needs about a third of one (issue 13, SET of 16 KiB at -P16). So the room
//! offered to a read grows while reads fill it and shrinks again when they do not, and the
//! buffer's memory is given back once it is empty and much larger than what reads use.

use bytes::BytesMut;

/// The room offered to a read at first and after reads stop filling it: what a small request,
/// or a pipelined batch of small requests, needs.
pub const MIN_READ: usize = 16 * 1024;

/// The most room offered to one read: more than a pipelined batch of 16 requests of 16 KiB
/// (262 KiB). Bigger reads would save little and let one client's batch run longer before
/// other clients of the same worker get their turn.
pub const MAX_READ: usize = 512 * 1024;

/// An empty input buffer larger than this, and more than four times what reads use, is given
/// back: after a request with a huge argument, or a burst of large pipelined requests.
const KEEP: usize = 4 * MAX_READ;

/// The room offered to the next read of one connection's socket.
#[derive(Debug, Clone, Copy)]
pub struct ReadRoom {
    want: usize,
}

impl Default for ReadRoom {
    fn default() -> Self {
        ReadRoom { want: MIN_READ }
    }
}

impl ReadRoom {
    /// A new connection's input buffer.
    pub fn buffer(&self) -> BytesMut {
        BytesMut::with_capacity(self.want)
    }

    /// Makes room for the next read: at least half of what reads currently use, at the end of
    /// the buffer. An empty buffer starts again at its allocation's start (nothing to copy:
    /// otherwise the space consumed requests left behind is lost to reads until a `reserve`
    /// moves the unread rest back) or, when it is much larger than reads use, is replaced by
    /// a small one.
    pub fn prepare(&self, inbuf: &mut BytesMut) {
        let room = inbuf.capacity() - inbuf.len();
        if room >= self.want && room <= KEEP {
            // Room enough for the read, and not so much that memory should go back: nothing to
            // do (the common case; reclaiming an empty buffer costs about 140 instructions).
            return;
        }
        if inbuf.is_empty() {
            let _ = inbuf.try_reclaim(inbuf.capacity() + 1);
            if inbuf.capacity() > KEEP.max(4 * self.want) {
                *inbuf = self.buffer();
                return;
            }
        }
        if inbuf.capacity() - inbuf.len() < self.want / 2 {
            inbuf.reserve(self.want);
        }
    }

    /// The room the next read gets (after [`ReadRoom::prepare`]).
    pub fn offered(inbuf: &BytesMut) -> usize {
        inbuf.capacity() - inbuf.len()
    }

    /// Learns from a read that got `got` bytes of the `offered` room: a full read means the
    /// socket had more (double the room, up to [`MAX_READ`]); a read of less than a quarter
    /// of it means the room is larger than the client's batches (halve it, down to
    /// [`MIN_READ`]).
    pub fn observe(&mut self, offered: usize, got: usize) {
        if got >= offered {
            self.want = (self.want * 2).min(MAX_READ);
        } else if got < self.want / 4 {
            self.want = (self.want / 2).max(MIN_READ);
        }
    }

    /// The room reads currently get.
    pub fn want(&self) -> usize {
        self.want
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, BufMut};

    /// Reads that fill the room double it up to the maximum; small reads bring it back down.
    #[test]
    fn the_room_follows_the_reads() {
        let mut room = ReadRoom::default();
        assert_eq!(room.want(), MIN_READ);
        let mut steps = 0;
        while room.want() < MAX_READ {
            let offered = room.want();
            room.observe(offered, offered);
            steps += 1;
            assert!(steps < 10, "never reached the maximum");
        }
        room.observe(MAX_READ, MAX_READ);
        assert_eq!(room.want(), MAX_READ, "the maximum holds");
        // A read of most of the room keeps it.
        room.observe(MAX_READ, MAX_READ / 2);
        assert_eq!(room.want(), MAX_READ);
        // Small reads (one GET) halve it, never below the minimum.
        for _ in 0..20 {
            room.observe(room.want(), 30);
        }
        assert_eq!(room.want(), MIN_READ);
    }

    /// A buffer with unread bytes keeps them; an empty one starts at its allocation's start;
    /// an empty one much larger than reads use is replaced by a small one.
    #[test]
    fn prepare_keeps_unread_bytes_and_gives_back_memory() {
        let room = ReadRoom::default();
        let mut inbuf = room.buffer();
        inbuf.put_slice(&[b'x'; MIN_READ - 100]);
        inbuf.put_slice(b"partial");
        inbuf.advance(MIN_READ - 100);
        room.prepare(&mut inbuf);
        assert_eq!(&inbuf[..], b"partial");
        assert!(ReadRoom::offered(&inbuf) >= MIN_READ / 2);

        // Emptied: the whole allocation is room again, without a new one.
        let mut inbuf = room.buffer();
        inbuf.put_slice(&[b'y'; MIN_READ]);
        let before = inbuf.as_ptr();
        inbuf.advance(MIN_READ);
        room.prepare(&mut inbuf);
        assert_eq!(inbuf.as_ptr(), before);
        assert!(ReadRoom::offered(&inbuf) >= MIN_READ);

        // A buffer grown for a huge request is given back once empty.
        let mut inbuf = BytesMut::with_capacity(8 * KEEP);
        inbuf.put_slice(b"done");
        inbuf.advance(4);
        room.prepare(&mut inbuf);
        assert!(inbuf.capacity() <= 2 * MIN_READ, "{}", inbuf.capacity());
        assert!(ReadRoom::offered(&inbuf) >= MIN_READ / 2);
    }

    /// With the room grown, the unread rest of a read is not moved until the room at the end
    /// is used up: a batch of large requests is read in a few reads, not one per request.
    #[test]
    fn a_grown_room_takes_a_batch_of_large_requests() {
        let mut room = ReadRoom::default();
        for _ in 0..8 {
            let w = room.want();
            room.observe(w, w);
        }
        let mut inbuf = room.buffer();
        room.prepare(&mut inbuf);
        assert!(ReadRoom::offered(&inbuf) >= 16 * (16 * 1024 + 40));
    }
}
