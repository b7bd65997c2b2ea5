//! Bundles: reproducibility, round trips, and what is refused.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use btd_protocol::patch::{File, Files};
use btd_protocol::Digest;

use super::*;

const MAX: u64 = 1 << 20;

fn file(data: &[u8], executable: bool) -> File {
    File {
        data: data.to_vec(),
        executable,
    }
}

fn sample() -> Files {
    let mut f = Files::new();
    f.insert("train.py".into(), file(b"print('val_bpb: 1.0')\n", false));
    f.insert("run.sh".into(), file(b"#!/bin/sh\npython train.py\n", true));
    f.insert("pkg/model/__init__.py".into(), file(b"", false));
    f.insert("pkg/data.bin".into(), file(&[0, 1, 2, 255, 0], false));
    // Needs the ustar prefix field: > 100 bytes.
    let deep = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    f.insert(deep, file(b"deep", false));
    f
}

/// Writes `files` with plain std calls (not `write_tree`), in the given order.
fn materialise(dir: &Path, files: &Files, reverse: bool) {
    let mut entries: Vec<_> = files.iter().collect();
    if reverse {
        entries.reverse();
    }
    for (path, f) in entries {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &f.data).unwrap();
        let mode = if f.executable { 0o700 } else { 0o600 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn the_same_directory_packs_to_the_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    materialise(a.path(), &sample(), false);
    // Written in the other order, later (other mtimes, inode order), with other modes' bits.
    materialise(b.path(), &sample(), true);
    fs::set_permissions(b.path().join("run.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::create_dir(b.path().join(".git")).unwrap();
    fs::write(b.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::create_dir(b.path().join("empty")).unwrap();

    let one = pack_dir(a.path(), MAX).unwrap();
    assert_eq!(one, pack_dir(a.path(), MAX).unwrap());
    assert_eq!(one, pack_dir(b.path(), MAX).unwrap());
    assert_eq!(one, pack(&sample(), MAX).unwrap());
    assert_eq!(one.len() % 512, 0);
    assert_eq!(read_tar(&one, MAX).unwrap(), sample());

    // One byte changes the digest; so does the executable bit.
    fs::write(a.path().join("train.py"), "print('val_bpb: 1.1')\n").unwrap();
    let changed = pack_dir(a.path(), MAX).unwrap();
    assert_ne!(Digest::of(&changed), Digest::of(&one));
    fs::write(a.path().join("train.py"), "print('val_bpb: 1.0')\n").unwrap();
    assert_eq!(pack_dir(a.path(), MAX).unwrap(), one);
    fs::set_permissions(a.path().join("train.py"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(
        Digest::of(&pack_dir(a.path(), MAX).unwrap()),
        Digest::of(&one)
    );
}

#[test]
fn gnu_tar_reads_our_bundles_and_we_read_its_ustar() {
    let src = tempfile::tempdir().unwrap();
    materialise(src.path(), &sample(), false);
    let bundle = pack_dir(src.path(), MAX).unwrap();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("b.tar");
    fs::write(&archive, &bundle).unwrap();
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(read_dir(&out, MAX).unwrap(), sample());
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.contains("-rwxr-xr-x 0/0"), "{listing}");
    assert!(listing.contains("1970-01-01"), "{listing}");

    // GNU tar's own ustar output, directory entries included, reads back as the same tree.
    let theirs = work.path().join("theirs.tar");
    let small = tempfile::tempdir().unwrap();
    fs::write(small.path().join("x"), "x").unwrap();
    let status = Command::new("tar")
        .args(["--format=ustar", "-cf"])
        .arg(&theirs)
        .arg("-C")
        .arg(small.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = fs::read(&theirs).unwrap();
    // `./`-prefixed names are not normalised paths: refused, not silently rewritten.
    let e = read_tar(&bytes, MAX).unwrap_err();
    assert!(matches!(e, SourceError::Path(_)), "{e}");
    let names: Vec<String> = sample().keys().cloned().collect();
    let status = Command::new("tar")
        .args(["--format=ustar", "-cf"])
        .arg(&theirs)
        .arg("-C")
        .arg(src.path())
        .args(["pkg", "run.sh", "train.py"])
        .arg(names.iter().find(|n| n.len() > 100).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        read_tar(&fs::read(&theirs).unwrap(), MAX).unwrap(),
        sample()
    );
}

#[test]
fn write_tree_round_trips_with_exact_modes() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new/tree");
    write_tree(&sample(), &target).unwrap();
    assert_eq!(read_dir(&target, MAX).unwrap(), sample());
    let mode = |p: &str| fs::metadata(target.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("train.py"), 0o644);
    assert_eq!(mode("pkg/model"), 0o755);
    // An existing, empty directory is fine; a non-empty one is not.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    write_tree(&sample(), &empty).unwrap();
    let e = write_tree(&sample(), &target).unwrap_err();
    assert!(matches!(e, SourceError::NotEmpty { .. }), "{e}");
}

#[test]
fn write_tree_refuses_escaping_and_clashing_paths_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../escape", "/etc/evil", "a/../../x", "a//b", "./a"] {
        let mut files = sample();
        files.insert(bad.into(), file(b"x", false));
        let target = dir.path().join("t");
        let e = write_tree(&files, &target).unwrap_err();
        assert!(matches!(e, SourceError::Path(_)), "{bad}: {e}");
        assert!(!target.exists(), "{bad}: something was written");
    }
    assert!(!dir.path().join("escape").exists());
    let mut clash = Files::new();
    clash.insert("a".into(), file(b"x", false));
    clash.insert("a/b".into(), file(b"y", false));
    let e = write_tree(&clash, &dir.path().join("t")).unwrap_err();
    assert!(matches!(e, SourceError::Refused { .. }), "{e}");
    assert!(pack(&clash, MAX).is_err());
}

#[test]
fn walking_refuses_links_special_files_and_odd_names() {
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().unwrap();
    materialise(dir.path(), &sample(), false);
    std::os::unix::fs::symlink("train.py", dir.path().join("pkg/link.py")).unwrap();
    let e = pack_dir(dir.path(), MAX).unwrap_err();
    assert!(
        e.to_string().contains("pkg/link.py: is a symbolic link"),
        "{e}"
    );
    fs::remove_file(dir.path().join("pkg/link.py")).unwrap();

    let sock = dir.path().join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = read_dir(dir.path(), MAX).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    fs::remove_file(&sock).unwrap();

    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    fs::write(&odd, "x").unwrap();
    let e = read_dir(dir.path(), MAX).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    fs::remove_file(&odd).unwrap();

    fs::write(dir.path().join("new\nline"), "x").unwrap();
    assert!(matches!(
        read_dir(dir.path(), MAX),
        Err(SourceError::Path(_))
    ));
    fs::remove_file(dir.path().join("new\nline")).unwrap();

    // Only the top-level .git is skipped; a nested one is content.
    fs::create_dir(dir.path().join(".git")).unwrap();
    fs::write(dir.path().join(".git/config"), "x").unwrap();
    fs::create_dir(dir.path().join("pkg/.git")).unwrap();
    fs::write(dir.path().join("pkg/.git/config"), "y").unwrap();
    let files = read_dir(dir.path(), MAX).unwrap();
    assert!(files.contains_key("pkg/.git/config"));
    assert!(!files.keys().any(|k| k.starts_with(".git")));
}

#[test]
fn walking_enforces_the_byte_and_file_limits() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a"), vec![7u8; 600]).unwrap();
    fs::write(dir.path().join("b"), vec![7u8; 400]).unwrap();
    assert!(read_dir(dir.path(), 1000).is_ok());
    let e = read_dir(dir.path(), 999).unwrap_err();
    assert!(matches!(e, SourceError::TooLarge { limit: 999, .. }), "{e}");
    assert!(pack(&read_dir(dir.path(), 1000).unwrap(), 999).is_err());

    let many = tempfile::tempdir().unwrap();
    for i in 0..MAX_TREE_FILES {
        fs::write(many.path().join(format!("f{i}")), "").unwrap();
    }
    assert_eq!(read_dir(many.path(), MAX).unwrap().len(), MAX_TREE_FILES);
    fs::write(many.path().join("one-too-many"), "").unwrap();
    let e = pack_dir(many.path(), MAX).unwrap_err();
    assert!(matches!(e, SourceError::TooManyFiles { .. }), "{e}");
}
