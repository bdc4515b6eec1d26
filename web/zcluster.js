// zcluster.js: a browser client for zcluster gates over WebSocket.
//
// An ES module with no dependencies and no build step:
//
//   import { Client } from "./zcluster.js";
//   const zc = new Client("ws://127.0.0.1:18081/ws");
//   zc.on(100, (m) => console.log(m.json()));      // pushes by msgID
//   zc.on("kick", (reason) => console.log(reason));
//   await zc.connect();
//   const me = await zc.login("alice");            // {"ok":true,"user":..,"gate":..}
//   const r = await zc.request(2, { to: "bob", text: "hi" });  // reply msgID 2
//
// Wire format (the gate's docs/websocket.md): each binary WebSocket message
// holds one or more whole zinx TLV frames, msgID uint32 | length uint32 |
// payload, big-endian. Error frames are msgID 65535 with JSON
// {"msg_id":N,"error":"..."}; a request for msgID N is rejected with a
// ZError when one arrives for N before its reply. A kick is msgID 9 with
// {"reason":"..."}, after which the gate closes the connection.
//
// Reconnection: when the connection drops (not after close(), nor after a
// kick other than a gate shutting down) the client reconnects with
// exponential backoff and, if it was logged in, logs in again as the same
// user ("relogin" event).

/** Reserved msgIDs. */
export const MSG_LOGIN = 1;
export const MSG_KICK = 9;
export const MSG_HEARTBEAT = 65534;
export const MSG_ERROR = 65535;

const HEADER = 8;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An error frame from the gate (or a failed request). */
export class ZError extends Error {
  /**
   * @param {string} message
   * @param {number} msgID the msgID the error answers (0: not from the gate)
   */
  constructor(message, msgID = 0) {
    super(message);
    this.name = "ZError";
    this.msgID = msgID;
  }
}

/** One received frame. */
export class Message {
  constructor(msgID, data) {
    /** @type {number} */
    this.msgID = msgID;
    /** @type {Uint8Array} */
    this.data = data;
  }
  /** The payload as UTF-8 text. */
  text() {
    return decoder.decode(this.data);
  }
  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

/**
 * Turn a payload into bytes: Uint8Array and ArrayBuffer as they are,
 * strings as UTF-8, anything else as JSON.
 */
export function toBytes(payload) {
  if (payload === undefined || payload === null) return new Uint8Array(0);
  if (payload instanceof Uint8Array) return payload;
  if (payload instanceof ArrayBuffer) return new Uint8Array(payload);
  if (typeof payload === "string") return encoder.encode(payload);
  return encoder.encode(JSON.stringify(payload));
}

/** Encode one frame. */
export function encodeFrame(msgID, payload) {
  const body = toBytes(payload);
  const buf = new Uint8Array(HEADER + body.length);
  const view = new DataView(buf.buffer);
  view.setUint32(0, msgID >>> 0, false);
  view.setUint32(4, body.length, false);
  buf.set(body, HEADER);
  return buf;
}

/**
 * Decode the frames of one message. Throws if the message does not hold
 * whole frames.
 * @param {ArrayBuffer} ab
 * @returns {Message[]}
 */
export function decodeFrames(ab) {
  const view = new DataView(ab);
  const out = [];
  let off = 0;
  while (off < ab.byteLength) {
    if (ab.byteLength - off < HEADER) throw new ZError("truncated frame header");
    const msgID = view.getUint32(off, false);
    const len = view.getUint32(off + 4, false);
    if (off + HEADER + len > ab.byteLength) throw new ZError("frame split across messages");
    out.push(new Message(msgID, new Uint8Array(ab, off + HEADER, len)));
    off += HEADER + len;
  }
  return out;
}

/**
 * A connection to one gate.
 *
 * Events for on(): a msgID (number) receives every frame with that msgID
 * as a Message; "open" (no argument), "close" ({code, reason, willReconnect}),
 * "kick" (reason string), "relogin" (login reply), "error" (Error),
 * "frame" (every Message).
 */
export class Client {
  /**
   * @param {string} url ws:// or wss:// endpoint of a gate
   * @param {object} [opts]
   * @param {boolean} [opts.reconnect=true] reconnect after a drop
   * @param {number} [opts.minBackoff=250] first reconnect delay, ms
   * @param {number} [opts.maxBackoff=10000] longest reconnect delay, ms
   * @param {number} [opts.timeout=10000] default request timeout, ms
   * @param {number} [opts.loginMsgID=1] msgID of the login request and reply
   * @param {number} [opts.heartbeat=20000] send the heartbeat msgID (65534)
   *   this often, ms, so the gate's --idle-timeout (60s) does not close a
   *   quiet connection; 0 disables
   * @param {(reason: string) => boolean} [opts.reconnectAfterKick]
   *   whether a kick may be followed by a reconnect (default: only when
   *   the gate is shutting down)
   * @param {typeof WebSocket} [opts.WebSocket] WebSocket implementation
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.opts = Object.assign(
      {
        reconnect: true,
        minBackoff: 250,
        maxBackoff: 10000,
        timeout: 10000,
        loginMsgID: MSG_LOGIN,
        heartbeat: 20000,
        reconnectAfterKick: (reason) => /shutting down/.test(reason),
        WebSocket: globalThis.WebSocket,
      },
      opts,
    );
    /** @type {Map<number|string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {Map<number, Array<{replyID:number, msgID:number, resolve:Function, reject:Function, timer:any}>>} */
    this.waiting = new Map(); // by reply msgID, FIFO
    this.ws = null;
    this.user = null; // set by a successful login, for relogin
    this.closed = false; // close() was called
    this.kicked = null; // reason of the last kick
    this.attempt = 0;
    this.retryTimer = null;
    this.opening = null;
    this.beatTimer = null;
  }

  /** Whether the WebSocket is open. */
  get connected() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /**
   * Subscribe to a msgID or an event name; returns an unsubscribe function.
   */
  on(key, fn) {
    let set = this.handlers.get(key);
    if (!set) this.handlers.set(key, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(key, arg) {
    const set = this.handlers.get(key);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (e) {
        if (key !== "error") this.emit("error", e);
      }
    }
  }

  /** Open the connection; resolves once it is open. */
  connect() {
    this.closed = false;
    this.kicked = null;
    if (this.connected) return Promise.resolve();
    if (this.opening) return this.opening;
    this.opening = new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.opts.WebSocket(this.url);
      } catch (e) {
        this.opening = null;
        reject(e);
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.opening = null;
        this.attempt = 0;
        clearInterval(this.beatTimer);
        if (this.opts.heartbeat > 0) {
          this.beatTimer = setInterval(() => {
            if (this.ws === ws && this.connected) ws.send(encodeFrame(MSG_HEARTBEAT, new Uint8Array(0)));
          }, this.opts.heartbeat);
        }
        this.emit("open");
        resolve();
      };
      ws.onmessage = (ev) => this.onMessage(ev);
      ws.onclose = (ev) => {
        if (this.ws === ws) {
          this.ws = null;
          clearInterval(this.beatTimer);
        }
        this.opening = null;
        this.failWaiting(new ZError(`connection closed (${ev.code}${ev.reason ? " " + ev.reason : ""})`));
        const willReconnect = this.shouldReconnect();
        this.emit("close", { code: ev.code, reason: ev.reason, willReconnect });
        if (!opened) reject(new ZError(`cannot connect to ${this.url} (${ev.code})`));
        if (willReconnect) this.scheduleReconnect();
      };
    });
    return this.opening;
  }

  shouldReconnect() {
    if (this.closed || !this.opts.reconnect) return false;
    if (this.kicked !== null && !this.opts.reconnectAfterKick(this.kicked)) return false;
    return true;
  }

  scheduleReconnect() {
    const base = Math.min(this.opts.maxBackoff, this.opts.minBackoff * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(async () => {
      if (this.closed) return;
      const user = this.user;
      try {
        await this.connect();
      } catch {
        return; // onclose scheduled the next attempt
      }
      if (user !== null) {
        this.user = null;
        try {
          this.emit("relogin", await this.login(user));
        } catch (e) {
          this.emit("error", e);
        }
      }
    }, delay);
  }

  onMessage(ev) {
    if (typeof ev.data === "string") {
      this.emit("error", new ZError("text message from the gate"));
      return;
    }
    let frames;
    try {
      frames = decodeFrames(ev.data);
    } catch (e) {
      this.emit("error", e);
      this.ws?.close(1002, "bad frame");
      return;
    }
    for (const m of frames) this.dispatch(m);
  }

  dispatch(m) {
    if (m.msgID === MSG_ERROR) {
      let e;
      try {
        e = m.json();
      } catch {
        e = { msg_id: 0, error: m.text() };
      }
      const err = new ZError(e.error, e.msg_id);
      // The oldest request sent with that msgID gets it.
      if (!this.rejectWaiting(e.msg_id, err)) this.emit("error", err);
    } else if (m.msgID === MSG_KICK) {
      let reason = "";
      try {
        reason = m.json().reason;
      } catch {
        reason = m.text();
      }
      this.kicked = reason;
      this.emit("kick", reason);
    } else {
      const q = this.waiting.get(m.msgID);
      if (q && q.length) {
        const w = q.shift();
        clearTimeout(w.timer);
        w.resolve(m);
      }
    }
    this.emit(m.msgID, m);
    this.emit("frame", m);
  }

  rejectWaiting(msgID, err) {
    for (const q of this.waiting.values()) {
      const i = q.findIndex((w) => w.msgID === msgID);
      if (i >= 0) {
        const [w] = q.splice(i, 1);
        clearTimeout(w.timer);
        w.reject(err);
        return true;
      }
    }
    return false;
  }

  failWaiting(err) {
    for (const q of this.waiting.values()) {
      for (const w of q) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    this.waiting.clear();
  }

  /**
   * Send one frame. payload: Uint8Array, ArrayBuffer, string (UTF-8) or
   * a value sent as JSON. Throws when not connected.
   */
  send(msgID, payload) {
    if (!this.connected) throw new ZError("not connected", msgID);
    this.ws.send(encodeFrame(msgID, payload));
  }

  /**
   * Send a request and wait for its reply: the next frame with replyID
   * (default: msgID). Rejects with a ZError on an error frame for msgID,
   * on timeout, or when the connection closes.
   * @returns {Promise<Message>}
   */
  request(msgID, payload, { replyID = msgID, timeout = this.opts.timeout } = {}) {
    return new Promise((resolve, reject) => {
      const w = { replyID, msgID, resolve, reject, timer: null };
      let q = this.waiting.get(replyID);
      if (!q) this.waiting.set(replyID, (q = []));
      q.push(w);
      w.timer = setTimeout(() => {
        const i = q.indexOf(w);
        if (i >= 0) q.splice(i, 1);
        reject(new ZError(`request ${msgID} timed out after ${timeout} ms`, msgID));
      }, timeout);
      try {
        this.send(msgID, payload);
      } catch (e) {
        clearTimeout(w.timer);
        q.splice(q.indexOf(w), 1);
        reject(e);
      }
    });
  }

  /**
   * Log in as user (the chat app's msgID 1). Resolves with the reply
   * object ({ok, user, session, gate}); rejects when it is refused. The
   * user is logged in again after a reconnect.
   */
  async login(user) {
    const m = await this.request(this.opts.loginMsgID, user);
    const r = m.json();
    if (!r.ok) throw new ZError(r.error || "login refused", this.opts.loginMsgID);
    this.user = user;
    this.kicked = null;
    return r;
  }

  /** Close for good (no reconnect). */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.ws?.close(1000, "bye");
  }
}
