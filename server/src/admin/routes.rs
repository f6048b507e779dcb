//! Every admin route, in one `match` on (method, path). To add a route (say `POST /publish`),
//! add an arm here and a function below; [`super::http`] already reads bodies up to
//! `ADMIN_BODY_MAX_BYTES` and refuses larger ones.

use std::time::Duration;

use super::exposition::{self, Scrape};
use super::http::{Request, Response};
use super::stats::{poll_shards, ShardPoll, ADMIN_STATS_TIMEOUT_MS};
use super::AdminState;

/// Paths served, with the one method each takes (for 405 `Allow`).
pub const ROUTES: [(&str, &str); 4] = [
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/publish"),
];

pub fn route(state: &AdminState, request: &Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/metrics") => metrics(state),
        ("GET", "/healthz") => healthz(state),
        ("GET", "/readyz") => readyz(state),
        ("POST", "/publish") => super::publish::publish(state, request),
        (_, path) => match ROUTES.iter().find(|(_, p)| *p == path) {
            Some((method, _)) => Response::method_not_allowed(method),
            None => Response::not_found(),
        },
    }
}

fn poll(state: &AdminState) -> ShardPoll {
    poll_shards(&state.mesh, Duration::from_millis(ADMIN_STATS_TIMEOUT_MS))
}

fn metrics(state: &AdminState) -> Response {
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
fn healthz(state: &AdminState) -> Response {
    let poll = poll(state);
    if poll.all_answered() {
        Response::text(200, "ok\n")
    } else {
        Response::text(503, silent_message(&poll))
    }
}

/// Ready: every shard answers and none drains, and no drain was signalled.
fn readyz(state: &AdminState) -> Response {
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
