//! The setup cache: once per bundle, retried after failure, never twice at once.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use btd_protocol::patch::{File, Files};
use btd_protocol::Digest;

use super::*;
use crate::shell::Sandbox;

fn bundle() -> (Digest, Files) {
    let mut files = Files::new();
    files.insert(
        "prepare.sh".into(),
        File {
            data: b"#!/bin/sh\necho prepared > built.txt\n".to_vec(),
            executable: true,
        },
    );
    let bytes = pack(&files, 1 << 20).unwrap();
    (Digest::of(&bytes), files)
}

/// A setup that counts its runs in `counter` (outside the cache) and then runs `then`.
fn counting(counter: &Path, then: &str) -> SetupSpec {
    SetupSpec {
        command: format!("echo run >> '{}'; ./prepare.sh; {then}", counter.display()),
        timeout_secs: 30,
    }
}

fn runs(counter: &Path) -> usize {
    fs::read_to_string(counter).map_or(0, |s| s.lines().count())
}

#[test]
fn setup_runs_once_and_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let counter = tmp.path().join("count");
    let cache = SetupCache::new(tmp.path().join("cache"));
    let (digest, files) = bundle();
    let spec = counting(&counter, "true");
    let dir = cache.prepare(digest, &files, Some(&spec), None).unwrap();
    assert_eq!(dir, tmp.path().join("cache").join(digest.to_string()));
    assert_eq!(
        fs::read_to_string(dir.join("built.txt")).unwrap(),
        "prepared\n"
    );
    assert_eq!(runs(&counter), 1);
    assert_eq!(
        cache.prepare(digest, &files, Some(&spec), None).unwrap(),
        dir
    );
    assert_eq!(runs(&counter), 1);
    // A fresh cache over the same root trusts the marker too.
    let again = SetupCache::new(tmp.path().join("cache"));
    assert_eq!(
        again.prepare(digest, &files, Some(&spec), None).unwrap(),
        dir
    );
    assert_eq!(runs(&counter), 1);
    // Another setup command for the bundle: done again, from a clean copy.
    fs::write(dir.join("stray"), "x").unwrap();
    let other = counting(&counter, "echo other");
    cache.prepare(digest, &files, Some(&other), None).unwrap();
    assert_eq!(runs(&counter), 2);
    assert!(!dir.join("stray").exists());
    // No setup: just the unpacked bundle.
    let plain = SetupCache::new(tmp.path().join("plain"));
    let d = plain.prepare(digest, &files, None, None).unwrap();
    assert_eq!(read_dir(&d, 1 << 20).unwrap(), files);
}

#[test]
fn a_failed_setup_reports_its_output_and_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let counter = tmp.path().join("count");
    let cache = SetupCache::new(tmp.path().join("cache"));
    let (digest, files) = bundle();
    let flag = tmp.path().join("fixed");
    let then = format!(
        "[ -e '{}' ] || {{ seq 1 5000; echo 'no module named torch' >&2; exit 3; }}",
        flag.display()
    );
    let spec = counting(&counter, &then);
    let e = cache
        .prepare(digest, &files, Some(&spec), None)
        .unwrap_err();
    let SourceError::SetupFailed { outcome, tail, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(outcome, "exited with code 3");
    assert!(tail.len() <= MAX_SETUP_TAIL_BYTES, "{}", tail.len());
    assert!(tail.contains("no module named torch"), "{tail}");
    assert!(tail.contains("5000"), "{tail}");
    assert!(
        !tail.contains("\n1\n"),
        "the head of the output is not the tail: {tail}"
    );
    assert!(e.to_string().contains("no module named torch"));
    assert_eq!(runs(&counter), 1);
    // Still failing: tried again.
    assert!(cache.prepare(digest, &files, Some(&spec), None).is_err());
    assert_eq!(runs(&counter), 2);
    fs::write(&flag, "").unwrap();
    cache.prepare(digest, &files, Some(&spec), None).unwrap();
    cache.prepare(digest, &files, Some(&spec), None).unwrap();
    assert_eq!(runs(&counter), 3);
}

#[test]
fn a_setup_past_its_timeout_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = SetupCache::new(tmp.path().join("cache"));
    let (digest, files) = bundle();
    let spec = SetupSpec {
        command: "echo starting; sleep 60".into(),
        timeout_secs: 1,
    };
    let e = cache
        .prepare(digest, &files, Some(&spec), None)
        .unwrap_err();
    assert!(e.to_string().contains("timed out after 1 s"), "{e}");
    assert!(e.to_string().contains("starting"), "{e}");
    for bad in [
        SetupSpec {
            command: " ".into(),
            timeout_secs: 5,
        },
        SetupSpec {
            command: "true".into(),
            timeout_secs: 0,
        },
    ] {
        let e = cache.prepare(digest, &files, Some(&bad), None).unwrap_err();
        assert!(matches!(e, SourceError::InvalidSetup(_)), "{e}");
    }
}

#[test]
fn concurrent_callers_run_the_setup_once() {
    let tmp = tempfile::tempdir().unwrap();
    let counter = tmp.path().join("count");
    let cache = Arc::new(SetupCache::new(tmp.path().join("cache")));
    let (digest, files) = bundle();
    // Slow enough that the callers overlap.
    let spec = counting(&counter, "sleep 0.3");
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (cache, files, spec) = (Arc::clone(&cache), files.clone(), spec.clone());
            std::thread::spawn(move || cache.prepare(digest, &files, Some(&spec), None).unwrap())
        })
        .collect();
    let dirs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(dirs.iter().all(|d| d == &dirs[0]));
    assert_eq!(runs(&counter), 1);
}

#[test]
fn a_sandboxed_setup_gets_a_clean_home_and_no_network() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = SetupCache::new(tmp.path().join("cache"));
    let (digest, files) = bundle();
    let spec = SetupSpec {
        command: "echo \"$HOME\" > home.txt; env | cut -d= -f1 | sort > env.txt; \
                  cat /proc/net/dev | grep -c : > ifaces.txt"
            .into(),
        timeout_secs: 30,
    };
    let dir = cache
        .prepare(digest, &files, Some(&spec), Some(&Sandbox::default()))
        .unwrap();
    let home = fs::read_to_string(dir.join("home.txt")).unwrap();
    assert_eq!(
        Path::new(home.trim()),
        tmp.path().join("cache").join(format!("{digest}.home"))
    );
    let env = fs::read_to_string(dir.join("env.txt")).unwrap();
    assert_eq!(env, "HOME\nLANG\nPATH\nPWD\nTMPDIR\n");
    // Only loopback in the sandbox's network namespace.
    assert_eq!(fs::read_to_string(dir.join("ifaces.txt")).unwrap(), "1\n");
}
