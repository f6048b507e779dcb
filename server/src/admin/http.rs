//! The request a route handler reads and the response it returns: plain values, so the routes
//! know nothing of hyper. [`super::server`] builds a [`Request`] (the body already read under
//! its limits) and turns a [`Response`] into hyper's.

use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};

/// The admin listener's HTTP body type: whole responses, sent with `Content-Length`.
pub type Body = http_body_util::Full<Bytes>;

/// One request, its body read whole. `path` has no query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Bytes,
    /// The `Authorization` header, if any (and valid UTF-8).
    pub authorization: Option<String>,
}

/// One response; sent with `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Value of an `Allow` header (405 responses name the methods a path takes).
    pub allow: Option<String>,
    /// Value of a `Retry-After` header, in seconds (503 when the listener is full).
    pub retry_after_s: Option<u32>,
    /// Close the connection after this response (the request was not read whole, or the
    /// client is being refused).
    pub close: bool,
    pub body: Bytes,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            retry_after_s: None,
            close: false,
            body: Bytes::from(body.into()),
        }
    }

    pub fn not_found() -> Response {
        Response::text(404, "not found: try /metrics, /healthz or /readyz\n")
    }

    pub fn method_not_allowed(allow: String) -> Response {
        Response {
            allow: Some(allow.clone()),
            ..Response::text(405, format!("method not allowed: use {allow}\n"))
        }
    }

    /// The same response, and the connection closes after it.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// hyper's response. A status outside 100..=999 (a handler bug) becomes 500.
    pub fn into_hyper(self) -> hyper::Response<Body> {
        let mut response = hyper::Response::new(Body::new(self.body));
        *response.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::try_from(a).ok()) {
            headers.insert(ALLOW, allow);
        }
        if let Some(seconds) = self.retry_after_s {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_allowed_names_the_allowed_methods_in_allow() {
        let response = Response::method_not_allowed("GET".to_owned()).into_hyper();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[ALLOW], "GET");
        assert!(response.headers().get(CONNECTION).is_none());
    }

    #[test]
    fn closing_response_says_connection_close() {
        let response = Response::text(413, "too big\n").closing().into_hyper();
        assert_eq!(response.status(), 413);
        assert_eq!(response.headers()[CONNECTION], "close");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
