//! Code hypotheses: the owner takes a result's code only bound by its signature, touching only
//! editable files, on an existing parent; serves the ledger and any result's code; hands the
//! verifier the whole chain; and restores all of it from its records.

use super::*;
use crate::patch::{diff, tree_digest, File, Files};
use crate::wire::{CodeHypothesis, ErrorCode, CODE_OUTPUT};

const PROGRAM: &str = r#"
name = "byo"
objective = "lowest val_bpb of train.py"
membership = "approval"
baseline = 4.0
required_outputs = ["output.log"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "shell"
command = "python3 train.py"
timeout_secs = 60
[task.source]
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
editable = ["train.py", "lib/*.py"]
[[rungs]]
id = "cpu"
label = "CPU"
spend_class = "local_unmetered"
hardware = "cpu"
[verify]
mode = "rerun"
tolerance = 1e-6
"#;

fn file(text: &str) -> File {
    File {
        data: text.as_bytes().to_vec(),
        executable: false,
    }
}

fn bundle() -> Files {
    Files::from([
        (
            "train.py".to_string(),
            file("ORDER = 2\nprint('val_bpb:', 3.0)\n"),
        ),
        ("prepare.py".to_string(), file("def evaluate(): pass\n")),
    ])
}

/// A code hypothesis turning `parent` into `child`.
fn code(parent_seq: Option<u64>, parent: &Files, child: &Files, why: &str) -> CodeHypothesis {
    CodeHypothesis {
        parent: parent_seq,
        patch: diff(parent, child).expect("a text change"),
        rationale: why.into(),
        seed: 42,
        tree: tree_digest(child),
    }
}

fn edit(tree: &Files, path: &str, text: &str) -> Files {
    let mut t = tree.clone();
    t.insert(path.into(), file(text));
    t
}

/// A signed submission binding `code` (its digest as output `btd.code`, unless `bind` is false).
fn signed(
    w: &Worker,
    program: ProgramId,
    value: f64,
    nonce: u8,
    code: &CodeHypothesis,
    bind: bool,
) -> Signed<Submission> {
    let digest = if bind {
        code.digest()
    } else {
        Digest::of(b"another")
    };
    let sub = Submission {
        program,
        nonce: [nonce; 16],
        value,
        rung_id: "cpu".into(),
        outputs: vec![
            Output::of("output.log", b"log"),
            Output {
                name: CODE_OUTPUT.into(),
                sha256: digest,
            },
        ],
        metrics: BTreeMap::new(),
        hypothesis: BTreeMap::new(),
        created_at: T0,
        claim: None,
    };
    Signed::sign(&w.key, &sub).expect("signs")
}

fn submit_code(
    world: &mut World,
    w: &Worker,
    value: f64,
    nonce: u8,
    code: &CodeHypothesis,
) -> Effects<KbResponse> {
    let submission = signed(w, world.id, value, nonce, code, true);
    world.kb(
        w,
        KbCall::SubmitCode {
            submission,
            code: Box::new(code.clone()),
        },
        T0,
    )
}

fn setup() -> (World, Worker, Worker) {
    let mut world = World::with_toml(PROGRAM.into());
    let (mut a, mut b) = (Worker::new(), Worker::new());
    world.join(&mut a, T0);
    world.join(&mut b, T0);
    (world, a, b)
}

#[test]
fn a_code_result_is_pending_and_the_ledger_and_chain_show_its_lineage() {
    let (mut world, a, b) = setup();
    let base = bundle();
    let t1 = edit(&base, "train.py", "ORDER = 3\nprint('val_bpb:', 2.0)\n");
    let c1 = code(None, &base, &t1, "ORDER = 3 (was 2)\nlonger context");
    let r1 = receipt(&submit_code(&mut world, &a, 2.0, 1, &c1));
    assert!(is_pending(&r1), "a re-run program checks the claim: {r1:?}");

    // b builds on a's result.
    let t2 = edit(&t1, "lib/util.py", "X = 1\n");
    let c2 = code(Some(r1.seq), &t1, &t2, "a helper");
    let r2 = receipt(&submit_code(&mut world, &b, 1.9, 1, &c2));

    let fx = world.kb(
        &a,
        KbCall::Ledger {
            after_seq: 0,
            limit: 10,
        },
        T0,
    );
    let KbResponse::Ledger { items, more } = fx.reply else {
        panic!("expected a ledger page, got {:?}", fx.reply);
    };
    assert!(!more);
    let lineage: Vec<_> = items
        .iter()
        .map(|i| {
            let c = i.code.as_ref().expect("code");
            (
                i.entry.seq,
                c.parent,
                c.files.clone(),
                c.rationale.lines().next().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        lineage,
        vec![
            (
                r1.seq,
                None,
                vec!["train.py".to_string()],
                Some("ORDER = 3 (was 2)".into())
            ),
            (
                r2.seq,
                Some(r1.seq),
                vec!["lib/util.py".to_string()],
                Some("a helper".into())
            ),
        ]
    );
    // Any member reads any result's code, with who made it.
    let fx = world.kb(&b, KbCall::Code { seq: r1.seq }, T0);
    let KbResponse::Code(Some(view)) = fx.reply else {
        panic!("expected the code, got {:?}", fx.reply);
    };
    assert_eq!(
        (view.code, view.entry.worker),
        (c1.clone(), a.peer.to_string())
    );

    // The verifier gets the oldest claim with its chain; once it is settled, the next one's chain
    // holds both patches, root first, and rebuilds b's tree from the bundle.
    assert_eq!(world.next_claim().expect("a claim").chain, vec![c1.clone()]);
    let _ = world
        .owners
        .on_verdict(
            &world.id,
            r1.seq,
            crate::kb::Verdict::Measured { value: 2.0 },
            T0,
        )
        .expect("applies");
    let claim = world.next_claim().expect("b's claim");
    assert_eq!(claim.seq, r2.seq);
    assert_eq!(claim.chain, vec![c1, c2]);
    let mut tree = base;
    for c in &claim.chain {
        tree = crate::patch::Patch::parse(&c.patch)
            .unwrap()
            .apply(&tree)
            .unwrap();
        assert_eq!(tree_digest(&tree), c.tree);
    }
    assert_eq!(tree, t2);
}

#[test]
fn code_that_is_unbound_not_editable_or_on_a_missing_parent_is_refused_and_stores_nothing() {
    let (mut world, a, _) = setup();
    let base = bundle();
    let cheat = edit(&base, "prepare.py", "def evaluate(): return 0.0\n");
    let cases: Vec<(CodeHypothesis, bool, &str)> = vec![
        (
            code(None, &base, &cheat, "easier eval"),
            true,
            "not editable",
        ),
        (
            code(
                None,
                &base,
                &edit(&base, "train.py", "ORDER = 4\n"),
                "unbound",
            ),
            false,
            "does not carry the code's digest",
        ),
        (
            code(
                Some(7),
                &base,
                &edit(&base, "train.py", "ORDER = 5\n"),
                "no parent",
            ),
            true,
            "does not exist yet",
        ),
        (
            // A rationale that would print differently than it was signed (a terminal escape).
            code(
                None,
                &base,
                &edit(&base, "train.py", "ORDER = 6\n"),
                "six\u{1b}[2J",
            ),
            true,
            "plain text",
        ),
    ];
    for (i, (c, bind, why)) in cases.into_iter().enumerate() {
        let submission = signed(&a, world.id, 1.0, i as u8, &c, bind);
        let fx = world.kb(
            &a,
            KbCall::SubmitCode {
                submission,
                code: Box::new(c),
            },
            T0,
        );
        let (code, msg) = error(&fx);
        assert_eq!(code, ErrorCode::Invalid, "{msg}");
        assert!(msg.contains(why), "case {i}: {msg}");
        assert!(fx.persist.is_empty());
    }
    // A program that runs code needs the code with every result.
    let plain = a.submission(world.id, 1.0, 9, false, T0);
    let (_, msg) = error(&world.kb(&a, KbCall::Submit(plain), T0));
    assert!(msg.contains("must carry the code hypothesis"), "{msg}");
    assert!(world
        .log
        .iter()
        .all(|r| !matches!(r, Record::Submission(_))));
}

#[test]
fn the_ledger_and_code_come_back_after_a_restart() {
    let (mut world, a, b) = setup();
    let base = bundle();
    let t1 = edit(&base, "train.py", "ORDER = 3\n");
    let c1 = code(None, &base, &t1, "three");
    let r1 = receipt(&submit_code(&mut world, &a, 2.0, 1, &c1));
    let c2 = code(
        Some(r1.seq),
        &t1,
        &edit(&t1, "train.py", "ORDER = 4\n"),
        "four",
    );
    let _ = submit_code(&mut world, &b, 1.5, 1, &c2);
    let live = world.owners.get(&world.id).expect("owned");
    let read = |o: &crate::owner::ProgramOwner, call: KbCall| {
        o.read_own(&call).map(|fx| world.complete(fx).reply)
    };
    let reads = |o: &crate::owner::ProgramOwner| {
        (
            read(
                o,
                KbCall::Ledger {
                    after_seq: 0,
                    limit: 100,
                },
            ),
            read(o, KbCall::Code { seq: 2 }),
            o.next_claim(),
        )
    };
    let before = reads(live);
    let restored = world
        .owners
        .restore(&world.view, world.announcement.clone(), world.log.clone())
        .expect("restores");
    assert_eq!(reads(&restored), before);
    assert!(matches!(before.1, Some(KbResponse::Code(Some(_)))));
    // The tail: the newest results, without paging from the start.
    let tail = read(&restored, KbCall::LedgerTail { limit: 1 });
    let Some(KbResponse::Ledger { items, more }) = tail else {
        panic!("expected a ledger page, got {tail:?}");
    };
    assert_eq!(items.iter().map(|i| i.entry.seq).collect::<Vec<_>>(), [2]);
    assert!(!more);
}

/// A member cannot make the owner hold more than [`MAX_CODE_BYTES_PER_MEMBER`] of its code, at
/// any rate: past it, `rate_limited` with the numbers; another member is not affected.
#[test]
fn one_member_cannot_make_the_owner_hold_more_than_its_code_quota() {
    use crate::owner::MAX_CODE_BYTES_PER_MEMBER;
    let (mut world, a, b) = setup();
    // Each result creates a new editable file of one ~63 KiB line: the largest patches there are.
    let line = "x".repeat(63 * 1024);
    let big = |i: usize| CodeHypothesis {
        parent: None,
        patch: format!("--- /dev/null\n+++ b/lib/big{i}.py\n@@ -0,0 +1 @@\n+{line}\n"),
        rationale: String::new(),
        seed: i as u64,
        tree: Digest([i as u8; 32]),
    };
    let per = big(0).patch.len() as u64;
    let fits = (MAX_CODE_BYTES_PER_MEMBER / per) as usize;
    let mut t = T0;
    for i in 0..fits {
        // Worse than the baseline: stored, never pending, so the pending cap does not interfere.
        let submission = signed_at(&a, world.id, 5.0, i, &big(i), t);
        let fx = world.kb(
            &a,
            KbCall::SubmitCode {
                submission,
                code: Box::new(big(i)),
            },
            t,
        );
        assert!(
            matches!(fx.reply, KbResponse::Submitted(_)),
            "{i}: {:?}",
            fx.reply
        );
        t = t.plus_secs(2);
    }
    let submission = signed_at(&a, world.id, 5.0, fits, &big(fits), t);
    let fx = world.kb(
        &a,
        KbCall::SubmitCode {
            submission,
            code: Box::new(big(fits)),
        },
        t,
    );
    let (code, msg) = error(&fx);
    assert_eq!(code, ErrorCode::RateLimited, "{msg}");
    assert!(msg.contains("bytes of your results' code"), "{msg}");
    assert!(fx.persist.is_empty());
    // Another member still submits.
    let submission = signed_at(&b, world.id, 5.0, 0, &big(0), t);
    let fx = world.kb(
        &b,
        KbCall::SubmitCode {
            submission,
            code: Box::new(big(0)),
        },
        t,
    );
    assert!(
        matches!(fx.reply, KbResponse::Submitted(_)),
        "{:?}",
        fx.reply
    );
}

/// [`signed`] with a 16-byte nonce from `n` and a creation time.
fn signed_at(
    w: &Worker,
    program: ProgramId,
    value: f64,
    n: usize,
    code: &CodeHypothesis,
    at: Timestamp,
) -> Signed<Submission> {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&(n as u64).to_le_bytes());
    let sub = Submission {
        program,
        nonce,
        value,
        rung_id: "cpu".into(),
        outputs: vec![Output {
            name: CODE_OUTPUT.into(),
            sha256: code.digest(),
        }],
        metrics: BTreeMap::new(),
        hypothesis: BTreeMap::new(),
        created_at: at,
        claim: None,
    };
    Signed::sign(&w.key, &sub).expect("signs")
}
