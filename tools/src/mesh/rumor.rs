//! Rumors and their heat, Butterfly's way, with nothing about transport in it (pure).
//!
//! A rumor is opaque bytes to everyone but a member: here an origin member, a sequence
//! number and a body derived from both (so a member can tell a damaged one). On the wire a
//! rumor travels in a frame that, like a Butterfly `Wire` envelope with its nonce, is new
//! for every send: it names the sending member and a per-sender send id, which is what lets
//! a receiver tell a transport duplicate (the same send arriving twice: a bug) from a
//! redundant rumor (the same rumor sent again, which gossip does on purpose).
//!
//! Heat is Butterfly's `RumorHeat`: per rumor and per peer, how many times it was sent
//! there; a rumor is hot for a peer until it was sent [`SHARE_LIMIT`] times, whether or not
//! the sends arrived (Butterfly cools after every attempt).

use std::collections::{HashMap, HashSet};

/// Butterfly's default `RumorShareLimit` (`HAB_RUMOR_SHARE_LIMIT`).
pub const SHARE_LIMIT: u8 = 2;
/// Body bytes of a rumor: a small membership or service rumor's size.
pub const BODY_BYTES: usize = 96;
const MAGIC: &[u8; 4] = b"ZGPR";
const HEADER: usize = 4 + 2 + 8 + 2 + 8;

/// Who said it first, and their count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RumorId {
    pub origin: u16,
    pub seq: u64,
}

/// One frame on the wire: a rumor as sent once by one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub from: u16,
    pub send_id: u64,
    pub rumor: RumorId,
}

fn body_byte(id: RumorId, i: usize) -> u8 {
    (id.seq
        .wrapping_mul(131)
        .wrapping_add(u64::from(id.origin) * 7)
        .wrapping_add(i as u64)) as u8
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + BODY_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.send_id.to_be_bytes());
        out.extend_from_slice(&self.rumor.origin.to_be_bytes());
        out.extend_from_slice(&self.rumor.seq.to_be_bytes());
        out.extend((0..BODY_BYTES).map(|i| body_byte(self.rumor, i)));
        out
    }

    /// `None` for anything that is not a whole, intact frame.
    pub fn decode(bytes: &[u8]) -> Option<Frame> {
        if bytes.len() != HEADER + BODY_BYTES || &bytes[..4] != MAGIC {
            return None;
        }
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let frame = Frame {
            from: u16_at(4),
            send_id: u64_at(6),
            rumor: RumorId {
                origin: u16_at(14),
                seq: u64_at(16),
            },
        };
        let body = &bytes[HEADER..];
        let intact = body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == body_byte(frame.rumor, i));
        intact.then_some(frame)
    }
}

/// What a received frame was to its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// A rumor this member did not have.
    New(RumorId),
    /// A rumor it had (gossip sends each one several times: expected).
    Redundant,
    /// A send it had already received: the transport delivered something twice.
    Duplicate,
}

/// One member's rumors, their heat per peer, and the sends it has received. Kept across
/// restarts, as Butterfly keeps its rumors in its data file.
#[derive(Debug, Default)]
pub struct Store {
    /// Per rumor, the heat per peer index.
    heat: HashMap<RumorId, Vec<u8>>,
    seen_sends: HashSet<(u16, u64)>,
    next_send_id: u64,
}

impl Store {
    /// Adds a rumor, hot for every peer. False if it was known.
    pub fn insert(&mut self, id: RumorId, members: usize) -> bool {
        if self.heat.contains_key(&id) {
            return false;
        }
        self.heat.insert(id, vec![0; members]);
        true
    }

    pub fn receive(&mut self, frame: &Frame, members: usize) -> Receipt {
        if !self.seen_sends.insert((frame.from, frame.send_id)) {
            return Receipt::Duplicate;
        }
        match self.insert(frame.rumor, members) {
            true => Receipt::New(frame.rumor),
            false => Receipt::Redundant,
        }
    }

    /// Rumors still hot for `peer`, coldest first as Butterfly orders them.
    pub fn hot_for(&self, peer: usize) -> Vec<RumorId> {
        let mut hot: Vec<(u8, RumorId)> = self
            .heat
            .iter()
            .filter_map(|(id, heat)| {
                let h = heat.get(peer).copied().unwrap_or(SHARE_LIMIT);
                (h < SHARE_LIMIT).then_some((h, *id))
            })
            .collect();
        hot.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        hot.into_iter().map(|(_, id)| id).collect()
    }

    /// The frames to send `rumors` once, each with a fresh send id.
    pub fn frames(&mut self, from: u16, rumors: &[RumorId]) -> Vec<Vec<u8>> {
        rumors
            .iter()
            .map(|&rumor| {
                self.next_send_id += 1;
                let frame = Frame {
                    from,
                    send_id: self.next_send_id,
                    rumor,
                };
                frame.encode()
            })
            .collect()
    }

    /// Records one more send of each of `rumors` to `peer`, delivered or not.
    pub fn cool(&mut self, peer: usize, rumors: &[RumorId]) {
        for id in rumors {
            if let Some(h) = self.heat.get_mut(id).and_then(|heat| heat.get_mut(peer)) {
                *h = h.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_refused() {
        let frame = Frame {
            from: 3,
            send_id: 99,
            rumor: RumorId { origin: 7, seq: 12 },
        };
        let bytes = frame.encode();
        assert_eq!(Frame::decode(&bytes), Some(frame));
        // The magic and the body are checked; the header's numbers are free-form.
        for i in [0, 3, HEADER, HEADER + 3, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(Frame::decode(&bad), None, "byte {i}");
        }
        assert_eq!(Frame::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn a_rumor_is_hot_until_sent_share_limit_times_and_receipts_are_told_apart() {
        let mut store = Store::default();
        let id = RumorId { origin: 0, seq: 1 };
        assert!(store.insert(id, 3));
        assert!(!store.insert(id, 3));
        for _ in 0..SHARE_LIMIT {
            assert_eq!(store.hot_for(2), [id]);
            store.cool(2, &[id]);
        }
        assert!(store.hot_for(2).is_empty());
        assert_eq!(store.hot_for(1), [id], "heat is per peer");

        let mut receiver = Store::default();
        let frames = store.frames(0, &[id, id]);
        let decoded: Vec<Frame> = frames.iter().filter_map(|f| Frame::decode(f)).collect();
        assert_eq!(receiver.receive(&decoded[0], 3), Receipt::New(id));
        assert_eq!(receiver.receive(&decoded[1], 3), Receipt::Redundant);
        assert_eq!(receiver.receive(&decoded[1], 3), Receipt::Duplicate);
    }
}
