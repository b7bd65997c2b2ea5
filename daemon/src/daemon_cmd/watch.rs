//! `btd status --watch`: the status and the leaderboard, redrawn every few seconds, for people
//! who live in a terminal.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use btd_protocol::kb::Direction;

use super::{home, parse, print, program_id, runtime};
use crate::control::Request;
use crate::node::types::StatusView;
use crate::output::CmdError;
use crate::web::view::{standings, ResultRow};

/// Redraws `btd status` every `secs` seconds until interrupted (or stdout closes). The first read
/// must succeed (a wrong program id ends the watch with the reason); later failures (the owner
/// offline, the daemon restarting) are shown and the watch goes on.
pub(crate) fn status(
    home_dir: Option<PathBuf>,
    program: Option<&str>,
    secs: u64,
    query: btd_protocol::wire::StatusQuery,
    json: bool,
) -> Result<(), CmdError> {
    let program = program.map(program_id).transpose()?;
    let h = home(home_dir)?;
    let rt = runtime()?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut first = true;
    loop {
        let answer = rt.block_on(crate::client::call(
            &h.socket_path(),
            &Request::Status { program, query },
            |_| {},
        ));
        let frame = match answer {
            Ok(v) if json => serde_json::to_string(&v)
                .map_err(|e| CmdError::Rejected(anyhow!("cannot render JSON: {e}")))?,
            Ok(v) => {
                let s: StatusView = parse(v)?;
                draw(&s, secs)
            }
            Err(e) if first => return Err(CmdError::Rejected(e)),
            Err(e) if json => serde_json::json!({ "error": format!("{e:#}") }).to_string(),
            Err(e) => format!("btd status --watch: {e:#} (retrying every {secs} s)"),
        };
        first = false;
        let mut out = std::io::stdout().lock();
        let clear = if tty && !json { "\x1b[H\x1b[2J" } else { "" };
        if writeln!(out, "{clear}{frame}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(()); // stdout closed: nobody is watching
        }
        drop(out);
        // The refresh interval itself: the daemon has no change feed on the control socket.
        std::thread::sleep(Duration::from_secs(secs));
    }
}

/// Results a frame lists (the leaderboard ranks the whole page).
const WATCH_RESULTS: usize = 20;

/// One frame: the status as `btd status` prints it, then the leaderboard.
fn draw(s: &StatusView, secs: u64) -> String {
    let mut text = print::status_text(s, WATCH_RESULTS);
    let minimize = !matches!(s.direction, Some(Direction::Maximize));
    let rows: Vec<ResultRow> = s
        .results
        .iter()
        .map(|e| ResultRow::of(e, String::new(), 0))
        .collect();
    let board = standings(&rows, minimize);
    text.push_str(&format!(
        "leaderboard ({}, best result per member among {} results; rejected claims never count):\n",
        if minimize {
            "lowest first"
        } else {
            "highest first"
        },
        s.results.len()
    ));
    if board.is_empty() {
        text.push_str("  no results yet\n");
    }
    for (i, r) in board.iter().enumerate() {
        text.push_str(&format!(
            "  {:>2}. {:<54} {:>12.6}  #{:<5} {:<9} {} results\n",
            i + 1,
            r.worker,
            r.best,
            r.seq,
            if r.check == "-" { "unchecked" } else { r.check },
            r.results
        ));
    }
    text.push_str(&format!(
        "refreshed {} · every {secs} s · Ctrl-C stops",
        clock_time(crate::clock::system_now().as_millis())
    ));
    text
}

/// `HH:MM:SS UTC` of a time in ms since the epoch.
fn clock_time(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
