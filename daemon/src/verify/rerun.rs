//! Re-run verification of shell programs (`[verify] mode = "rerun"`): the owner runs the claim's
//! code again and the value that counts is what it measured.
//!
//! The claim's tree is rebuilt from the owner's own bundle and the patch chain its ledger holds
//! (each step must give the tree its code names); the bundle's setup runs once (the owner's own
//! code, cached under `HOME/source`); then the command runs once per seed of
//! `verify.retrain_seed_list(code.seed)` (the claim's seed first), each time in a fresh copy of the
//! tree, in the sandbox (a member's code: no network, resource limits, a cleared environment with
//! a scratch `HOME`), with `BTD_SEED`, `BTD_SETUP_DIR` and, when the owner published one, the
//! owner-only holdout as `BTD_HOLDOUT`. The mean of the runs must land within `verify.tolerance` of
//! the claim, and the holdout metric (`holdout_<metric>`) within `verify.max_holdout_gap` of it;
//! [`btd_protocol::kb::judge`] decides, and the owner's mean is what counts.
//!
//! What a re-run proves: that the code, with that seed, prints that number on the owner's
//! machine. It does not prove the code is honest (the command is arbitrary code and could, for
//! example, change how the bundle's evaluation scores at run time): read a champion's patch before
//! paying out (`btd checkout`), and keep the evaluation in files that are not editable.

use std::time::Instant;

use btd_protocol::dispatch::{Action, DispatchResult, HardwareClass, Reason, SpendClass};
use btd_protocol::kb::{judge, Measurement, Verdict};
use btd_protocol::patch::Files;
use btd_protocol::program::{Program, ShellTask};
use btd_trainer::shell::{run_shell, sandbox_probe, Sandbox, ShellOptions};
use btd_trainer::source::{write_tree, SetupCache, SetupSpec};

use super::{CheckCost, Problem, Verifier};
use crate::node::types::ClaimJob;

impl Verifier {
    /// Checks a shell program's claim by running its code again; see the module docs.
    pub(super) async fn check_rerun(
        &self,
        job: &ClaimJob,
        program: &Program,
        task: &ShellTask,
        cost: &mut CheckCost,
    ) -> Result<Verdict, Problem> {
        let code = job.chain.last().cloned().ok_or_else(|| {
            Problem::Claim("the claim carries no code hypothesis to run again".into())
        })?;
        // The numbers it ran with must be ones the program searches; the re-run gets them too.
        btd_trainer::claim::check_hypothesis(&job.submission.hypothesis, &program.search)
            .map_err(|e| Problem::Claim(e.to_string()))?;
        sandbox_probe().map_err(|why| {
            Problem::Owner(format!(
                "re-running a member's code needs the sandbox, which this machine cannot make: \
                 {why}"
            ))
        })?;
        let bundle = match &task.source {
            Some(src) => {
                let (blobs, id, sha, max) = (
                    self.blobs.clone(),
                    job.program,
                    src.sha256,
                    program.verify.max_artifact_bytes,
                );
                tokio::task::spawn_blocking(move || {
                    crate::source::load_bundle(&blobs, &id, sha, max)
                })
                .await
                .map_err(|e| Problem::Owner(format!("loading the bundle crashed: {e}")))?
                .map_err(Problem::Owner)?
            }
            None => Files::new(),
        };
        let holdout = crate::node::holdout_path(&self.home, &job.program);
        let holdout = tokio::fs::metadata(&holdout)
            .await
            .is_ok_and(|m| m.is_file())
            .then_some(holdout);
        let spec = RerunSpec {
            dir: self.claim_dir(job),
            setup_root: crate::source::setup_root(&self.home),
            setup: task.source.as_ref().and_then(|s| {
                s.setup.clone().map(|command| SetupSpec {
                    command,
                    timeout_secs: s.setup_timeout_secs,
                })
            }),
            bundle_sha: task.source.as_ref().map(|s| s.sha256),
            task: task.clone(),
            metric: program.criteria.metric.clone(),
            seeds: program.verify.retrain_seed_list(code.seed),
            params: crate::work::param_env(&job.submission.hypothesis),
            // A GPU program's CUDA runtime reserves far more address space than it uses.
            max_memory_bytes: if program
                .rungs
                .iter()
                .any(|r| r.admitted && r.hardware != HardwareClass::Cpu)
            {
                0
            } else {
                Sandbox::default().max_memory_bytes
            },
            hidden: crate::source::sandbox_hidden(&self.home),
            holdout,
        };
        let chain = job.chain.clone();
        let started = Instant::now();
        let measured = tokio::task::spawn_blocking(move || spec.run(&bundle, &chain))
            .await
            .map_err(|e| Problem::Owner(format!("the re-run crashed: {e}")))??;
        cost.eval_secs = started.elapsed().as_secs_f64();
        tracing::info!(
            program = %job.program.short(),
            seq = job.seq,
            runs = measured.runs.len(),
            secs = cost.eval_secs,
            "re-ran a claim"
        );
        let m = Measurement {
            value: mean(&measured.runs),
            holdout: (!measured.holdout.is_empty()).then(|| mean(&measured.holdout)),
            same_platform: false,
            retrained: Vec::new(),
        };
        Ok(judge(
            &program.verify,
            program.criteria.direction,
            job.submission.value,
            &m,
        ))
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Everything one re-run check needs, moved to a blocking thread.
struct RerunSpec {
    dir: std::path::PathBuf,
    setup_root: std::path::PathBuf,
    setup: Option<SetupSpec>,
    bundle_sha: Option<btd_protocol::Digest>,
    task: ShellTask,
    metric: String,
    seeds: Vec<u64>,
    /// The claim's numeric hypothesis as `BTD_PARAM_*`.
    params: Vec<(String, String)>,
    /// The sandbox's address-space limit (0: none).
    max_memory_bytes: u64,
    /// What the sandbox hides (the owner's home, the user's home).
    hidden: Vec<std::path::PathBuf>,
    holdout: Option<std::path::PathBuf>,
}

/// The owner's measurements: one value (and holdout value, when there is a holdout) per seed.
struct Measured {
    runs: Vec<f64>,
    holdout: Vec<f64>,
}

impl RerunSpec {
    fn run(
        &self,
        bundle: &Files,
        chain: &[btd_protocol::wire::CodeHypothesis],
    ) -> Result<Measured, Problem> {
        let tree = btd_protocol::wire::rebuild_tree(bundle, chain)
            .map_err(|e| Problem::Claim(format!("the claim's tree cannot be rebuilt: {e}")))?;
        let setup_dir = match self.bundle_sha {
            Some(sha) => Some(
                SetupCache::new(self.setup_root.clone())
                    .prepare(sha, bundle, self.setup.as_ref(), None)
                    .map_err(|e| Problem::Owner(format!("the program's setup failed: {e}")))?,
            ),
            None => None,
        };
        let dispatch = DispatchResult {
            action: Action::RunLocal,
            reason: Reason::LocalAllowed,
            detail: "the owner re-runs a claim to check it".into(),
            decision_id: "owner-rerun".into(),
            packet_id: "owner-rerun".into(),
            rung_id: "owner".into(),
            spend_class: SpendClass::LocalUnmetered,
            required_outputs: Vec::new(),
        };
        let holdout_key = format!("holdout_{}", self.metric);
        let mut out = Measured {
            runs: Vec::new(),
            holdout: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        for (i, seed) in self.seeds.iter().enumerate() {
            let run_dir = self.dir.join(format!("run-{i}"));
            let (tree_dir, scratch) = (run_dir.join("tree"), run_dir.join("scratch"));
            write_tree(&tree, &tree_dir)
                .map_err(|e| Problem::Owner(format!("cannot write the claim's tree: {e}")))?;
            std::fs::create_dir_all(&scratch)
                .map_err(|e| Problem::Owner(format!("cannot create {}: {e}", scratch.display())))?;
            let mut env = self.params.clone();
            env.push(("BTD_SEED".to_string(), seed.to_string()));
            if let Some(d) = &setup_dir {
                env.push(("BTD_SETUP_DIR".into(), d.display().to_string()));
            }
            if let Some(h) = &self.holdout {
                env.push(("BTD_HOLDOUT".into(), h.display().to_string()));
            }
            let opts = ShellOptions {
                cwd: Some(tree_dir),
                env,
                clear_env: true,
                scratch_dir: Some(scratch),
                sandbox: Some(Sandbox {
                    max_memory_bytes: self.max_memory_bytes,
                    hidden: self.hidden.clone(),
                    readable: setup_dir.iter().chain(&self.holdout).cloned().collect(),
                    ..Sandbox::with_timeout(self.task.timeout_secs)
                }),
                ..ShellOptions::new(self.metric.clone())
            };
            let r = run_shell(&self.task, &dispatch, &opts)
                .map_err(|e| Problem::Owner(format!("the re-run could not start: {e}")))?;
            let what = format!("the owner's re-run with seed {seed}");
            let value = match (r.timed_out, r.exit_code, r.failed, r.value) {
                (true, ..) => {
                    return Err(Problem::Claim(format!(
                        "{what} was killed after the {} s timeout",
                        self.task.timeout_secs
                    )))
                }
                (_, _, true, _) => return Err(Problem::Claim(format!("{what} printed FAIL"))),
                (_, Some(0), _, Some(v)) => v,
                (_, Some(0), _, None) => {
                    return Err(Problem::Claim(format!(
                        "{what} printed no `{}: <number>` line",
                        self.metric
                    )))
                }
                (_, code, ..) => {
                    return Err(Problem::Claim(format!(
                        "{what} exited with {}",
                        code.map_or_else(|| "a signal".to_string(), |c| format!("status {c}"))
                    )))
                }
            };
            out.runs.push(value);
            if self.holdout.is_some() {
                let h = r.metrics.get(&holdout_key).copied().ok_or_else(|| {
                    Problem::Claim(format!(
                        "{what} printed no `{holdout_key}: <number>` line although the owner gave \
                         it a holdout (BTD_HOLDOUT); the program's command must score it"
                    ))
                })?;
                out.holdout.push(h);
            }
        }
        Ok(out)
    }
}
