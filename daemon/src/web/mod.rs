//! The local dashboard (`btd start --http [ADDR]`): a program page, a node page, a JSON API the
//! pages use, live updates as server-sent events, and Prometheus metrics at `/metrics`.
//!
//! Read-only: every route is a `GET`, so the server changes nothing a page could be tricked into.
//! It binds loopback unless a token is set; with a token every request must carry it (header,
//! cookie or `?token=`). On loopback without a token the `Host` header must name loopback too,
//! so a web page elsewhere cannot reach it through DNS rebinding. Pages, script and style are
//! compiled into the binary: nothing is fetched from anywhere.

mod auth;
mod live;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use btd_protocol::program::ProgramId;
use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::node::NodeHandle;

pub use auth::Access;

/// The address `--http` serves on when given without one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4802";
/// Shortest token accepted for a non-loopback address.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Most HTTP requests served at once (a live page holds one for its event stream).
const MAX_IN_FLIGHT: usize = 64;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the handlers share.
#[derive(Debug, Clone)]
struct Web {
    node: NodeHandle,
    metrics: Metrics,
    access: Arc<Access>,
    pages: live::Pages,
    permits: Arc<tokio::sync::Semaphore>,
}

/// Checks `--http`'s address and token: a non-loopback address needs a token of at least
/// [`MIN_TOKEN_BYTES`].
pub fn check_settings(addr: SocketAddr, token: Option<&str>) -> Result<Access> {
    if let Some(t) = token {
        if t.len() < MIN_TOKEN_BYTES || !t.bytes().all(|b| b.is_ascii_graphic()) {
            bail!(
                "--http-token must be at least {MIN_TOKEN_BYTES} printable characters without \
                 spaces (e.g. the output of `openssl rand -hex 16`)"
            );
        }
    } else if !addr.ip().is_loopback() {
        bail!(
            "--http {addr} is not a loopback address: anyone who can reach it could read the \
             dashboard. Set --http-token (or BTD_HTTP_TOKEN), or serve on 127.0.0.1"
        );
    }
    Ok(Access::new(addr, token.map(str::to_string)))
}

/// Binds the dashboard's listener (so `btd start` fails at once on a taken port).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the dashboard on {addr}"))
}

/// Serves the dashboard on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    access: Access,
    node: NodeHandle,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let web = Web {
        pages: live::Pages::new(node.clone()),
        node,
        metrics,
        access: Arc::new(access),
        permits: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
    };
    let app = router(web);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .context("the dashboard server failed")
}

fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/programs/{id}", get(page))
        .route("/assets/app.js", get(|| asset(APP_JS, "text/javascript")))
        .route("/assets/app.css", get(|| asset(APP_CSS, "text/css")))
        .route("/api/node", get(api_node))
        .route("/api/programs/{id}", get(api_program))
        .route("/api/programs/{id}/ledger", get(api_ledger))
        .route("/api/events", get(live::events))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::guard,
        ))
        .with_state(web)
}

/// Headers every answer carries: no caching, no sniffing, no framing, and a policy that lets a
/// page run only this server's own script.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn asset(body: &'static str, mime: &'static str) -> std::future::Ready<Response> {
    std::future::ready(
        (
            [(header::CONTENT_TYPE, format!("{mime}; charset=utf-8"))],
            body,
        )
            .into_response(),
    )
}

/// The pages are one document; its script reads the path and draws the node or a program.
async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

/// An error as JSON: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

fn json_text(text: Arc<str>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        text.to_string(),
    )
        .into_response()
}

/// A program id from the path, or `None` (answer [`not_an_id`]).
fn parse_program(id: &str) -> Option<ProgramId> {
    id.parse::<ProgramId>().ok()
}

fn not_an_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "not a program id (64 hex digits, as `btd programs` prints)",
    )
}

async fn api_node(State(web): State<Web>) -> Response {
    match web.pages.node().await {
        Ok(page) => json_text(page.json),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn api_program(State(web): State<Web>, Path(id): Path<String>) -> Response {
    let Some(program) = parse_program(&id) else {
        return not_an_id();
    };
    match web.pages.program(program).await {
        Ok(page) => json_text(page.json),
        Err(live::PageError::Unknown) => error(
            StatusCode::NOT_FOUND,
            format!("this node does not know program {program}"),
        ),
        Err(live::PageError::Node(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `?after=SEQ&limit=N` (1 to the ledger's page size).
#[derive(Debug, Deserialize)]
struct LedgerQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "ledger_limit")]
    limit: u32,
}

fn ledger_limit() -> u32 {
    btd_protocol::wire::MAX_LEDGER_PAGE
}

async fn api_ledger(
    State(web): State<Web>,
    Path(id): Path<String>,
    Query(q): Query<LedgerQuery>,
) -> Response {
    let Some(program) = parse_program(&id) else {
        return not_an_id();
    };
    let limit = q.limit.clamp(1, btd_protocol::wire::MAX_LEDGER_PAGE);
    match web.node.ledger(program, q.after, limit).await {
        Ok((items, more)) => {
            axum::Json(serde_json::json!({ "items": items, "more": more })).into_response()
        }
        Err(e) => error(StatusCode::FORBIDDEN, e.to_string()),
    }
}

async fn metrics(State(web): State<Web>) -> Response {
    let text = crate::metrics::scrape(&web.metrics, &web.node).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
