//! TLS for one connection, sans-io, on rustls's unbuffered API (`UnbufferedServerConnection`),
//! so the shard keeps owning every buffer.
//!
//! - **Inbound.** Ciphertext arrives as a mutable slice of a buffer the shard owns (a provided
//!   buffer of the ring). rustls decrypts each record in place in that slice and hands its
//!   plaintext to the caller's callback, in stream order, as it lies (the Holdfast decoder is a
//!   stream decoder, so record boundaries do not matter to it). Only the ciphertext of a record
//!   that is not complete yet is copied, into a per-session `held` buffer that exists only while
//!   that record is incomplete: an idle session holds no buffer.
//! - **Outbound.** Plaintext batches are encrypted into the connection's send queue (a
//!   `BytesMut`), as are handshake messages and alerts; the shard sends those bytes as it sends
//!   plain ones.
//! - **Configuration.** [`server_config_from_pem`] builds the rustls `ServerConfig` (TLS 1.3
//!   and 1.2, ALPN [`ALPN_HOLDFAST`] then [`ALPN_HTTP_1_1`] for wss); [`TlsConfigSource`]
//!   holds the current one for every shard and can be replaced at run time (certificate
//!   reload); each shard reads it through a [`TlsConfigCache`] when it starts a handshake, so
//!   new handshakes use the new certificate and live sessions keep the config they started
//!   with.
//!
//! rustls 0.23's unbuffered reader still copies each decrypted record's payload into a `Vec`
//! it frees when the next record is taken, and its encrypter builds each record in a `Vec`
//! before copying it into the caller's slice: both are transient (nothing is kept between
//! calls). See docs/ARCHITECTURE.md, "TLS".

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, WriteTraffic,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The application protocol of Holdfast frames over TLS (ALPN), preferred when offered.
pub const ALPN_HOLDFAST: &[u8] = b"holdfast/1";

/// The ALPN a browser offers for `wss://`: WebSocket over TLS (`transport/mod.rs`, "wss").
/// A client that offers ALPN with neither protocol is refused in the handshake; a client that
/// offers no ALPN is served.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The most ciphertext a session holds between reads: one handshake message of rustls's
/// maximum size (64 KiB) spread over records, plus one incomplete record of the largest size
/// TLS allows (2^14 + 256 bytes of payload and a 5-byte header). More is a broken peer.
pub const TLS_HELD_CIPHERTEXT_MAX_BYTES: usize = 0xffff + 8 * TLS_RECORD_HEADER_BYTES + 16_645;

/// A TLS record header: content type (1), version (2), length (2).
const TLS_RECORD_HEADER_BYTES: usize = 5;

/// The largest plaintext rustls puts in one record.
const TLS_RECORD_PLAINTEXT_MAX_BYTES: usize = 16_384;

/// An upper bound on what one record adds to its plaintext: header (5), TLS 1.2 explicit nonce
/// (8), AEAD tag (16), TLS 1.3 inner content type (1). Used to size the encrypt output; rustls
/// reports the exact size if this were ever short.
const TLS_RECORD_OVERHEAD_MAX_BYTES: usize = 32;

/// Bound on rustls state transitions in one call that produce no progress we can see (each
/// transition either consumes input, emits bytes or ends the call); guards against a loop.
const TLS_STATE_STEPS_MAX: usize = 1024;

/// The crypto provider every TLS listener uses (ring; docs/ARCHITECTURE.md "TLS" has the
/// measurement against aws-lc-rs).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a certificate and key could not become a `ServerConfig`.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls_cert_file {path}: {source}")]
    CertFile {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("tls_cert_file {path}: no CERTIFICATE block in the PEM file")]
    NoCertificate { path: String },
    #[error("tls_key_file {path}: {source}")]
    KeyFile {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1)
/// and builds the listener's `ServerConfig` with [`crypto_provider`].
pub fn server_config_from_pem_files(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let cert_path = cert_file.display().to_string();
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::CertFile {
            path: cert_path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsConfigError::KeyFile {
        path: key_file.display().to_string(),
        source,
    })?;
    server_config(crypto_provider(), certs, key)
}

/// [`server_config_from_pem_files`] from PEM text in memory (tests, benches).
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::CertFile {
            path: "<memory>".into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: "<memory>".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsConfigError::KeyFile {
        path: "<memory>".into(),
        source,
    })?;
    server_config(crypto_provider(), certs, key)
}

/// The listener's `ServerConfig` with a given provider: TLS 1.3 and 1.2, no client
/// certificates, ALPN `holdfast/1` then `http/1.1` (server order wins), no session resumption (a resumption cache or ticket key
/// would be state shared by every shard; a full handshake is measured in docs/ARCHITECTURE.md).
pub fn server_config(
    provider: Arc<CryptoProvider>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    config.alpn_protocols = vec![ALPN_HOLDFAST.to_vec(), ALPN_HTTP_1_1.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The current `ServerConfig` of a TLS listener, shared by every shard, replaceable at run time
/// (certificate reload). Shards read it through a [`TlsConfigCache`]: one atomic load per
/// handshake, and the lock only after a reload.
#[derive(Debug)]
pub struct TlsConfigSource {
    /// Bumped (under `current`'s lock) on every replacement.
    generation: AtomicU64,
    current: Mutex<Arc<ServerConfig>>,
}

impl TlsConfigSource {
    pub fn new(config: Arc<ServerConfig>) -> Arc<Self> {
        Arc::new(Self {
            generation: AtomicU64::new(0),
            current: Mutex::new(config),
        })
    }

    /// Makes `config` the one new handshakes use. Sessions already started keep theirs.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *current = config;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Re-reads the certificate and key files; on any error the current config stays.
    pub fn reload_from_pem_files(
        &self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<(), TlsConfigError> {
        let config = server_config_from_pem_files(cert_file, key_file)?;
        self.replace(config);
        Ok(())
    }

    /// How many times the config was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> (u64, Arc<ServerConfig>) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock `replace` holds while bumping it: the pair is consistent.
        (
            self.generation.load(Ordering::Acquire),
            Arc::clone(&current),
        )
    }
}

/// One shard's view of a [`TlsConfigSource`].
#[derive(Debug)]
pub struct TlsConfigCache {
    source: Arc<TlsConfigSource>,
    generation: u64,
    config: Arc<ServerConfig>,
}

impl TlsConfigCache {
    pub fn new(source: Arc<TlsConfigSource>) -> Self {
        let (generation, config) = source.snapshot();
        Self {
            source,
            generation,
            config,
        }
    }

    /// The config a new handshake uses: the cached one unless the source was replaced since.
    pub fn current(&mut self) -> &Arc<ServerConfig> {
        if self.source.generation() != self.generation {
            (self.generation, self.config) = self.source.snapshot();
        }
        &self.config
    }

    /// A new session with the current config.
    pub fn new_session(&mut self) -> Result<TlsSession, TlsError> {
        TlsSession::new(Arc::clone(self.current()))
    }
}

/// Why a TLS session failed. The connection is unusable after any of these (the caller sends
/// what the call left in its output, usually a fatal alert, then closes that connection only).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS: more than {max_bytes} bytes of incomplete records held")]
    HeldTooLarge { max_bytes: usize },
    #[error("TLS: the handshake is not complete")]
    HandshakeNotComplete,
    #[error("TLS: the session is closed")]
    Closed,
    #[error("TLS: encrypt: {0}")]
    Encrypt(EncryptError),
    #[error("TLS: encode: {0}")]
    Encode(EncodeError),
    #[error("TLS: unexpected session state {0}")]
    UnexpectedState(&'static str),
}

/// What one [`TlsSession::receive`] call saw, besides plaintext and output bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The handshake completed during this call.
    pub handshake_completed: bool,
    /// The peer sent close_notify: no more plaintext comes (the TLS end of stream).
    pub peer_closed: bool,
    /// The plaintext callback asked to stop; the rest of the input was dropped.
    pub stopped: bool,
}

/// One connection's TLS state. Holds no buffer between calls unless a record is incomplete.
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext rustls could not use yet: an incomplete record, after the records of a
    /// handshake message that spans records (which rustls has read and keeps, reassembled in
    /// place). Unallocated whenever it is empty.
    held: Vec<u8>,
    /// The front of `held` that rustls has read and keeps (no longer record-framed).
    held_kept_bytes: usize,
    handshake_done: bool,
    peer_closed: bool,
    /// The plaintext consumer stopped or an error happened: further input is dropped.
    stopped: bool,
    /// rustls failed, or its input buffer was let go while it still kept bytes in it: it is
    /// never called with input again (it would read a buffer it no longer matches).
    failed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("held_bytes", &self.held.len())
            .field("handshake_done", &self.handshake_done)
            .field("peer_closed", &self.peer_closed)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            held: Vec::new(),
            held_kept_bytes: 0,
            handshake_done: false,
            peer_closed: false,
            stopped: false,
            failed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        !self.handshake_done
    }

    /// The peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The negotiated ALPN protocol (`Some(ALPN_HOLDFAST)` or `None` when the client offered none).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    pub fn negotiated_cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// Bytes this session holds in its own buffer (capacity, not length): zero unless a record
    /// is incomplete.
    pub fn held_capacity_bytes(&self) -> usize {
        self.held.capacity()
    }

    /// Takes ciphertext just read. Decrypts it in place in `incoming` (only an incomplete
    /// record's bytes are copied, into the session), calls `on_plaintext` with the plaintext
    /// in stream order, and appends to `out` whatever must be sent (handshake messages,
    /// alerts). `on_plaintext` returning `Break` stops the session reading: the rest of the
    /// input is dropped and later input too. On `Err`, `out` may end with a fatal alert for the
    /// peer: send it, then close the connection.
    pub fn receive<F>(
        &mut self,
        incoming: &mut [u8],
        out: &mut BytesMut,
        mut on_plaintext: F,
    ) -> Result<Received, TlsError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        let mut received = Received::default();
        if self.stopped || self.failed {
            received.stopped = true;
            return Ok(received);
        }
        let result = self.receive_inner(incoming, out, &mut on_plaintext, &mut received);
        if result.is_err() {
            self.stopped = true;
            self.release_held();
            self.flush_alert(out);
        }
        result.map(|()| received)
    }

    fn receive_inner(
        &mut self,
        incoming: &mut [u8],
        out: &mut BytesMut,
        on_plaintext: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
        received: &mut Received,
    ) -> Result<(), TlsError> {
        let mut input = incoming;
        // First complete what is held, copying only as many input bytes as that takes.
        while !self.held.is_empty() {
            let needed = match incomplete_bytes_needed(&self.held[self.held_kept_bytes..]) {
                Some(needed) => needed,
                // Only bytes rustls keeps (a handshake message spanning records): the next
                // record joins them.
                None => next_record_bytes(input),
            };
            let take = needed.min(input.len());
            if take == 0 {
                return Ok(());
            }
            if self.held.len() + take > TLS_HELD_CIPHERTEXT_MAX_BYTES {
                return Err(TlsError::HeldTooLarge {
                    max_bytes: TLS_HELD_CIPHERTEXT_MAX_BYTES,
                });
            }
            self.held.extend_from_slice(&input[..take]);
            input = &mut input[take..];
            if incomplete_bytes_needed(&self.held[self.held_kept_bytes..]).is_some() {
                // Only the header was completed (the body length is known now), or the input
                // ran out.
                continue;
            }
            let mut held = std::mem::take(&mut self.held);
            let step = drive(
                &mut self.conn,
                &mut held,
                out,
                on_plaintext,
                received,
                &mut self.handshake_done,
                &mut self.peer_closed,
            );
            self.held = held;
            let consumed = step?;
            if received.stopped || received.peer_closed {
                self.stopped |= received.stopped;
                self.release_held();
                return Ok(());
            }
            // rustls processed every record held; what it did not discard it keeps.
            self.held.drain(..consumed);
            self.held_kept_bytes = self.held.len();
        }
        self.release_held();
        if input.is_empty() {
            return Ok(());
        }
        // The common case: whole records decrypted where they lie.
        let whole_records_end = input.len() - incomplete_tail_bytes(input);
        let consumed = drive(
            &mut self.conn,
            input,
            out,
            on_plaintext,
            received,
            &mut self.handshake_done,
            &mut self.peer_closed,
        )?;
        if received.stopped {
            self.stopped = true;
            return Ok(());
        }
        if received.peer_closed {
            // Anything after close_notify is not read.
            return Ok(());
        }
        let rest = &input[consumed..];
        if !rest.is_empty() {
            if rest.len() > TLS_HELD_CIPHERTEXT_MAX_BYTES {
                return Err(TlsError::HeldTooLarge {
                    max_bytes: TLS_HELD_CIPHERTEXT_MAX_BYTES,
                });
            }
            self.held = rest.to_vec();
            // rustls processed every whole record; those it did not discard it keeps (in
            // place, reassembled: their record headers are gone).
            self.held_kept_bytes = whole_records_end.saturating_sub(consumed);
        }
        Ok(())
    }

    /// Encrypts `plaintext` (any length; records of up to 16 KiB) onto the end of `out`.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), TlsError> {
        if plaintext.is_empty() {
            return Ok(());
        }
        let records = plaintext.len().div_ceil(TLS_RECORD_PLAINTEXT_MAX_BYTES);
        let bound = plaintext.len() + records * TLS_RECORD_OVERHEAD_MAX_BYTES;
        self.with_write_traffic(out, |write, out| {
            write_into(out, bound, |slice| write.encrypt(plaintext, slice))
        })
    }

    /// Appends a close_notify alert to `out` (a clean TLS close). Before the handshake
    /// completes there is nothing to close: appends nothing.
    pub fn close_notify(&mut self, out: &mut BytesMut) -> Result<(), TlsError> {
        if !self.handshake_done {
            return Ok(());
        }
        self.with_write_traffic(out, |write, out| {
            write_into(
                out,
                TLS_RECORD_HEADER_BYTES + TLS_RECORD_OVERHEAD_MAX_BYTES,
                |slice| write.queue_close_notify(slice),
            )
        })
    }

    /// Brings rustls to its WriteTraffic state (emitting any pending handshake message, such
    /// as a key update, into `out` first) and runs `write` in it.
    fn with_write_traffic<R>(
        &mut self,
        out: &mut BytesMut,
        write: impl FnOnce(
            &mut WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut BytesMut,
        ) -> Result<R, TlsError>,
    ) -> Result<R, TlsError> {
        if !self.handshake_done {
            return Err(TlsError::HandshakeNotComplete);
        }
        if self.failed {
            return Err(TlsError::Closed);
        }
        for _ in 0..TLS_STATE_STEPS_MAX {
            // The held bytes are the buffer rustls expects to see again; they hold no whole
            // record after a receive, so nothing is consumed here.
            let status = self.conn.process_tls_records(&mut self.held);
            match status.state? {
                ConnectionState::WriteTraffic(mut traffic) => return write(&mut traffic, out),
                ConnectionState::EncodeTlsData(mut encode) => {
                    let required = encode_required_bytes(&mut encode);
                    write_into(out, required, |slice| encode.encode(slice))?;
                }
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::ReadTraffic(mut read) => {
                    // Only after the consumer stopped: nobody reads this plaintext any more.
                    while let Some(record) = read.next_record() {
                        record?;
                    }
                }
                ConnectionState::PeerClosed => {}
                ConnectionState::Closed => return Err(TlsError::Closed),
                ConnectionState::BlockedHandshake => return Err(TlsError::HandshakeNotComplete),
                other => return Err(TlsError::UnexpectedState(state_name(&other))),
            }
        }
        Err(TlsError::UnexpectedState("no WriteTraffic state"))
    }

    /// After an error rustls may have queued a fatal alert: encode it for the peer.
    ///
    /// Only while rustls has TLS bytes queued (`wants_write`): each call takes a queued chunk
    /// before it looks at input, and a call with nothing queued would go on to read the input
    /// buffer, which after an error is no longer the one rustls expects (rustls indexes it by
    /// its own progress and panics on a shorter one).
    fn flush_alert(&mut self, out: &mut BytesMut) {
        self.failed = true;
        for _ in 0..TLS_STATE_STEPS_MAX {
            if !self.conn.wants_write() {
                return;
            }
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let required = encode_required_bytes(&mut encode);
                    if write_into(out, required, |slice| encode.encode(slice)).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn release_held(&mut self) {
        if self.held_kept_bytes > 0 {
            self.failed = true;
        }
        self.held = Vec::new();
        self.held_kept_bytes = 0;
    }
}

/// Plaintext of a record up to this size reaches the sink through a stack copy; a larger
/// record through a transient heap copy (the seam's sink takes `&mut [u8]`, rustls lends `&[u8]`).
const SINK_STACK_COPY_BYTES: usize = 2048;

/// Heap rustls keeps per idle session beyond `size_of::<TlsSession>()` (keys, state, retained
/// queues), as measured by `benches/tls_idle_memory.rs` for TLS 1.3 with AES-GCM; reported in
/// [`TlsState::held_bytes`], which cannot see inside rustls.
pub const RUSTLS_IDLE_HEAP_BYTES: usize = 2_196;

/// Why a TLS connection was refused, for the transport seam's error (a copyable summary; the
/// rustls error itself is logged where it happens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsRefusal {
    #[error("TLS handshake failed")]
    Handshake,
    #[error("TLS record refused after the handshake")]
    Traffic,
}

/// What [`TlsState::on_received`] did with its input (mirrors the transport seam's `Outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsOutcome {
    /// All input was used; keep reading (check `has_wire_bytes`).
    Continue,
    /// The peer sent close_notify: send what is queued, then close.
    PeerClosed,
    /// The sink asked to stop; the rest of the input was dropped.
    SinkStopped,
}

/// A TLS connection's transport state, in the shape of the shard's transport seam
/// (`transport/mod.rs`: `on_received`, `wrap_outbound`, `has_wire_bytes`, `close`): the
/// session, the TLS bytes of its own it has to send (handshake flight, alert, close_notify),
/// and Holdfast frames queued before the handshake completed. Each buffer is unallocated when
/// empty, so an idle established connection holds none.
pub struct TlsState {
    session: TlsSession,
    /// TLS bytes no send carried yet.
    wire: BytesMut,
    /// Holdfast frames queued before the handshake completed (sent encrypted once it has).
    early_plaintext: BytesMut,
    close_queued: bool,
    close_sent: bool,
    /// Plaintext arrived and the layer above chose Holdfast frames (`transport/mod.rs`, wss):
    /// the choice is made once, on the first plaintext run.
    pub(super) holdfast_chosen: bool,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("session", &self.session)
            .field("wire_bytes", &self.wire.len())
            .field("early_plaintext_bytes", &self.early_plaintext.len())
            .field("close_queued", &self.close_queued)
            .finish()
    }
}

impl TlsState {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        Ok(Self {
            session: TlsSession::new(config)?,
            wire: BytesMut::new(),
            early_plaintext: BytesMut::new(),
            close_queued: false,
            close_sent: false,
            holdfast_chosen: false,
        })
    }

    pub fn session(&self) -> &TlsSession {
        &self.session
    }

    /// The handshake is done: the peer can take Holdfast frames.
    pub fn is_established(&self) -> bool {
        !self.session.is_handshaking()
    }

    /// Decrypts `bytes` in place and hands the plaintext to `sink` in stream order. On `Err`
    /// a fatal alert may be queued (`has_wire_bytes`): send it, then close.
    pub fn on_received<S>(&mut self, bytes: &mut [u8], mut sink: S) -> Result<TlsOutcome, TlsError>
    where
        S: FnMut(&mut [u8]) -> ControlFlow<()>,
    {
        let received = self.session.receive(bytes, &mut self.wire, |plaintext| {
            if plaintext.len() <= SINK_STACK_COPY_BYTES {
                let mut copy = [0u8; SINK_STACK_COPY_BYTES];
                copy[..plaintext.len()].copy_from_slice(plaintext);
                sink(&mut copy[..plaintext.len()])
            } else {
                sink(&mut plaintext.to_vec())
            }
        })?;
        if received.handshake_completed && !self.early_plaintext.is_empty() {
            let early = std::mem::take(&mut self.early_plaintext);
            self.session.encrypt(&early, &mut self.wire)?;
        }
        Ok(if received.stopped {
            TlsOutcome::SinkStopped
        } else if received.peer_closed {
            TlsOutcome::PeerClosed
        } else {
            TlsOutcome::Continue
        })
    }

    /// [`Self::on_received`] for the transport seam: a failure becomes a [`TlsRefusal`] (the
    /// rustls error is logged at debug level; the shard logs the refusal, rate-limited).
    pub fn on_received_for_seam<S>(
        &mut self,
        bytes: &mut [u8],
        sink: S,
    ) -> Result<TlsOutcome, TlsRefusal>
    where
        S: FnMut(&mut [u8]) -> ControlFlow<()>,
    {
        let handshaking = self.session.is_handshaking();
        self.on_received(bytes, sink).map_err(|error| {
            tracing::debug!(%error, "TLS session failed");
            match handshaking {
                true => TlsRefusal::Handshake,
                false => TlsRefusal::Traffic,
            }
        })
    }

    /// [`Self::wrap_outbound`] for the transport seam, which cannot fail: a batch that cannot
    /// be encrypted (the session is closed or its keys are exhausted) is dropped, and the
    /// session reads nothing more, so the connection ends at its next read.
    pub fn wrap_outbound_for_seam(&mut self, batch: &[u8]) -> Bytes {
        match self.wrap_outbound(batch) {
            Ok(wire) => wire,
            Err(error) => {
                tracing::debug!(%error, "TLS encrypt failed; the connection ends");
                self.session.stopped = true;
                std::mem::take(&mut self.wire).freeze()
            }
        }
    }

    /// The wire bytes of one send: this session's own TLS bytes first, then `batch` (whole
    /// Holdfast frames, possibly empty) encrypted, then close_notify if a close was queued.
    /// Before the handshake completes, `batch` is kept and sent once it has.
    pub fn wrap_outbound(&mut self, batch: &[u8]) -> Result<Bytes, TlsError> {
        if self.is_established() {
            self.session.encrypt(batch, &mut self.wire)?;
            if self.close_queued && !self.close_sent {
                self.session.close_notify(&mut self.wire)?;
                self.close_sent = true;
            }
        } else {
            self.early_plaintext.extend_from_slice(batch);
        }
        Ok(std::mem::take(&mut self.wire).freeze())
    }

    /// This session has bytes of its own to send (a handshake flight, an alert, a close).
    pub fn has_wire_bytes(&self) -> bool {
        !self.wire.is_empty() || (self.close_queued && !self.close_sent && self.is_established())
    }

    /// The server ends the session: a close_notify goes with the next send (nothing before the
    /// handshake completes; the TCP close says it).
    pub fn close(&mut self) {
        self.close_queued = true;
    }

    /// User-space bytes this connection's TLS holds: the state, its buffers, and rustls's heap
    /// (the measured [`RUSTLS_IDLE_HEAP_BYTES`]).
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.session.held_capacity_bytes()
            + self.wire.capacity()
            + self.early_plaintext.capacity()
            + RUSTLS_IDLE_HEAP_BYTES
    }
}

/// Runs rustls over `buf` until it needs more input (or the consumer stops, or the peer
/// closes); returns how many bytes from the front of `buf` rustls is done with.
fn drive(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    out: &mut BytesMut,
    on_plaintext: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    received: &mut Received,
    handshake_done: &mut bool,
    peer_closed: &mut bool,
) -> Result<usize, TlsError> {
    let mut consumed = 0;
    for _ in 0..TLS_STATE_STEPS_MAX {
        let status = conn.process_tls_records(&mut buf[consumed..]);
        let mut discard = status.discard;
        let mut done = false;
        match status.state? {
            ConnectionState::ReadTraffic(mut read) => {
                while let Some(record) = read.next_record() {
                    let record = record?;
                    discard += record.discard;
                    if !received.stopped && on_plaintext(record.payload).is_break() {
                        received.stopped = true;
                    }
                }
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                let required = encode_required_bytes(&mut encode);
                write_into(out, required, |slice| encode.encode(slice))?;
            }
            // The bytes are in `out`, which the caller sends: that is their transmission.
            ConnectionState::TransmitTlsData(transmit) => transmit.done(),
            ConnectionState::BlockedHandshake => done = true,
            ConnectionState::WriteTraffic(_) => {
                if !*handshake_done {
                    *handshake_done = true;
                    received.handshake_completed = true;
                }
                done = true;
            }
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                received.peer_closed = true;
                done = true;
            }
            ConnectionState::Closed => done = true,
            other => return Err(TlsError::UnexpectedState(state_name(&other))),
        }
        consumed += discard;
        if received.stopped {
            return Ok(buf.len());
        }
        if done {
            return Ok(consumed);
        }
    }
    Err(TlsError::UnexpectedState("state loop did not settle"))
}

/// How many bytes an `EncodeTlsData` needs: rustls says so when given an empty slice.
fn encode_required_bytes<D>(encode: &mut rustls::unbuffered::EncodeTlsData<'_, D>) -> usize {
    match encode.encode(&mut []) {
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        // Empty record (or already encoded): nothing to reserve.
        _ => 0,
    }
}

/// Errors of rustls's encode and encrypt calls, for [`write_into`].
trait WriteError {
    fn required_size(&self) -> Option<usize>;
    fn into_tls(self) -> TlsError;
}

impl WriteError for EncodeError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncodeError::InsufficientSize(e) => Some(e.required_size),
            EncodeError::AlreadyEncoded => None,
        }
    }
    fn into_tls(self) -> TlsError {
        TlsError::Encode(self)
    }
}

impl WriteError for EncryptError {
    fn required_size(&self) -> Option<usize> {
        match self {
            EncryptError::InsufficientSize(e) => Some(e.required_size),
            EncryptError::EncryptExhausted => None,
        }
    }
    fn into_tls(self) -> TlsError {
        TlsError::Encrypt(self)
    }
}

/// Grows `out` by `reserve_bytes`, lets `write` fill the new tail and keeps what it wrote;
/// retries once with the exact size if rustls says the tail was short.
fn write_into<E: WriteError>(
    out: &mut BytesMut,
    reserve_bytes: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut size = reserve_bytes;
    for _ in 0..2 {
        out.resize(start + size, 0);
        match write(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(e) => {
                out.truncate(start);
                match e.required_size() {
                    Some(required) if required > size => size = required,
                    _ => return Err(e.into_tls()),
                }
            }
        }
    }
    Err(TlsError::UnexpectedState("encrypt output size"))
}

/// `None` when `buf` is whole records; otherwise how many more bytes complete the last
/// record's header or body.
fn incomplete_bytes_needed(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let left = buf.len() - at;
        if left == 0 {
            return None;
        }
        if left < TLS_RECORD_HEADER_BYTES {
            return Some(TLS_RECORD_HEADER_BYTES - left);
        }
        let body = u16::from_be_bytes([buf[at + 3], buf[at + 4]]) as usize;
        let record = TLS_RECORD_HEADER_BYTES + body;
        if left < record {
            return Some(record - left);
        }
        at += record;
    }
}

/// How many bytes at the end of `buf` are an incomplete record (0 when `buf` is whole records).
fn incomplete_tail_bytes(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let left = buf.len() - at;
        if left < TLS_RECORD_HEADER_BYTES {
            return left;
        }
        let record = next_record_bytes(&buf[at..]);
        if left < record {
            return left;
        }
        at += record;
    }
}

/// The bytes of the record that starts `input` (its header alone while that is cut short).
fn next_record_bytes(input: &[u8]) -> usize {
    match input {
        [_, _, _, hi, lo, ..] => TLS_RECORD_HEADER_BYTES + u16::from_be_bytes([*hi, *lo]) as usize,
        _ => TLS_RECORD_HEADER_BYTES,
    }
}

fn state_name<D>(state: &ConnectionState<'_, '_, D>) -> &'static str {
    match state {
        ConnectionState::ReadTraffic(_) => "ReadTraffic",
        ConnectionState::PeerClosed => "PeerClosed",
        ConnectionState::Closed => "Closed",
        ConnectionState::ReadEarlyData(_) => "ReadEarlyData",
        ConnectionState::EncodeTlsData(_) => "EncodeTlsData",
        ConnectionState::TransmitTlsData(_) => "TransmitTlsData",
        ConnectionState::BlockedHandshake => "BlockedHandshake",
        ConnectionState::WriteTraffic(_) => "WriteTraffic",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore};
    use std::io::{Read, Write};

    /// A self-signed certificate for `localhost`, made in memory (no key on disk).
    struct TestCert {
        cert_pem: String,
        key_pem: String,
        cert_der: CertificateDer<'static>,
    }

    fn test_cert() -> TestCert {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            cert_der: cert.der().clone(),
        }
    }

    fn server_config_for(cert: &TestCert) -> Arc<ServerConfig> {
        server_config_from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).expect("config")
    }

    fn client_config(
        cert: &TestCert,
        version: &'static rustls::SupportedProtocolVersion,
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert_der.clone()).expect("root");
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    fn client(config: &Arc<ClientConfig>) -> ClientConnection {
        ClientConnection::new(
            Arc::clone(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .expect("client")
    }

    /// Everything the client wants to send, as ciphertext.
    fn client_output(client: &mut ClientConnection) -> Vec<u8> {
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).expect("write_tls");
        }
        bytes
    }

    /// Hands server output to the client; returns the plaintext the client got.
    fn to_client(
        client: &mut ClientConnection,
        mut bytes: &[u8],
    ) -> Result<Vec<u8>, rustls::Error> {
        let mut plaintext = Vec::new();
        while !bytes.is_empty() {
            client.read_tls(&mut bytes).expect("read_tls");
            let state = client.process_new_packets()?;
            let mut chunk = vec![0; state.plaintext_bytes_to_read()];
            client.reader().read_exact(&mut chunk).expect("plaintext");
            plaintext.extend_from_slice(&chunk);
        }
        Ok(plaintext)
    }

    /// Feeds `bytes` to the server in pieces of `piece_bytes`; returns (plaintext, output).
    fn to_server(
        server: &mut TlsSession,
        bytes: &[u8],
        piece_bytes: usize,
    ) -> Result<(Vec<u8>, BytesMut, Received), TlsError> {
        let mut plaintext = Vec::new();
        let mut out = BytesMut::new();
        let mut seen = Received::default();
        for piece in bytes.chunks(piece_bytes.max(1)) {
            let mut piece = piece.to_vec();
            let received = server.receive(&mut piece, &mut out, |p| {
                plaintext.extend_from_slice(p);
                ControlFlow::Continue(())
            })?;
            seen.handshake_completed |= received.handshake_completed;
            seen.peer_closed |= received.peer_closed;
            seen.stopped |= received.stopped;
        }
        Ok((plaintext, out, seen))
    }

    /// Runs the handshake, feeding the server `piece_bytes` at a time.
    fn handshake(server: &mut TlsSession, client: &mut ClientConnection, piece_bytes: usize) {
        let mut completed = false;
        for _ in 0..16 {
            let bytes = client_output(client);
            let (plaintext, out, received) =
                to_server(server, &bytes, piece_bytes).expect("server handshake");
            assert!(plaintext.is_empty());
            completed |= received.handshake_completed;
            to_client(client, &out).expect("client handshake");
            if completed && !client.is_handshaking() && !client.wants_write() {
                return;
            }
        }
        panic!("handshake did not complete");
    }

    /// A server session and a client offering `alpn`, before any byte has passed.
    fn session_and_client(
        cert: &TestCert,
        version: &'static rustls::SupportedProtocolVersion,
        alpn: &[&[u8]],
    ) -> (TlsSession, ClientConnection) {
        let server = TlsSession::new(server_config_for(cert)).expect("session");
        (server, client(&client_config(cert, version, alpn)))
    }

    fn pair(
        cert: &TestCert,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (TlsSession, ClientConnection) {
        let (mut server, mut client) = session_and_client(cert, version, &[ALPN_HOLDFAST]);
        handshake(&mut server, &mut client, usize::MAX);
        (server, client)
    }

    const VERSIONS: [(&rustls::SupportedProtocolVersion, ProtocolVersion); 2] = [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ];

    #[test]
    fn handshake_negotiates_each_version_and_alpn_holdfast() {
        let cert = test_cert();
        for (version, expected) in VERSIONS {
            let (server, client) = pair(&cert, version);
            assert!(!server.is_handshaking());
            assert_eq!(server.protocol_version(), Some(expected));
            assert_eq!(client.protocol_version(), Some(expected));
            assert_eq!(server.alpn_protocol(), Some(ALPN_HOLDFAST));
            assert_eq!(client.alpn_protocol(), Some(ALPN_HOLDFAST));
            assert_eq!(server.held_capacity_bytes(), 0);
        }
    }

    #[test]
    fn handshake_fed_one_byte_at_a_time_completes() {
        let cert = test_cert();
        for (version, expected) in VERSIONS {
            let (mut server, mut client) = session_and_client(&cert, version, &[ALPN_HOLDFAST]);
            handshake(&mut server, &mut client, 1);
            assert_eq!(server.protocol_version(), Some(expected));
            assert_eq!(server.held_capacity_bytes(), 0);
        }
    }

    /// Re-frames the first flight's handshake records into records of `payload_bytes` each (a
    /// handshake message spanning records, which TLS allows and rustls joins).
    fn fragment_handshake_records(flight: &[u8], payload_bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < flight.len() {
            let body = u16::from_be_bytes([flight[at + 3], flight[at + 4]]) as usize;
            let (header, payload) = (&flight[at..at + 5], &flight[at + 5..at + 5 + body]);
            for piece in payload.chunks(payload_bytes) {
                out.extend_from_slice(&header[..3]);
                out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
                out.extend_from_slice(piece);
            }
            at += 5 + body;
        }
        out
    }

    #[test]
    fn client_hello_spanning_records_completes_whole_or_byte_by_byte() {
        let cert = test_cert();
        for (version, expected) in VERSIONS {
            for piece_bytes in [usize::MAX, 1, 50, 95] {
                let (mut server, mut client) = session_and_client(&cert, version, &[ALPN_HOLDFAST]);
                let flight = client_output(&mut client);
                let hello = fragment_handshake_records(&flight, 60);
                assert!(hello.len() >= flight.len() + 2 * 5, "three records or more");
                let (_, out, _) = to_server(&mut server, &hello, piece_bytes).unwrap();
                assert!(
                    !out.is_empty(),
                    "the server answered the joined ClientHello ({piece_bytes}, held {})",
                    server.held_capacity_bytes()
                );
                to_client(&mut client, &out).unwrap();
                handshake(&mut server, &mut client, usize::MAX);
                assert_eq!(server.protocol_version(), Some(expected));
                assert_eq!(server.held_capacity_bytes(), 0);
            }
        }
    }

    #[test]
    fn client_without_alpn_is_served_with_no_protocol() {
        let cert = test_cert();
        let (mut server, mut client) = session_and_client(&cert, &rustls::version::TLS13, &[]);
        handshake(&mut server, &mut client, usize::MAX);
        assert_eq!(server.alpn_protocol(), None);
        assert!(!server.is_handshaking());
    }

    #[test]
    fn client_offering_only_another_alpn_is_refused_with_an_alert() {
        let cert = test_cert();
        let (mut server, mut client) = session_and_client(&cert, &rustls::version::TLS13, &[b"h2"]);
        let hello = client_output(&mut client);
        let mut out = BytesMut::new();
        let err = server
            .receive(&mut hello.clone(), &mut out, |_| ControlFlow::Continue(()))
            .expect_err("no common ALPN");
        assert!(
            matches!(err, TlsError::Rustls(rustls::Error::NoApplicationProtocol)),
            "{err}"
        );
        let client_err = to_client(&mut client, &out).expect_err("client sees the alert");
        assert_eq!(
            client_err,
            rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
        );
        // The session reads nothing more.
        let received = server
            .receive(&mut hello.clone(), &mut out, |_| panic!())
            .unwrap();
        assert!(received.stopped);
    }

    #[test]
    fn a_failed_session_is_never_driven_again_and_every_call_after_is_safe() {
        let cert = test_cert();
        // A ClientHello header claiming 0x020304 bytes: rustls starts joining it, then fails.
        for bytes in [
            vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
            // A whole record holding the start of a 9-byte ClientHello: rustls keeps it.
            vec![0x16, 0x03, 0x01, 0x00, 0x04, 1, 0, 0, 9],
        ] {
            let mut state = TlsState::new(server_config_for(&cert)).unwrap();
            let mut input = bytes.clone();
            let first = state.on_received(&mut input, |_| ControlFlow::Continue(()));
            // Either refused at once, or kept for more and then refused.
            if first.is_ok() {
                let mut alert = vec![0x15, 0x03, 0x03, 0x00, 0x02, 2, 40];
                assert!(
                    state
                        .on_received(&mut alert, |_| ControlFlow::Continue(()))
                        .is_err(),
                    "an alert in the middle of a handshake message is an error"
                );
            }
            let _alert = state.wrap_outbound(b"an Error frame").unwrap();
            let mut again = bytes.clone();
            // No panic, no plaintext, nothing more read.
            let _ = state.on_received(&mut again, |_| panic!("read after failure"));
            state.close();
            let _ = state.wrap_outbound_for_seam(b"after close");
            assert_eq!(state.session().held_capacity_bytes(), 0);
        }
    }

    #[test]
    fn not_tls_at_all_is_an_error() {
        let cert = test_cert();
        let mut server = TlsSession::new(server_config_for(&cert)).unwrap();
        let mut out = BytesMut::new();
        let mut bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let err = server.receive(&mut bytes, &mut out, |_| ControlFlow::Continue(()));
        assert!(err.is_err());
        assert_eq!(server.held_capacity_bytes(), 0);
    }

    /// Three records of different sizes, as the client's ciphertext.
    fn three_records(client: &mut ClientConnection) -> (Vec<u8>, Vec<u8>) {
        let mut plaintext = Vec::new();
        for (i, len) in [17usize, 40, 95].into_iter().enumerate() {
            let part: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            client.writer().write_all(&part).unwrap();
            plaintext.extend_from_slice(&part);
        }
        (client_output(client), plaintext)
    }

    #[test]
    fn client_records_split_at_every_byte_boundary_arrive_whole_and_in_order() {
        let cert = test_cert();
        for (version, _) in VERSIONS {
            let (mut server, mut client) = pair(&cert, version);
            let (ciphertext, plaintext) = three_records(&mut client);
            // One stream, cut at every boundary: fed a byte at a time.
            let (got, out, _) = to_server(&mut server, &ciphertext, 1).unwrap();
            assert_eq!(got, plaintext);
            assert!(out.is_empty());
            assert_eq!(server.held_capacity_bytes(), 0);
            // Each single cut point, in its own session: the two halves give the whole.
            for cut in 0..=ciphertext.len() {
                let (mut server, mut client) = pair(&cert, version);
                let (ciphertext, plaintext) = three_records(&mut client);
                let (mut head, mut tail) = (ciphertext[..cut].to_vec(), ciphertext[cut..].to_vec());
                let mut got = Vec::new();
                let mut out = BytesMut::new();
                for piece in [&mut head, &mut tail] {
                    server
                        .receive(piece, &mut out, |p| {
                            got.extend_from_slice(p);
                            ControlFlow::Continue(())
                        })
                        .unwrap();
                }
                assert_eq!(got, plaintext, "cut at {cut}");
                assert_eq!(server.held_capacity_bytes(), 0, "cut at {cut}");
            }
        }
    }

    #[test]
    fn server_batches_reach_the_client_at_every_byte_boundary() {
        let cert = test_cert();
        for (version, _) in VERSIONS {
            let (mut server, mut client) = pair(&cert, version);
            let mut out = BytesMut::new();
            let mut expected = Vec::new();
            // A small batch, one larger than a record (two records), another small one.
            for len in [5usize, 20_000, 300] {
                let batch: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
                server.encrypt(&batch, &mut out).unwrap();
                expected.extend_from_slice(&batch);
            }
            let mut got = Vec::new();
            for byte in out.chunks(1) {
                got.extend(to_client(&mut client, byte).unwrap());
            }
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn large_client_writes_spanning_records_arrive_in_order() {
        let cert = test_cert();
        for (version, _) in VERSIONS {
            let (mut server, mut client) = pair(&cert, version);
            let plaintext: Vec<u8> = (0..70_000u32).map(|b| (b % 253) as u8).collect();
            client.set_buffer_limit(None);
            client.writer().write_all(&plaintext).unwrap();
            let ciphertext = client_output(&mut client);
            for piece_bytes in [1000, 4096, 16_389, ciphertext.len()] {
                let (mut server2, mut client2) = pair(&cert, version);
                client2.set_buffer_limit(None);
                client2.writer().write_all(&plaintext).unwrap();
                let ciphertext2 = client_output(&mut client2);
                let (got, _, _) = to_server(&mut server2, &ciphertext2, piece_bytes).unwrap();
                assert_eq!(got, plaintext, "pieces of {piece_bytes}");
                assert_eq!(server2.held_capacity_bytes(), 0);
            }
            let (got, _, _) = to_server(&mut server, &ciphertext, 7).unwrap();
            assert_eq!(got, plaintext);
        }
    }

    #[test]
    fn corrupt_record_is_an_error_for_that_session_only() {
        let cert = test_cert();
        for (version, _) in VERSIONS {
            let (mut bad, mut bad_client) = pair(&cert, version);
            let (mut good, mut good_client) = pair(&cert, version);
            bad_client.writer().write_all(b"hello there").unwrap();
            let mut ciphertext = client_output(&mut bad_client);
            let last = ciphertext.len() - 1;
            ciphertext[last] ^= 0x01; // in the AEAD tag
            let mut out = BytesMut::new();
            let mut got = Vec::new();
            let err = bad
                .receive(&mut ciphertext, &mut out, |p| {
                    got.extend_from_slice(p);
                    ControlFlow::Continue(())
                })
                .expect_err("corrupt record");
            assert!(
                matches!(err, TlsError::Rustls(rustls::Error::DecryptError)),
                "{err}"
            );
            assert!(got.is_empty(), "no plaintext from a corrupt record");
            assert_eq!(bad.held_capacity_bytes(), 0);
            // The peer is told (bad_record_mac), and the session takes nothing more.
            assert_eq!(
                to_client(&mut bad_client, &out).expect_err("alert"),
                rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
            );
            // Another session on the same config is untouched.
            good_client.writer().write_all(b"still fine").unwrap();
            let bytes = client_output(&mut good_client);
            let (got, _, _) = to_server(&mut good, &bytes, usize::MAX).unwrap();
            assert_eq!(got, b"still fine");
        }
    }

    #[test]
    fn oversized_record_header_is_an_error() {
        let cert = test_cert();
        let (mut server, _client) = pair(&cert, &rustls::version::TLS13);
        // Application data, TLS 1.2 legacy version, length 65535 (> 2^14 + 256).
        let mut header = vec![0x17, 0x03, 0x03, 0xff, 0xff];
        let mut out = BytesMut::new();
        let result = server.receive(&mut header, &mut out, |_| ControlFlow::Continue(()));
        let err = match result {
            Err(err) => err,
            // Held as an incomplete record: the body must be refused when it arrives.
            Ok(_) => {
                let mut body = vec![0u8; 65_535];
                server
                    .receive(&mut body, &mut out, |_| ControlFlow::Continue(()))
                    .expect_err("record too large")
            }
        };
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        assert_eq!(server.held_capacity_bytes(), 0);
    }

    #[test]
    fn client_close_notify_ends_the_stream_after_its_data() {
        let cert = test_cert();
        for (version, _) in VERSIONS {
            let (mut server, mut client) = pair(&cert, version);
            client.writer().write_all(b"last words").unwrap();
            client.send_close_notify();
            let mut bytes = client_output(&mut client);
            // Whatever follows close_notify is not read.
            bytes.extend_from_slice(b"trailing garbage");
            let (got, _, received) = to_server(&mut server, &bytes, usize::MAX).unwrap();
            assert_eq!(got, b"last words");
            assert!(received.peer_closed);
            assert!(server.peer_closed());
            assert_eq!(server.held_capacity_bytes(), 0);
        }
    }

    #[test]
    fn server_close_notify_reaches_the_client() {
        let cert = test_cert();
        for (version, _) in VERSIONS {
            let (mut server, mut client) = pair(&cert, version);
            let mut out = BytesMut::new();
            server.encrypt(b"bye", &mut out).unwrap();
            server.close_notify(&mut out).unwrap();
            assert_eq!(to_client(&mut client, &out).unwrap(), b"bye");
            let mut buf = [0u8; 8];
            // A clean close: end of stream, not an error.
            assert_eq!(client.reader().read(&mut buf).unwrap(), 0);
        }
    }

    #[test]
    fn encrypt_before_the_handshake_is_refused() {
        let cert = test_cert();
        let mut server = TlsSession::new(server_config_for(&cert)).unwrap();
        let mut out = BytesMut::new();
        assert!(matches!(
            server.encrypt(b"x", &mut out),
            Err(TlsError::HandshakeNotComplete)
        ));
        assert!(out.is_empty());
        server.close_notify(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn consumer_break_drops_the_rest_and_later_input() {
        let cert = test_cert();
        let (mut server, mut client) = pair(&cert, &rustls::version::TLS13);
        // Two records.
        client.writer().write_all(b"first").unwrap();
        let mut bytes = client_output(&mut client);
        client.writer().write_all(b"second").unwrap();
        bytes.extend(client_output(&mut client));
        let mut calls = 0;
        let mut out = BytesMut::new();
        let received = server
            .receive(&mut bytes, &mut out, |_| {
                calls += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert!(received.stopped);
        assert_eq!(calls, 1);
        client.writer().write_all(b"third").unwrap();
        let mut more = client_output(&mut client);
        let received = server
            .receive(&mut more, &mut out, |_| panic!("read after stop"))
            .unwrap();
        assert!(received.stopped);
        // Writing still works (an Error frame before the close).
        server.encrypt(b"error frame", &mut out).unwrap();
        assert_eq!(server.held_capacity_bytes(), 0);
    }

    #[test]
    fn idle_session_holds_no_buffer_after_handshake_partial_and_whole_records() {
        let cert = test_cert();
        let (mut server, mut client) = pair(&cert, &rustls::version::TLS13);
        assert_eq!(server.held_capacity_bytes(), 0);
        client.writer().write_all(&[7u8; 100]).unwrap();
        let mut bytes = client_output(&mut client);
        let mut out = BytesMut::new();
        let (head, tail) = bytes.split_at_mut(40);
        server
            .receive(head, &mut out, |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(
            server.held_capacity_bytes() >= 40,
            "an incomplete record is held"
        );
        server
            .receive(tail, &mut out, |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(server.held_capacity_bytes(), 0, "released once complete");
    }

    #[test]
    fn config_reload_changes_the_certificate_of_new_handshakes_only() {
        let first = test_cert();
        let second = test_cert();
        let source = TlsConfigSource::new(server_config_for(&first));
        let mut cache = TlsConfigCache::new(Arc::clone(&source));
        let mut old = cache.new_session().unwrap();
        let mut old_client = client(&client_config(&first, &rustls::version::TLS13, &[]));
        handshake(&mut old, &mut old_client, usize::MAX);

        source.replace(server_config_for(&second));
        assert_eq!(source.generation(), 1);
        // A session made before the reload but still handshaking keeps the first config.
        let mut pending = cache.new_session().unwrap();
        let mut new_client = client(&client_config(&second, &rustls::version::TLS13, &[]));
        handshake(&mut pending, &mut new_client, usize::MAX);
        assert_eq!(
            new_client.peer_certificates().unwrap()[0],
            second.cert_der,
            "a new handshake presents the new certificate"
        );
        // A client that trusts only the first certificate now fails verification.
        let mut stale = cache.new_session().unwrap();
        let mut stale_client = client(&client_config(&first, &rustls::version::TLS13, &[]));
        let hello = client_output(&mut stale_client);
        let (_, out, _) = to_server(&mut stale, &hello, usize::MAX).unwrap();
        assert!(to_client(&mut stale_client, &out).is_err());

        // The session from before the reload still works both ways.
        old_client.writer().write_all(b"ping").unwrap();
        let bytes = client_output(&mut old_client);
        let (got, _, _) = to_server(&mut old, &bytes, usize::MAX).unwrap();
        assert_eq!(got, b"ping");
        let mut out = BytesMut::new();
        old.encrypt(b"pong", &mut out).unwrap();
        assert_eq!(to_client(&mut old_client, &out).unwrap(), b"pong");
        assert_eq!(old_client.peer_certificates().unwrap()[0], first.cert_der);
    }

    #[test]
    fn pem_files_load_and_bad_files_are_clear_errors() {
        let cert = test_cert();
        let other = test_cert();
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let other_key = dir.path().join("other-key.pem");
        std::fs::write(&cert_file, &cert.cert_pem).unwrap();
        std::fs::write(&key_file, &cert.key_pem).unwrap();
        std::fs::write(&other_key, &other.key_pem).unwrap();
        server_config_from_pem_files(&cert_file, &key_file).expect("good pair");

        let missing = dir.path().join("missing.pem");
        let err = server_config_from_pem_files(&missing, &key_file).unwrap_err();
        assert!(matches!(err, TlsConfigError::CertFile { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        // A key file given as the certificate: no CERTIFICATE block.
        let err = server_config_from_pem_files(&key_file, &key_file).unwrap_err();
        assert!(matches!(err, TlsConfigError::NoCertificate { .. }), "{err}");
        // A certificate given as the key.
        let err = server_config_from_pem_files(&cert_file, &cert_file).unwrap_err();
        assert!(matches!(err, TlsConfigError::KeyFile { .. }), "{err}");
        // A key that does not match the certificate.
        let err = server_config_from_pem_files(&cert_file, &other_key).unwrap_err();
        assert!(matches!(err, TlsConfigError::Rustls(_)), "{err}");

        // A failed reload keeps the current config.
        let source = TlsConfigSource::new(server_config_for(&cert));
        assert!(source
            .reload_from_pem_files(&cert_file, &other_key)
            .is_err());
        assert_eq!(source.generation(), 0);
        source.reload_from_pem_files(&cert_file, &key_file).unwrap();
        assert_eq!(source.generation(), 1);
    }

    /// Runs a handshake through the seam adapter: the server's bytes leave only through
    /// `wrap_outbound`, as the shard would send them.
    fn state_handshake(state: &mut TlsState, client: &mut ClientConnection) -> Vec<u8> {
        let mut client_plaintext = Vec::new();
        for _ in 0..16 {
            let mut bytes = client_output(client);
            let outcome = state
                .on_received(&mut bytes, |_| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(outcome, TlsOutcome::Continue);
            if state.has_wire_bytes() {
                let wire = state.wrap_outbound(&[]).unwrap();
                client_plaintext.extend(to_client(client, &wire).unwrap());
            }
            if state.is_established() && !client.is_handshaking() && !client.wants_write() {
                return client_plaintext;
            }
        }
        panic!("handshake through TlsState did not complete");
    }

    /// A `TlsState` and a client offering `alpn`, before any byte has passed.
    fn state_and_client(
        cert: &TestCert,
        version: &'static rustls::SupportedProtocolVersion,
        alpn: &[&[u8]],
    ) -> (TlsState, ClientConnection) {
        let state = TlsState::new(server_config_for(cert)).unwrap();
        (state, client(&client_config(cert, version, alpn)))
    }

    /// A `TlsState` and its client after a handshake through the seam that queued no frame.
    fn state_pair(
        cert: &TestCert,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (TlsState, ClientConnection) {
        let (mut state, mut client) = state_and_client(cert, version, &[ALPN_HOLDFAST]);
        assert!(state_handshake(&mut state, &mut client).is_empty());
        (state, client)
    }

    #[test]
    fn tls_state_queues_frames_until_established_then_sends_them_encrypted() {
        let cert = test_cert();
        let (mut state, mut client) =
            state_and_client(&cert, &rustls::version::TLS13, &[ALPN_HOLDFAST]);
        // A frame queued at accept (before any handshake byte) is not sent in clear.
        let early = state.wrap_outbound(b"early frame").unwrap();
        assert!(early.is_empty());
        assert!(!state.has_wire_bytes());
        // It goes out encrypted right after the handshake completes.
        let got = state_handshake(&mut state, &mut client);
        assert_eq!(got, b"early frame");
        assert!(!state.has_wire_bytes());
        assert_eq!(
            state.held_bytes(),
            std::mem::size_of::<TlsState>() + RUSTLS_IDLE_HEAP_BYTES,
            "an idle established connection holds no buffer"
        );
    }

    #[test]
    fn tls_state_gives_the_sink_mutable_plaintext_of_small_and_large_records() {
        let cert = test_cert();
        let (mut state, mut client) = state_pair(&cert, &rustls::version::TLS12);
        let plaintext: Vec<u8> = (0..(SINK_STACK_COPY_BYTES * 3 + 17) as u32)
            .map(|b| b as u8)
            .collect();
        client.writer().write_all(&plaintext[..10]).unwrap();
        client.writer().write_all(&plaintext[10..]).unwrap();
        let mut bytes = client_output(&mut client);
        let mut got = Vec::new();
        let outcome = state
            .on_received(&mut bytes, |p: &mut [u8]| {
                // The seam lets a layered transport (wss) change plaintext in place.
                p.iter_mut().for_each(|b| *b ^= 0xff);
                got.extend(p.iter().map(|b| b ^ 0xff));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(outcome, TlsOutcome::Continue);
        assert_eq!(got, plaintext);
    }

    #[test]
    fn tls_state_close_sends_the_batch_then_close_notify() {
        let cert = test_cert();
        let (mut state, mut client) = state_pair(&cert, &rustls::version::TLS13);
        state.close();
        assert!(
            state.has_wire_bytes(),
            "the close_notify is waiting to be sent"
        );
        let wire = state.wrap_outbound(b"goodbye frame").unwrap();
        assert!(!state.has_wire_bytes());
        assert_eq!(to_client(&mut client, &wire).unwrap(), b"goodbye frame");
        let mut buf = [0u8; 8];
        assert_eq!(
            client.reader().read(&mut buf).unwrap(),
            0,
            "clean TLS close"
        );
        // Peer's close_notify is reported as such.
        client.send_close_notify();
        let mut bytes = client_output(&mut client);
        let outcome = state
            .on_received(&mut bytes, |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(outcome, TlsOutcome::PeerClosed);
    }

    #[test]
    fn tls_state_failed_handshake_queues_an_alert() {
        let cert = test_cert();
        let (mut state, mut client) = state_and_client(&cert, &rustls::version::TLS13, &[b"h2"]);
        let mut hello = client_output(&mut client);
        assert!(state
            .on_received(&mut hello, |_| ControlFlow::Continue(()))
            .is_err());
        assert!(state.has_wire_bytes(), "the alert waits for the send");
        let wire = state.wrap_outbound(&[]).unwrap();
        assert!(to_client(&mut client, &wire).is_err());
    }

    #[test]
    fn make_test_cert_script_output_serves_a_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls/make-test-cert.sh");
        let status = std::process::Command::new(&script)
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run server/tls/make-test-cert.sh (needs openssl)");
        assert!(status.success(), "{script:?} failed");
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let config = server_config_from_pem_files(&cert_file, &key_file).expect("loads");
        let cert_pem = std::fs::read(&cert_file).unwrap();
        let cert = TestCert {
            cert_der: CertificateDer::from_pem_slice(&cert_pem).unwrap(),
            cert_pem: String::from_utf8(cert_pem).unwrap(),
            key_pem: String::new(),
        };
        let mut server = TlsSession::new(config).unwrap();
        let mut client = client(&client_config(
            &cert,
            &rustls::version::TLS13,
            &[ALPN_HOLDFAST],
        ));
        handshake(&mut server, &mut client, usize::MAX);
        assert_eq!(server.alpn_protocol(), Some(ALPN_HOLDFAST));
    }

    #[test]
    fn incomplete_bytes_needed_walks_record_headers() {
        assert_eq!(incomplete_bytes_needed(&[]), None);
        assert_eq!(incomplete_bytes_needed(&[0x17, 3]), Some(3));
        assert_eq!(incomplete_bytes_needed(&[0x17, 3, 3, 0, 2]), Some(2));
        assert_eq!(incomplete_bytes_needed(&[0x17, 3, 3, 0, 2, 9, 9]), None);
        assert_eq!(incomplete_bytes_needed(&[0x17, 3, 3, 0, 0, 0x17]), Some(4));
        assert_eq!(next_record_bytes(&[0x17, 3, 3, 1, 0]), 5 + 256);
        assert_eq!(next_record_bytes(&[0x17, 3]), 5);
        assert_eq!(incomplete_tail_bytes(&[]), 0);
        assert_eq!(incomplete_tail_bytes(&[0x17, 3, 3, 0, 1, 9]), 0);
        assert_eq!(incomplete_tail_bytes(&[0x17, 3, 3, 0, 1, 9, 0x17, 3]), 2);
        assert_eq!(
            incomplete_tail_bytes(&[0x17, 3, 3, 0, 1, 9, 0x17, 3, 3, 0, 4, 1]),
            6
        );
    }
}
