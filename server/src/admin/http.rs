//! Just enough HTTP/1.1 for the admin listener: read one request from a blocking stream with
//! hard bounds on time and size, write one response, close.
//!
//! Requests are parsed by `httparse` (the parser under hyper); this file only enforces the
//! bounds and writes the status line and headers. Every response says `Connection: close`, so a
//! connection carries exactly one request and nothing is kept between requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) accepted.
pub const ADMIN_HEAD_MAX_BYTES: usize = 8 * 1024;
/// Most headers one request may carry.
pub const ADMIN_HEADERS_MAX: usize = 32;
/// Largest request body accepted (for routes that take one, such as a future `POST /publish`).
pub const ADMIN_BODY_MAX_BYTES: usize = 64 * 1024;
/// Time a client has to send its whole request, head and body.
pub const ADMIN_REQUEST_TIMEOUT_MS: u64 = 2_000;
/// Time a client has to take the whole response.
pub const ADMIN_WRITE_TIMEOUT_MS: u64 = 2_000;

/// One parsed request. `path` has the query string removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// One response; always sent with `Content-Length` and `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Value of an `Allow` header (405 responses name the methods a path takes).
    pub allow: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            body: body.into().into_bytes(),
        }
    }

    pub fn not_found() -> Response {
        Response::text(404, "not found: try /metrics, /healthz or /readyz\n")
    }

    pub fn method_not_allowed(allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::text(405, format!("method not allowed: use {allow}\n"))
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Reads one request within [`ADMIN_REQUEST_TIMEOUT_MS`]. `Err(Some(response))` is the error
/// to send back (bad or oversized request, timeout); `Err(None)` means the peer went away.
pub fn read_request(stream: &mut TcpStream) -> Result<Request, Option<Response>> {
    let deadline = Instant::now() + Duration::from_millis(ADMIN_REQUEST_TIMEOUT_MS);
    let mut head = vec![0u8; ADMIN_HEAD_MAX_BYTES];
    let mut filled = 0;
    loop {
        if filled == head.len() {
            return Err(Some(Response::text(
                431,
                format!("request head over {ADMIN_HEAD_MAX_BYTES} bytes\n"),
            )));
        }
        let n = read_before(stream, &mut head[filled..], deadline)?;
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; ADMIN_HEADERS_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                let body_len = body_length(parsed.headers)?;
                let authorization = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_owned);
                let method = parsed.method.unwrap_or_default().to_owned();
                let path = parsed.path.unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default().to_owned();
                let mut body = head[head_len..filled].to_vec();
                body.truncate(body_len);
                while body.len() < body_len {
                    let mut chunk = [0u8; 4096];
                    let want = (body_len - body.len()).min(chunk.len());
                    let n = read_before(stream, &mut chunk[..want], deadline)?;
                    body.extend_from_slice(&chunk[..n]);
                }
                return Ok(Request {
                    method,
                    path,
                    body,
                    authorization,
                });
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Some(Response::text(
                    431,
                    format!("more than {ADMIN_HEADERS_MAX} headers\n"),
                )));
            }
            Err(e) => return Err(Some(Response::text(400, format!("bad request: {e}\n")))),
        }
    }
}

/// The body length a request announces, refused above [`ADMIN_BODY_MAX_BYTES`]. Chunked bodies
/// are refused: no admin route needs one, and a length known up front is what makes the bound
/// checkable before reading.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<usize, Option<Response>> {
    let mut length = 0usize;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Some(Response::text(
                501,
                "chunked request bodies are not accepted: send Content-Length\n",
            )));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| Some(Response::text(400, "bad Content-Length\n")))?;
        }
    }
    if length > ADMIN_BODY_MAX_BYTES {
        return Err(Some(Response::text(
            413,
            format!("request body over {ADMIN_BODY_MAX_BYTES} bytes\n"),
        )));
    }
    Ok(length)
}

/// One read that gives up at `deadline`. Ok(n) has n > 0.
fn read_before(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, Option<Response>> {
    let timed_out = || Some(Response::text(408, "request not received in time\n"));
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(timed_out)?;
    stream.set_read_timeout(Some(left)).map_err(|_| None)?;
    match stream.read(buf) {
        Ok(0) => Err(None),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(timed_out())
        }
        Err(_) => Err(None),
    }
}

/// Writes `response` within [`ADMIN_WRITE_TIMEOUT_MS`] (per write call).
pub fn write_response(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_millis(ADMIN_WRITE_TIMEOUT_MS)))?;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if let Some(allow) = response.allow {
        head.push_str("Allow: ");
        head.push_str(allow);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Sends `raw` from a client thread and reads it on the server side.
    fn read_raw(raw: &'static [u8]) -> Result<Request, Option<Response>> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(raw).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        });
        let (mut stream, _) = listener.accept().unwrap();
        let result = read_request(&mut stream);
        client.join().unwrap();
        result
    }

    #[test]
    fn get_with_query_parses_to_method_and_bare_path() {
        let request = read_raw(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/metrics");
        assert!(request.body.is_empty());
    }

    #[test]
    fn body_is_read_to_its_content_length() {
        let request =
            read_raw(b"POST /publish HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(request.body, b"hello");
    }

    #[test]
    fn body_over_the_bound_is_refused_with_413_before_reading_it() {
        let response = read_raw(b"POST /publish HTTP/1.1\r\nContent-Length: 999999\r\n\r\n")
            .unwrap_err()
            .unwrap();
        assert_eq!(response.status, 413);
    }

    #[test]
    fn chunked_body_is_refused_with_501() {
        let response = read_raw(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap_err()
            .unwrap();
        assert_eq!(response.status, 501);
    }

    #[test]
    fn garbage_gets_400() {
        let response = read_raw(b"\x01\x02 nonsense\r\n\r\n").unwrap_err().unwrap();
        assert_eq!(response.status, 400);
    }
}
