package bindings

import "strings"

// Prelude renders the JavaScript that a sandbox evaluates before a script
// to define its bindings:
//
//   - tools.<server>.<tool>(args), written tools["my-server"]["do.it"](args)
//     for names that are not identifiers;
//   - a global per server (filesystem.read_file(args)) when the name is an
//     identifier that shadows no reserved word, JavaScript or common host
//     built-in, or name the prelude defines, and is not yet defined on
//     globalThis;
//   - callTool(fullName, args), which takes any name: unknown and filtered
//     names are refused by the tool path, not here.
//
// Any other name under tools.<server> (or a server global) is a function
// too, so that a script calling a tool that does not exist or that it may
// not see gets the tool path's answer (a "not_found" Error) rather than a
// TypeError: tools.<server>.<name>(args) is then callTool(prefix+name,
// args), where prefix is the server's namespace as its tools in the table
// show it ("<server>__" when they show none), and tools.<name> of a server
// without visible tools is a server object without tools that behaves the
// same way. Reading such a name calls nothing; so do awaiting the objects
// (their "then" is undefined), JSON.stringify ("toJSON"), symbol lookups
// and the names of Object.prototype, which keep their usual meaning.
//
// Every binding calls the host primitive globalThis[hostFn] as
// hostFn(fullName, argsJSON) and expects a promise of the value itself (the
// host parses the JSON text [Invoke] returns; sandbox's primitive does so
// with the JSON.parse it captured before any script ran), which the
// binding resolves with unchanged. Arguments left out or null are sent as {}; arguments that are
// not a plain object reject with a TypeError whose code is
// "invalid_arguments". A rejection of the host primitive becomes an Error
// with .code, .tool and, when given, .retryAfterMs; the reason may be an
// Error (kept, with .code "internal" added when missing), an object or the
// JSON text of one ({"code","message","retryAfterMs"}, as a [callerr.Error]
// marshals), or any other string (the message, code "internal").
//
// When hostFn has an own property errorsCarryCodes set to true, the host
// promises to reject only with Errors that carry a non-empty string .code,
// .tool (the name it was called with) and, when known, a numeric
// .retryAfterMs, as sandbox's primitive does; a binding then returns the
// host's promise itself, which saves the script a promise step per call.
//
// The prelude removes hostFn from globalThis after capturing it (when the
// property is configurable), so a script reaches tools only through the
// bindings, and it freezes every
// object it defines and makes tools, callTool and the server globals
// non-writable and non-configurable, so no part of a script can redirect a
// binding that another part uses. It is evaluated as a classic script; it
// throws if hostFn is not a function.
func Prelude(tools []Tool, hostFn string) string {
	ts := normalize(tools)
	var b strings.Builder
	b.WriteString(preludeHead)
	b.WriteString("})(globalThis, ")
	b.WriteString(quote(hostFn))
	b.WriteString(", [")
	for i := range ts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n  [")
		b.WriteString(quote(ts[i].Server))
		b.WriteByte(',')
		b.WriteString(quote(ts[i].Name))
		b.WriteByte(',')
		b.WriteString(quote(ts[i].callName()))
		b.WriteByte(']')
	}
	b.WriteString("\n], [")
	n := 0
	for i := range ts {
		s := ts[i].Server
		if !isGlobalServerName(s) || i > 0 && ts[i-1].Server == s {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		b.WriteString(quote(s))
	}
	b.WriteString("]);\n")
	return b.String()
}

// preludeHead is the body of the prelude; Prelude appends its arguments:
// the global object, the name of the host primitive, the table of
// [server, tool, fullName] and the servers that get a global.
//
// It uses only ES2017 features and captures the built-ins it needs, so a
// script that replaces JSON.parse or Object.freeze later changes nothing.
const preludeHead = `// toolgate bindings: tools, callTool and one global per server.
(function (g, hostName, table, globals) {
  "use strict";
  var host = g[hostName];
  if (typeof host !== "function") {
    throw new Error("toolgate: host function " + hostName + " is missing");
  }
  try { delete g[hostName]; } catch (e) {}
  var ErrorCtor = Error, TypeErrorCtor = TypeError;
  var define = Object.defineProperty, freeze = Object.freeze;
  var hasOwn = Function.prototype.call.bind(Object.prototype.hasOwnProperty);
  var isArray = Array.isArray, parse = JSON.parse, stringify = JSON.stringify;
  var apply = Reflect.apply, PromiseCtor = Promise, promiseReject = Promise.reject;
  var getOwn = Object.getOwnPropertyDescriptor;
  var codedHost = (function () {
    var d = getOwn(host, "errorsCarryCodes");
    return d !== undefined && d.value === true;
  })();
  function rejected(e) { return apply(promiseReject, PromiseCtor, [e]); }

  function fail(e, code, tool, retryAfterMs) {
    try {
      define(e, "code", { value: code, writable: true, enumerable: true, configurable: true });
      define(e, "tool", { value: tool, writable: true, enumerable: true, configurable: true });
      if (typeof retryAfterMs === "number") {
        define(e, "retryAfterMs", { value: retryAfterMs, writable: true, enumerable: true, configurable: true });
      }
    } catch (x) { // a frozen Error from the host: copy it
      return fail(new ErrorCtor(String(e.message)), code, tool, retryAfterMs);
    }
    return e;
  }

  // toError turns a rejection of the host primitive into an Error with a code.
  function toError(reason, tool) {
    if (reason instanceof ErrorCtor) {
      var code = typeof reason.code === "string" && reason.code !== "" ? reason.code : "internal";
      return fail(reason, code, tool, reason.retryAfterMs);
    }
    var o = reason;
    if (typeof reason === "string") {
      try { o = parse(reason); } catch (e) { o = { message: reason }; }
      if (o === null || typeof o !== "object") o = { message: reason };
    }
    if (o === null || typeof o !== "object") o = { message: String(o) };
    var message = typeof o.message === "string" ? o.message : "tool call failed";
    var c = typeof o.code === "string" && o.code !== "" ? o.code : "internal";
    return fail(new ErrorCtor(message), c, tool, o.retryAfterMs);
  }

  // call returns a promise, never throws: bad arguments reject it.
  function call(tool, args) {
    if (args === undefined || args === null) {
      args = {};
    } else if (typeof args !== "object" || isArray(args)) {
      return rejected(fail(new TypeErrorCtor(tool + ": arguments must be an object"), "invalid_arguments", tool));
    }
    var text;
    try {
      text = stringify(args);
    } catch (e) {
      return rejected(fail(new TypeErrorCtor(tool + ": arguments cannot be sent as JSON: " + e.message), "invalid_arguments", tool));
    }
    if (!codedHost) return viaHost(tool, text);
    try {
      return host(tool, text);
    } catch (reason) {
      return rejected(toError(reason, tool));
    }
  }

  // viaHost calls a host whose rejections need turning into coded Errors.
  async function viaHost(tool, text) {
    try {
      return await host(tool, text);
    } catch (reason) {
      throw toError(reason, tool);
    }
  }

  function binding(tool, label) {
    var f = function (args) { return call(tool, args); };
    define(f, "name", { value: label });
    return freeze(f);
  }

  var constant = function (obj, key, value) {
    define(obj, key, { value: value, writable: false, enumerable: true, configurable: false });
  };

  // Names that are no visible tool. A server object and tools inherit
  // from a frozen Proxy that answers any other string name: under a
  // server with a function that calls the tool path with the name
  // callTool would take, so that a tool that does not exist or is hidden
  // rejects with the tool path's own "not_found"; under tools with the
  // (empty) server object of an unknown server. The names of
  // Object.prototype as the prelude found it, "then" (so that awaiting
  // one of these objects does not call anything) and "toJSON" (so that
  // JSON.stringify does not) keep their usual meaning, as do symbols.
  var ProxyCtor = Proxy, reflectGet = Reflect.get, create = Object.create;
  var getOwnNames = Object.getOwnPropertyNames, objectProto = Object.prototype;
  var usual = create(null);
  var protoNames = getOwnNames(objectProto);
  for (var u = 0; u < protoNames.length; u++) usual[protoNames[u]] = true;
  usual.then = true;
  usual.toJSON = true;
  function answering(answer) {
    var target = freeze(create(objectProto));
    return new ProxyCtor(target, {
      get: function (t, key, receiver) {
        if (typeof key !== "string" || usual[key] === true) return reflectGet(t, key, receiver);
        return answer(key);
      }
    });
  }
  function serverObject(prefix) {
    return create(answering(function (name) { return binding(prefix + name, name); }));
  }
  var unknownServers = create(null);

  var tools = create(answering(function (server) {
    if (!hasOwn(unknownServers, server)) unknownServers[server] = freeze(serverObject(server + "__"));
    return unknownServers[server];
  }));
  for (var i = 0; i < table.length; i++) {
    var server = table[i][0], name = table[i][1], full = table[i][2];
    if (!hasOwn(tools, server)) {
      // The server's namespace, as its first tool shows it.
      var prefix = server + "__";
      if (full.length >= name.length && full.slice(full.length - name.length) === name) {
        prefix = full.slice(0, full.length - name.length);
      }
      constant(tools, server, serverObject(prefix));
    }
    if (!hasOwn(tools[server], name)) constant(tools[server], name, binding(full, name));
  }
  for (var k = 0; k < table.length; k++) freeze(tools[table[k][0]]);
  freeze(tools);

  var callTool = async function callTool(name, args) {
    if (typeof name !== "string") {
      throw fail(new TypeErrorCtor("callTool: name must be a string"), "invalid_arguments", String(name));
    }
    return call(name, args);
  };
  freeze(callTool);

  var global = function (key, value) {
    define(g, key, { value: value, writable: false, enumerable: false, configurable: false });
  };
  global("tools", tools);
  global("callTool", callTool);
  for (var j = 0; j < globals.length; j++) {
    if (!(globals[j] in g)) global(globals[j], tools[globals[j]]);
  }
`
