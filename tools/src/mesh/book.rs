//! The mesh's ledger, kept outside the members: which rumor reached which member when, and
//! the receive-side counters. It is what `gossip_mesh` judges a stage by, so it is written
//! by the members' receive paths and read only by the rollout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::rumor::RumorId;

#[derive(Debug)]
struct Track {
    stage: usize,
    at: Instant,
    got: Vec<bool>,
    missing: usize,
    full_at: Option<Instant>,
}

/// Per rumor: its stage, when it was originated, who has it.
#[derive(Debug)]
pub struct Coverage {
    members: usize,
    rumors: Mutex<HashMap<RumorId, Track>>,
}

/// How the rumors originated in one stage fared by its end.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCoverage {
    pub rumors: u64,
    /// One delivery per rumor per member other than its origin.
    pub expected: u64,
    /// Of those, made by the end of the stage.
    pub made: u64,
    /// Origination to the last member's receipt, for rumors that reached everyone.
    pub full_p50_ms: f64,
    pub full_p99_ms: f64,
}

impl Coverage {
    pub fn new(members: usize) -> Self {
        Coverage {
            members,
            rumors: Mutex::default(),
        }
    }

    fn rumors(&self) -> std::sync::MutexGuard<'_, HashMap<RumorId, Track>> {
        self.rumors.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn originated(&self, id: RumorId, stage: usize) {
        let mut got = vec![false; self.members];
        got[usize::from(id.origin)] = true;
        let track = Track {
            stage,
            at: Instant::now(),
            got,
            missing: self.members - 1,
            full_at: (self.members == 1).then(Instant::now),
        };
        self.rumors().insert(id, track);
    }

    /// `member` has `id` now (its first receipt of it).
    pub fn received(&self, id: RumorId, member: usize) {
        let mut rumors = self.rumors();
        let Some(track) = rumors.get_mut(&id) else {
            return;
        };
        if let Some(got @ false) = track.got.get_mut(member) {
            *got = true;
            track.missing -= 1;
            if track.missing == 0 {
                track.full_at = Some(Instant::now());
            }
        }
    }

    /// The figures for `stage`'s rumors, as of now.
    pub fn stage(&self, stage: usize) -> StageCoverage {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .expect("static histogram bounds are valid");
        let mut c = StageCoverage {
            rumors: 0,
            expected: 0,
            made: 0,
            full_p50_ms: 0.0,
            full_p99_ms: 0.0,
        };
        for track in self.rumors().values().filter(|t| t.stage == stage) {
            c.rumors += 1;
            c.expected += (self.members - 1) as u64;
            c.made += (self.members - 1 - track.missing) as u64;
            if let Some(full) = track.full_at {
                let _ = hist.record((full - track.at).as_micros().max(1) as u64);
            }
        }
        if !hist.is_empty() {
            c.full_p50_ms = hist.value_at_quantile(0.5) as f64 / 1000.0;
            c.full_p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
        }
        c
    }

    /// Rumors of `stage` still missing somewhere, with who lacks them (for the log).
    pub fn missing(&self, stage: usize) -> Vec<(RumorId, Vec<usize>, Duration)> {
        let mut out: Vec<_> = self
            .rumors()
            .iter()
            .filter(|(_, t)| t.stage == stage && t.missing > 0)
            .map(|(id, t)| {
                let lacking = (0..self.members).filter(|&m| !t.got[m]).collect();
                (*id, lacking, t.at.elapsed())
            })
            .collect();
        out.sort_by_key(|(id, _, _)| *id);
        out
    }
}

super::stats::counters! {
    /// What the receive paths count, across all members.
    Received,
    /// A snapshot of [`Received`].
    ReceivedCounts {
        /// Frames that carried a rumor the member did not have.
        new,
        /// Frames with a rumor the member had: gossip's own redundancy.
        redundant,
        /// The same send received twice: a transport duplicate.
        duplicates,
        /// Messages that were not a rumor frame (or not one part).
        foreign,
        /// Messages received over ZeroMQ.
        via_zmq,
        /// Messages received over gRPC.
        via_grpc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_counts_deliveries_to_everyone_but_the_origin() {
        let c = Coverage::new(3);
        let (a, b) = (RumorId { origin: 0, seq: 0 }, RumorId { origin: 1, seq: 0 });
        c.originated(a, 0);
        c.originated(b, 1);
        c.received(a, 1);
        c.received(a, 1); // a second receipt changes nothing
        c.received(a, 0); // nor does the origin's
        let s = c.stage(0);
        assert_eq!((s.rumors, s.expected, s.made), (1, 2, 1));
        let missing: Vec<_> = c.missing(0).into_iter().map(|(id, m, _)| (id, m)).collect();
        assert_eq!(missing, [(a, vec![2])]);
        c.received(a, 2);
        let s = c.stage(0);
        assert_eq!((s.made, c.missing(0).len()), (2, 0));
        assert!(s.full_p50_ms > 0.0);
        assert_eq!(c.stage(1).made, 0);
    }
}
