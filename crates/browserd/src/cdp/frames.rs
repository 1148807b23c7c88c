//! Following websocket frames in a byte stream (RFC 6455 §5.2) without keeping their
//! payloads: for metering large messages ([`super::budget`]) and for the cluster's joined
//! connections, which must know where a frame ends to add a close frame of their own.

/// What [`FrameReader::scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Every byte read.
    Read,
    /// Stopped at `at`: the bytes from there are payload of a large message beyond the
    /// allowance ([`FrameReader::grant`]); `frame_left` of its frame are still to come.
    NeedsRoom { at: usize, frame_left: u64 },
    /// Not a frame RFC 6455 allows here, at offset `at`.
    Invalid { at: usize, why: &'static str },
}

/// Follows the frame boundaries of one direction of a websocket (RFC 6455 §5.2) without
/// keeping payloads: where each header is, how large the message being received is,
/// whether a close frame passed, and, for metering, how much of a large message's payload
/// may pass.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    header: [u8; 14],
    header_len: usize,
    payload_left: u64,
    /// Data bytes of the message being received, as its headers claim, over all its
    /// fragments so far.
    message: u64,
    /// Whether the current frame's payload belongs to a large message (metered).
    metered: bool,
    /// Payload bytes of the large message being received that may still pass.
    allowance: u64,
    /// Whether the current frame ends its message (FIN).
    last_frame: bool,
    /// Whether a large message is being received (from its first metered frame to its
    /// last byte, gaps between its fragments included).
    in_large: bool,
    /// Payload bytes of large messages that have passed, in all.
    passed: u64,
    /// Set when a large message's last byte has passed; see [`FrameReader::take_completed`].
    completed: bool,
    /// Whether a close frame's header has passed.
    pub saw_close: bool,
}

impl FrameReader {
    /// Reads `bytes` (the next bytes of the stream). The payload of a message of `large`
    /// bytes or more (as its headers claim) passes only as far as its allowance goes
    /// ([`FrameReader::grant`]; none at first); past it, the scan stops. With `large` at
    /// `u64::MAX` it reads everything.
    pub(crate) fn scan(&mut self, bytes: &[u8], large: u64) -> Scan {
        let mut at = 0;
        while at < bytes.len() {
            if self.payload_left > 0 {
                let mut take = self.payload_left.min((bytes.len() - at) as u64);
                if self.metered {
                    take = take.min(self.allowance);
                    if take == 0 {
                        return Scan::NeedsRoom {
                            at,
                            frame_left: self.payload_left,
                        };
                    }
                    self.allowance -= take;
                    self.passed += take;
                }
                self.payload_left -= take;
                at += take as usize;
                if self.metered && self.payload_left == 0 && self.last_frame {
                    self.completed = true;
                    self.in_large = false;
                }
                continue;
            }
            self.header[self.header_len] = bytes[at];
            self.header_len += 1;
            at += 1;
            let length = match self.header_complete() {
                Ok(Some(length)) => length,
                Ok(None) => continue,
                Err(why) => return Scan::Invalid { at, why },
            };
            let opcode = self.header[0] & 0x0f;
            self.saw_close |= opcode == 8;
            self.header_len = 0;
            self.payload_left = length;
            self.metered = false;
            // Control frames (8 and up) interleave with a fragmented message without being
            // part of it.
            if opcode < 8 {
                if opcode != 0 {
                    self.message = 0;
                    self.allowance = 0;
                }
                self.message = self.message.saturating_add(length);
                self.metered = self.message >= large;
                self.last_frame = self.header[0] & 0x80 != 0;
                self.in_large = self.metered;
                if self.metered && length == 0 && self.last_frame {
                    self.completed = true;
                    self.in_large = false;
                }
            }
        }
        Scan::Read
    }

    /// The size of the message being received, as its headers claim so far.
    pub(crate) fn message(&self) -> u64 {
        self.message
    }

    /// Whether a large message has passed whole since the last call.
    pub(crate) fn take_completed(&mut self) -> bool {
        std::mem::take(&mut self.completed)
    }

    /// Whether the bytes read so far end inside a large message (its payload, or between
    /// its fragments).
    pub(crate) fn in_large_message(&self) -> bool {
        self.in_large
    }

    /// Whether a large message has ended since the last [`FrameReader::take_completed`].
    pub(crate) fn completion_pending(&self) -> bool {
        self.completed
    }

    /// Payload bytes of large messages that have passed, in all.
    pub(crate) fn large_bytes_passed(&self) -> u64 {
        self.passed
    }

    /// Lets `bytes` more of the large message's payload pass.
    pub(crate) fn grant(&mut self, bytes: u64) {
        self.allowance = self.allowance.saturating_add(bytes);
    }

    /// Whether the bytes read so far end exactly where a frame ends.
    pub(crate) fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// The payload length, once the header collected so far is whole; an error for what
    /// no endpoint may send (tungstenite would buffer such a frame whole before refusing
    /// it, and no extension that uses the reserved bits is negotiated).
    fn header_complete(&self) -> Result<Option<u64>, &'static str> {
        let h = &self.header[..self.header_len];
        if h[0] & 0x70 != 0 {
            return Err("reserved bits set");
        }
        let opcode = h[0] & 0x0f;
        if matches!(opcode, 3..=7 | 11..=15) {
            return Err("reserved opcode");
        }
        if h.len() < 2 {
            return Ok(None);
        }
        let masked = h[1] & 0x80 != 0;
        let (extra, length) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            short => (0, Some(u64::from(short))),
        };
        if opcode >= 8 && (length.is_none() || h[0] & 0x80 == 0) {
            return Err("a control frame over 125 bytes or in fragments");
        }
        let whole = 2 + extra + if masked { 4 } else { 0 };
        if h.len() < whole {
            return Ok(None);
        }
        if extra == 8 && h[2] & 0x80 != 0 {
            return Err("a length over 2^63");
        }
        Ok(Some(length.unwrap_or_else(|| {
            h[2..2 + extra]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        })))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const LARGE: u64 = 1024 * 1024;

    /// A frame as a client sends it (masked with a zero key, so the payload reads as is).
    pub(crate) fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len() as u64;
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_large_message_passes_only_as_far_as_its_allowance_across_any_split() {
        let mut stream = frame(1, true, b"small");
        stream.extend(frame(9, true, b"ping"));
        stream.extend(frame(1, true, &vec![b'x'; 70_000]));
        stream.extend(frame(2, true, &vec![b'y'; LARGE as usize]));
        let payload_at = stream.len() - LARGE as usize;
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut reader = FrameReader::default();
            let mut stops = Vec::new();
            let mut offset = 0;
            while offset < stream.len() {
                let end = (offset + chunk).min(stream.len());
                match reader.scan(&stream[offset..end], LARGE) {
                    Scan::NeedsRoom { at, frame_left } => {
                        stops.push((offset + at, frame_left));
                        offset += at;
                        reader.grant(LARGE);
                    }
                    Scan::Read => offset = end,
                    Scan::Invalid { why, .. } => panic!("{why}"),
                }
            }
            // It asks before its first payload byte, once.
            assert_eq!(stops, [(payload_at, LARGE)], "chunks of {chunk}");
            assert!(reader.at_boundary());
            assert!(reader.take_completed() && !reader.take_completed());
        }
    }

    #[test]
    fn fragments_count_as_one_message_and_control_frames_do_not() {
        let half = vec![b'z'; (LARGE / 2) as usize];
        let mut stream = frame(1, false, &half);
        stream.extend(frame(9, true, b"ping"));
        stream.extend(frame(0, true, &half));
        let mut reader = FrameReader::default();
        let Scan::NeedsRoom { at, frame_left } = reader.scan(&stream, LARGE) else {
            panic!("the second fragment makes it large")
        };
        assert_eq!(at, stream.len() - half.len());
        assert_eq!(frame_left, LARGE / 2);
        reader.grant(LARGE);
        assert_eq!(reader.scan(&stream[at..], LARGE), Scan::Read);
        // A new message starts counting again.
        assert_eq!(reader.scan(&frame(1, true, b"{}"), LARGE), Scan::Read);
    }

    #[test]
    fn frames_no_endpoint_may_send_are_invalid() {
        for (bytes, why) in [
            (vec![0x89, 126, 0x10, 0x00], "control frame"),
            (vec![0x09, 0x04], "control frame"),
            (vec![0xc1, 0x01], "reserved bits"),
            (vec![0x83, 0x01], "reserved opcode"),
            (vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], "2^63"),
        ] {
            let found = FrameReader::default().scan(&bytes, LARGE);
            assert!(
                matches!(found, Scan::Invalid { why: w, .. } if w.contains(why)),
                "{bytes:x?}: {found:?}"
            );
        }
    }

    #[test]
    fn boundaries_and_close_frames_are_seen_byte_by_byte() {
        // Unmasked (server to client): 5 bytes, 300 (16-bit length), then a close.
        let mut stream = vec![0x81, 5];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x81, 126, 0x01, 0x2c]);
        stream.extend_from_slice(&[b'x'; 300]);
        let mut frames = FrameReader::default();
        let mut boundaries = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(frames.scan(std::slice::from_ref(b), u64::MAX), Scan::Read);
            if frames.at_boundary() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(boundaries, [7, 311]);
        assert!(!frames.saw_close);
        frames.scan(&[0x88, 2, 0x03, 0xe8], u64::MAX);
        assert!(frames.at_boundary() && frames.saw_close);
        // A 64-bit length, cut in its middle.
        let mut big = FrameReader::default();
        big.scan(&[0x82, 127, 0, 0, 0], u64::MAX);
        assert!(!big.at_boundary());
        big.scan(&[0, 0, 1, 0, 0], u64::MAX);
        assert_eq!(big.payload_left, 65536);
        big.scan(&vec![0; 65536], u64::MAX);
        assert!(big.at_boundary());
    }
}
