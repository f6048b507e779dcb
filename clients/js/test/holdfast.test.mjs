// node --test clients/js/test/   (run by protocol/tests/js_golden.rs under cargo test)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  ClientState,
  FrameDecoder,
  HoldfastClient,
  Kind,
  ProtocolError,
  SUBPROTOCOL,
  decodePayload,
  encodeEvent,
  encodeFrame,
  encodeGoodbye,
  encodeHello,
  encodePublishBody,
  encodeRequest,
  encodeSubscribeResume,
  encodeTopics,
  fromHex,
  toHex,
} from "../holdfast.js";

const golden = JSON.parse(readFileSync(new URL("./golden.json", import.meta.url), "utf8"));
const bytes = (name) => fromHex(golden[name]);

// The token the Rust side signed: secret "0123456789abcdef", client "alice", expiry 1.8e9.
const ALICE_TOKEN =
  "00d2496b00000000180e82ee16259a2b6d024dedec1fe7a51e550da4713392777b85ddab76cce6ad";

test("client frames are byte-exact with the Rust encoder", () => {
  const cases = {
    hello_anonymous: encodeFrame(Kind.Hello, 1),
    hello_alice_token: encodeFrame(
      Kind.Hello,
      1,
      encodeHello({ clientId: "alice", token: ALICE_TOKEN, versions: [1], heartbeatMs: 5000 }),
    ),
    hello_empty_fields: encodeFrame(Kind.Hello, 2, encodeHello({})),
    subscribe_two_ack: encodeFrame(Kind.Subscribe, 3, encodeTopics(["news", "sports/é"]), 1),
    subscribe_one: encodeFrame(Kind.Subscribe, 4, encodeTopics(["t"])),
    unsubscribe_none: encodeFrame(Kind.Unsubscribe, 5, encodeTopics([])),
    event_clicks: encodeFrame(Kind.Event, 6, encodeEvent("clicks", [0, 1, 2, 255]), 1),
    request_echo: encodeFrame(Kind.Request, 7, encodeRequest("kv.get", "key")),
    pong_42: encodeFrame(Kind.Pong, 42n),
    goodbye_client: encodeFrame(Kind.Goodbye, 8, encodeGoodbye("client closing", 0)),
    subscribe_resume_news: encodeFrame(
      Kind.SubscribeResume,
      9,
      encodeSubscribeResume([{ name: "news", epoch: 0x1122334455667788n, lastSeq: 41 }]),
    ),
    subscribe_resume_two_ack: encodeFrame(
      Kind.SubscribeResume,
      10,
      encodeSubscribeResume([
        { name: "news", epoch: 7, lastSeq: 2n ** 64n - 2n },
        { name: "sports/é", epoch: 0, lastSeq: 0 },
      ]),
      1,
    ),
  };
  for (const [name, frame] of Object.entries(cases)) {
    assert.equal(toHex(frame), golden[name], name);
  }
});

test("the annotated Hello of PROTOCOL.md decodes back to its fields", () => {
  const [frame] = new FrameDecoder().feed(bytes("hello_alice_token"));
  assert.equal(frame.kindName, "Hello");
  assert.equal(frame.body.clientId, "alice");
  assert.equal(toHex(frame.body.token), ALICE_TOKEN);
  assert.deepEqual(frame.body.versions, [1]);
  assert.equal(frame.body.heartbeatMs, 5000);
  const [sub] = new FrameDecoder().feed(bytes("subscribe_two_ack"));
  assert.deepEqual(sub.body.topics, ["news", "sports/é"]);
  assert.equal(sub.flags, 1);
});

test("server frames from the Rust encoder decode to their fields", () => {
  const decoder = new FrameDecoder();
  const [welcome] = decoder.feed(bytes("welcome"));
  assert.equal(welcome.kind, Kind.Welcome);
  assert.equal(welcome.id, 1n);
  assert.deepEqual(welcome.body, {
    sessionId: 0x0102030405060708n,
    heartbeatMs: 5000,
    heartbeatTimeoutMs: 45000,
    maxFrameBytes: 65536,
    maxInflightRequests: 64,
  });
  const [push] = decoder.feed(bytes("push_news_7"));
  assert.equal(push.body.topic, "news");
  assert.equal(push.body.seq, 7n);
  assert.equal(new TextDecoder().decode(push.body.payload), "hello ✓");
  const [big] = decoder.feed(bytes("push_big_seq_empty"));
  assert.equal(big.body.seq, 2n ** 64n - 2n);
  assert.equal(big.body.payload.length, 0);
  const [error] = decoder.feed(bytes("error_no_method"));
  assert.deepEqual(error.body, { code: 13, name: "unknown_method", reason: "no method" });
  assert.equal(error.id, 7n);
  const [goodbye] = decoder.feed(bytes("goodbye_server"));
  assert.deepEqual(goodbye.body, { reason: "shutting down", reconnectAfterMs: 1500 });
  const [response] = decoder.feed(bytes("response_body"));
  assert.equal(new TextDecoder().decode(response.body.body), "value");
  const [ack] = decoder.feed(bytes("ack_3"));
  assert.equal(ack.kindName, "Ack");
  assert.equal(ack.id, 3n);
  const [ping] = decoder.feed(bytes("ping_9"));
  assert.equal(ping.kindName, "Ping");
  assert.equal(ping.id, 9n);
});

test("SubscribeResume and its SubscribeAck decode to PROTOCOL.md's fields", () => {
  const [resume] = new FrameDecoder().feed(bytes("subscribe_resume_news"));
  assert.equal(resume.kindName, "SubscribeResume");
  assert.deepEqual(resume.body.topics, [{ name: "news", epoch: 0x1122334455667788n, lastSeq: 41n }]);
  const [two] = new FrameDecoder().feed(bytes("subscribe_resume_two_ack"));
  assert.deepEqual(two.body.topics.map((t) => t.name), ["news", "sports/é"]);
  const [ack] = new FrameDecoder().feed(bytes("subscribe_ack_9"));
  assert.equal(ack.kindName, "Ack");
  assert.equal(ack.id, 9n);
  assert.deepEqual(ack.body.topics, [{ epoch: 0x1122334455667788n, seq: 45n, oldestSeq: 12n, recovered: true }]);
  const [ackTwo] = new FrameDecoder().feed(bytes("subscribe_ack_two"));
  assert.deepEqual(ackTwo.body.topics, [
    { epoch: 8n, seq: 3n, oldestSeq: 0n, recovered: false },
    { epoch: 0n, seq: 0n, oldestSeq: 0n, recovered: false },
  ]);
  // A list pointing past its root is refused.
  const payload = bytes("subscribe_ack_9").slice(16);
  new DataView(payload.buffer).setInt32(payload.length - 8, 4, true);
  assert.throws(() => decodePayload(Kind.Ack, payload), ProtocolError);
});

test("the stream decoder gives the same frames for every split of a stream", () => {
  const names = ["welcome", "push_news_7", "ping_9", "push_big_seq_empty", "goodbye_server"];
  const stream = new Uint8Array(names.reduce((n, name) => n + bytes(name).length, 0));
  let at = 0;
  for (const name of names) {
    stream.set(bytes(name), at);
    at += bytes(name).length;
  }
  const whole = new FrameDecoder().feed(stream).map((f) => f.kindName);
  assert.deepEqual(whole, ["Welcome", "Push", "Ping", "Push", "Goodbye"]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const decoder = new FrameDecoder();
    const got = [...decoder.feed(stream.slice(0, cut)), ...decoder.feed(stream.slice(cut))];
    assert.deepEqual(got.map((f) => f.kindName), whole, `cut at ${cut}`);
  }
  const bytewise = new FrameDecoder();
  const got = [];
  for (const b of stream) got.push(...bytewise.feed([b]));
  assert.deepEqual(got.map((f) => f.kindName), whole);
});

test("bad frames and payloads are refused with ProtocolError", () => {
  const frame = bytes("push_news_7");
  const badVersion = frame.slice();
  badVersion[4] = 2;
  assert.throws(() => new FrameDecoder().feed(badVersion), ProtocolError);
  const tooBig = frame.slice();
  new DataView(tooBig.buffer).setUint32(0, 70000, true);
  assert.throws(() => new FrameDecoder().feed(tooBig), ProtocolError);
  const badKind = frame.slice();
  badKind[5] = 99;
  assert.throws(() => new FrameDecoder().feed(badKind), ProtocolError);
  // A pointer past the root.
  const payload = frame.slice(16);
  new DataView(payload.buffer).setInt32(payload.length - 24, 100, true);
  assert.throws(() => decodePayload(Kind.Push, payload), ProtocolError);
  assert.throws(() => decodePayload(Kind.Welcome, new Uint8Array(3)), ProtocolError);
  assert.throws(() => decodePayload(Kind.Ack, new Uint8Array(1)), ProtocolError);
});

// ---- the client against a fake WebSocket ----

class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.readyState = 0;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(new FrameDecoder().feed(data)[0]);
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  // Test side:
  open() {
    this.readyState = 1;
    this.onopen();
  }
  receive(...names) {
    const parts = names.map((n) => (typeof n === "string" ? bytes(n) : n));
    const total = parts.reduce((n, p) => n + p.length, 0);
    const message = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      message.set(p, at);
      at += p.length;
    }
    this.onmessage({ data: message.buffer });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose({ code, reason: "" });
  }
}

function pushFrame(topic, seq, text) {
  // Push payload by hand: [topic][payload][root: topic ptr, seq, payload ptr].
  const t = new TextEncoder().encode(topic);
  const p = new TextEncoder().encode(text);
  const payload = new Uint8Array(t.length + p.length + 24);
  payload.set(t, 0);
  payload.set(p, t.length);
  const root = t.length + p.length;
  const view = new DataView(payload.buffer);
  view.setInt32(root, 0 - root, true);
  view.setUint32(root + 4, t.length, true);
  view.setBigUint64(root + 8, BigInt(seq), true);
  view.setInt32(root + 16, t.length - (root + 16), true);
  view.setUint32(root + 20, p.length, true);
  return encodeFrame(Kind.Push, 0, payload);
}

function fakeClient(options = {}) {
  FakeSocket.all = [];
  const timers = [];
  const client = new HoldfastClient("ws://127.0.0.1:1/ws", {
    WebSocket: FakeSocket,
    setTimeout: (fn, ms) => {
      timers.push({ fn, ms });
      return timers.length;
    },
    clearTimeout: () => {},
    random: () => 0.5,
    ...options,
  });
  return { client, timers };
}

function record(client, type) {
  const seen = [];
  client.addEventListener(type, (e) => seen.push(e.detail));
  return seen;
}

test("client says Hello on open, subscribes after Welcome, answers Ping with Pong of its id", () => {
  const { client } = fakeClient({ topics: ["news"] });
  client.connect();
  const socket = FakeSocket.all[0];
  assert.equal(socket.protocol, SUBPROTOCOL);
  socket.open();
  assert.equal(socket.sent[0].kindName, "Hello");
  assert.equal(socket.sent[0].payload.length, 0, "anonymous Hello");
  socket.receive("welcome");
  assert.equal(client.state, ClientState.Open);
  assert.equal(socket.sent[1].kindName, "SubscribeResume");
  assert.deepEqual(socket.sent[1].body.topics, [{ name: "news", epoch: 0n, lastSeq: 0n }], "no resume point yet");
  assert.equal(socket.sent[1].flags, 1);
  socket.receive("ping_9");
  assert.equal(socket.sent[2].kindName, "Pong");
  assert.equal(socket.sent[2].id, 9n);
});

test("client with a token sends a full Hello", () => {
  const { client } = fakeClient({ clientId: "alice", token: ALICE_TOKEN, heartbeatMs: 5000 });
  client.connect();
  FakeSocket.all[0].open();
  assert.equal(toHex(encodeFrame(Kind.Hello, 1, FakeSocket.all[0].sent[0].payload)), golden.hello_alice_token);
});

test("publish sends a publish Request with the body the server reads, for every target", () => {
  const { client } = fakeClient({ clientId: "publisher:backend", token: ALICE_TOKEN });
  client.connect();
  const socket = FakeSocket.all[0];
  socket.open();
  socket.receive("welcome");
  const id = client.publish({ topic: "news" }, "hi", { msgId: "m-1" });
  const sent = socket.sent.at(-1);
  assert.equal(sent.kindName, "Request");
  assert.equal(sent.id, id);
  const json = '{"target":"topic","topic":"news","payload_base64":"aGk=","msg_id":"m-1"}';
  assert.deepEqual(sent.payload, encodeRequest("publish", json));
  assert.equal(sent.body.method, "publish");
  assert.equal(new TextDecoder().decode(sent.body.body), json);
  assert.deepEqual(JSON.parse(json), { target: "topic", topic: "news", payload_base64: "aGk=", msg_id: "m-1" });
  // Bytes, and a connection id past 2^53 written digit for digit.
  assert.equal(
    encodePublishBody({ connId: 18446744073709551615n }, new Uint8Array([0, 255])),
    '{"target":"conn","conn_id":18446744073709551615,"payload_base64":"AP8="}',
  );
  assert.equal(encodePublishBody({ broadcast: true }, ""), '{"target":"broadcast","payload_base64":""}');
  assert.equal(
    encodePublishBody({ clientId: "device-\"1" }, "x"),
    '{"target":"client","client_id":"device-\\"1","payload_base64":"eA=="}',
  );
  assert.throws(() => encodePublishBody({}, "x"), TypeError);
});

test("pushes carry their sequence numbers and the gaps before them", () => {
  const { client } = fakeClient({ topics: ["news"] });
  const pushes = record(client, "push");
  client.connect();
  const socket = FakeSocket.all[0];
  socket.open();
  // Welcome and the first push in one message, the next two split across messages.
  const second = pushFrame("news", 2, "b");
  socket.receive("welcome", pushFrame("news", 1, "a"), second.slice(0, 5));
  socket.receive(second.slice(5), pushFrame("news", 5, "e"), pushFrame("other", 9, "x"));
  assert.deepEqual(
    pushes.map((p) => [p.topic, p.seq, p.gap, p.text]),
    [
      ["news", 1n, 0, "a"],
      ["news", 2n, 0, "b"],
      ["news", 5n, 2, "e"],
      ["other", 9n, 0, "x"],
    ],
  );
});

test("reconnects with exponential backoff and jitter, honouring Goodbye's delay", () => {
  const { client, timers } = fakeClient({ reconnect: { baseMs: 100, maxMs: 1000 } });
  const states = record(client, "state");
  client.connect();
  FakeSocket.all[0].drop();
  assert.equal(client.state, ClientState.Waiting);
  // random() = 0.5: half of the backoff plus a quarter.
  assert.equal(timers[0].ms, 75);
  timers[0].fn();
  FakeSocket.all[1].drop();
  assert.equal(timers[1].ms, 150);
  timers[1].fn();
  for (let i = 2; i < 8; i++) {
    FakeSocket.all[i].drop();
    timers[i].fn();
  }
  assert.equal(timers[7].ms, 750, "capped at maxMs");
  // A Welcome resets the backoff; a Goodbye's delay wins over it.
  const socket = FakeSocket.all[8];
  socket.open();
  socket.receive("welcome");
  socket.receive("goodbye_server");
  assert.deepEqual(socket.closed, { code: 1000, reason: "goodbye" });
  socket.drop(1000);
  assert.ok(timers[8].ms >= 1500 && timers[8].ms <= 1600, `waited ${timers[8].ms}`);
  assert.ok(states.some((s) => s.state === "waiting" && s.delayMs === timers[8].ms));
  // close() stops for good.
  timers[8].fn();
  client.close();
  FakeSocket.all[9].drop(1000);
  assert.equal(client.state, ClientState.Closed);
  assert.equal(timers.length, 9, "no reconnect after close()");
});

test("an Error frame is reported with its code name and id", () => {
  const { client } = fakeClient();
  const errors = record(client, "error");
  client.connect();
  FakeSocket.all[0].open();
  FakeSocket.all[0].receive("error_no_method");
  assert.deepEqual(errors, [{ code: 13, name: "unknown_method", reason: "no method", id: 7n }]);
});

/// An Ack carrying a SubscribeAck: answers [{epoch, seq, oldestSeq, recovered}], 25 bytes each.
function subscribeAckFrame(id, answers) {
  const payload = new Uint8Array(25 * answers.length + 8);
  const view = new DataView(payload.buffer);
  answers.forEach((a, i) => {
    view.setBigUint64(25 * i, BigInt(a.epoch), true);
    view.setBigUint64(25 * i + 8, BigInt(a.seq), true);
    view.setBigUint64(25 * i + 16, BigInt(a.oldestSeq ?? 0), true);
    payload[25 * i + 24] = a.recovered ? 1 : 0;
  });
  const root = 25 * answers.length;
  view.setInt32(root, -root, true);
  view.setUint32(root + 4, answers.length, true);
  return encodeFrame(Kind.Ack, id, payload);
}

/// The client's `n`-th socket, opened and answered with Welcome.
function welcomedSocket(n) {
  const socket = FakeSocket.all[n];
  socket.open();
  socket.receive("welcome");
  return socket;
}

/// The connection on `socket` drops, the reconnect timer fires, and the client's `n`-th socket
/// is opened and welcomed.
function dropAndReconnect(socket, timers, n) {
  socket.drop();
  timers.at(-1).fn();
  return welcomedSocket(n);
}

/// The last SubscribeResume `socket` sent.
function lastResume(socket) {
  return socket.sent.filter((f) => f.kindName === "SubscribeResume").at(-1);
}

/// A client of topic "news", its pushes and lost ranges recorded, whose first session is open
/// on `socket` and whose first resume was answered: epoch 7, nothing published yet.
function newsInEpoch7() {
  const { client, timers } = fakeClient({ topics: ["news"] });
  const pushes = record(client, "push");
  const lost = record(client, "lost");
  client.connect();
  const socket = welcomedSocket(0);
  socket.receive(subscribeAckFrame(lastResume(socket).id, [{ epoch: 7, seq: 0 }]));
  return { client, timers, pushes, lost, socket };
}

test("reconnects resume each topic: replayed pushes continue, lost ranges and new epochs are reported", () => {
  let { client, timers, pushes, lost, socket } = newsInEpoch7();
  socket.receive(pushFrame("news", 1, "a"), pushFrame("news", 2, "b"));
  // One SubscribeResume at a time: a subscribe now waits for the Ack of the one in flight.
  socket = dropAndReconnect(socket, timers, 1);
  let resume = lastResume(socket);
  assert.deepEqual(resume.body.topics, [{ name: "news", epoch: 7n, lastSeq: 2n }]);
  client.subscribe(["sport"]);
  assert.equal(lastResume(socket), resume, "sport waits for news's Ack");
  socket.receive(
    subscribeAckFrame(resume.id, [{ epoch: 7, seq: 4, oldestSeq: 1, recovered: true }]),
    pushFrame("news", 3, "c"),
    pushFrame("news", 4, "d"),
  );
  const sport = lastResume(socket);
  assert.deepEqual(sport.body.topics, [{ name: "sport", epoch: 0n, lastSeq: 0n }]);
  // The server could not look sport up (epoch 0): asked again.
  socket.receive(subscribeAckFrame(sport.id, [{ epoch: 0, seq: 0 }]));
  const again = lastResume(socket);
  assert.notEqual(again.id, sport.id);
  assert.deepEqual(again.body.topics, [{ name: "sport", epoch: 0n, lastSeq: 0n }]);
  socket.receive(subscribeAckFrame(again.id, [{ epoch: 5, seq: 0 }]));
  assert.deepEqual(lost, [], "replayed, nothing lost");
  // Away past the window: the lost range, at once; the next live push has no gap.
  socket = dropAndReconnect(socket, timers, 2);
  resume = lastResume(socket);
  assert.deepEqual(resume.body.topics, [
    { name: "news", epoch: 7n, lastSeq: 4n },
    { name: "sport", epoch: 5n, lastSeq: 0n },
  ], "sport resumes from its Ack's seq, though no push came");
  socket.receive(
    subscribeAckFrame(resume.id, [
      { epoch: 7, seq: 9, oldestSeq: 7 },
      { epoch: 5, seq: 0 },
    ]),
    pushFrame("news", 10, "j"),
  );
  assert.deepEqual(lost, [{ topic: "news", firstMissedSeq: 5n, lastMissedSeq: 9n }]);
  // A restarted server: a new epoch, so what was missed is unknown.
  socket = dropAndReconnect(socket, timers, 3);
  resume = lastResume(socket);
  socket.receive(
    subscribeAckFrame(resume.id, [
      { epoch: 8, seq: 2 },
      { epoch: 6, seq: 0 },
    ]),
    pushFrame("news", 3, "c2"),
  );
  assert.deepEqual(lost[1], { topic: "news", reset: true, lastSeenSeq: 10n, nextSeq: 3n });
  assert.deepEqual(
    lost[2],
    { topic: "sport", reset: true, lastSeenSeq: 0n, nextSeq: 1n },
    "no push seen, but a new epoch may hide some",
  );
  assert.equal(lost.length, 3);
  assert.deepEqual(
    pushes.map((p) => [p.seq, p.gap]),
    [
      [1n, 0],
      [2n, 0],
      [3n, 0],
      [4n, 0],
      [10n, 0],
      [3n, 0],
    ],
  );
});

test("a restarted server that still holds its new epoch from seq 1 replays it: one reset, then 1, 2, ... with no gap", () => {
  let { timers, pushes, lost, socket } = newsInEpoch7();
  socket.receive(pushFrame("news", 1, "a"), pushFrame("news", 2, "b"), pushFrame("news", 3, "c"));
  // Drain and restart: the new server published two pushes before the client came back.
  socket = dropAndReconnect(socket, timers, 1);
  let resume = lastResume(socket);
  assert.deepEqual(resume.body.topics, [{ name: "news", epoch: 7n, lastSeq: 3n }]);
  // The server's answer (docs/PROTOCOL.md, "Resume"): another epoch, not recovered, seam at
  // seq 0; the whole new epoch follows.
  socket.receive(
    subscribeAckFrame(resume.id, [{ epoch: 9, seq: 0, oldestSeq: 1, recovered: false }]),
    pushFrame("news", 1, "new a"),
    pushFrame("news", 2, "new b"),
  );
  socket.receive(pushFrame("news", 3, "new c"));
  assert.deepEqual(lost, [{ topic: "news", reset: true, lastSeenSeq: 3n, nextSeq: 1n }]);
  assert.deepEqual(
    pushes.slice(3).map((p) => [p.seq, p.gap, p.text]),
    [
      [1n, 0, "new a"],
      [2n, 0, "new b"],
      [3n, 0, "new c"],
    ],
    "every push of the new epoch once, in order, no gap",
  );
  // The next resume continues from the new epoch.
  socket = dropAndReconnect(socket, timers, 2);
  assert.deepEqual(lastResume(socket).body.topics, [{ name: "news", epoch: 9n, lastSeq: 3n }]);
});

test("pushes between a resume answered with epoch 0 and its retry's answer are not delivered twice", () => {
  let { client, timers, pushes, lost, socket } = newsInEpoch7();
  socket.receive(pushFrame("news", 1, "a"), pushFrame("news", 2, "b"));
  // The server restarts; the owner of "news" does not answer the resume in time (epoch 0),
  // and live pushes of the new epoch follow the Ack.
  socket = dropAndReconnect(socket, timers, 1);
  let resume = lastResume(socket);
  socket.receive(
    subscribeAckFrame(resume.id, [{ epoch: 0, seq: 0 }]),
    pushFrame("news", 1, "new a"),
    pushFrame("news", 2, "new b"),
  );
  const again = lastResume(socket);
  assert.notEqual(again.id, resume.id);
  assert.deepEqual(again.body.topics, [{ name: "news", epoch: 7n, lastSeq: 2n }], "the known point");
  // Another epoch held from seq 1: all of it replayed, then live.
  socket.receive(
    subscribeAckFrame(again.id, [{ epoch: 9, seq: 0, oldestSeq: 1, recovered: false }]),
    pushFrame("news", 1, "new a"),
    pushFrame("news", 2, "new b"),
    pushFrame("news", 3, "new c"),
  );
  assert.deepEqual(lost, [{ topic: "news", reset: true, lastSeenSeq: 2n, nextSeq: 1n }]);
  assert.deepEqual(
    pushes.map((p) => [p.seq, p.text]),
    [
      [1n, "a"],
      [2n, "b"],
      [1n, "new a"],
      [2n, "new b"],
      [3n, "new c"],
    ],
    "each push once",
  );
  assert.equal(client.pushesAwaitingResume, 2);
});
