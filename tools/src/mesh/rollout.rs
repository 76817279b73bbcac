//! `gossip_mesh`: N members on 127.0.0.1 gossiping Butterfly's way while a rollout
//! restarts them one at a time into each next stage, and the verdict per stage.
//!
//! Each stage gets an equal share of `--seconds`. In it, rumors are originated every round
//! by members picked at random, and (from the second stage of a rollout on) the members are
//! restarted into the stage in a random order, evenly spaced, while rumors keep flowing.
//! The stage ends with a settling time without restarts or new rumors, long enough for a
//! rumor to pass every member's whole peer list twice over: `(ceil((N-1)/fanout) + 2)`
//! rounds plus a second for send timeouts and linger. A stage passes when every rumor
//! originated in it reached every member by its end and no send arrived twice.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::book::{ReceivedCounts, StageCoverage};
use super::member::{Incarnation, Member, Mesh};
use super::receive::MeshError;
use super::rng::Rng;
use super::stage::Stage;
use super::stats::SenderCounts;

#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub members: usize,
    pub fanout: usize,
    pub round: Duration,
    /// The whole run, shared equally by the stages.
    pub duration: Duration,
    /// Go through every stage; otherwise run `stage` throughout.
    pub rollout: bool,
    pub stage: Stage,
    pub seed: u64,
    pub rumors_per_round: u32,
}

impl MeshConfig {
    pub fn stages(&self) -> Vec<Stage> {
        match self.rollout {
            true => Stage::ROLLOUT.to_vec(),
            false => vec![self.stage],
        }
    }

    pub fn stage_duration(&self) -> Duration {
        self.duration / self.stages().len() as u32
    }

    /// The quiet end of each stage (see the module docs).
    pub fn settle(&self) -> Duration {
        let pass = (self.members.saturating_sub(1)).div_ceil(self.fanout.max(1)) as u32;
        self.round * (pass + 2) + Duration::from_secs(1)
    }

    /// The settings that make no sense, said in terms of the flags.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=1000).contains(&self.members) {
            return Err(format!("--members {} must be 2..=1000", self.members));
        }
        if self.fanout == 0 || self.round.is_zero() || self.rumors_per_round == 0 {
            return Err("--fanout, --round-ms and --rumors-per-round must be positive".into());
        }
        // Room for the restarts, at least 50 ms each, before the settling time.
        let needed = self.settle() + Duration::from_millis(50) * (self.members as u32 + 1);
        if self.stage_duration() < needed {
            let stages = self.stages().len() as u32;
            let min = (needed * stages).as_secs_f64().ceil();
            return Err(format!(
                "--seconds {:.0} is too short: {stages} stage(s) of at least {:.1} s each need \
                 --seconds {min} or more with these --members, --fanout and --round-ms",
                self.duration.as_secs_f64(),
                needed.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// One stage's figures.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: Stage,
    pub members: usize,
    pub restarts: usize,
    pub coverage: StageCoverage,
    pub received: ReceivedCounts,
    pub sent: SenderCounts,
}

impl StageReport {
    pub fn ok(&self) -> bool {
        self.coverage.made == self.coverage.expected
            && self.received.duplicates == 0
            && self.received.foreign == 0
    }
}

impl fmt::Display for StageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, r, s) = (&self.coverage, &self.received, &self.sent);
        write!(
            f,
            "stage={} members={} restarts={} rumors={} expected={} made={} duplicates={} \
             redundant={} timeouts={} unknown={} not_sent={} conn_zmq={} conn_grpc={} \
             checks={} check_ms={:.3} recv_zmq={} recv_grpc={} p50_ms={:.1} p99_ms={:.1} ok={}",
            self.stage.as_str(),
            self.members,
            self.restarts,
            c.rumors,
            c.expected,
            c.made,
            r.duplicates,
            r.redundant,
            s.timeouts,
            s.unknown,
            s.not_sent,
            s.zmq_connections,
            s.grpc_connections,
            s.checks,
            s.mean_check_ms(),
            r.via_zmq,
            r.via_grpc,
            c.full_p50_ms,
            c.full_p99_ms,
            self.ok(),
        )
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub stages: Vec<StageReport>,
    /// Stopped by a signal before the last stage ended (that stage is not judged).
    pub interrupted: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.stages.iter().all(StageReport::ok)
    }

    /// The per-stage table, in markdown.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| stage | rumors | deliveries expected | made | duplicates | sender timeouts | \
             unknown | conns ZMQ | conns gRPC | checks (mean ms) | received ZMQ / gRPC | \
             full coverage p50 / p99 ms | ok |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &self.stages {
            let (c, r, t) = (&s.coverage, &s.received, &s.sent);
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.2}) | {} / {} | {:.0} / {:.0} | {} |\n",
                s.stage.as_str(),
                c.rumors,
                c.expected,
                c.made,
                r.duplicates,
                t.timeouts,
                t.unknown,
                t.zmq_connections,
                t.grpc_connections,
                t.checks,
                t.mean_check_ms(),
                r.via_zmq,
                r.via_grpc,
                c.full_p50_ms,
                c.full_p99_ms,
                if s.ok() { "yes" } else { "NO" },
            );
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sum = |g: fn(&StageReport) -> u64| self.stages.iter().map(g).sum::<u64>();
        write!(
            f,
            "stages={} rumors={} expected={} made={} duplicates={} interrupted={} seed={} ok={}",
            self.stages.len(),
            sum(|s| s.coverage.rumors),
            sum(|s| s.coverage.expected),
            sum(|s| s.coverage.made),
            sum(|s| s.received.duplicates),
            self.interrupted,
            self.seed,
            self.ok(),
        )
    }
}

/// The members and their running incarnations.
struct Fleet {
    members: Vec<Arc<Member>>,
    running: Vec<Option<Incarnation>>,
}

impl Fleet {
    fn start(mesh: &Arc<Mesh>, stage: Stage) -> Result<Fleet, MeshError> {
        let members: Vec<_> = (0..mesh.members)
            .map(|i| Arc::new(Member::new(i, Arc::clone(mesh))))
            .collect();
        let mut running = Vec::with_capacity(members.len());
        for m in &members {
            running.push(Some(Incarnation::start(Arc::clone(m), stage, None)?));
        }
        Ok(Fleet { members, running })
    }

    fn restart(&mut self, index: usize, stage: Stage) -> Result<(), MeshError> {
        let Some(old) = self.running[index].take() else {
            return Ok(());
        };
        let port = old.port;
        old.stop();
        let new = Incarnation::start(Arc::clone(&self.members[index]), stage, Some(port))?;
        info!(
            member = index,
            port,
            stage = stage.as_str(),
            "member restarted"
        );
        self.running[index] = Some(new);
        Ok(())
    }

    /// Stops every member at once.
    fn stop(&mut self) {
        let stopping: Vec<_> = self
            .running
            .iter_mut()
            .filter_map(Option::take)
            .map(|i| std::thread::spawn(move || i.stop()))
            .collect();
        for t in stopping {
            let _ = t.join();
        }
    }
}

/// Runs the mesh; `on_stage` sees each stage's report as it ends.
pub fn run(
    config: &MeshConfig,
    stop: &AtomicBool,
    mut on_stage: impl FnMut(&StageReport),
) -> Result<Report, MeshError> {
    let mesh = Arc::new(Mesh::new(
        config.members,
        config.fanout,
        config.round,
        config.seed,
    ));
    let stages = config.stages();
    let mut fleet = Fleet::start(&mesh, stages[0])?;
    let ports: Vec<u16> = fleet.running.iter().flatten().map(|i| i.port).collect();
    info!(
        members = config.members,
        ?ports,
        seed = config.seed,
        "mesh listening"
    );
    let mut rng = Rng::new(config.seed);
    let mut report = Report {
        seed: config.seed,
        stages: Vec::new(),
        interrupted: false,
    };
    for (index, &stage) in stages.iter().enumerate() {
        let restarts = match index {
            0 => Vec::new(),
            _ => {
                let mut order: Vec<usize> = (0..config.members).collect();
                rng.shuffle(&mut order);
                order
            }
        };
        let result = run_stage(
            config,
            &mesh,
            &mut fleet,
            &mut rng,
            (index, stage),
            &restarts,
            stop,
        );
        match result {
            Ok(Some(stage_report)) => {
                on_stage(&stage_report);
                report.stages.push(stage_report);
            }
            Ok(None) => {
                report.interrupted = true;
                break;
            }
            Err(e) => {
                fleet.stop();
                return Err(e);
            }
        }
    }
    fleet.stop();
    Ok(report)
}

/// One stage; `None` if stopped before its end.
fn run_stage(
    config: &MeshConfig,
    mesh: &Arc<Mesh>,
    fleet: &mut Fleet,
    rng: &mut Rng,
    (index, stage): (usize, Stage),
    restarts: &[usize],
    stop: &AtomicBool,
) -> Result<Option<StageReport>, MeshError> {
    mesh.stage.store(index, Ordering::Relaxed);
    let (sent_before, received_before) = (mesh.sender_stats.snapshot(), mesh.received.snapshot());
    let settle = config.settle();
    let t0 = Instant::now();
    let quiet_from = t0 + config.stage_duration() - settle;
    let gap = (quiet_from - t0) / (restarts.len() as u32 + 1);
    info!(
        stage = stage.as_str(),
        restarts = restarts.len(),
        "stage started"
    );
    let (mut next_round, mut done, mut end) = (t0, 0, t0 + config.stage_duration());
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let now = Instant::now();
        if done < restarts.len() && now >= t0 + gap * (done as u32 + 1) {
            fleet.restart(restarts[done], stage)?;
            done += 1;
            if done == restarts.len() {
                end = end.max(Instant::now() + settle);
            }
            continue;
        }
        if now >= next_round {
            if now < quiet_from {
                for _ in 0..config.rumors_per_round {
                    fleet.members[rng.below(config.members)].originate();
                }
            }
            next_round += config.round;
        }
        if done == restarts.len() && now >= end {
            break;
        }
        // The schedule's clock: this loop paces the run, nothing waits on it for readiness.
        std::thread::sleep(Duration::from_millis(5).min(next_round.saturating_duration_since(now)));
    }
    let report = StageReport {
        stage,
        members: config.members,
        restarts: restarts.len(),
        coverage: mesh.coverage.stage(index),
        received: mesh.received.snapshot().since(&received_before),
        sent: mesh.sender_stats.snapshot().since(&sent_before),
    };
    if report.ok() {
        info!(stage = stage.as_str(), %report, "stage done");
    } else {
        for (id, lacking, age) in mesh.coverage.missing(index).iter().take(10) {
            warn!(
                origin = id.origin,
                seq = id.seq,
                ?lacking,
                age_ms = age.as_millis() as u64,
                "rumor did not reach every member"
            );
        }
        warn!(stage = stage.as_str(), %report, "stage failed");
    }
    Ok(Some(report))
}
