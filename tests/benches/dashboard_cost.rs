//! What the dashboard costs the daemon: `cargo bench -p btd-tests --bench dashboard_cost`
//! (docs/benchmarks.md, "Dashboard cost").
//!
//! An owner (`btd start`, loopback TCP, SQLite with fsync) with one program holding the results of
//! a member's shell rounds. The owner's CPU time (utime + stime from /proc) and RSS are read over
//! a window in four states: without `--http`; with `--http` and no page open; with the program
//! page open in headless chromium (Debian's, through chromedriver: a real browser holding the
//! event stream); and with the page open while new results arrive. It also reports the page's
//! data size.
//!
//! Under `cargo test` (no `--bench` argument) it runs its quick mode: 20 results, 2 s windows,
//! checking the shape (every state measured, the page's data read), no timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use btd_tests::web::{self, Browser};
use btd_tests::{join_approved, stderr, stdout, wait_until, Daemon};

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// The daemon's CPU use (% of one core) and RSS at the end of a `window`.
fn measure(pid: u32, window: Duration, during: impl FnOnce()) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), cpu_secs(pid));
    during();
    let left = window.saturating_sub(t0.elapsed());
    std::thread::sleep(left); // the measurement window itself
    let cpu = (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    (cpu, btd_tests::rss_mib(pid))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (results, window) = if full {
        (1000, Duration::from_secs(60))
    } else {
        (20, Duration::from_secs(2))
    };
    let mut owner = Daemon::start(&[]);
    let member = Daemon::start(&["--bootstrap", &owner.addr()]);
    let manifest = owner.home.parent().unwrap().join("cost.toml");
    btd_tests::write_echo_manifest(&manifest, "dashboard-cost");
    let id = btd_tests::publish_known(&owner, &member, &manifest);
    let rounds = results.to_string();
    let (status, out) = join_approved(
        &owner,
        &member,
        &id,
        &["--rounds", &rounds, "--allow-shell"],
    );
    assert!(status.success(), "join failed:\n{out}");
    let n = owner.json(&["status", &id])["submissions"]
        .as_u64()
        .unwrap();
    assert_eq!(n, results, "every round submitted");

    let mut rows = Vec::new();
    let pid = owner.pid();
    rows.push(("no --http", measure(pid, window, || {})));
    // Restarted with the dashboard, on the same address so that the member still reaches it.
    let listen = owner.json(&["id"])["listen"][0]
        .as_str()
        .unwrap()
        .to_string();
    let o = owner.btd(&["stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
    owner.wait_exit(60);
    owner.restart(&["--http", "127.0.0.1:0", "--listen", &listen]);
    let pid = owner.pid();
    let addr = wait_until("the dashboard address", 10, || {
        web::dashboard_addr(&owner.log())
    });
    let page = web::get(&addr, &format!("/api/programs/{id}"));
    assert_eq!(page.status, 200);
    let page_bytes = page.body.len();
    assert_eq!(
        page.json()["results"].as_array().unwrap().len() as u64,
        results
    );
    rows.push(("--http, no page open", measure(pid, window, || {})));

    let browser = web::browser();
    match &browser {
        Some((chromium, driver)) => {
            let b = Browser::start(chromium, driver);
            b.open(&format!("http://{addr}/programs/{id}"));
            wait_until("the page", 30, || b.text("champion-value"));
            rows.push(("page open in chromium", measure(pid, window, || {})));
            // New results while the page watches: the member runs more rounds meanwhile.
            let more = std::process::Command::new(btd_tests::btd_bin())
                .args(["join", &id, "--rounds", if full { "60" } else { "5" }])
                .args(["--allow-shell", "--home"])
                .arg(&member.home)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            rows.push(("page open, results arriving", measure(pid, window, || {})));
            let o = more.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "the extra rounds failed: {}{}",
                stdout(&o),
                stderr(&o)
            );
            let updates = b
                .eval("return Number(document.getElementById('live').dataset.updates);")
                .as_u64()
                .unwrap();
            assert!(updates >= 1, "the page got no update");
        }
        None => {
            assert!(
                std::env::var_os("BTD_REQUIRE_BROWSER").is_none(),
                "BTD_REQUIRE_BROWSER is set but chromium/chromedriver are missing"
            );
            eprintln!("NOT RUN — the browser states: chromium and chromedriver are not installed");
        }
    }

    println!(
        "dashboard cost: owner daemon, {results} results in the program, {} s windows, page data {:.1} KiB",
        window.as_secs(),
        page_bytes as f64 / 1024.0
    );
    println!("{:<30} {:>12} {:>10}", "state", "CPU % core", "RSS MiB");
    for (what, (cpu, rss)) in &rows {
        assert!(cpu.is_finite() && *rss > 0.0);
        println!("{what:<30} {cpu:>12.2} {rss:>10.1}");
    }
}
