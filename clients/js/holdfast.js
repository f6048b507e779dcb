// Holdfast client for browsers (and Node 22+), over WebSocket. No dependencies.
// After a reconnect it resumes every topic (SubscribeResume with the epoch and last seq seen):
// missed pushes are replayed as `push` events; only what could not be replayed is a `lost` event.
//
// The wire format is docs/PROTOCOL.md: each WebSocket binary message carries whole or partial
// Holdfast frames (a 16-byte little-endian header, then an rkyv payload laid out as that page
// says); the server accepts any split, and this client sends one frame per message. The
// encoders and decoders below are checked byte for byte against the Rust reference encoder
// (test/golden.json, written by protocol/tests/js_golden.rs).
//
//   import { HoldfastClient } from "./holdfast.js";
//   const client = new HoldfastClient("ws://127.0.0.1:7001/ws", { topics: ["news"] });
//   client.addEventListener("push", (e) => console.log(e.detail.topic, e.detail.seq, e.detail.gap));
//   client.connect();

export const HEADER_BYTES = 16;
export const VERSION = 1;
export const SUBPROTOCOL = "holdfast.v1";
export const FLAG_ACK_REQUESTED = 1;
/// Frames larger than this are refused before the Welcome says the server's limit.
export const MAX_FRAME_BYTES_DEFAULT = 65536;
/// Times per session the client asks again for topics whose resume the server answered with
/// epoch 0 (an internal queue was full).
export const RESUME_RETRIES_PER_SESSION_MAX = 8;

export const Kind = Object.freeze({
  Hello: 1,
  Welcome: 2,
  Ping: 3,
  Pong: 4,
  Echo: 5,
  Request: 6,
  Response: 7,
  Event: 8,
  Push: 9,
  Subscribe: 10,
  Unsubscribe: 11,
  Ack: 12,
  Error: 13,
  Goodbye: 14,
  SubscribeResume: 15,
});

const KIND_NAMES = Object.fromEntries(Object.entries(Kind).map(([name, value]) => [value, name]));

export const ErrorCode = Object.freeze({
  1: "bad_version",
  2: "length_too_small",
  3: "length_too_large",
  4: "reserved_flags",
  5: "unknown_kind",
  6: "invalid_archive",
  7: "auth_failed",
  8: "auth_expired",
  9: "unexpected_frame",
  10: "unsupported_version",
  11: "slow_consumer",
  12: "too_many_inflight",
  13: "unknown_method",
  14: "handler_failed",
  15: "server_full",
  16: "hello_timeout",
  17: "heartbeat_timeout",
  18: "limit_exceeded",
  19: "shutting_down",
  20: "unavailable",
});

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function toBytes(value) {
  if (value === undefined || value === null) return new Uint8Array(0);
  if (typeof value === "string") return utf8Encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return Uint8Array.from(value);
  throw new TypeError("expected a string or bytes");
}

/// Lowercase hex of bytes (for tokens in query strings and tests).
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(hex) {
  if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) throw new TypeError("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---- payload encoding (rkyv 0.8, little_endian + unaligned + pointer_width_32) ----
//
// Out-of-line data precedes the struct that points to it, depth-first in field order; the root
// struct ends the payload. A string or byte string is 8 bytes inline: i32 offset from the
// field's own position to the data, then u32 length.

class ArchiveWriter {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }

  /// Appends raw bytes; returns their position.
  write(bytes) {
    const at = this.length;
    this.chunks.push(bytes);
    this.length += bytes.length;
    return at;
  }

  finish() {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }
}

/// A struct being laid out: `fields` is a list of [kind, value], kind one of
/// "ptr" (value = {at, len}: data position and length), "u16", "u32", "u64".
function writeStruct(writer, fields) {
  let size = 0;
  for (const [kind] of fields) size += kind === "ptr" ? 8 : kind === "u16" ? 2 : kind === "u32" ? 4 : 8;
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  const start = writer.length;
  let off = 0;
  for (const [kind, value] of fields) {
    if (kind === "ptr") {
      view.setInt32(off, value.at - (start + off), true);
      view.setUint32(off + 4, value.len, true);
      off += 8;
    } else if (kind === "u16") {
      view.setUint16(off, value, true);
      off += 2;
    } else if (kind === "u32") {
      view.setUint32(off, value, true);
      off += 4;
    } else {
      view.setBigUint64(off, BigInt(value), true);
      off += 8;
    }
  }
  writer.write(bytes);
  return start;
}

function writeData(writer, value) {
  const bytes = toBytes(value);
  return { at: writer.write(bytes), len: bytes.length };
}

/// Hello payload. `token` is bytes (40 when the server has a secret) or a hex string.
export function encodeHello({ clientId = "", token = new Uint8Array(0), versions = [VERSION], heartbeatMs = 0 } = {}) {
  const w = new ArchiveWriter();
  const tokenBytes = typeof token === "string" ? fromHex(token) : toBytes(token);
  const id = writeData(w, clientId);
  const tok = writeData(w, tokenBytes);
  const ver = writeData(w, Uint8Array.from(versions));
  writeStruct(w, [["ptr", id], ["ptr", tok], ["ptr", ver], ["u32", heartbeatMs >>> 0]]);
  return w.finish();
}

/// Subscribe / Unsubscribe payload: a list of topic names.
export function encodeTopics(topics) {
  const w = new ArchiveWriter();
  const names = topics.map((topic) => writeData(w, topic));
  const arrayAt = w.length;
  for (const name of names) writeStruct(w, [["ptr", name]]);
  writeStruct(w, [["ptr", { at: arrayAt, len: topics.length }]]);
  return w.finish();
}

/// SubscribeResume payload: per topic its resume point, `{name, epoch, lastSeq}` (epoch 0 =
/// none: subscribe and tell me the epoch). u64s are numbers or BigInts.
export function encodeSubscribeResume(points) {
  const w = new ArchiveWriter();
  const names = points.map((point) => writeData(w, point.name));
  const arrayAt = w.length;
  points.forEach((point, i) => writeStruct(w, [["ptr", names[i]], ["u64", point.epoch ?? 0], ["u64", point.lastSeq ?? 0]]));
  writeStruct(w, [["ptr", { at: arrayAt, len: points.length }]]);
  return w.finish();
}

export function encodeEvent(topic, payload) {
  const w = new ArchiveWriter();
  const t = writeData(w, topic);
  const p = writeData(w, payload);
  writeStruct(w, [["ptr", t], ["ptr", p]]);
  return w.finish();
}

export function encodeRequest(method, body) {
  const w = new ArchiveWriter();
  const m = writeData(w, method);
  const b = writeData(w, body);
  writeStruct(w, [["ptr", m], ["ptr", b]]);
  return w.finish();
}

/// The JSON body of a `publish` request (docs/PROTOCOL.md, "Requests, events, pushes"): the
/// payload as base64, a connection id written digit for digit (it is a u64).
export function encodePublishBody(target, payload, msgId) {
  const bytes = typeof payload === "string" ? utf8Encoder.encode(payload) : payload;
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  const fields = [];
  if (target.topic !== undefined) {
    fields.push(`"target":"topic"`, `"topic":${JSON.stringify(String(target.topic))}`);
  } else if (target.broadcast) {
    fields.push(`"target":"broadcast"`);
  } else if (target.connId !== undefined) {
    fields.push(`"target":"conn"`, `"conn_id":${BigInt(target.connId).toString()}`);
  } else if (target.clientId !== undefined) {
    fields.push(`"target":"client"`, `"client_id":${JSON.stringify(String(target.clientId))}`);
  } else {
    throw new TypeError("publish target: { topic }, { broadcast: true }, { connId } or { clientId }");
  }
  fields.push(`"payload_base64":${JSON.stringify(btoa(binary))}`);
  if (msgId !== undefined) fields.push(`"msg_id":${JSON.stringify(String(msgId))}`);
  return `{${fields.join(",")}}`;
}

export function encodeGoodbye(reason, reconnectAfterMs = 0) {
  const w = new ArchiveWriter();
  const r = writeData(w, reason);
  writeStruct(w, [["ptr", r], ["u32", reconnectAfterMs >>> 0]]);
  return w.finish();
}

/// One whole frame: header then payload. `id` is a number or a BigInt (u64).
export function encodeFrame(kind, id, payload = new Uint8Array(0), flags = 0) {
  const body = toBytes(payload);
  const frame = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, frame.length, true);
  frame[4] = VERSION;
  frame[5] = kind;
  view.setUint16(6, flags, true);
  view.setBigUint64(8, BigInt(id), true);
  frame.set(body, HEADER_BYTES);
  return frame;
}

// ---- payload decoding ----

export class ProtocolError extends Error {}

class ArchiveReader {
  constructor(payload, rootSize) {
    if (payload.length < rootSize) throw new ProtocolError(`payload of ${payload.length} bytes is below its root's ${rootSize}`);
    this.payload = payload;
    this.view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    this.root = payload.length - rootSize;
  }

  u16(off) {
    return this.view.getUint16(this.root + off, true);
  }

  u32(off) {
    return this.view.getUint32(this.root + off, true);
  }

  u64(off) {
    return this.view.getBigUint64(this.root + off, true);
  }

  /// The `count` elements of `size` bytes of the list whose pointer is at absolute `at`:
  /// their absolute positions (checked to lie inside, before the pointer).
  listAt(at, size) {
    const offset = this.view.getInt32(at, true);
    const count = this.view.getUint32(at + 4, true);
    const start = at + offset;
    if (start < 0 || start + size * count > at) throw new ProtocolError("list out of range");
    return Array.from({ length: count }, (_, i) => start + size * i);
  }

  /// Bytes a pointer at absolute position `at` points to (checked to lie inside, before it).
  bytesAt(at) {
    const offset = this.view.getInt32(at, true);
    const len = this.view.getUint32(at + 4, true);
    const start = at + offset;
    if (start < 0 || start + len > at) throw new ProtocolError("pointer out of range");
    return this.payload.subarray(start, start + len);
  }

  bytes(off) {
    return this.bytesAt(this.root + off);
  }

  string(off) {
    try {
      return utf8Decoder.decode(this.bytes(off));
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw new ProtocolError("string is not UTF-8");
    }
  }
}

/// Reads a payload of `kind` into a plain object (fields named as in docs/PROTOCOL.md, in
/// camelCase; u64 fields are BigInts).
export function decodePayload(kind, payload) {
  switch (kind) {
    case Kind.Welcome: {
      const r = new ArchiveReader(payload, 24);
      return {
        sessionId: r.u64(0),
        heartbeatMs: r.u32(8),
        heartbeatTimeoutMs: r.u32(12),
        maxFrameBytes: r.u32(16),
        maxInflightRequests: r.u32(20),
      };
    }
    case Kind.Push: {
      const r = new ArchiveReader(payload, 24);
      return { topic: r.string(0), seq: r.u64(8), payload: r.bytes(16) };
    }
    case Kind.Response: {
      const r = new ArchiveReader(payload, 8);
      return { body: r.bytes(0) };
    }
    case Kind.Request: {
      const r = new ArchiveReader(payload, 16);
      return { method: r.string(0), body: r.bytes(8) };
    }
    case Kind.Error: {
      const r = new ArchiveReader(payload, 10);
      const code = r.u16(0);
      return { code, name: ErrorCode[code] ?? "unknown", reason: r.string(2) };
    }
    case Kind.Goodbye: {
      const r = new ArchiveReader(payload, 12);
      return { reason: r.string(0), reconnectAfterMs: r.u32(8) };
    }
    case Kind.Hello: {
      if (payload.length === 0) return { anonymous: true };
      const r = new ArchiveReader(payload, 28);
      return { clientId: r.string(0), token: r.bytes(8), versions: Array.from(r.bytes(16)), heartbeatMs: r.u32(24) };
    }
    case Kind.Subscribe:
    case Kind.Unsubscribe: {
      const r = new ArchiveReader(payload, 8);
      const at = r.root;
      const offset = r.view.getInt32(at, true);
      const count = r.view.getUint32(at + 4, true);
      const start = at + offset;
      if (start < 0 || start + 8 * count > at) throw new ProtocolError("topic list out of range");
      const topics = [];
      for (let i = 0; i < count; i++) {
        topics.push(utf8Decoder.decode(r.bytesAt(start + 8 * i)));
      }
      return { topics };
    }
    case Kind.SubscribeResume: {
      const r = new ArchiveReader(payload, 8);
      const topics = r.listAt(r.root, 24).map((at) => ({
        name: utf8Decoder.decode(r.bytesAt(at)),
        epoch: r.view.getBigUint64(at + 8, true),
        lastSeq: r.view.getBigUint64(at + 16, true),
      }));
      return { topics };
    }
    case Kind.Ack: {
      if (payload.length === 0) return {};
      // A SubscribeAck: per topic of the SubscribeResume, in its order, what the server did.
      const r = new ArchiveReader(payload, 8);
      const topics = r.listAt(r.root, 25).map((at) => ({
        epoch: r.view.getBigUint64(at, true),
        seq: r.view.getBigUint64(at + 8, true),
        oldestSeq: r.view.getBigUint64(at + 16, true),
        recovered: r.view.getUint8(at + 24) !== 0,
      }));
      return { topics };
    }
    case Kind.Ping:
    case Kind.Pong:
      if (payload.length !== 0) throw new ProtocolError(`${KIND_NAMES[kind]} payload must be empty`);
      return {};
    case Kind.Echo:
      return { bytes: payload };
    default:
      throw new ProtocolError(`unknown kind ${kind}`);
  }
}

/// A stream decoder: feed it bytes in any split, get whole frames back.
export class FrameDecoder {
  constructor(maxFrameBytes = MAX_FRAME_BYTES_DEFAULT) {
    this.maxFrameBytes = maxFrameBytes;
    this.buffer = new Uint8Array(0);
  }

  /// Returns the frames completed by `bytes`: {kind, kindName, flags, id (BigInt), payload, body}.
  feed(bytes) {
    const input = toBytes(bytes);
    let data;
    if (this.buffer.length === 0) {
      data = input;
    } else {
      data = new Uint8Array(this.buffer.length + input.length);
      data.set(this.buffer);
      data.set(input, this.buffer.length);
    }
    const frames = [];
    let at = 0;
    while (data.length - at >= HEADER_BYTES) {
      const view = new DataView(data.buffer, data.byteOffset + at, HEADER_BYTES);
      const len = view.getUint32(0, true);
      if (len < HEADER_BYTES) throw new ProtocolError(`frame length ${len} below the header`);
      if (len > this.maxFrameBytes) throw new ProtocolError(`frame length ${len} above ${this.maxFrameBytes}`);
      if (data[at + 4] !== VERSION) throw new ProtocolError(`frame version ${data[at + 4]}`);
      const kind = data[at + 5];
      if (!(kind in KIND_NAMES)) throw new ProtocolError(`unknown kind ${kind}`);
      const flags = view.getUint16(6, true);
      if (flags & ~FLAG_ACK_REQUESTED) throw new ProtocolError(`reserved flags ${flags}`);
      if (data.length - at < len) break;
      const payload = data.slice(at + HEADER_BYTES, at + len);
      frames.push({
        kind,
        kindName: KIND_NAMES[kind],
        flags,
        id: view.getBigUint64(8, true),
        payload,
        body: decodePayload(kind, payload),
      });
      at += len;
    }
    this.buffer = data.slice(at);
    return frames;
  }
}

// ---- the client ----

export const ClientState = Object.freeze({
  Idle: "idle",
  Connecting: "connecting",
  Open: "open",
  Waiting: "waiting",
  Closed: "closed",
});

/// A session that reconnects. Events (CustomEvent, data in `detail`):
///   state    {state, delayMs?}        every state change (waiting carries the delay)
///   welcome  Welcome fields            the session is open
///   push     {topic, seq, payload, gap, text}  gap = messages missed before this one (0 = none)
///   lost     {topic, firstMissedSeq, lastMissedSeq} or {topic, reset: true, lastSeenSeq, nextSeq}
///            a resume after a reconnect could not replay what was missed (away longer than the
///            server's window, or its epoch changed: a restart lost the history): re-fetch
///            the topic's state. Replayed pushes arrive as `push` events like live ones.
///   error    {code, name, reason, id}  an Error frame from the server
///   goodbye  {reason, reconnectAfterMs}
///   ack      {id}
///   response {id, body}
///   close    {code, reason}            the WebSocket closed
export class HoldfastClient extends EventTarget {
  /// options: clientId, token (bytes or hex), heartbeatMs, topics, reconnect
  /// ({baseMs, maxMs, enabled}), and for tests WebSocket (the constructor), setTimeout,
  /// clearTimeout, random.
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.topics = new Set(options.topics ?? []);
    this.lastSeq = new Map();
    /// Per topic, the epoch `lastSeq` belongs to (from the SubscribeAck).
    this.epochs = new Map();
    /// Topic lists waiting to be sent as a SubscribeResume: the server takes one at a time.
    this.resumeQueue = [];
    /// The SubscribeResume on the wire: {id, names}.
    this.resumeInFlight = null;
    this.resumeRetries = 0;
    /// Topics whose resume is asked again after an answer with epoch 0: their live pushes
    /// until the answer are dropped (their numbering is not known yet; the answer replays
    /// them or reports the gap), so nothing arrives twice.
    this.awaitingResume = new Set();
    /// Pushes dropped that way.
    this.pushesAwaitingResume = 0;
    this.state = ClientState.Idle;
    this.nextId = 1n;
    this.attempt = 0;
    this.goodbyeDelayMs = null;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
    this.welcome = null;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.random = options.random ?? Math.random;
    const reconnect = options.reconnect ?? {};
    this.reconnectBaseMs = reconnect.baseMs ?? 500;
    this.reconnectMaxMs = reconnect.maxMs ?? 30000;
    this.reconnectEnabled = reconnect.enabled ?? true;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, extra = {}) {
    this.state = state;
    this.emit("state", { state, ...extra });
  }

  connect() {
    this.stopped = false;
    if (this.socket) return;
    this.setState(ClientState.Connecting);
    this.decoder = new FrameDecoder(MAX_FRAME_BYTES_DEFAULT);
    this.welcome = null;
    this.goodbyeDelayMs = null;
    const socket = new this.WebSocket(this.url, SUBPROTOCOL);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => this.onOpen(socket);
    socket.onmessage = (event) => this.onMessage(socket, event.data);
    socket.onclose = (event) => this.onClose(socket, event.code, event.reason);
    socket.onerror = () => {};
  }

  /// Closes for good (no reconnect).
  close() {
    this.stopped = true;
    if (this.timer !== null) this.clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) {
      this.send(Kind.Goodbye, encodeGoodbye("client closing", 0));
      this.socket.close(1000, "bye");
    } else {
      this.setState(ClientState.Closed);
    }
  }

  takeId() {
    const id = this.nextId;
    this.nextId += 1n;
    return id;
  }

  send(kind, payload, flags = 0, id = this.takeId()) {
    if (!this.socket || this.socket.readyState !== 1) return null;
    this.socket.send(encodeFrame(kind, id, payload, flags));
    return id;
  }

  /// Subscribes (now if the session is open, else after the next Welcome) with a
  /// SubscribeResume: its Ack tells each topic's epoch, which a reconnect resumes from.
  subscribe(topics) {
    const added = topics.filter((topic) => !this.topics.has(topic));
    for (const topic of added) this.topics.add(topic);
    if (this.welcome && added.length > 0) this.queueResume(added);
  }

  queueResume(names) {
    this.resumeQueue.push(names);
    this.sendNextResume();
  }

  /// Sends the next queued SubscribeResume unless one awaits its Ack.
  sendNextResume() {
    while (this.resumeInFlight === null && this.resumeQueue.length > 0) {
      const names = this.resumeQueue.shift().filter((name) => this.topics.has(name));
      if (names.length === 0) continue;
      const points = names.map((name) => {
        const epoch = this.epochs.get(name);
        const lastSeq = this.lastSeq.get(name);
        return epoch !== undefined && lastSeq !== undefined ? { name, epoch, lastSeq } : { name, epoch: 0, lastSeq: 0 };
      });
      const id = this.send(Kind.SubscribeResume, encodeSubscribeResume(points), FLAG_ACK_REQUESTED);
      if (id !== null) this.resumeInFlight = { id, names };
      else return;
    }
  }

  /// The SubscribeAck of the resume in flight: remember epochs, report what was lost.
  onResumed(names, answers) {
    this.resumeInFlight = null;
    const again = [];
    names.forEach((topic, i) => {
      const answer = answers[i];
      if (answer === undefined) return;
      if (answer.epoch === 0n) {
        again.push(topic); // the server could not look it up in time: ask again
        return;
      }
      this.awaitingResume.delete(topic);
      const previousEpoch = this.epochs.get(topic);
      this.epochs.set(topic, answer.epoch);
      const last = this.lastSeq.get(topic);
      if (answer.recovered && last !== undefined) return; // replayed pushes follow
      // Not recovered: live pushes follow from answer.seq + 1. A restarted server that still
      // holds its new epoch from seq 1 answers seq 0 and replays 1, 2, ...: one reset, no gap.
      if (last !== undefined && previousEpoch === answer.epoch && last < answer.seq) {
        this.emit("lost", { topic, firstMissedSeq: last + 1n, lastMissedSeq: answer.seq });
      } else if (last !== undefined && !(previousEpoch === answer.epoch && last === answer.seq)) {
        this.emit("lost", { topic, reset: true, lastSeenSeq: last, nextSeq: answer.seq + 1n });
      }
      this.lastSeq.set(topic, answer.seq);
    });
    const retry = again.length > 0 && this.resumeRetries < RESUME_RETRIES_PER_SESSION_MAX;
    for (const topic of again) {
      if (retry) this.awaitingResume.add(topic);
      else this.awaitingResume.delete(topic);
    }
    if (retry) {
      this.resumeRetries += 1;
      this.resumeQueue.push(again);
    }
    this.sendNextResume();
  }

  unsubscribe(topics) {
    for (const topic of topics) {
      this.topics.delete(topic);
      this.lastSeq.delete(topic);
      this.epochs.delete(topic);
      this.awaitingResume.delete(topic);
    }
    if (this.welcome) return this.send(Kind.Unsubscribe, encodeTopics(topics), FLAG_ACK_REQUESTED);
    return null;
  }

  publishEvent(topic, payload) {
    return this.send(Kind.Event, encodeEvent(topic, payload), FLAG_ACK_REQUESTED);
  }

  request(method, body) {
    return this.send(Kind.Request, encodeRequest(method, body));
  }

  /// Publishes from a publisher session (a client id with the server's publisher prefix, and
  /// a token): `target` is `{ topic }`, `{ broadcast: true }`, `{ connId }` (a BigInt or
  /// number) or `{ clientId }`; `payload` a string or a Uint8Array; `msgId` names the publish
  /// for retries (in JetStream cluster mode a retry with the same msgId is stored once).
  /// Returns the request id, or null when not connected. Once the outcome is known the
  /// "response" event with that id carries `{"accepted":true,"seq":N}` (topic, broadcast) or
  /// `{"accepted":true,"delivered":N}` (connection, client); an "error" event with that id is
  /// the refusal (`unavailable`: nothing taken or not confirmed, retry with the same msgId).
  publish(target, payload, { msgId } = {}) {
    return this.request("publish", encodePublishBody(target, payload, msgId));
  }

  onOpen(socket) {
    if (socket !== this.socket) return;
    const { clientId, token, heartbeatMs } = this.options;
    const anonymous = !clientId && !token;
    const payload = anonymous ? new Uint8Array(0) : encodeHello({ clientId: clientId ?? "", token, heartbeatMs: heartbeatMs ?? 0 });
    this.send(Kind.Hello, payload);
  }

  onMessage(socket, data) {
    if (socket !== this.socket) return;
    let frames;
    try {
      frames = this.decoder.feed(new Uint8Array(data));
    } catch (e) {
      this.emit("error", { code: 0, name: "client_decode", reason: String(e.message), id: 0n });
      socket.close(1002, "bad Holdfast frame");
      return;
    }
    for (const frame of frames) this.onFrame(frame);
  }

  onFrame(frame) {
    const { kind, id, body } = frame;
    switch (kind) {
      case Kind.Welcome:
        this.welcome = body;
        this.decoder.maxFrameBytes = body.maxFrameBytes;
        this.attempt = 0;
        this.setState(ClientState.Open);
        this.emit("welcome", body);
        this.resumeQueue = [];
        this.resumeInFlight = null;
        this.resumeRetries = 0;
        this.awaitingResume.clear();
        // Resume every topic from where it was left: what was missed is replayed.
        if (this.topics.size > 0) this.queueResume([...this.topics]);
        break;
      case Kind.Ping:
        this.send(Kind.Pong, new Uint8Array(0), 0, id);
        break;
      case Kind.Push: {
        if (this.awaitingResume.has(body.topic)) {
          this.pushesAwaitingResume += 1;
          break;
        }
        const last = this.lastSeq.get(body.topic);
        const gap = last === undefined || body.seq <= last ? 0 : Number(body.seq - last - 1n);
        this.lastSeq.set(body.topic, body.seq);
        let text = null;
        try {
          text = utf8Decoder.decode(body.payload);
        } catch {
          text = null;
        }
        this.emit("push", { ...body, gap, text });
        break;
      }
      case Kind.Error:
        if (this.resumeInFlight !== null && this.resumeInFlight.id === id) {
          this.resumeInFlight = null;
          this.sendNextResume();
        }
        this.emit("error", { ...body, id });
        break;
      case Kind.Goodbye:
        this.goodbyeDelayMs = body.reconnectAfterMs;
        this.emit("goodbye", body);
        this.socket?.close(1000, "goodbye");
        break;
      case Kind.Ack:
        if (this.resumeInFlight !== null && this.resumeInFlight.id === id) {
          this.onResumed(this.resumeInFlight.names, body.topics ?? []);
        }
        this.emit("ack", { id, topics: body.topics });
        break;
      case Kind.Response:
        this.emit("response", { id, body: body.body });
        break;
      default:
        break;
    }
  }

  /// Delay before the next connect: at least a Goodbye's `reconnect_after_ms`, otherwise
  /// exponential backoff from `baseMs` up to `maxMs`, with jitter (half to all of it) so that
  /// clients cut at once do not come back at once.
  nextDelayMs() {
    const backoff = Math.min(this.reconnectMaxMs, this.reconnectBaseMs * 2 ** this.attempt);
    const jittered = backoff / 2 + (this.random() * backoff) / 2;
    if (this.goodbyeDelayMs !== null) return this.goodbyeDelayMs + (this.random() * this.reconnectBaseMs);
    return Math.round(jittered);
  }

  onClose(socket, code, reason) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.welcome = null;
    this.emit("close", { code, reason });
    if (this.stopped || !this.reconnectEnabled) {
      this.setState(ClientState.Closed);
      return;
    }
    const delayMs = this.nextDelayMs();
    this.attempt += 1;
    this.setState(ClientState.Waiting, { delayMs });
    this.timer = this.setTimeout(() => {
      this.timer = null;
      if (!this.stopped) this.connect();
    }, delayMs);
  }
}
