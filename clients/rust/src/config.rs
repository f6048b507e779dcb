//! [`ClientConfig`]: where to connect, who to be, and every limit the client keeps. Each limit is
//! a field with its unit in the name; its default is a named constant beside it.

use std::fmt;
use std::sync::Arc;

use holdfast_protocol::payload::MAX_CLIENT_ID_BYTES;

use crate::error::Error;
use crate::tls::TlsTrust;
use crate::token::mint_token;

/// Default for [`ClientConfig::connect_timeout_ms`].
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default for [`ClientConfig::hello_timeout_ms`] (the server's own Hello deadline is 5,000 ms).
pub const HELLO_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default for [`ClientConfig::request_timeout_ms`].
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default for [`ClientConfig::max_inflight_requests`]: the server's default limit.
pub const MAX_INFLIGHT_REQUESTS_DEFAULT: usize = 64;
/// Default for [`ClientConfig::max_inflight_acks`].
pub const MAX_INFLIGHT_ACKS_DEFAULT: usize = 1_024;
/// Default for [`ClientConfig::push_buffer_max_items`].
pub const PUSH_BUFFER_MAX_ITEMS_DEFAULT: usize = 1_024;
/// Default for [`ClientConfig::command_queue_max_items`].
pub const COMMAND_QUEUE_MAX_ITEMS_DEFAULT: usize = 256;
/// Default for [`ClientConfig::reconnect_base_delay_ms`].
pub const RECONNECT_BASE_DELAY_MS_DEFAULT: u64 = 100;
/// Default for [`ClientConfig::reconnect_max_delay_ms`].
pub const RECONNECT_MAX_DELAY_MS_DEFAULT: u64 = 30_000;
/// Default for [`ClientConfig::reconnect_after_max_ms`]: five minutes.
pub const RECONNECT_AFTER_MAX_MS_DEFAULT: u64 = 300_000;
/// Default for [`ClientConfig::max_topics`]: the server's ceiling for `max_topics_per_session`.
pub const MAX_TOPICS_DEFAULT: usize = 1_024;
/// Default for [`ClientConfig::close_flush_timeout_ms`].
pub const CLOSE_FLUSH_TIMEOUT_MS_DEFAULT: u64 = 1_000;

/// Where the server is and how to reach it: one variant per listener the server has
/// (`listen`, `tls_listen`, `ws_listen`, and wss on `tls_listen`).
///
/// The address is a `host:port` resolved again on every connection attempt (so a DNS change is
/// picked up by the next reconnect). Everything above the transport (sessions, resume,
/// requests) is the same on each.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// Plain TCP to `addr` (the server's `listen`).
    Tcp {
        /// `host:port`, e.g. `127.0.0.1:7878`.
        addr: String,
    },
    /// Holdfast frames inside TLS (the server's `tls_listen`), offering ALPN `holdfast/1`.
    Tls {
        /// `host:port`.
        addr: String,
        /// The name the certificate must carry; `None` takes the host of `addr` (a DNS name or
        /// an IP address).
        server_name: Option<String>,
        /// The certificates that may sign the server's.
        trust: TlsTrust,
    },
    /// WebSocket (the server's `ws_listen`), or WebSocket inside TLS (wss, on the server's
    /// `tls_listen`) when `tls` is set: an upgrade on `path` with subprotocol `holdfast.v1`,
    /// frames in binary messages.
    WebSocket {
        /// `host:port`; also the upgrade's `Host`.
        addr: String,
        /// The server's `ws_path`, e.g. `/ws`.
        path: String,
        /// `Some` for wss (ALPN `http/1.1`).
        tls: Option<TlsOptions>,
    },
}

/// How a TLS layer under a WebSocket checks the server (see [`Endpoint::WebSocket`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// The name the certificate must carry; `None` takes the host of the address.
    pub server_name: Option<String>,
    /// The certificates that may sign the server's.
    pub trust: TlsTrust,
}

/// A function from client id to token, for [`TokenSource::Callback`].
pub type TokenFn = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// Where the Hello token comes from. It is asked for before every Hello, so a reconnect
/// presents a fresh token when the source can make one.
#[derive(Clone)]
#[non_exhaustive]
pub enum TokenSource {
    /// The same token every time (issued by whoever holds the server's secret). Once it
    /// expires, reconnecting fails with [`Error::Auth`] and the client closes.
    Fixed(Vec<u8>),
    /// Signs a new token for the configured client id before each Hello, valid for `ttl_s`
    /// seconds. Only for trusted processes that hold the server's `auth_secret`.
    Secret {
        /// The server's `auth_secret`.
        secret: Vec<u8>,
        /// Validity of each minted token, in seconds.
        ttl_s: u64,
    },
    /// Calls a function with the client id before each Hello (e.g. to read a token a sidecar
    /// refreshes). It runs on the connection task: keep it quick and non-blocking.
    Callback(TokenFn),
}

impl TokenSource {
    /// The token to put in the next Hello for `client_id`.
    pub fn token_for(&self, client_id: &str) -> Vec<u8> {
        match self {
            TokenSource::Fixed(token) => token.clone(),
            TokenSource::Secret { secret, ttl_s } => mint_token(secret, client_id, *ttl_s).to_vec(),
            TokenSource::Callback(make) => make(client_id),
        }
    }
}

impl fmt::Debug for TokenSource {
    // Never print a token or a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Fixed(token) => write!(f, "Fixed({} bytes)", token.len()),
            TokenSource::Secret { ttl_s, .. } => write!(f, "Secret {{ ttl_s: {ttl_s}, .. }}"),
            TokenSource::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// Everything the client needs to know. Build one with [`ClientConfig::tcp`] and change the
/// fields you care about; every other field keeps its documented default.
///
/// ```
/// use holdfast_client::ClientConfig;
///
/// let mut config = ClientConfig::tcp("127.0.0.1:7878").with_client_id("device-1");
/// config.request_timeout_ms = 2_000;
/// config.push_buffer_max_items = 4_096;
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Client identity sent in Hello, at most 256 bytes. Empty with no token means an anonymous
    /// Hello (accepted only when the server has no `auth_secret`).
    pub client_id: String,
    /// The Hello token, when the server has auth on.
    pub token: Option<TokenSource>,
    /// Heartbeat interval to ask for in Hello; 0 takes the server's default. The server clamps
    /// it, and the interval in force is the one Welcome carries.
    pub heartbeat_ms: u32,
    /// Local address every connection is made from (bound before connecting, the port picked
    /// by the kernel); `None` lets the kernel choose. For hosts with several addresses, and for
    /// load tests that need more than one address's ephemeral ports.
    pub source_addr: Option<std::net::IpAddr>,
    /// Limit on one TCP connect (resolution included).
    pub connect_timeout_ms: u64,
    /// Limit from connected to Welcome received.
    pub hello_timeout_ms: u64,
    /// Limit on one request (or acked event, subscribe, unsubscribe) from the call until its
    /// answer, waiting for a free slot and for a reconnect included.
    pub request_timeout_ms: u64,
    /// Requests awaiting their answer at once, across callers. A call beyond it waits for a
    /// slot (within its timeout). On the wire the client also never exceeds the limit that
    /// Welcome gives, so the server never sees too many (which would close the connection).
    pub max_inflight_requests: usize,
    /// Acked events, subscribes and unsubscribes awaiting their Ack at once.
    pub max_inflight_acks: usize,
    /// Capacity of the push stream, in items (pushes and gap reports), at least 2. When it is full,
    /// arriving pushes are dropped and counted, and the first push delivered afterwards on
    /// the same topic is preceded by a [`Gap`](crate::Gap) naming what was missed: an unread
    /// stream never stalls requests or heartbeats.
    pub push_buffer_max_items: usize,
    /// Calls queued for the connection task; callers beyond it wait (within their timeout).
    pub command_queue_max_items: usize,
    /// Ceiling of the first reconnect delay; each failed attempt doubles it, up to
    /// `reconnect_max_delay_ms`. The delay is drawn uniformly from 0 up to the ceiling (full
    /// jitter). A Goodbye's `reconnect_after_ms` replaces the first delay.
    pub reconnect_base_delay_ms: u64,
    /// Largest reconnect delay ceiling.
    pub reconnect_max_delay_ms: u64,
    /// Longest Goodbye `reconnect_after_ms` honoured; a longer hint is cut to this, so a
    /// misconfigured server cannot park its clients for days.
    pub reconnect_after_max_ms: u64,
    /// Reconnect attempts in a row before giving up and closing; `None` retries forever,
    /// `Some(0)` never reconnects.
    pub reconnect_max_attempts: Option<u32>,
    /// Topics subscribed at once (the server's own limit is `max_topics_per_session`).
    pub max_topics: usize,
    /// On close, limit on flushing what is queued and the Goodbye.
    pub close_flush_timeout_ms: u64,
}

impl ClientConfig {
    /// A configuration for plain TCP to `addr` (`host:port`) with every default.
    pub fn tcp(addr: impl Into<String>) -> ClientConfig {
        ClientConfig::new(Endpoint::Tcp { addr: addr.into() })
    }

    /// A configuration for Holdfast frames inside TLS to `addr` (the server's `tls_listen`),
    /// checking the certificate against `trust` for the host of `addr`.
    pub fn tls(addr: impl Into<String>, trust: TlsTrust) -> ClientConfig {
        ClientConfig::new(Endpoint::Tls {
            addr: addr.into(),
            server_name: None,
            trust,
        })
    }

    /// A configuration for WebSocket to `addr` (the server's `ws_listen`) on `path` (its
    /// `ws_path`).
    pub fn websocket(addr: impl Into<String>, path: impl Into<String>) -> ClientConfig {
        ClientConfig::new(Endpoint::WebSocket {
            addr: addr.into(),
            path: path.into(),
            tls: None,
        })
    }

    /// A configuration for WebSocket inside TLS (wss) to `addr` (the server's `tls_listen`) on
    /// `path`, checking the certificate against `trust` for the host of `addr`.
    pub fn wss(addr: impl Into<String>, path: impl Into<String>, trust: TlsTrust) -> ClientConfig {
        ClientConfig::new(Endpoint::WebSocket {
            addr: addr.into(),
            path: path.into(),
            tls: Some(TlsOptions {
                server_name: None,
                trust,
            }),
        })
    }

    /// A configuration for `endpoint` with every default.
    pub fn new(endpoint: Endpoint) -> ClientConfig {
        ClientConfig {
            endpoint,
            client_id: String::new(),
            token: None,
            heartbeat_ms: 0,
            source_addr: None,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            hello_timeout_ms: HELLO_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            max_inflight_requests: MAX_INFLIGHT_REQUESTS_DEFAULT,
            max_inflight_acks: MAX_INFLIGHT_ACKS_DEFAULT,
            push_buffer_max_items: PUSH_BUFFER_MAX_ITEMS_DEFAULT,
            command_queue_max_items: COMMAND_QUEUE_MAX_ITEMS_DEFAULT,
            reconnect_base_delay_ms: RECONNECT_BASE_DELAY_MS_DEFAULT,
            reconnect_max_delay_ms: RECONNECT_MAX_DELAY_MS_DEFAULT,
            reconnect_after_max_ms: RECONNECT_AFTER_MAX_MS_DEFAULT,
            reconnect_max_attempts: None,
            max_topics: MAX_TOPICS_DEFAULT,
            close_flush_timeout_ms: CLOSE_FLUSH_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Sets [`client_id`](ClientConfig::client_id).
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> ClientConfig {
        self.client_id = client_id.into();
        self
    }

    /// Sets [`token`](ClientConfig::token).
    pub fn with_token(mut self, token: TokenSource) -> ClientConfig {
        self.token = Some(token);
        self
    }

    /// Checks the limits are usable: [`Error::Invalid`] names the first one that is not.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: &str| Err(Error::Invalid(what.to_owned()));
        if let Endpoint::WebSocket { path, .. } = &self.endpoint {
            if !path.starts_with('/') {
                return invalid("a WebSocket path must start with '/'");
            }
        }
        if self.client_id.len() > MAX_CLIENT_ID_BYTES {
            return invalid("client_id is over 256 bytes");
        }
        let positive: [(&str, u64); 9] = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("hello_timeout_ms", self.hello_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_inflight_requests", self.max_inflight_requests as u64),
            ("max_inflight_acks", self.max_inflight_acks as u64),
            ("push_buffer_max_items", self.push_buffer_max_items as u64),
            (
                "command_queue_max_items",
                self.command_queue_max_items as u64,
            ),
            ("reconnect_base_delay_ms", self.reconnect_base_delay_ms),
            ("max_topics", self.max_topics as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return invalid(&format!("{name} must be at least 1"));
        }
        if self.push_buffer_max_items < 2 {
            return invalid("push_buffer_max_items must be at least 2 (a gap report and its push)");
        }
        if self.reconnect_max_delay_ms < self.reconnect_base_delay_ms {
            return invalid("reconnect_max_delay_ms must be at least reconnect_base_delay_ms");
        }
        // The semaphores behind the in-flight limits hold at most this many permits.
        let most = tokio::sync::Semaphore::MAX_PERMITS;
        if self.max_inflight_requests > most || self.max_inflight_acks > most {
            return invalid("an in-flight limit is above the runtime's semaphore maximum");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_limits_are_named() {
        let config = ClientConfig::tcp("127.0.0.1:1");
        assert!(config.validate().is_ok());
        let mut zero = config.clone();
        zero.push_buffer_max_items = 0;
        let error = zero.validate().unwrap_err().to_string();
        assert!(error.contains("push_buffer_max_items"), "{error}");
        let mut inverted = config.clone();
        inverted.reconnect_max_delay_ms = inverted.reconnect_base_delay_ms - 1;
        assert!(inverted.validate().is_err());
        let long_id = config.with_client_id("x".repeat(MAX_CLIENT_ID_BYTES + 1));
        assert!(long_id.validate().is_err());
    }

    #[test]
    fn token_sources_never_print_secrets() {
        let secret = TokenSource::Secret {
            secret: b"very-secret".to_vec(),
            ttl_s: 60,
        };
        let fixed = TokenSource::Fixed(b"token-bytes".to_vec());
        assert!(!format!("{secret:?}").contains("very-secret"));
        assert!(!format!("{fixed:?}").contains("token-bytes"));
    }
}
