//! Page data, read from the node at most once per refresh interval whatever the number of open
//! pages (an owner's reads are local; a member's go to the owner, within its request budget), and
//! the event stream that pushes a page's new data when it changes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{KbCall, KbResponse, KbStatus, LedgerItem};
use serde::Deserialize;

use super::view::{NodePage, PeerRow, ProgramPage, JOINED_WINDOW, OWN_WINDOW};
use super::{error, Web};
use crate::node::{NodeError, NodeHandle};

/// How often an own program's page (local reads) or the node page is re-read.
const LOCAL_REFRESH: Duration = Duration::from_secs(1);
/// How often a joined program's page is re-read from its owner.
const REMOTE_REFRESH: Duration = Duration::from_secs(5);
/// Most event streams open at once.
const MAX_STREAMS: usize = 16;
/// Most program pages cached (programs a node knows are bounded; this bounds the cache anyway).
const MAX_CACHED: usize = 64;

/// A page's data as JSON, and a digest to tell whether it changed.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) json: Arc<str>,
    digest: [u8; 32],
}

impl Snapshot {
    fn of<T: serde::Serialize>(value: &T) -> Result<Snapshot, String> {
        let json = serde_json::to_string(value).map_err(|e| e.to_string())?;
        let digest = *btd_protocol::Digest::of(json.as_bytes()).as_bytes();
        Ok(Snapshot {
            json: json.into(),
            digest,
        })
    }
}

/// Why a program page could not be made.
#[derive(Debug)]
pub(super) enum PageError {
    /// This node has not seen the program's announcement.
    Unknown,
    /// The node did not answer.
    Node(String),
}

#[derive(Debug, Default)]
struct Slot {
    at: Option<Instant>,
    page: Option<Snapshot>,
    /// The KB status the page was built from: while the owner's status is the same, the results
    /// are too (a new result, a check's outcome or a payout changes it), so the page is kept.
    status: Option<KbStatus>,
}

/// One cached page per program (`None`: the node page), each behind its own lock so that a slow
/// owner delays only its own program's page.
type Slots = HashMap<Option<ProgramId>, Arc<tokio::sync::Mutex<Slot>>>;

/// The cache of page data.
#[derive(Debug, Clone)]
pub(super) struct Pages {
    node: NodeHandle,
    slots: Arc<Mutex<Slots>>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl Pages {
    pub(super) fn new(node: NodeHandle) -> Self {
        Pages {
            node,
            slots: Arc::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }
    }

    fn slot(&self, key: Option<ProgramId>) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if !slots.contains_key(&key) && slots.len() >= MAX_CACHED {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(key).or_default().clone()
    }

    /// The node page, re-read when older than [`LOCAL_REFRESH`].
    pub(super) async fn node(&self) -> Result<Snapshot, String> {
        let slot = self.slot(None);
        let mut slot = slot.lock().await;
        if let (Some(at), Some(page)) = (slot.at, &slot.page) {
            if at.elapsed() < LOCAL_REFRESH {
                return Ok(page.clone());
            }
        }
        let n = &self.node;
        let (info, peers, programs) =
            tokio::try_join!(n.info(), n.peers(), n.programs()).map_err(|e| e.to_string())?;
        let page = NodePage {
            info,
            peers: peers.into_iter().map(PeerRow::of).collect(),
            programs,
        };
        let snap = Snapshot::of(&page)?;
        slot.at = Some(Instant::now());
        slot.page = Some(snap.clone());
        Ok(snap)
    }

    /// A program's page, re-read when older than its refresh interval.
    pub(super) async fn program(&self, id: ProgramId) -> Result<Snapshot, PageError> {
        let slot = self.slot(Some(id));
        let mut slot = slot.lock().await;
        let program = self
            .node
            .program(id)
            .await
            .map_err(|e| PageError::Node(e.to_string()))?
            .ok_or(PageError::Unknown)?;
        let own = program.owner == self.node.peer_id();
        let refresh = if own { LOCAL_REFRESH } else { REMOTE_REFRESH };
        if let (Some(at), Some(page)) = (slot.at, &slot.page) {
            if at.elapsed() < refresh {
                return Ok(page.clone());
            }
        }
        let status = read_status(&self.node, id).await;
        // A deadline's progress moves with the clock: such a page is always rebuilt.
        let timeless = program.program.stop.deadline.is_none();
        if let (Ok(s), Some(page), true) = (&status, slot.page.clone(), timeless) {
            if slot.status.as_ref() == Some(s) {
                slot.at = Some(Instant::now());
                return Ok(page);
            }
        }
        let kb = match status {
            Ok(s) => read_items(&self.node, id, own, &s)
                .await
                .map(|items| (s, items)),
            Err(e) => Err(e),
        };
        slot.status = kb.as_ref().ok().map(|(s, _)| s.clone());
        let page = ProgramPage::build(&program, kb, self.node.now());
        let snap = Snapshot::of(&page).map_err(PageError::Node)?;
        slot.at = Some(Instant::now());
        slot.page = Some(snap.clone());
        Ok(snap)
    }
}

/// The KB's status (the owner's own store, or one request to the owner).
async fn read_status(node: &NodeHandle, id: ProgramId) -> Result<KbStatus, String> {
    match node.kb_read(id, KbCall::Status).await {
        Ok(KbResponse::Status(s)) => Ok(s),
        Ok(_) => Err("the owner answered something other than a status".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The newest results: up to [`OWN_WINDOW`] from the own store, or [`JOINED_WINDOW`] from the
/// owner (one request).
async fn read_items(
    node: &NodeHandle,
    id: ProgramId,
    own: bool,
    status: &KbStatus,
) -> Result<Vec<LedgerItem>, String> {
    let words = |e: NodeError| e.to_string();
    let items = if own {
        let mut items = Vec::new();
        let mut after = status.submissions.saturating_sub(OWN_WINDOW);
        loop {
            let page = btd_protocol::wire::MAX_LEDGER_PAGE;
            let (mut got, more) = node.ledger(id, after, page).await.map_err(words)?;
            let Some(last) = got.last() else { break };
            after = last.entry.seq;
            items.append(&mut got);
            if !more || items.len() as u64 >= OWN_WINDOW {
                break;
            }
        }
        items
    } else {
        node.ledger_tail(id, JOINED_WINDOW).await.map_err(words)?
    };
    Ok(items)
}

/// `?program=ID`: the program page's stream; without it, the node page's.
#[derive(Debug, Deserialize)]
pub(super) struct Topic {
    program: Option<String>,
}

/// `GET /api/events`: an `update` event with the page's data now, then again whenever it
/// changes; a comment every 15 s keeps proxies from closing the stream.
pub(super) async fn events(State(web): State<Web>, Query(topic): Query<Topic>) -> Response {
    let program = match topic.program.as_deref().map(str::parse::<ProgramId>) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "program= is not a program id"),
    };
    let Ok(permit) = web.pages.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} live pages are open already; close one"),
        );
    };
    let pages = web.pages.clone();
    let own = match program {
        Some(p) => {
            matches!(pages.node.program(p).await, Ok(Some(v)) if v.owner == pages.node.peer_id())
        }
        None => true,
    };
    let every = if own { LOCAL_REFRESH } else { REMOTE_REFRESH };
    let stream = futures::stream::unfold(
        (pages, None::<[u8; 32]>, permit, true),
        move |(pages, last, permit, first)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::time::sleep(every).await;
                }
                first = false;
                let snap = match program {
                    Some(p) => pages.program(p).await.map_err(|e| match e {
                        PageError::Unknown => format!("this node does not know program {p}"),
                        PageError::Node(e) => e,
                    }),
                    None => pages.node().await,
                };
                let (name, data, digest) = match snap {
                    Ok(s) => ("update", s.json.to_string(), s.digest),
                    Err(e) => {
                        let d = *btd_protocol::Digest::of(e.as_bytes()).as_bytes();
                        ("problem", e, d)
                    }
                };
                if Some(digest) == last {
                    continue;
                }
                let event = Event::default().event(name).data(data);
                return Some((
                    Ok::<_, Infallible>(event),
                    (pages, Some(digest), permit, false),
                ));
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
