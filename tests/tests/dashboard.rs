//! The dashboard (`btd start --http`) over real `btd` processes: its JSON API on the owner, on a
//! member (read from the owner over the mesh) and on a node that is neither (no KB content); the
//! program page in a real headless chromium (Debian's, driven through chromedriver), with the
//! champion, the rung leaderboard, a rejected claim's reason arriving live without a reload, and
//! a screenshot; the access rules (loopback names, tokens, read-only); `btd status --watch`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use btd_tests::web::{self, dashboard_addr, Browser};
use btd_tests::{sha256_hex, stderr, stdout, wait_until, word_text, Daemon};

const HTTP: &[&str] = &["--http", "127.0.0.1:0"];

fn dashboard(d: &Daemon) -> String {
    wait_until("the dashboard's address in the log", 10, || {
        dashboard_addr(&d.log())
    })
}

/// chromium and chromedriver, or `None` (the test says it did not run) unless
/// `BTD_REQUIRE_BROWSER` is set (CI installs them and sets it): then their absence fails.
fn browser_or_skip() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let found = web::browser();
    if found.is_none() {
        assert!(
            std::env::var_os("BTD_REQUIRE_BROWSER").is_none(),
            "BTD_REQUIRE_BROWSER is set but chromium/chromedriver are not installed \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!("NOT RUN — the browser part: chromium and chromedriver are not installed");
    }
    found
}

#[test]
fn the_program_page_shows_the_research_live_in_a_browser() {
    let owner = Daemon::start(HTTP);
    let boot = owner.addr();
    let member = Daemon::start(&["--bootstrap", &boot, "--http", "127.0.0.1:0"]);
    let outsider = Daemon::start(&["--bootstrap", &boot, "--http", "127.0.0.1:0"]);
    let dir = owner.home.parent().unwrap().to_path_buf();
    let data = dir.join("corpus.txt");
    let holdout = dir.join("holdout.txt");
    std::fs::write(&data, word_text(11, 48 * 1024)).unwrap();
    std::fs::write(&holdout, word_text(12, 16 * 1024)).unwrap();
    let manifest = dir.join("dash.toml");
    let text = btd_tests::candle_file_manifest(
        "dashboard-e2e",
        "lowest val_bpb, watched in a browser",
        &sha256_hex(&data),
        "",
    );
    std::fs::write(&manifest, text).unwrap();
    let o = owner.btd(&[
        "publish",
        manifest.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--holdout",
        holdout.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    btd_tests::wait_known(&member, &id);
    btd_tests::wait_known(&outsider, &id);
    let (status, out) = btd_tests::join_approved(
        &owner,
        &member,
        &id,
        &["--rounds", "2", "--verdict-wait", "120"],
    );
    assert!(status.success(), "join failed:\n{out}\n{}", member.log());
    let s = owner.json(&["status", &id]);
    let champion = s["champion"]["value"].as_f64().unwrap();
    assert_eq!(s["champion"]["check"], "verified", "{s}");
    let member_id = member.peer_id();

    // The JSON API: the owner's page from its store.
    let (o_addr, m_addr, x_addr) = (dashboard(&owner), dashboard(&member), dashboard(&outsider));
    let page = web::get(&o_addr, &format!("/api/programs/{id}")).json();
    assert_eq!(page["readable"], true, "{page}");
    assert_eq!(page["status"]["champion"]["value"].as_f64(), Some(champion));
    assert_eq!(page["results"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["results"][0]["rung"], "cpu");
    let cpu = page["leaderboards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["rung"] == "cpu")
        .unwrap_or_else(|| panic!("no cpu leaderboard: {page}"));
    assert_eq!(cpu["rows"][0]["worker"], member_id.as_str());
    assert_eq!(cpu["rows"][0]["best"].as_f64(), Some(champion));
    // The member's page comes from the owner over the mesh: the same champion.
    let mpage = web::get(&m_addr, &format!("/api/programs/{id}")).json();
    assert_eq!(mpage["readable"], true, "{mpage}");
    assert_eq!(
        mpage["status"]["champion"]["value"].as_f64(),
        Some(champion)
    );
    // A node that is neither sees the announcement and why there is nothing else.
    let xpage = web::get(&x_addr, &format!("/api/programs/{id}")).json();
    assert_eq!(xpage["readable"], false, "{xpage}");
    assert!(
        xpage["refused"].as_str().unwrap().contains("btd join"),
        "{xpage}"
    );
    assert!(xpage["status"].is_null() && xpage["results"].as_array().unwrap().is_empty());
    let xledger = web::get(&x_addr, &format!("/api/programs/{id}/ledger"));
    assert_eq!(xledger.status, 403, "{}", xledger.body);
    // The event stream starts with the page's data.
    let ev = web::events(
        &o_addr,
        &format!("/api/events?program={id}"),
        1,
        Duration::from_secs(20),
    );
    assert_eq!(ev.len(), 1, "no event");
    assert_eq!(ev[0].0, "update");
    let first: serde_json::Value = serde_json::from_str(&ev[0].1).unwrap();
    assert_eq!(
        first["status"]["champion"]["value"].as_f64(),
        Some(champion)
    );

    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    let b = Browser::start(&chromium, &driver);
    b.open(&format!("http://{o_addr}/programs/{id}"));
    let shown = wait_until("the champion on the page", 30, || b.text("champion-value"));
    assert_eq!(shown, format!("{champion:.6}"));
    let board = b.text("board-cpu").unwrap();
    assert!(board.contains(&member_id[..8]), "{board}");
    assert!(board.contains(&format!("{champion:.6}")), "{board}");
    let loaded_at = b.eval("return window.btdLoadedAt;");
    assert!(loaded_at.is_number());
    let updates_before = b
        .eval("return Number(document.getElementById('live').dataset.updates);")
        .as_u64()
        .unwrap();
    assert!(b.text("history").is_some(), "no chart");

    // A doctored claim, rejected by the owner's check: the page shows why without a reload.
    let runs = member.json(&["runs", &id]);
    let ckpt =
        std::path::PathBuf::from(runs[0]["dir"].as_str().unwrap()).join("checkpoint.safetensors");
    let o = member.btd(&[
        "submit",
        &id,
        "--value",
        "0.5",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let results = wait_until("the rejected claim on the page", 120, || {
        let t = b.text("results")?;
        t.contains("metric did not reproduce").then_some(t)
    });
    assert!(results.contains("claimed 0.500000"), "{results}");
    assert_eq!(b.text("rejected").as_deref(), Some("1"));
    assert_eq!(
        b.eval("return window.btdLoadedAt;"),
        loaded_at,
        "the page reloaded"
    );
    let updates_after = b
        .eval("return Number(document.getElementById('live').dataset.updates);")
        .as_u64()
        .unwrap();
    assert!(updates_after > updates_before, "no live update arrived");
    // The champion did not move.
    assert_eq!(b.text("champion-value").unwrap(), format!("{champion:.6}"));

    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    // The member's dashboard shows the same, read from the owner over the mesh.
    b.open(&format!("http://{m_addr}/programs/{id}"));
    let shown = wait_until("the champion on the member's page", 30, || {
        b.text("champion-value")
    });
    assert_eq!(shown, format!("{champion:.6}"));
    wait_until("the rejected claim on the member's page", 30, || {
        (b.text("rejected")? == "1").then_some(())
    });
    // An outsider's dashboard says why it shows nothing.
    b.open(&format!("http://{x_addr}/programs/{id}"));
    let refused = wait_until("the outsider's page", 30, || b.text("refused"));
    assert!(refused.contains("btd join"), "{refused}");
    assert_eq!(b.text("champion-value"), None);

    // The node page lists the program.
    b.open(&format!("http://{o_addr}/"));
    let programs = wait_until("the node page", 30, || b.text("programs"));
    assert!(programs.contains("dashboard-e2e"), "{programs}");
}

#[test]
fn the_dashboard_refuses_other_hosts_writes_and_missing_tokens() {
    // Not loopback and no token: refused before anything starts.
    let o = btd_tests::run_btd(&[
        "start",
        "--home",
        "/nonexistent-btd-home",
        "--http",
        "0.0.0.0:0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--http-token"), "{}", stderr(&o));
    let o = btd_tests::run_btd(&[
        "start",
        "--home",
        "/nonexistent-btd-home",
        "--http",
        "0.0.0.0:0",
        "--http-token",
        "short",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("at least 16"), "{}", stderr(&o));

    // Loopback without a token: a page elsewhere that rebinds its name to 127.0.0.1 is refused.
    let d = Daemon::start(HTTP);
    let addr = dashboard(&d);
    let ok = web::get(&addr, "/api/node");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["info"]["peer_id"], d.peer_id().as_str());
    assert!(ok
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    let rebound = web::request(
        "GET",
        &addr,
        "/api/node",
        &[("Host", "evil.example:80")],
        None,
    );
    assert_eq!(rebound.status, 403);
    assert!(rebound.body.contains("loopback"), "{}", rebound.body);
    let post = web::request("POST", &addr, "/api/node", &[], Some("{}"));
    assert_eq!(post.status, 405);
    let bad = web::get(&addr, "/api/programs/not-an-id");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("64 hex digits"), "{}", bad.body);
    let unknown = web::get(&addr, &format!("/api/programs/{}", "ab".repeat(32)));
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    drop(d);

    // With a token (here on loopback too): every request must carry it.
    let token = "0123456789abcdef0123";
    let d = Daemon::start(&["--http", "127.0.0.1:0", "--http-token", token]);
    let addr = dashboard(&d);
    assert!(d.log().contains(&format!("?token={token}")), "{}", d.log());
    assert_eq!(web::get(&addr, "/api/node").status, 401);
    let wrong = web::request(
        "GET",
        &addr,
        "/api/node",
        &[("Authorization", "Bearer 0123456789abcdef0124")],
        None,
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    let right = web::request(
        "GET",
        &addr,
        "/api/node",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(right.status, 200);
    // Opening the page with ?token= keeps it in a strict cookie and drops it from the address.
    let open = web::get(&addr, &format!("/?token={token}"));
    assert_eq!(open.status, 303);
    assert_eq!(open.header("location"), Some("/"));
    let cookie = open.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let with_cookie = web::request(
        "GET",
        &addr,
        "/metrics",
        &[("Cookie", cookie.split(';').next().unwrap())],
        None,
    );
    assert_eq!(with_cookie.status, 200);
    let text = &with_cookie.body;
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // A Prometheus text parser reads it: btd's gauges and libp2p's swarm metrics are there.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(value("btd_programs_owned"), 0.0);
    assert_eq!(value("btd_programs_known"), 0.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("libp2p_")),
        "no libp2p metrics in:\n{text}"
    );
}

#[test]
fn status_watch_redraws_the_leaderboard() {
    use std::io::{BufRead, BufReader};
    let owner = Daemon::start(&[]);
    let manifest = owner.home.parent().unwrap().join("w.toml");
    std::fs::write(&manifest, btd::testkit::shell_manifest("watch-e2e", "open")).unwrap();
    let o = owner.btd(&["publish", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let mut child = std::process::Command::new(btd_tests::btd_bin())
        .args(["status", &id, "--watch", "1", "--json", "--home"])
        .arg(&owner.home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // JSON lines: one complete status per refresh.
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["name"], "watch-e2e");
        assert_eq!(v["submissions"], 0);
    }
    child.kill().unwrap();
    let _ = child.wait();
    // A missing program ends the watch with the reason, not a loop of errors.
    let o = owner.btd(&["status", &"cd".repeat(32), "--watch", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}
