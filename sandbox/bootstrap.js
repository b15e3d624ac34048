// toolgate sandbox bootstrap: evaluated once in every fresh interpreter before
// any other code. It captures the intrinsics it relies on, so nothing a
// script overwrites later (JSON, Promise, Object, Array.prototype ...) can
// change how results, logs and host requests cross the bridge, and installs
// the globals a script sees (console, timers, performance). The functions
// the Go side drives (drain, pump, again, seal, start) are this script's
// value and nothing else: no global, property or closure a script can reach
// holds them.
//
// Wire format. Host -> guest: one call pump(id, ok, payload) per settled
// request, with id and ok as integers, so nothing is parsed for a tool
// result:
//   pump(id, 1, "<result JSON text>")   tool call fulfilled (parsed here)
//   pump(id, 0, '{"code":..,"message":..,"retryAfterMs"?:..}')  rejected
//   pump(id, 1, '{status,statusText,url,redirected,headers:[[k,v]],body}')  fetch fulfilled
//   pump(id, 1)                         timer due
// The host makes those calls, lets the interpreter run every pending job,
// then calls drain(). Guest -> host: the string drain() returns, records
// one after the other, each a letter and its fields; a number field ends
// with ':', a text field is its length in UTF-16 units, ':' and the text,
// so nothing is escaped. (The host reads the report as a C string, which
// ends at a U+0000 in a tool name or a console line; the report then cannot
// be complete, and the host asks again() for it as a JSON string.)
//   c<id>:<name><args>   tool call (name and args are text fields)
//   f<id>:<request JSON> fetch
//   t<id>:<ms>:          timer
//   x<id>:               timer cleared
//   l<level><text>       console line; level is one of l i d w e
//   T                    console output truncated
//   v<value JSON>        the script returned this value
//   e<error JSON>        the script failed: {name,message,stack,code}
// This script's value is [drain, pump, again, seal, start], which the host
// keeps and calls directly; scripts cannot reach them.
//
// The host evaluates this once per engine and copies the resulting memory
// into every interpreter, so seal() also gives each execution its own
// Math.random state and performance.now origin.
(function (os) {
  'use strict';
  const G = globalThis;
  const JSONparse = JSON.parse;
  const JSONstringify = JSON.stringify;
  const create = Object.create;
  const defineProperty = Object.defineProperty;
  const freeze = Object.freeze;
  const getPrototypeOf = Object.getPrototypeOf;
  const apply = Reflect.apply;
  const PromiseC = Promise;
  const promiseThen = Promise.prototype.then;
  const ErrorC = Error;
  const TypeErrorC = TypeError;
  const StringC = String;
  const NumberC = Number;
  const isArray = Array.isArray;
  const floor = Math.floor;
  const imul = Math.imul;
  const dateNow = Date.now;
  const perf = G.performance;
  const perfNow = perf && typeof perf.now === 'function' ? perf.now : null;
  const toLower = String.prototype.toLowerCase;
  const toUpper = String.prototype.toUpperCase;
  const q = (s) => JSONstringify(s);

  let nextID = 1;
  const waiters = create(null); // id -> [resolve, reject, kind, extra]
  let out = '';                 // records for the host (see the wire format)
  let logChars = 0;
  let logCap = 1 << 20;
  let logTrunc = false;
  let state = '';               // '' while running, then the outcome
  let perfBase = 0;             // performance.now() at seal
  let origin = floor(dateNow());

  // Math.random: xoshiro128**, seeded by the host in seal().
  let r0 = 1, r1 = 2, r2 = 3, r3 = 4;
  function rotl(x, k) { return (x << k) | (x >>> (32 - k)); }
  function next32() {
    const r = imul(rotl(imul(r1, 5), 7), 9);
    const t = r1 << 9;
    r2 ^= r0; r3 ^= r1; r1 ^= r2; r0 ^= r3; r2 ^= t; r3 = rotl(r3, 11);
    return r >>> 0;
  }
  const random = { random() { return ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992; } }.random;

  function str(v) {
    try { return StringC(v); } catch (e) { return '[unprintable]'; }
  }

  function fmt(v) {
    switch (typeof v) {
      case 'string': return v;
      case 'undefined': return 'undefined';
      case 'function': return '[Function]';
      case 'object':
        if (v === null) return 'null';
        try {
          if (v instanceof ErrorC) {
            const s = v.stack;
            return str(v.name) + ': ' + str(v.message) + (s ? '\n' + str(s) : '');
          }
        } catch (e) { /* fall through */ }
        try {
          const s = JSONstringify(v);
          if (s !== undefined) return s;
        } catch (e) { /* cycles, BigInt */ }
        return str(v);
      default: return str(v);
    }
  }

  function log(level, args) {
    if (logTrunc) return;
    let line = '';
    for (let i = 0; i < args.length; i++) line += (i ? ' ' : '') + fmt(args[i]);
    logChars += line.length + 16;
    if (logChars > logCap) {
      logTrunc = true;
      out += 'T';
      return;
    }
    out += 'l' + level + line.length + ':' + line;
  }

  function request(kind, fields, tool) {
    const id = nextID++;
    let res, rej;
    const p = new PromiseC((a, b) => { res = a; rej = b; });
    waiters[id] = [res, rej, kind, tool];
    out += kind + id + ':' + fields;
    return p;
  }

  // hostError is the Error a rejected request rejects with: .code always
  // (a non-empty string), .tool for a tool call, .retryAfterMs when given.
  function hostError(info, tool) {
    let message = 'host call failed', code = 'tool_error', retry;
    if (info !== null && typeof info === 'object') {
      message = str(info.message);
      code = str(info.code) || 'internal';
      if (typeof info.retryAfterMs === 'number') retry = info.retryAfterMs;
    }
    const e = new ErrorC(message);
    defineProperty(e, 'code', { value: code, writable: true, configurable: true, enumerable: true });
    if (tool !== undefined) {
      defineProperty(e, 'tool', { value: tool, writable: true, configurable: true, enumerable: true });
    }
    if (retry !== undefined) {
      defineProperty(e, 'retryAfterMs', { value: retry, writable: true, configurable: true, enumerable: true });
    }
    return e;
  }

  // __toolgate_call(name, argsJSON) -> Promise<result value>: the host
  // primitive the prelude wraps into tool bindings.
  function toolCall(name, argsJSON) {
    if (typeof name !== 'string') throw new TypeErrorC('tool name must be a string');
    if (argsJSON === undefined) argsJSON = '{}';
    if (typeof argsJSON !== 'string') throw new TypeErrorC('tool arguments must be a JSON string');
    return request('c', name.length + ':' + name + argsJSON.length + ':' + argsJSON, name);
  }
  // Rejections are always coded Errors (see hostError): the bindings may
  // hand this primitive's promises to scripts unchanged.
  defineProperty(toolCall, 'errorsCarryCodes', { value: true });

  function setTimeout(fn, ms, ...args) {
    if (typeof fn !== 'function') throw new TypeErrorC('setTimeout needs a function');
    let delay = NumberC(ms);
    if (!(delay > 0)) delay = 0;
    if (delay > 2147483647) delay = 2147483647;
    const id = nextID++;
    waiters[id] = [fn, null, 't', args];
    out += 't' + id + ':' + floor(delay) + ':';
    return id;
  }

  function clearTimeout(id) {
    const w = waiters[id];
    if (w !== undefined && w[2] === 't') {
      delete waiters[id];
      out += 'x' + NumberC(id) + ':';
    }
  }

  function headerList(h) {
    const list = [];
    if (h === undefined || h === null) return list;
    if (isArray(h)) {
      for (let i = 0; i < h.length; i++) list[list.length] = [str(h[i][0]), str(h[i][1])];
      return list;
    }
    if (typeof h.forEach === 'function' && typeof h.get === 'function') {
      h.forEach((v, k) => { list[list.length] = [str(k), str(v)]; });
      return list;
    }
    const keys = Object.keys(h);
    for (let i = 0; i < keys.length; i++) list[list.length] = [keys[i], str(h[keys[i]])];
    return list;
  }

  function makeHeaders(pairs) {
    const map = create(null);
    for (let i = 0; i < pairs.length; i++) {
      const k = apply(toLower, pairs[i][0], []);
      map[k] = map[k] === undefined ? pairs[i][1] : map[k] + ', ' + pairs[i][1];
    }
    return freeze({
      get(name) { const v = map[apply(toLower, str(name), [])]; return v === undefined ? null : v; },
      has(name) { return map[apply(toLower, str(name), [])] !== undefined; },
      forEach(fn) { for (const k in map) fn(map[k], k); },
      entries() { const r = []; for (const k in map) r[r.length] = [k, map[k]]; return r; },
    });
  }

  function makeResponse(r) {
    const body = str(r.body);
    return freeze({
      status: r.status,
      statusText: str(r.statusText),
      ok: r.status >= 200 && r.status < 300,
      url: str(r.url),
      redirected: !!r.redirected,
      headers: makeHeaders(r.headers),
      text() { return PromiseC.resolve(body); },
      json() { return new PromiseC((res) => res(JSONparse(body))); },
    });
  }

  function fetch(input, init) {
    const o = init === undefined || init === null ? {} : init;
    const url = str(input && typeof input === 'object' && input.url !== undefined ? input.url : input);
    const method = o.method === undefined ? 'GET' : apply(toUpper, str(o.method), []);
    let body = null;
    if (o.body !== undefined && o.body !== null) body = str(o.body);
    const req = '{"url":' + q(url) + ',"method":' + q(method) +
      ',"headers":' + JSONstringify(headerList(o.headers)) + ',"body":' + (body === null ? 'null' : q(body)) + '}';
    return apply(promiseThen, request('f', req.length + ':' + req, undefined), [makeResponse]);
  }

  function errorInfo(e) {
    let name = 'Error', message = '', stack = '', code = '';
    try {
      if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
        if (e.name !== undefined) name = str(e.name);
        if (e.message !== undefined) message = str(e.message);
        if (e.stack !== undefined) stack = str(e.stack);
        if (e.code !== undefined) code = str(e.code);
      } else {
        message = 'uncaught ' + fmt(e);
      }
    } catch (x) {
      message = 'unprintable error';
    }
    return '{"name":' + q(name) + ',"message":' + q(message) + ',"stack":' + q(stack) + ',"code":' + q(code) + '}';
  }

  // end records the script's outcome, once: kind 'v' with the returned
  // value's JSON, or 'e' with the error's.
  function end(kind, json) {
    state = kind;
    out += kind + json.length + ':' + json;
  }

  function finish(v) {
    if (state) return;
    let s;
    try {
      s = v === undefined ? 'null' : JSONstringify(v);
    } catch (e) {
      end('e', errorInfo(new TypeErrorC('the returned value is not JSON-serialisable: ' + str(e && e.message))));
      return;
    }
    if (s === undefined) s = 'null';
    end('v', s);
  }

  function fail(e) {
    if (state) return;
    end('e', errorInfo(e));
  }

  // drain hands the host every record queued since the last drain; again
  // hands the same report once more, as a JSON string.
  let last = '';
  function drain() {
    last = out;
    out = '';
    return last;
  }
  function again() {
    return q(last);
  }

  // pump settles one host request; the interpreter's loop then runs every
  // reaction before the host reads drain().
  function pump(id, ok, payload) {
    const w = waiters[id];
    if (w === undefined) return;
    delete waiters[id];
    if (w[2] === 't') {
      try { apply(w[0], undefined, w[3]); } catch (e) { log('e', ['Uncaught (in setTimeout)', e]); }
    } else if (!ok) {
      w[1](hostError(JSONparse(payload), w[3]));
    } else {
      w[0](JSONparse(payload));
    }
  }

  // start watches the agent's function, which the host called itself (so
  // that no bootstrap frame is below the agent's code): ok is 1 with the
  // promise it returned, 0 with what it threw.
  function start(ok, v) {
    if (!ok) {
      fail(v);
      return;
    }
    try {
      apply(promiseThen, v, [finish, fail]);
    } catch (e) {
      fail(e);
    }
  }

  const consoleObj = freeze({
    log(...a) { log('l', a); },
    info(...a) { log('i', a); },
    debug(...a) { log('d', a); },
    warn(...a) { log('w', a); },
    error(...a) { log('e', a); },
  });

  function blocked() {
    throw new TypeErrorC('code generation from strings is disabled in the sandbox');
  }

  // seal runs after the prelude, before the agent's code: it takes the
  // execution's settings (the console cap in UTF-16 units, whether fetch
  // exists, the four words of the Math.random seed), hides the host
  // primitive, removes what a script must not reach and disables code
  // generation from strings. The host calls it once, with integers.
  function seal(cap, withFetch, s0, s1, s2, s3) {
    logCap = cap;
    r0 = s0 | 0; r1 = s1 | 0; r2 = s2 | 0; r3 = s3 | 0;
    if ((r0 | r1 | r2 | r3) === 0) r0 = 1;
    if (perfNow) perfBase = apply(perfNow, perf, []);
    origin = floor(dateNow());
    delete G.__toolgate_call;
    const fnProto = getPrototypeOf(blocked);
    const ctors = [
      fnProto,
      getPrototypeOf(async function () {}),
      getPrototypeOf(function* () {}),
      getPrototypeOf(async function* () {}),
    ];
    for (let i = 0; i < ctors.length; i++) {
      defineProperty(ctors[i], 'constructor', { value: blocked, writable: false, enumerable: false, configurable: false });
    }
    blocked.prototype = fnProto;
    defineProperty(G, 'Function', { value: blocked, writable: false, enumerable: false, configurable: false });
    // Error.prepareStackTrace would hand a script CallSite objects, whose
    // getFunction() returns the functions on the stack: the bootstrap's
    // own among them. Fixed to undefined, stacks stay strings.
    defineProperty(ErrorC, 'prepareStackTrace', { value: undefined, writable: false, enumerable: false, configurable: false });
    defineProperty(G, 'eval', { value: blocked, writable: false, enumerable: false, configurable: false });
    if (withFetch) {
      defineProperty(G, 'fetch', { value: fetch, writable: true, enumerable: false, configurable: true });
    }
  }

  const names = ['std', 'os', 'bjson', 'print', 'scriptArgs', 'setInterval', 'clearInterval', 'QJS_PROXY_VALUE', 'fetch'];
  for (let i = 0; i < names.length; i++) delete G[names[i]];
  G.console = consoleObj;
  G.setTimeout = setTimeout;
  G.clearTimeout = clearTimeout;
  G.performance = freeze({
    get timeOrigin() { return origin; },
    now: perfNow ? function () { return floor(apply(perfNow, perf, []) - perfBase); } : function () { return 0; },
  });
  defineProperty(Math, 'random', { value: random, writable: true, enumerable: false, configurable: true });
  G.__toolgate_call = toolCall;
  return [drain, pump, again, seal, start];
})(os);
