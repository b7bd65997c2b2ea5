//! `read_tar` on hostile and random input.

use btd_protocol::patch::{check_path, File, Files};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const MAX: u64 = 1 << 20;

/// A ustar header written independently of the code under test.
fn header(path: &str, kind: u8, size: u64, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar\x0000");
    fix_checksum(&mut h);
    h
}

fn fix_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// An archive of `(header, data)` entries, padded and terminated.
fn archive(entries: &[([u8; 512], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, data) in entries {
        out.extend_from_slice(h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn an_independent_writer_reads_back() {
    let a = archive(&[
        (header("dir/", b'5', 0, 0o755), b""),
        (header("dir/x.py", b'0', 3, 0o644), b"abc"),
        (header("run", 0, 1, 0o700), b"z"),
    ]);
    let files = read_tar(&a, MAX).unwrap();
    let mut want = Files::new();
    want.insert(
        "dir/x.py".into(),
        File {
            data: b"abc".to_vec(),
            executable: false,
        },
    );
    want.insert(
        "run".into(),
        File {
            data: b"z".to_vec(),
            executable: true,
        },
    );
    assert_eq!(files, want);
}

fn refused(a: &[u8]) -> String {
    match read_tar(a, MAX) {
        Ok(files) => panic!("accepted: {files:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_entries_are_refused() {
    for (kind, what) in [
        (b'1', "hard link"),
        (b'2', "symbolic link"),
        (b'3', "device"),
        (b'4', "device"),
        (b'6', "FIFO"),
        (b'x', "pax"),
        (b'L', "GNU long-name"),
        (b'Z', "unknown"),
    ] {
        let e = refused(&archive(&[(header("evil", kind, 0, 0o644), b"")]));
        assert!(e.contains(what), "{e}");
    }
    for path in [
        "/etc/passwd",
        "../up",
        "a/../../up",
        "a//b",
        "./a",
        "a/",
        "a\\b",
    ] {
        let e = refused(&archive(&[(header(path, b'0', 1, 0o644), b"x")]));
        assert!(e.contains("path"), "{path}: {e}");
    }
    let e = refused(&archive(&[(header("../d/", b'5', 0, 0o755), b"")]));
    assert!(e.contains("path"), "{e}");
    let e = refused(&archive(&[
        (header("a", b'0', 1, 0o644), b"x"),
        (header("a", b'0', 1, 0o644), b"y"),
    ]));
    assert!(e.contains("appears twice"), "{e}");
    let e = refused(&archive(&[
        (header("a", b'0', 1, 0o644), b"x"),
        (header("a/b", b'0', 1, 0o644), b"y"),
    ]));
    assert!(e.contains("directory"), "{e}");
    let mut bad_sum = header("a", b'0', 1, 0o644);
    bad_sum[0] = b'b';
    assert!(refused(&archive(&[(bad_sum, b"x")])).contains("checksum"));
    let mut gnu = header("a", b'0', 1, 0o644);
    gnu[257..265].copy_from_slice(b"ustar  \0");
    fix_checksum(&mut gnu);
    assert!(refused(&archive(&[(gnu, b"x")])).contains("ustar"));
    let mut base256 = header("a", b'0', 0, 0o644);
    base256[124] = 0x80;
    fix_checksum(&mut base256);
    assert!(refused(&archive(&[(base256, b"")])).contains("size"));
    let mut non_utf8 = header("a", b'0', 0, 0o644);
    non_utf8[1] = 0xff;
    fix_checksum(&mut non_utf8);
    assert!(refused(&archive(&[(non_utf8, b"")])).contains("UTF-8"));
}

#[test]
fn sizes_are_checked_before_data_is_read() {
    // The header claims 1 GiB, the archive holds none of it: the limit speaks first.
    let mut a = header("big", b'0', 1 << 30, 0o644).to_vec();
    a.resize(4096, 0);
    match read_tar(&a, MAX) {
        Err(SourceError::TooLarge { limit, .. }) => assert_eq!(limit, MAX),
        other => panic!("{other:?}"),
    }
    // Within the limit but past the end of the input: truncated, not a panic.
    let mut a = header("big", b'0', 1000, 0o644).to_vec();
    a.extend_from_slice(&[1u8; 100]);
    assert!(refused(&a).contains("ends inside"));
    // The total counts, not each file.
    let a = archive(&[
        (header("a", b'0', 600, 0o644), &[1u8; 600]),
        (header("b", b'0', 600, 0o644), &[1u8; 600]),
    ]);
    assert!(read_tar(&a, 1200).is_ok());
    assert!(matches!(
        read_tar(&a, 1199),
        Err(SourceError::TooLarge { .. })
    ));
}

#[test]
fn structure_errors_are_refused() {
    let good = archive(&[(header("a", b'0', 1, 0o644), b"x")]);
    assert!(read_tar(&good, MAX).is_ok());
    assert!(refused(&good[..512 + 512]).contains("end-of-archive"));
    assert!(refused(&good[..700]).contains("end-of-archive"));
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 7]);
    assert!(refused(&trailing).contains("after the end"));
    assert!(refused(b"").contains("end-of-archive"));
    // Zero blocks only: an empty tree.
    assert_eq!(read_tar(&[0u8; 1024], MAX).unwrap(), Files::new());
}

#[test]
fn too_many_entries_are_refused() {
    let entries: Vec<_> = (0..=MAX_TREE_FILES)
        .map(|i| (header(&format!("f{i}"), b'0', 0, 0o644), &b""[..]))
        .collect();
    assert!(matches!(
        read_tar(&archive(&entries), MAX),
        Err(SourceError::TooManyFiles { .. })
    ));
    assert_eq!(
        read_tar(&archive(&entries[1..]), MAX).unwrap().len(),
        MAX_TREE_FILES
    );
}

/// Whatever `read_tar` accepts obeys the tree rules and packs back to something it reads alike.
fn check_accepted(bytes: &[u8], max: u64) {
    let Ok(files) = read_tar(bytes, max) else {
        return;
    };
    assert!(files.len() <= MAX_TREE_FILES);
    let total: u64 = files.values().map(|f| f.data.len() as u64).sum();
    assert!(total <= max);
    for path in files.keys() {
        check_path(path).unwrap();
    }
    let repacked = pack(&files, max).unwrap();
    assert_eq!(read_tar(&repacked, max).unwrap(), files);
}

#[test]
fn random_and_mutated_archives_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let seed = archive(&[
        (header("dir/", b'5', 0, 0o755), b""),
        (header("dir/a.py", b'0', 700, 0o644), &[b'a'; 700]),
        (header("b.sh", b'0', 5, 0o755), b"echo\n"),
        (header("c", b'0', 0, 0o644), b""),
    ]);
    assert!(read_tar(&seed, MAX).is_ok());
    let mut accepted = 0;
    for round in 0..4000 {
        let mut bytes = if round % 4 == 0 {
            let n = rng.gen_range(0..3000);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            seed.clone()
        };
        let mutations = rng.gen_range(1..8);
        for _ in 0..mutations {
            if bytes.is_empty() {
                break;
            }
            let at = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..5) {
                0 => bytes[at] = rng.gen(),
                // Header fields, digits or NUL: reaches past the field parsers.
                1 => bytes[at] = *[b'0', b'7', b'1', b'5', 0, b' ', b'/', b'.'].choose(&mut rng),
                2 => bytes.truncate(at),
                3 => bytes.insert(at, rng.gen()),
                _ => {
                    let end = (at + rng.gen_range(1..64)).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
        }
        // Half the time, repair header checksums so the mutation reaches the later checks.
        if round % 2 == 1 {
            for block in bytes.chunks_exact_mut(512) {
                if &block[257..263] == b"ustar\0" {
                    let h: &mut [u8; 512] = block.try_into().unwrap();
                    fix_checksum(h);
                }
            }
        }
        let max = if round % 3 == 0 { 800 } else { MAX };
        check_accepted(&bytes, max);
        accepted += usize::from(read_tar(&bytes, max).is_ok());
    }
    // The fuzzing is not all rejected at the first check.
    assert!(accepted > 50, "only {accepted} inputs were accepted");
}

trait Choose<T> {
    fn choose(&self, rng: &mut ChaCha8Rng) -> &T;
}

impl<T> Choose<T> for [T] {
    fn choose(&self, rng: &mut ChaCha8Rng) -> &T {
        &self[rng.gen_range(0..self.len())]
    }
}
