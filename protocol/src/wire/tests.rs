use std::collections::BTreeMap;

use libp2p_identity::Keypair;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::dispatch::{Budget, ComputePacket, HardwareClass, SpendClass};
use crate::kb::{Amount, Check, Entry, Payouts};
use crate::membership::{Credential, DeviceAuthorization, DeviceCode, UserCode};
use crate::program::{Program, ProgramId};
use crate::seal::{self, SealKey};
use crate::signed::Signed;
use crate::trace::{ApprovalReceipt, Output};
use crate::{Digest, Timestamp};

const EXAMPLE: &str = include_str!("../../../examples/program.toml");

fn key(n: u8) -> Keypair {
    Keypair::ed25519_from_bytes([n; 32]).unwrap()
}

fn pid() -> ProgramId {
    ProgramId(Digest([1; 32]))
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

fn entry(seq: u64) -> Entry {
    Entry {
        seq,
        worker: "12D3KooWworker".into(),
        value: 1.25,
        accepted: true,
        champion: seq == 1,
        impact: 0.5,
        check: if seq == 2 {
            Check::Failed("metric did not reproduce".into())
        } else {
            Check::Verified
        },
    }
}

fn submission() -> Submission {
    Submission {
        program: pid(),
        nonce: [9; 16],
        value: 2.84,
        rung_id: "cpu".into(),
        outputs: vec![Output::of("metrics.json", b"{}")],
        metrics: BTreeMap::from([("tokens_per_s".to_string(), 12345.0)]),
        hypothesis: BTreeMap::from([("lr".to_string(), 3e-3)]),
        created_at: Timestamp(1_000),
        claim: Some(Claim {
            checkpoint: Output::of("metrics.json", b"{}").sha256,
            checkpoint_bytes: 2,
            seed: 7,
            steps: 150,
            device: "cpu: AMD EPYC".into(),
            btd_version: "0.1.0".into(),
        }),
    }
}

fn sealed() -> seal::Sealed {
    let worker = SealKey::from_identity(&key(2)).unwrap();
    seal::seal(&worker.public(), b"ctx", &[5; 32], &mut rng()).unwrap()
}

fn grant() -> GrantDelivery {
    GrantDelivery {
        program: pid(),
        device_code: DeviceCode([2; 32]),
        sealed: sealed(),
    }
}

fn packet() -> ComputePacket {
    ComputePacket {
        id: "p:paid-h100".into(),
        decision_id: "p".into(),
        rung_id: "paid-h100".into(),
        question: "q".into(),
        success_bar: BTreeMap::new(),
        stop_condition: "20 s".into(),
        required_outputs: vec!["metrics.json".into()],
        budget: Budget {
            wall_clock_secs: Some(20),
            steps: None,
            spend_cap: Some(2.0),
        },
    }
}

fn error() -> ErrorReply {
    ErrorReply {
        code: ErrorCode::MembershipRequired,
        message: "join the program first".into(),
    }
}

fn announcement(kp: &Keypair, published_at: Timestamp) -> Signed<ProgramAnnouncement> {
    Signed::sign(
        kp,
        &ProgramAnnouncement {
            manifest: EXAMPLE.to_string(),
            addresses: vec!["/ip4/127.0.0.1/tcp/4801".into()],
            published_at,
        },
    )
    .unwrap()
}

fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(v).unwrap();
    let back: T = decode(&bytes).unwrap();
    assert_eq!(&back, v);
    // One byte short never decodes to the same value, and never panics.
    if !bytes.is_empty() {
        let _ = decode::<T>(&bytes[..bytes.len() - 1]);
    }
}

#[test]
fn every_message_round_trips() {
    let kp = key(1);
    round_trip(&announcement(&kp, Timestamp(5)));
    round_trip(
        &Signed::sign(
            &kp,
            &RungAdvert {
                rungs: vec![AdvertisedRung {
                    id: "gpu0".into(),
                    hardware: HardwareClass::H100,
                    spend_class: SpendClass::PaidMetered,
                    detail: "NVIDIA H100 80GB HBM3".into(),
                }],
                programs: vec![pid()],
                advertised_at: Timestamp(9),
            },
        )
        .unwrap(),
    );
    for req in [
        MembershipRequest::Authorize {
            program: pid(),
            seal_key: SealKey::from_identity(&kp).unwrap().public(),
        },
        MembershipRequest::Poll {
            program: pid(),
            device_code: DeviceCode([2; 32]),
        },
        MembershipRequest::PushGrant(grant()),
    ] {
        round_trip(&req);
    }
    for status in [
        PollStatus::AuthorizationPending,
        PollStatus::SlowDown { interval: 10 },
        PollStatus::AccessDenied,
        PollStatus::ExpiredToken,
        PollStatus::NotFound,
    ] {
        round_trip(&MembershipResponse::Poll(status));
    }
    for resp in [
        MembershipResponse::Authorization(DeviceAuthorization {
            device_code: DeviceCode([3; 32]),
            user_code: UserCode::parse("ABCD-EFGH").unwrap(),
            expires_in: 900,
            interval: 5,
        }),
        MembershipResponse::Granted(grant()),
        MembershipResponse::Ack,
        MembershipResponse::Error(error()),
    ] {
        round_trip(&resp);
    }
    for call in [
        KbCall::Program,
        KbCall::Champion,
        KbCall::Results {
            after_seq: 3,
            limit: 100,
        },
        KbCall::Status,
        KbCall::Submit(Signed::sign(&kp, &submission()).unwrap()),
    ] {
        round_trip(&KbRequest {
            program: pid(),
            credential: Credential::from_bytes([4; 32]),
            call,
        });
    }
    let mut kb = crate::kb::Kb::new(crate::kb::Rules {
        direction: crate::kb::Direction::Minimize,
        accept: crate::kb::AcceptRule::BeatsChampion,
        baseline: Some(2.0),
        pool: Amount(100_000_000),
        split: crate::kb::Split::ByImpact,
        min_improvement: crate::kb::MinImprovement::NONE,
    })
    .unwrap();
    kb.submit("a", 1.5).unwrap();
    let payouts: Payouts = kb.payouts();
    for resp in [
        KbResponse::Program(announcement(&kp, Timestamp(5))),
        KbResponse::Champion(Some(Box::new(ChampionView {
            entry: entry(1),
            submission: Signed::sign(&kp, &submission()).unwrap(),
        }))),
        KbResponse::Champion(None),
        KbResponse::Results {
            entries: vec![entry(1), entry(2)],
            more: true,
        },
        KbResponse::Status(KbStatus {
            program: pid(),
            name: "p".into(),
            members: 2,
            submissions: 1,
            accepted: 1,
            pending: 1,
            verified: 1,
            rejected: 1,
            champion: Some(entry(1)),
            payouts,
            pool: Amount(100_000_000),
            token: "OBOL".into(),
        }),
        KbResponse::Submitted(SubmitReceipt {
            seq: 4,
            accepted: false,
            champion: false,
            impact: 0.0,
            check: Check::Pending,
            duplicate: true,
        }),
        KbResponse::Error(error()),
    ] {
        round_trip(&resp);
    }
    round_trip(&ApprovalRequest {
        program: pid(),
        credential: Credential::from_bytes([4; 32]),
        packet: packet(),
    });
    let receipt = ApprovalReceipt::issue(
        &kp,
        "p:paid-h100",
        "paid-h100",
        Timestamp(0),
        Timestamp(60_000),
        2.0,
    )
    .unwrap();
    for resp in [
        ApprovalResponse::Granted(receipt),
        ApprovalResponse::Pending,
        ApprovalResponse::Denied {
            reason: "over budget".into(),
        },
        ApprovalResponse::Error(error()),
    ] {
        round_trip(&resp);
    }
}

/// Golden bytes: a change to the encoding of these messages must be a deliberate protocol change
/// (and a new protocol name).
#[test]
fn golden_bytes() {
    let poll = MembershipRequest::Poll {
        program: pid(),
        device_code: DeviceCode([2; 32]),
    };
    assert_eq!(
        hex::encode(encode(&poll).unwrap()),
        format!("01{}{}", "01".repeat(32), "02".repeat(32))
    );
    let slow = MembershipResponse::Poll(PollStatus::SlowDown { interval: 10 });
    assert_eq!(
        hex::encode(encode(&slow).unwrap()),
        "0201 0a".replace(' ', "")
    );
    let req = KbRequest {
        program: pid(),
        credential: Credential::from_bytes([4; 32]),
        call: KbCall::Results {
            after_seq: 300,
            limit: 100,
        },
    };
    // program (32) ‖ credential (32) ‖ variant 2 ‖ varint 300 (0xfb 0x2c 0x01) ‖ varint 100
    assert_eq!(
        hex::encode(encode(&req).unwrap()),
        format!("{}{}02fb2c0164", "01".repeat(32), "04".repeat(32))
    );
}

#[test]
fn size_limits_and_trailing_bytes() {
    let huge = KbResponse::Error(ErrorReply {
        code: ErrorCode::Invalid,
        message: "x".repeat(MAX_MESSAGE_BYTES),
    });
    assert!(matches!(encode(&huge), Err(CodecError::TooLarge { .. })));
    let too_long = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        decode::<KbCall>(&too_long),
        Err(CodecError::TooLarge { .. })
    ));
    // A length prefix claiming 2^60 entries must fail without allocating.
    // Variant 2 (`Results`), then a u64 varint (0xfd marker) as the entries' length.
    let mut claim = vec![2u8, 0xfd];
    claim.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(decode::<KbResponse>(&claim).is_err());
    let mut bytes = encode(&KbCall::Champion).unwrap();
    bytes.push(0);
    assert_eq!(decode::<KbCall>(&bytes), Err(CodecError::TrailingBytes(1)));
}

#[test]
fn announcements_verify_and_derive_the_id() {
    let kp = key(1);
    let now = Timestamp(1_000_000);
    let v = verify_announcement(&announcement(&kp, now), now).unwrap();
    let program = Program::from_toml(EXAMPLE).unwrap();
    assert_eq!(v.id, program.id(&kp.public()));
    assert_eq!(v.owner, kp.public().to_peer_id());
    assert_eq!(v.program, program);

    // Re-encoded through the wire it still verifies to the same id.
    let bytes = encode(&announcement(&kp, now)).unwrap();
    let back: Signed<ProgramAnnouncement> = decode(&bytes).unwrap();
    assert_eq!(verify_announcement(&back, now).unwrap().id, v.id);

    let future = now.plus_millis(MAX_CLOCK_SKEW_MS + 1);
    assert!(matches!(
        verify_announcement(&announcement(&kp, future), now),
        Err(AnnouncementError::Message(_))
    ));
    let bad = Signed::sign(
        &kp,
        &ProgramAnnouncement {
            manifest: "name = \"x\"".into(),
            addresses: vec![],
            published_at: now,
        },
    )
    .unwrap();
    assert!(matches!(
        verify_announcement(&bad, now),
        Err(AnnouncementError::Manifest(_))
    ));
}

#[test]
fn grants_are_bound_to_program_and_device_code() {
    let worker = SealKey::from_identity(&key(2)).unwrap();
    let code = DeviceCode([7; 32]);
    let cred = Credential::from_bytes([8; 32]);
    let ctx = grant_seal_context(&pid(), &code);
    let sealed = seal::seal(&worker.public(), &ctx, cred.as_bytes(), &mut rng()).unwrap();
    assert_eq!(seal::open(&worker, &ctx, &sealed).unwrap(), cred.as_bytes());
    let other = grant_seal_context(&pid(), &DeviceCode([6; 32]));
    assert!(seal::open(&worker, &other, &sealed).is_err());
    let other_program = grant_seal_context(&ProgramId(Digest([9; 32])), &code);
    assert!(seal::open(&worker, &other_program, &sealed).is_err());
}

#[test]
fn submissions_are_checked_and_signed() {
    let now = Timestamp(1_000);
    submission().check(now).unwrap();
    let mut s = submission();
    s.value = f64::NAN;
    assert_eq!(s.check(now).unwrap_err().field, "value");
    let mut s = submission();
    s.rung_id = "x".repeat(MAX_ID_BYTES + 1);
    assert_eq!(s.check(now).unwrap_err().field, "rung_id");
    let mut s = submission();
    s.metrics.insert("loss".into(), f64::INFINITY);
    assert_eq!(s.check(now).unwrap_err().field, "metrics.value");
    let mut s = submission();
    s.created_at = now.plus_millis(MAX_CLOCK_SKEW_MS + 1);
    assert_eq!(s.check(now).unwrap_err().field, "created_at");
    // A claim must name a checkpoint the submission lists among its outputs.
    let mut s = submission();
    if let Some(c) = s.claim.as_mut() {
        c.checkpoint = Digest([1; 32]);
    }
    assert_eq!(s.check(now).unwrap_err().field, "claim.checkpoint");

    let kp = key(3);
    let signed = Signed::sign(&kp, &submission()).unwrap();
    let call: KbCall = decode(&encode(&KbCall::Submit(signed)).unwrap()).unwrap();
    let KbCall::Submit(back) = call else {
        panic!("wrong variant")
    };
    assert_eq!(
        back.verify_from(&kp.public().to_peer_id()).unwrap(),
        submission()
    );
    assert!(KbCall::Results {
        after_seq: 0,
        limit: 0
    }
    .check()
    .is_err());
    assert!(KbCall::Results {
        after_seq: 0,
        limit: MAX_RESULTS_PAGE + 1
    }
    .check()
    .is_err());
}

#[test]
fn blob_messages_round_trip_and_bound_the_chunk() {
    let req = BlobRequest {
        program: pid(),
        credential: Some(Credential::from_bytes([4; 32])),
        digest: Digest([3; 32]),
        offset: 1 << 20,
        len: MAX_BLOB_CHUNK,
    };
    round_trip(&req);
    req.check().unwrap();
    for len in [0, MAX_BLOB_CHUNK + 1] {
        let bad = BlobRequest { len, ..req.clone() };
        assert_eq!(bad.check().unwrap_err().field, "len");
    }
    // A full chunk fits in one message.
    let full = BlobResponse::Chunk {
        size: 10 << 20,
        offset: 0,
        data: vec![0xab; MAX_BLOB_CHUNK as usize],
    };
    assert!(encode(&full).unwrap().len() <= MAX_MESSAGE_BYTES);
    round_trip(&full);
    round_trip(&BlobResponse::Error(error()));
}

#[test]
fn protocol_names_are_versioned() {
    for name in [protocols::MEMBERSHIP, protocols::KB, protocols::APPROVAL] {
        assert!(name.starts_with("/btd/") && name.ends_with("/1"), "{name}");
    }
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode::<MembershipRequest>(&bytes);
        let _ = decode::<MembershipResponse>(&bytes);
        let _ = decode::<KbRequest>(&bytes);
        let _ = decode::<KbResponse>(&bytes);
        let _ = decode::<ApprovalRequest>(&bytes);
        let _ = decode::<ApprovalResponse>(&bytes);
        let _ = decode::<Signed<ProgramAnnouncement>>(&bytes);
        let _ = decode::<Signed<RungAdvert>>(&bytes);
        if let Ok(s) = decode::<Signed<Submission>>(&bytes) {
            let _ = s.verify();
        }
    }

    #[test]
    fn mutated_messages_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let kp = key(1);
        let req = KbRequest {
            program: pid(),
            credential: Credential::from_bytes([4; 32]),
            call: KbCall::Submit(Signed::sign(&kp, &submission()).unwrap()),
        };
        let mut bytes = encode(&req).unwrap();
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        if let Ok(KbRequest { call: KbCall::Submit(s), .. }) = decode::<KbRequest>(&bytes) {
            // Either the mutation hit a byte outside the signed part or verification catches it.
            if let Ok(v) = s.verify() {
                prop_assert_eq!(v.value, submission());
            }
        }
    }

    #[test]
    fn submissions_round_trip(
        value in any::<f64>(),
        nonce in any::<[u8; 16]>(),
        rung in "[a-z0-9-]{1,20}",
        metrics in proptest::collection::btree_map("[a-z_]{1,12}", any::<f64>(), 0..8),
        hypothesis in proptest::collection::btree_map("[a-z_]{1,12}", any::<f64>(), 0..8),
        at in any::<u64>(),
    ) {
        let s = Submission {
            program: pid(),
            nonce,
            value,
            rung_id: rung,
            outputs: vec![Output::of("m", b"x")],
            metrics,
            hypothesis,
            created_at: Timestamp(at),
            claim: None,
        };
        let back: Submission = decode(&encode(&s).unwrap()).unwrap();
        // Compare encodings: NaN != NaN, but the bits must survive.
        prop_assert_eq!(encode(&back).unwrap(), encode(&s).unwrap());
    }
}

#[test]
fn remote_text_is_cut_at_a_char_boundary_and_stripped_of_control_characters() {
    assert_eq!(sanitize_text("short and clean", 64), "short and clean");
    assert_eq!(sanitize_text("a\nb\x1b[2Jc\0", 64), "a b [2Jc ");
    let long = "é".repeat(1000);
    let cut = sanitize_text(&long, 101);
    assert!(cut.len() <= 101, "{}", cut.len());
    assert!(cut.ends_with('…'));
    assert!(cut.starts_with("éé"));
    // Degenerate bounds never panic and never exceed the bound.
    assert_eq!(sanitize_text("abcdef", 0), "");
    assert!(sanitize_text("abcdef", 2).len() <= 2);
}

#[test]
fn replies_received_from_peers_have_their_text_bounded() {
    let huge = format!("\x1b[31m{}", "x".repeat(MAX_MESSAGE_BYTES - 100));
    let mut reply = KbResponse::Error(ErrorReply {
        code: ErrorCode::NotFound,
        message: huge.clone(),
    });
    reply.sanitize();
    let KbResponse::Error(e) = &reply else {
        panic!()
    };
    assert!(e.message.len() <= MAX_TEXT_BYTES && !e.message.contains('\x1b'));

    let mut page = KbResponse::Results {
        entries: vec![Entry {
            seq: 1,
            worker: "w".repeat(10_000),
            value: 1.0,
            accepted: false,
            champion: false,
            impact: 0.0,
            check: Check::Failed(huge.clone()),
        }],
        more: false,
    };
    page.sanitize();
    let KbResponse::Results { entries, .. } = &page else {
        panic!()
    };
    let Check::Failed(why) = &entries[0].check else {
        panic!()
    };
    assert!(why.len() <= crate::kb::MAX_VERDICT_REASON_BYTES);
    assert!(entries[0].worker.len() <= crate::kb::MAX_WORKER_ID_LEN);

    let mut r = BlobResponse::Error(ErrorReply {
        code: ErrorCode::NotFound,
        message: huge.clone(),
    });
    r.sanitize();
    let BlobResponse::Error(e) = r else { panic!() };
    assert!(e.message.len() <= MAX_TEXT_BYTES);
    let mut denied = ApprovalResponse::Denied {
        reason: huge.clone(),
    };
    denied.sanitize();
    let ApprovalResponse::Denied { reason } = denied else {
        panic!()
    };
    assert!(reason.len() <= MAX_TEXT_BYTES);
    let mut m = MembershipResponse::Error(ErrorReply {
        code: ErrorCode::Invalid,
        message: huge,
    });
    m.sanitize();
    let MembershipResponse::Error(e) = m else {
        panic!()
    };
    assert!(e.message.len() <= MAX_TEXT_BYTES);
}

/// The worst results page the owner can serve: [`MAX_RESULTS_PAGE`] entries, each with the
/// longest worker id, the largest numbers and a maximal verdict reason of multi-byte characters.
/// It must encode under the message cap, or status pages break once such verdicts exist.
#[test]
fn a_full_results_page_of_maximal_rejections_fits_the_message_cap() {
    let reason = crate::kb::bound_reason(&"€".repeat(10_000));
    assert!(reason.len() <= crate::kb::MAX_VERDICT_REASON_BYTES);
    let entry = Entry {
        seq: u64::MAX,
        worker: "w".repeat(crate::kb::MAX_WORKER_ID_LEN),
        value: f64::MAX,
        accepted: true,
        champion: true,
        impact: f64::MAX,
        check: Check::Failed(reason),
    };
    let page = KbResponse::Results {
        entries: vec![entry; MAX_RESULTS_PAGE as usize],
        more: true,
    };
    let bytes = encode(&page).expect("a full page of maximal entries encodes under the cap");
    assert!(bytes.len() <= MAX_MESSAGE_BYTES);
    // And with room to spare for framing: not a near miss.
    assert!(
        bytes.len() < MAX_MESSAGE_BYTES * 9 / 10,
        "{} bytes",
        bytes.len()
    );
}

/// A hostile owner's status names payees with terminal escapes and ids far over the bound: a
/// member's reader cleans and cuts them, in a status page as in a plain status, and keeps amounts.
#[test]
fn payout_ids_in_a_status_reply_are_cleaned_and_bounded() {
    let mut map = BTreeMap::new();
    map.insert("\x1b[2Jowned".to_string(), Amount(7));
    map.insert("w".repeat(10_000), Amount(3));
    let payouts: Payouts = decode(&encode(&map).unwrap()).unwrap();
    let status = KbStatus {
        program: pid(),
        name: "p".into(),
        members: 2,
        submissions: 0,
        accepted: 0,
        pending: 0,
        verified: 0,
        rejected: 0,
        champion: None,
        payouts,
        pool: Amount(10),
        token: "OBOL".into(),
    };
    let page = KbResponse::StatusPage {
        status: status.clone(),
        results: Vec::new(),
        more: false,
    };
    for mut reply in [KbResponse::Status(status), page] {
        reply.sanitize();
        let (KbResponse::Status(s) | KbResponse::StatusPage { status: s, .. }) = reply else {
            panic!("a status reply")
        };
        assert_eq!(s.payouts.total(), Amount(10));
        for (w, _) in s.payouts.iter() {
            assert!(!w.contains('\x1b'), "{w:?}");
            assert!(w.len() <= crate::kb::MAX_WORKER_ID_LEN, "{} bytes", w.len());
        }
    }
}
