// tsreplicas.mjs connects the official TypeScript MCP SDK client (protocol
// 2025-11-25: a session opened with initialize) to a toolgate endpoint and
// makes ROUNDS tool calls of toolgate's Go test upstream (server "s"), with
// every tenth round also listing tools, resources and prompts, reading a
// resource, getting a prompt and running a Code Mode script; then it ends
// its session with a DELETE. It prints one JSON object on stdout for the Go
// test (e2e/replicas_test.go): the negotiated protocol version, the session
// ID, how many of each operation succeeded, and every error, in order.
//
// Usage: [TOOLGATE_KEY=key] node tsreplicas.mjs MCP_URL ROUNDS
//
// The SDK is imported by its package name, so the script must run from a
// folder whose node_modules holds the pinned npm packages of e2e/npm.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = process.argv[2];
const rounds = Number(process.argv[3] ?? 200);
const out = { errors: [], counts: {} };

const client = new Client({ name: "toolgate-e2e-ts-replicas", version: "1.0.0" }, { capabilities: {} });
let phase = "before delete";
client.onerror = (err) => out.errors.push(`client (${phase}): ` + String(err?.message ?? err));

const textOf = (res) =>
  (res.content ?? [])
    .filter((c) => c.type === "text")
    .map((c) => c.text)
    .join("");

// step runs one operation, counting it when it succeeds and recording its
// error otherwise.
async function step(what, fn) {
  try {
    await fn();
    out.counts[what] = (out.counts[what] ?? 0) + 1;
  } catch (err) {
    out.errors.push(`${what}: ${err?.message ?? err}`);
  }
}

function expect(what, got, want) {
  if (got !== want) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

async function main() {
  const key = process.env.TOOLGATE_KEY;
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: key ? { headers: { Authorization: `Bearer ${key}` } } : undefined,
  });
  await client.connect(transport);
  out.protocolVersion = transport.protocolVersion ?? null;
  out.sessionId = transport.sessionId ?? null;

  for (let i = 0; i < rounds; i++) {
    await step("call", async () => {
      expect("echo", textOf(await client.callTool({ name: "s__echo", arguments: { text: `ts ${i}` } })), `ts ${i}`);
    });
    if (i % 10 !== 0) {
      continue;
    }
    await step("tools/list", async () => {
      const names = (await client.listTools()).tools.map((t) => t.name);
      expect("tools/list has s__echo", names.includes("s__echo"), true);
    });
    await step("resources/list", async () => {
      const uris = (await client.listResources()).resources.map((r) => r.uri);
      expect("resources/list has test://static/1", uris.includes("test://static/1"), true);
    });
    await step("resources/read", async () => {
      const res = await client.readResource({ uri: `test://item/${i}` });
      expect("resources/read", res.contents[0]?.text, `item ${i}`);
    });
    await step("prompts/list", async () => {
      const names = (await client.listPrompts()).prompts.map((p) => p.name);
      expect("prompts/list has s__greet", names.includes("s__greet"), true);
    });
    await step("prompts/get", async () => {
      const res = await client.getPrompt({ name: "s__greet", arguments: { name: `ts${i}` } });
      expect("prompts/get", res.messages[0]?.content?.text, `Hello, ts${i}`);
    });
    await step("execute_code", async () => {
      const res = await client.callTool({
        name: "execute_code",
        arguments: { code: `return (await tools.s.echo({text: 'script ${i}'})).text` },
      });
      expect("execute_code isError", res.isError ?? false, false);
      expect("execute_code", res.structuredContent?.result, `script ${i}`);
    });
  }
  phase = "during delete";
  await step("delete", () => transport.terminateSession());
  phase = "after delete";
  await client.close();
}

try {
  await main();
  console.log(JSON.stringify(out));
} catch (err) {
  console.log(JSON.stringify({ fatal: String(err?.stack ?? err), partial: out }));
  process.exit(1);
}
