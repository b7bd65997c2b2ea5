//! Who may read the dashboard: the token when one is set, else only requests that name loopback.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{error, harden, Web};

/// The cookie a browser keeps the token in after opening `/?token=…` once.
const COOKIE: &str = "btd_token";

/// The dashboard's address and token.
#[derive(Debug, Clone)]
pub struct Access {
    addr: SocketAddr,
    token: Option<String>,
}

impl Access {
    /// Access for a server on `addr` (checked by [`super::check_settings`]).
    pub(super) fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Access { addr, token }
    }

    /// The URL to open, with the token when one is set.
    pub fn url(&self, addr: SocketAddr) -> String {
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        match &self.token {
            Some(t) => format!("http://{host}/?token={t}"),
            None => format!("http://{host}/"),
        }
    }

    /// Whether the request carries the token (header, cookie or query), or `None` when no token
    /// is set.
    fn token_in(&self, headers: &HeaderMap, query: Option<&str>) -> Option<bool> {
        let want = self.token.as_deref()?;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .next();
        let given = [bearer, cookie, query_token(query)];
        Some(
            given
                .into_iter()
                .flatten()
                .any(|g| same(g.as_bytes(), want.as_bytes())),
        )
    }
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// Compares without stopping at the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether `host` (a `Host` header) names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Admits a request, or answers why not; hardens every answer.
pub(super) async fn guard(State(web): State<Web>, req: Request, next: Next) -> Response {
    harden(admit(&web, req, next).await)
}

async fn admit(web: &Web, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only: only GET",
        );
    }
    let Ok(_permit) = web.permits.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dashboard requests at once; retry shortly",
        );
    };
    let access = &web.access;
    match access.token_in(req.headers(), req.uri().query()) {
        Some(true) => {
            // A page opened with `?token=`: keep the token in a cookie and drop it from the
            // address bar (and from the history).
            if query_token(req.uri().query()).is_some() && !req.uri().path().starts_with("/api/") {
                let cookie = format!(
                    "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                    token_of(access)
                );
                let mut r = StatusCode::SEE_OTHER.into_response();
                if let (Ok(c), Ok(l)) = (
                    HeaderValue::from_str(&cookie),
                    HeaderValue::from_str(req.uri().path()),
                ) {
                    r.headers_mut().insert(header::SET_COOKIE, c);
                    r.headers_mut().insert(header::LOCATION, l);
                }
                return r;
            }
        }
        Some(false) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: open it as http://HOST:PORT/?token=TOKEN (the \
                 token given to `btd start --http-token`), or send `Authorization: Bearer TOKEN`",
            )
        }
        None => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !loopback_host(host) {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "this dashboard answers only to loopback names; open http://127.0.0.1:{}/ \
                         (set --http-token to serve other hosts)",
                        access.addr.port()
                    ),
                );
            }
        }
    }
    next.run(req).await
}

fn token_of(access: &Access) -> &str {
    access.token.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for ok in [
            "127.0.0.1:4802",
            "localhost:1",
            "LOCALHOST",
            "[::1]:4802",
            "127.0.0.9",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:4802",
            "10.0.0.1:4802",
            "",
            "[::2]:1",
            "localhost.evil.com",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdef", b"abcdef"));
        assert!(!same(b"abcdef", b"abcdeg"));
        assert!(!same(b"abc", b"abcdef"));
        let access = Access::new("127.0.0.1:1".parse().unwrap(), Some("t".repeat(16)));
        let mut h = HeaderMap::new();
        assert_eq!(access.token_in(&h, None), Some(false));
        assert_eq!(
            access.token_in(&h, Some(&format!("a=1&token={}", "t".repeat(16)))),
            Some(true)
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; btd_token=nope"),
        );
        assert_eq!(access.token_in(&h, None), Some(false));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", "t".repeat(16))).unwrap(),
        );
        assert_eq!(access.token_in(&h, None), Some(true));
        assert_eq!(
            Access::new("127.0.0.1:1".parse().unwrap(), None).token_in(&h, None),
            None
        );
    }
}
