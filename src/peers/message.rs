//! The message both transports carry, and the receiver-side bookkeeping that proves
//! nothing was lost, repeated or corrupted on the way.
//!
//! Payloads are a deterministic pattern of (sequence, offset), so a receiver can verify
//! every byte without the sender shipping a checksum, and per-sender sequences start at 0
//! and increase by one, so gaps and repeats are visible.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

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
    malformed: u64,
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

    /// Records bytes that did not decode as a [`Message`].
    pub fn record_malformed(&mut self, wire_len: usize) {
        self.arrived();
        self.malformed += 1;
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

    pub fn summary(&self) -> Summary {
        Summary {
            received: self.received,
            bytes: self.bytes,
            senders: self.next_sequence.len(),
            skipped: self.skipped,
            repeated: self.repeated,
            corrupt: self.corrupt,
            malformed: self.malformed,
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
    /// Frames that did not decode as a message at all.
    pub malformed: u64,
    /// From the first arrival to the last.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "received={} bytes={} senders={} skipped={} repeated={} corrupt={} malformed={} \
             elapsed_s={:.3} rate_per_s={:.1}",
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
