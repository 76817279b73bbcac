//! The message both transports carry, and the receiver-side bookkeeping that proves
//! nothing was lost, repeated or corrupted on the way.
//!
//! Payloads are a deterministic pattern of (sequence, offset), so a receiver can verify
//! every byte without the sender shipping a checksum, and per-sender sequences start at 0
//! and increase by one, so gaps and repeats are visible.
//!
//! Not every message is ours: a mesh carries opaque frames (Habitat's `Wire` envelopes,
//! possibly encrypted) on the same sockets. [`classify`] tells the two apart strictly, so
//! receivers verify ours and count everything else as `foreign` instead of dropping it.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::pb::Message;

fn pattern_byte(sequence: u64, offset: usize) -> u8 {
    (sequence.wrapping_mul(31).wrapping_add(offset as u64)) as u8
}

/// Builds message `sequence` from `sender` with a `size`-byte verifiable payload.
pub fn build(sender: &str, sequence: u64, size: usize) -> Message {
    Message {
        sequence,
        sender: sender.to_owned(),
        payload: (0..size).map(|i| pattern_byte(sequence, i)).collect(),
    }
}

/// True if the payload is exactly what [`build`] made for this sequence number.
pub fn payload_intact(message: &Message) -> bool {
    message
        .payload
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(message.sequence, i))
}

/// What a received message (all its parts) is.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// One of ours: to be verified (sequence, payload).
    Ours(Message),
    /// Anything else, counted but not interpreted.
    Foreign,
}

/// Tells our [`Message`] from any other bytes. Protobuf decoding alone is too lenient:
/// prost skips unknown fields, so a foreign protobuf (Habitat's `Wire { encrypted = 1;
/// nonce = 2; payload = 3 }`, say) can decode as a `Message` with an empty sender. Ours is
/// exactly one part that decodes, has a sender, and re-encodes to the same bytes (no
/// unknown fields, canonical encoding), which is what every sender of ours produces.
pub fn classify<P: AsRef<[u8]>>(parts: &[P]) -> Classified {
    let [part] = parts else {
        return Classified::Foreign;
    };
    let bytes = part.as_ref();
    match Message::decode(bytes) {
        Ok(m) if !m.sender.is_empty() && m.encoded_len() == bytes.len() => {
            if m.encode_to_vec() == bytes {
                Classified::Ours(m)
            } else {
                Classified::Foreign
            }
        }
        _ => Classified::Foreign,
    }
}

/// A default sender name that differs between processes: `<program>-<pid>`.
pub fn default_sender(program: &str) -> String {
    format!("{program}-{}", std::process::id())
}

/// Receiver-side counts over everything received, per sender and in total.
#[derive(Debug, Default)]
pub struct Tally {
    /// First and latest arrival, so the rate covers the traffic, not the idle start-up.
    first: Option<Instant>,
    last: Option<Instant>,
    next_sequence: HashMap<String, u64>,
    received: u64,
    bytes: u64,
    skipped: u64,
    repeated: u64,
    corrupt: u64,
    foreign: u64,
}

impl Tally {
    /// Records one decoded message of `wire_len` bytes.
    pub fn record(&mut self, message: &Message, wire_len: usize) {
        self.arrived();
        self.received += 1;
        self.bytes += wire_len as u64;
        if !payload_intact(message) {
            self.corrupt += 1;
        }
        let next = self
            .next_sequence
            .entry(message.sender.clone())
            .or_insert(0);
        if message.sequence > *next {
            self.skipped += message.sequence - *next;
        } else if message.sequence < *next {
            self.repeated += 1;
            return;
        }
        *next = message.sequence + 1;
    }

    /// Records a message that is not ours ([`Classified::Foreign`]), all parts counted once.
    pub fn record_foreign(&mut self, wire_len: usize) {
        self.arrived();
        self.foreign += 1;
        self.bytes += wire_len as u64;
    }

    fn arrived(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Every message counted, ours and foreign: what `--count` compares against.
    pub fn total(&self) -> u64 {
        self.received + self.foreign
    }

    pub fn summary(&self) -> Summary {
        Summary {
            received: self.received,
            bytes: self.bytes,
            senders: self.next_sequence.len(),
            skipped: self.skipped,
            repeated: self.repeated,
            corrupt: self.corrupt,
            malformed: 0,
            foreign: self.foreign,
            elapsed: match (self.first, self.last) {
                (Some(first), Some(last)) => last - first,
                _ => Duration::ZERO,
            },
        }
    }
}

/// A receiver's final report. Its `Display` form is one line of `key=value` pairs, which
/// the headless demo and the tests parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub received: u64,
    pub bytes: u64,
    pub senders: usize,
    /// Sequence numbers jumped over: messages lost, or not yet seen if they were reordered.
    pub skipped: u64,
    /// Messages whose sequence was lower than one already seen: duplicates or reordering.
    pub repeated: u64,
    /// Messages whose payload did not match the pattern.
    pub corrupt: u64,
    /// Frames that did not decode as a message at all: always 0, since every receiver
    /// classifies them as `foreign`; kept in the summary line for the scripts that parse it.
    pub malformed: u64,
    /// Messages that are not ours (see [`classify`]): counted, never dropped silently.
    /// Last in the line, after the keys scripts already parse.
    pub foreign: u64,
    /// From the first arrival to the last.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "received={} bytes={} senders={} skipped={} repeated={} corrupt={} malformed={} \
             elapsed_s={:.3} rate_per_s={:.1} foreign={}",
            self.received,
            self.bytes,
            self.senders,
            self.skipped,
            self.repeated,
            self.corrupt,
            self.malformed,
            secs,
            if secs > 0.0 {
                self.received as f64 / secs
            } else {
                0.0
            },
            self.foreign,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_stream_counts_no_anomalies() {
        let mut t = Tally::default();
        for s in ["a", "b"] {
            for i in 0..5 {
                t.record(&build(s, i, 100), 110);
            }
        }
        let s = t.summary();
        assert_eq!((s.received, s.senders, s.bytes), (10, 2, 1100));
        assert_eq!((s.skipped, s.repeated, s.corrupt), (0, 0, 0));
    }

    #[test]
    fn ours_is_strict_and_everything_else_is_foreign() {
        let ours = build("a", 7, 16).encode_to_vec();
        assert_eq!(classify(&[&ours]), Classified::Ours(build("a", 7, 16)));
        // A Habitat-style Wire envelope { encrypted: false, payload } and the same without
        // field 1: both decode as a Message, neither is ours.
        let mut wire = vec![0x08, 0x00, 0x1a, 0x03];
        wire.extend_from_slice(b"abc");
        assert!(Message::decode(wire.as_slice()).is_ok());
        let bare = wire[2..].to_vec();
        assert!(Message::decode(bare.as_slice()).is_ok());
        let mut unknown_field = ours.clone();
        unknown_field.extend_from_slice(&[0x20, 0x01]); // field 4, varint 1
        let cases: [&[&[u8]]; 6] = [
            &[&wire],
            &[&bare],
            &[&unknown_field],
            &[&ours, &ours], // ours, but in two parts: not a message we send
            &[b"\xff\xff garbage"],
            &[],
        ];
        for parts in cases {
            assert_eq!(classify(parts), Classified::Foreign, "{parts:?}");
        }
    }

    #[test]
    fn foreign_messages_count_toward_the_total() {
        let mut t = Tally::default();
        t.record(&build("a", 0, 4), 10);
        t.record_foreign(100);
        t.record_foreign(7);
        assert_eq!((t.received(), t.total()), (1, 3));
        let s = t.summary();
        assert_eq!((s.foreign, s.bytes), (2, 117));
        assert!(s.to_string().ends_with(" foreign=2"), "{s}");
    }

    #[test]
    fn gaps_repeats_and_corruption_are_counted() {
        let mut t = Tally::default();
        t.record(&build("a", 0, 8), 10);
        t.record(&build("a", 3, 8), 10); // 1 and 2 skipped
        t.record(&build("a", 3, 8), 10); // repeated
        let mut bad = build("a", 4, 8);
        bad.payload[5] ^= 1;
        t.record(&bad, 10);
        let s = t.summary();
        assert_eq!((s.skipped, s.repeated, s.corrupt), (2, 1, 1));
    }
}
