//! The `train` workload: members train the tiny model for real and claim what they measured, each
//! claim carrying its checkpoint, which the owner's verifier fetches over the simulated mesh and
//! re-evaluates. Two kinds of adversary are mixed in: a fake-metric worker (claims a value its
//! checkpoint does not reach) and a val-trainer (trains on the validation split, so its value
//! reproduces but the owner-only holdout exposes it).

use std::time::Duration;

use btd::blobs::BlobStore;
use btd::node::types::NewResult;
use btd::work::claim_checkpoint;
use btd_protocol::kb::Check;
use btd_protocol::program::{CandleTask, Program, Task};
use btd_trainer::{Corpus, TrainSpec};
use candle_core::Device;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::actors::Ctx;
use crate::records::{Ack, ClaimKind, ClaimRecord};
use crate::roles::Role;
use crate::scenario::TRAIN_CORPUS_BYTES;
use crate::world::NodeIx;

/// How often a member asks the owner whether its claims are settled.
const SETTLE_POLL: Duration = Duration::from_millis(500);

impl Ctx {
    /// Which kind of claimant worker `ix` is.
    pub(crate) fn claim_kind(&self, ix: NodeIx) -> ClaimKind {
        let n = &self.s.nodes;
        let pos = self
            .sim
            .layout
            .with_role(Role::Worker)
            .iter()
            .position(|&w| w == ix)
            .unwrap_or(usize::MAX);
        if pos < n.fake_metric {
            ClaimKind::FakeMetric
        } else if pos < n.fake_metric + n.val_trainers {
            ClaimKind::ValTrainer
        } else {
            ClaimKind::Honest
        }
    }
}

/// One checkpoint and the value claimed for it.
struct Trained {
    path: std::path::PathBuf,
    claimed: f64,
}

/// Trains as `kind` would and writes the checkpoint under `dir`. Blocking.
fn train(
    kind: ClaimKind,
    task: &CandleTask,
    lr: f64,
    round: usize,
    dir: &std::path::Path,
) -> Result<Trained, String> {
    let corpus = Corpus::synthetic(5, TRAIN_CORPUS_BYTES).map_err(|e| e.to_string())?;
    let dev = Device::Cpu;
    let mut spec = TrainSpec::from_task(task);
    spec.hyper.lr = lr;
    spec.seed = spec.seed.wrapping_add(round as u64);
    let data = match kind {
        // Its "training data" is the validation split, ten times over.
        ClaimKind::ValTrainer => {
            spec.hyper.lr = 0.02;
            Corpus::from_text_bytes(corpus.val().repeat(10), corpus.source().clone())
                .map_err(|e| e.to_string())?
        }
        ClaimKind::Honest | ClaimKind::FakeMetric => corpus.clone(),
    };
    if kind == ClaimKind::FakeMetric {
        // Why train long for a number one makes up?
        spec.steps = Some(spec.steps.unwrap_or(10).min(10));
    }
    let t = btd_trainer::train(&spec, &data, &dev, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| e.to_string())?;
    let path = dir.join(format!("round-{round}.safetensors"));
    t.checkpoint.write(&path).map_err(|e| e.to_string())?;
    let claimed = match kind {
        ClaimKind::Honest => t.report.val_bpb,
        ClaimKind::FakeMetric => t.report.val_bpb * 0.5,
        // What the checkpoint really reaches on the program's validation split.
        ClaimKind::ValTrainer => {
            btd_trainer::evaluate(&t.checkpoint, &corpus, &dev)
                .map_err(|e| e.to_string())?
                .val_bpb
        }
    };
    Ok(Trained { path, claimed })
}

/// A member's rounds: train, claim, submit; then wait for the owner's verdicts.
pub(crate) async fn workload(ctx: &Ctx, ix: NodeIx, rng: &mut ChaCha8Rng) {
    let kind = ctx.claim_kind(ix);
    let Some(home) = ctx.sim.nodes.get(ix).and_then(|n| n.home.clone()) else {
        return;
    };
    let member = ctx.sim.peer(ix).map(|p| p.to_string()).unwrap_or_default();
    let Ok(program) = Program::from_toml(&ctx.s.program.manifest(&ctx.s.name, &ctx.s.workload))
    else {
        return;
    };
    let Task::Candle(task) = program.task else {
        return;
    };
    let dir = home.join("checkpoints");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut seqs = Vec::new();
    for round in 0..ctx.s.workload.submissions {
        let lr = rng.gen_range(3e-3..1e-2);
        let (t, d) = (task.clone(), dir.clone());
        let Ok(Ok(trained)) =
            tokio::task::spawn_blocking(move || train(kind, &t, lr, round, &d)).await
        else {
            ctx.rec()
                .submit_failures
                .push((ix, "training failed".into()));
            continue;
        };
        let Some(h) = ctx.up(ix).await else { break };
        let blobs = BlobStore::new(home.join("blobs"));
        let (output, claim) = match claim_checkpoint(blobs, ctx.program, trained.path).await {
            Ok(x) => x,
            Err(e) => {
                ctx.rec().submit_failures.push((ix, e));
                continue;
            }
        };
        ctx.rec().issued.push((ix, trained.claimed));
        let program = ctx.program;
        let started = Instant::now();
        let result = NewResult {
            value: trained.claimed,
            rung_id: "cpu".into(),
            outputs: vec![output],
            claim: Some(claim),
            code: None,
            ..Default::default()
        };
        match h.submit(program, result).await {
            Ok(rc) => {
                seqs.push(rc.seq);
                let mut rec = ctx.rec();
                rec.acks.push(Ack {
                    node: ix,
                    member: member.clone(),
                    value: trained.claimed,
                    seq: rc.seq,
                    accepted: rc.accepted,
                    champion: rc.champion,
                    impact: rc.impact,
                    duplicate: rc.duplicate,
                    rtt: started.elapsed(),
                    after_revoke: false,
                });
                rec.claims.push(ClaimRecord {
                    node: ix,
                    kind,
                    seq: rc.seq,
                    check: Some(rc.check),
                });
            }
            Err(e) => ctx.rec().submit_failures.push((ix, e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(ctx.s.workload.interval_ms)).await;
    }
    // Wait for the owner's verdicts on this member's claims.
    while Instant::now() < ctx.deadline {
        let Some(h) = ctx.up(ix).await else { return };
        let program = ctx.program;
        // The newest page: this member's claims are among the latest results.
        let newest = btd_protocol::wire::StatusQuery::newest(btd_protocol::wire::MAX_RESULTS_PAGE);
        if let Ok(s) = h.status_page(Some(program), newest).await {
            let settled: Vec<(u64, Check)> = s
                .results
                .iter()
                .filter(|e| seqs.contains(&e.seq) && e.check != Check::Pending)
                .map(|e| (e.seq, e.check.clone()))
                .collect();
            if settled.len() == seqs.len() {
                let mut rec = ctx.rec();
                for c in rec.claims.iter_mut().filter(|c| c.node == ix) {
                    c.check = settled
                        .iter()
                        .find(|(s, _)| *s == c.seq)
                        .map(|(_, k)| k.clone());
                }
                return;
            }
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}
