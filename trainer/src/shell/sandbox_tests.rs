//! The sandbox and the cleared environment, against the real kernel.

use std::io::ErrorKind;
use std::net::TcpListener;

use super::*;

fn admitted() -> DispatchResult {
    super::tests::admitted(Action::RunLocal)
}

fn run(command: &str, opts: &ShellOptions) -> ShellReceipt {
    let task = ShellTask {
        command: command.into(),
        timeout_secs: 60,
        source: None,
    };
    run_shell(&task, &admitted(), opts).unwrap()
}

/// Whether `listener` has a connection waiting.
fn was_connected(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn the_sandbox_is_available_here() {
    // CI and the dev machines run with unprivileged user namespaces: the sandbox tests must not
    // pass vacuously.
    if let Err(why) = sandbox_probe() {
        panic!("the sandbox must work on this machine: {why}");
    }
}

#[test]
fn the_sandbox_has_no_network_and_the_host_does() {
    sandbox_probe().unwrap_or_else(|why| panic!("the network test needs the sandbox: {why}"));
    // bash's /dev/tcp: connect, then say so.
    let connect =
        |port: u16| format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo 'connected: 1'");

    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let r = run(&connect(port), &ShellOptions::new("connected"));
    assert_eq!(
        r.value,
        Some(1.0),
        "outside the sandbox the connect works: {r:?}"
    );
    assert!(was_connected(&open));

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    let opts = ShellOptions {
        sandbox: Some(Sandbox::default()),
        ..ShellOptions::new("connected")
    };
    let r = run(&connect(port), &opts);
    assert_eq!(
        r.value, None,
        "the sandboxed command reached the host: {r:?}"
    );
    assert_ne!(r.exit_code, Some(0), "{r:?}");
    assert!(!was_connected(&closed), "the listener saw a connection");
}

#[test]
fn the_file_size_limit_stops_a_large_write() {
    let dir = tempfile::tempdir().unwrap();
    for isolate in [false, true] {
        let opts = ShellOptions {
            cwd: Some(dir.path().to_path_buf()),
            sandbox: Some(Sandbox {
                max_file_bytes: 4096,
                isolate,
                writable: vec![dir.path().to_path_buf()],
                ..Sandbox::default()
            }),
            ..ShellOptions::new("m")
        };
        let r = run("head -c 100000 /dev/zero > big; echo \"m: $?\"", &opts);
        let written = std::fs::metadata(dir.path().join("big")).unwrap().len();
        assert_eq!(written, 4096, "isolate={isolate}: {r:?}");
        // head died of SIGXFSZ (25): the shell reports 128 + 25.
        assert_eq!(r.value, Some(153.0), "{r:?}");
        std::fs::remove_file(dir.path().join("big")).unwrap();
    }
    // Without the sandbox the same write completes.
    let opts = ShellOptions {
        cwd: Some(dir.path().to_path_buf()),
        ..ShellOptions::new("m")
    };
    let r = run("head -c 100000 /dev/zero > big; echo \"m: $?\"", &opts);
    assert_eq!(r.value, Some(0.0));
    assert_eq!(
        std::fs::metadata(dir.path().join("big")).unwrap().len(),
        100_000
    );
}

#[test]
fn the_limits_reach_the_command() {
    let opts = ShellOptions {
        sandbox: Some(Sandbox {
            max_memory_bytes: 3 << 30,
            max_cpu_secs: 77,
            max_file_bytes: 1 << 20,
            max_processes: 300,
            isolate: true,
            ..Sandbox::default()
        }),
        ..ShellOptions::new("v")
    };
    // ulimit: -v in KiB, -t in seconds, -f in 512-byte blocks; processes: -u in bash, -p in dash.
    let cmd = "echo \"v: $(ulimit -v)\"; echo \"t: $(ulimit -t)\"; echo \"f: $(ulimit -f)\"; \
               echo \"p: $(ulimit -u 2>/dev/null || ulimit -p)\"";
    let r = run(cmd, &opts);
    let m = &r.metrics;
    assert_eq!(m.get("v"), Some(&f64::from(3 << 20)), "{r:?}");
    assert_eq!(m.get("t"), Some(&77.0), "{r:?}");
    assert_eq!(m.get("f"), Some(&2048.0), "{r:?}");
    assert_eq!(m.get("p"), Some(&300.0), "{r:?}");
}

#[test]
fn clear_env_passes_only_the_listed_variables() {
    let scratch = tempfile::tempdir().unwrap();
    let opts = ShellOptions {
        clear_env: true,
        scratch_dir: Some(scratch.path().to_path_buf()),
        env: vec![("BTD_PARAM_LR".into(), "0.5".into())],
        ..ShellOptions::new("m")
    };
    // The test process has plenty of variables (CARGO_*, RUST_*, …); none may get through.
    assert!(std::env::vars_os().count() > 4);
    let r = run(
        "env | cut -d= -f1 | sort | tr '\\n' ' ' >&2; echo \"m: $BTD_PARAM_LR\"; \
         [ \"$HOME\" = \"$TMPDIR\" ] && echo 'same: 1'; echo \"$HOME\" > \"$TMPDIR/home\"",
        &opts,
    );
    let names: Vec<&str> = r.stderr.split_whitespace().collect();
    assert_eq!(
        names,
        ["BTD_PARAM_LR", "HOME", "LANG", "PATH", "PWD", "TMPDIR"],
        "{r:?}"
    );
    assert_eq!(r.value, Some(0.5));
    assert_eq!(r.metrics.get("same"), Some(&1.0));
    let home = std::fs::read_to_string(scratch.path().join("home")).unwrap();
    assert_eq!(std::path::Path::new(home.trim()), scratch.path());

    let no_scratch = ShellOptions {
        clear_env: true,
        ..ShellOptions::new("m")
    };
    let task = ShellTask {
        command: "true".into(),
        timeout_secs: 5,
        source: None,
    };
    let e = run_shell(&task, &admitted(), &no_scratch).unwrap_err();
    assert!(matches!(e, ShellError::Invalid(_)), "{e}");
}

/// The file system: only the writable directories can be written (nothing written elsewhere
/// survives), hidden directories are empty, readable ones come back read-only.
#[test]
fn the_sandbox_writes_only_its_own_directories_and_cannot_see_hidden_ones() {
    sandbox_probe().unwrap_or_else(|why| panic!("the file-system test needs the sandbox: {why}"));
    let home = tempfile::tempdir().unwrap();
    let secret = home.path().join("identity.key");
    std::fs::write(&secret, "secret").unwrap();
    let (tree, shared, outside) = (
        home.path().join("runs/tree"),
        home.path().join("source/setup"),
        tempfile::tempdir().unwrap(),
    );
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("venv.txt"), "prepared").unwrap();
    let opts = ShellOptions {
        cwd: Some(tree.clone()),
        sandbox: Some(Sandbox {
            hidden: vec![home.path().to_path_buf()],
            writable: vec![tree.clone()],
            readable: vec![shared.clone()],
            ..Sandbox::default()
        }),
        ..ShellOptions::new("ok")
    };
    let script = format!(
        "echo made > here.txt && echo \"wrote_tree: 1\"; \
         cat {secret} 2>/dev/null && echo \"read_secret: 1\"; \
         [ -e {secret} ] || echo \"secret_hidden: 1\"; \
         [ \"$(cat {shared}/venv.txt)\" = prepared ] && echo \"read_shared: 1\"; \
         echo x > {shared}/venv.txt 2>/dev/null && echo \"wrote_shared: 1\"; \
         echo x > {outside}/planted 2>/dev/null && echo \"wrote_outside: 1\"; \
         echo x > /tmp/t && echo \"wrote_tmp: 1\"; \
         echo \"ok: 1\"",
        secret = secret.display(),
        shared = shared.display(),
        outside = outside.path().display()
    );
    let r = run(&script, &opts);
    let m = &r.metrics;
    assert_eq!(r.value, Some(1.0), "{r:?}");
    for (key, want) in [
        ("wrote_tree", true),
        ("read_secret", false),
        ("secret_hidden", true),
        ("read_shared", true),
        ("wrote_shared", false),
        ("wrote_outside", false),
        ("wrote_tmp", true),
    ] {
        assert_eq!(m.contains_key(key), want, "{key}: {r:?}");
    }
    assert_eq!(
        std::fs::read_to_string(tree.join("here.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("venv.txt")).unwrap(),
        "prepared"
    );
    assert!(!outside.path().join("planted").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
}
