//! Every admin route, in one table: method, path, handler. To add a route (say `GET /` serving
//! a static page), add a row to [`ROUTES`] and a function below; the server has already read the
//! body under `admin_max_body_bytes` and `admin_body_timeout_ms`, and answers 404 for unknown
//! paths and 405 (with `Allow`) for a known path with another method.

use std::time::Duration;

use super::exposition::{self, Scrape};
use super::http::{Request, Response};
use super::stats::{poll_shards, ShardPoll, ADMIN_STATS_TIMEOUT_MS};
use super::AdminState;

/// A route's handler and how it may run.
#[derive(Clone, Copy)]
pub(super) enum Handler {
    /// Answers from memory at once (the static page and its script): runs on the admin
    /// runtime's thread.
    Inline(fn(&AdminState, &Request) -> Response),
    /// Waits on shards (bounded by ADMIN_STATS_TIMEOUT_MS or ADMIN_PUBLISH_TIMEOUT_MS): runs on
    /// the runtime's blocking pool, so other connections are served meanwhile.
    Blocking(fn(&AdminState, &Request) -> Response),
}

pub(super) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: Handler,
}

/// Every route served.
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/metrics",
        handler: Handler::Blocking(metrics),
    },
    Route {
        method: "GET",
        path: "/healthz",
        handler: Handler::Blocking(healthz),
    },
    Route {
        method: "GET",
        path: "/readyz",
        handler: Handler::Blocking(readyz),
    },
    Route {
        method: "POST",
        path: "/publish",
        handler: Handler::Blocking(super::publish::publish),
    },
    Route {
        method: "GET",
        path: "/",
        handler: Handler::Inline(page),
    },
    Route {
        method: "GET",
        path: "/holdfast.js",
        handler: Handler::Inline(page_script),
    },
];

/// The browser page (clients/js/index.html): give it the WebSocket listener in its query
/// string, `/?server=ws://HOST:PORT/ws&topic=news`. Built into the binary.
const PAGE_HTML: &str = include_str!("../../../clients/js/index.html");
/// The page's client module (clients/js/holdfast.js).
const PAGE_SCRIPT: &str = include_str!("../../../clients/js/holdfast.js");

fn page(_: &AdminState, _: &Request) -> Response {
    Response {
        content_type: "text/html; charset=utf-8",
        ..Response::text(200, PAGE_HTML)
    }
}

fn page_script(_: &AdminState, _: &Request) -> Response {
    // An ES module must come with a JavaScript type or browsers refuse it.
    Response {
        content_type: "text/javascript; charset=utf-8",
        ..Response::text(200, PAGE_SCRIPT)
    }
}

/// What the table says about a request line.
pub(super) enum Lookup {
    Found(Handler),
    /// The path exists with other methods (the `Allow` value, e.g. "GET, POST").
    WrongMethod(String),
    NotFound,
}

pub(super) fn lookup(routes: &[Route], method: &str, path: &str) -> Lookup {
    if let Some(route) = routes.iter().find(|r| r.method == method && r.path == path) {
        return Lookup::Found(route.handler);
    }
    let allowed: Vec<&str> = routes
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method)
        .collect();
    match allowed.is_empty() {
        true => Lookup::NotFound,
        false => Lookup::WrongMethod(allowed.join(", ")),
    }
}

fn poll(state: &AdminState) -> ShardPoll {
    poll_shards(&state.mesh, Duration::from_millis(ADMIN_STATS_TIMEOUT_MS))
}

fn metrics(state: &AdminState, _: &Request) -> Response {
    let probes = state.probes.as_ref().map(|probes| match probes.snapshot() {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            tracing::warn!(code = e.code(), "probe read for /metrics failed: {e}");
            None
        }
    });
    let scrape = Scrape {
        poll: poll(state),
        probes,
    };
    Response {
        content_type: exposition::CONTENT_TYPE,
        ..Response::text(200, exposition::render(scrape))
    }
}

/// Live: the admin thread runs (it answered) and every shard answered within the bound.
fn healthz(state: &AdminState, _: &Request) -> Response {
    let poll = poll(state);
    if poll.all_answered() {
        Response::text(200, "ok\n")
    } else {
        Response::text(503, silent_message(&poll))
    }
}

/// Ready: every shard answers and none drains, and no drain was signalled.
fn readyz(state: &AdminState, _: &Request) -> Response {
    if state.drain.is_draining() {
        return Response::text(503, "draining\n");
    }
    let poll = poll(state);
    if !poll.all_answered() {
        return Response::text(503, silent_message(&poll));
    }
    if poll.any_draining() {
        return Response::text(503, "draining\n");
    }
    Response::text(200, "ready\n")
}

fn silent_message(poll: &ShardPoll) -> String {
    format!(
        "shards {:?} did not answer within {} ms\n",
        poll.silent(),
        poll.timeout_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(_: &AdminState, _: &Request) -> Response {
        Response::text(200, "page\n")
    }

    #[test]
    fn lookup_finds_the_route_names_other_methods_or_says_not_found() {
        assert!(matches!(
            lookup(ROUTES, "GET", "/healthz"),
            Lookup::Found(Handler::Blocking(_))
        ));
        assert!(matches!(
            lookup(ROUTES, "POST", "/publish"),
            Lookup::Found(Handler::Blocking(_))
        ));
        match lookup(ROUTES, "POST", "/metrics") {
            Lookup::WrongMethod(allow) => assert_eq!(allow, "GET"),
            _ => panic!("POST /metrics is a wrong method"),
        }
        assert!(matches!(lookup(ROUTES, "GET", "/nope"), Lookup::NotFound));
        // The page: served inline; other methods are told GET.
        assert!(matches!(
            lookup(ROUTES, "GET", "/"),
            Lookup::Found(Handler::Inline(_))
        ));
        match lookup(ROUTES, "HEAD", "/") {
            Lookup::WrongMethod(allow) => assert_eq!(allow, "GET"),
            _ => panic!("HEAD / is a wrong method"),
        }
    }

    #[test]
    fn a_path_served_with_two_methods_allows_both() {
        let routes = [
            Route {
                method: "GET",
                path: "/",
                handler: Handler::Inline(page),
            },
            Route {
                method: "POST",
                path: "/",
                handler: Handler::Inline(page),
            },
        ];
        assert!(matches!(
            lookup(&routes, "GET", "/"),
            Lookup::Found(Handler::Inline(_))
        ));
        match lookup(&routes, "PUT", "/") {
            Lookup::WrongMethod(allow) => assert_eq!(allow, "GET, POST"),
            _ => panic!("PUT / is a wrong method"),
        }
    }
}
