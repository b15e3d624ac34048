// tsclient.mjs connects the official TypeScript MCP SDK client to a toolgate
// gateway over streamable HTTP and exercises it through the tools of
// toolgate's Go test upstream, configured as server "t". It prints one JSON
// object on stdout for the Go test (e2e/tsclient_test.go) to check; a
// failure is printed as {"fatal": "..."} with exit status 1.
//
// Usage: [TOOLGATE_KEY=key] node tsclient.mjs GATEWAY_MCP_URL
//
// With $TOOLGATE_KEY set, every request carries "Authorization: Bearer KEY".
//
// The SDK is imported by its package name, so the script must run from a
// folder whose node_modules holds the pinned npm packages of e2e/npm (the
// test copies it next to a node_modules symlink).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const url = process.argv[2];
if (!url) {
  console.log(JSON.stringify({ fatal: "usage: node tsclient.mjs GATEWAY_MCP_URL" }));
  process.exit(1);
}

const out = { errors: [] };
const client = new Client(
  { name: "toolgate-e2e-ts-client", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: {}, roots: {} } },
);
client.onerror = (err) => out.errors.push(String(err?.message ?? err));

client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
  role: "assistant",
  model: "ts-model",
  content: { type: "text", text: "ts answers " + req.params.messages[0].content.text },
}));
client.setRequestHandler(ElicitRequestSchema, async (req) => ({
  action: "accept",
  content: { answer: "ts agrees to " + req.params.message },
}));
client.setRequestHandler(ListRootsRequestSchema, async () => ({
  roots: [{ uri: "file:///work/ts-client", name: "ts" }],
}));
const logs = [];
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
  logs.push(n.params);
});

// textOf joins the text content of a tool result.
const textOf = (res) =>
  (res.content ?? [])
    .filter((c) => c.type === "text")
    .map((c) => c.text)
    .join("");

async function main() {
  const key = process.env.TOOLGATE_KEY;
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: key ? { headers: { Authorization: `Bearer ${key}` } } : undefined,
  });
  await client.connect(transport);
  out.server = client.getServerVersion();
  out.protocolVersion = transport.protocolVersion ?? null;

  // Every tool, following pagination.
  out.tools = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    out.tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  out.tools.sort();

  out.echo = await client.callTool({ name: "t__echo", arguments: { text: "from the TypeScript SDK" } });
  out.content = await client.callTool({ name: "t__content", arguments: {} });
  out.fail = await client.callTool({ name: "t__fail", arguments: { message: "failing for ts" } });
  try {
    await client.callTool({ name: "t__no_such_tool", arguments: {} });
    out.unknown = { error: null };
  } catch (err) {
    out.unknown = { code: err.code ?? null, message: String(err.message) };
  }

  // Progress: the SDK sends its own (numeric) token and calls onprogress for
  // notifications that carry it while the request is open.
  const progress = [];
  const pres = await client.callTool({ name: "t__progress", arguments: { steps: 3 } }, undefined, {
    onprogress: (p) => progress.push({ progress: p.progress, total: p.total, message: p.message }),
  });
  out.progress = { result: textOf(pres), notifications: progress };

  // Requests the upstream makes during a call reach this client.
  out.sample = textOf(await client.callTool({ name: "t__sample", arguments: { prompt: "pick a number" } }));
  out.elicit = textOf(await client.callTool({ name: "t__elicit", arguments: { message: "continue?" } }));
  out.roots = textOf(await client.callTool({ name: "t__roots", arguments: {} }));

  // Logging.
  await client.setLoggingLevel("info");
  await client.callTool({ name: "t__log", arguments: { level: "notice", message: "hello from the upstream" } });
  const deadline = Date.now() + 20000;
  while (!logs.some((l) => l.data === "hello from the upstream") && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  out.log = logs.find((l) => l.data === "hello from the upstream") ?? null;

  // Resources and prompts.
  out.resources = (await client.listResources()).resources.map((r) => r.uri).sort();
  out.templates = (await client.listResourceTemplates()).resourceTemplates.map((r) => r.uriTemplate);
  out.item = await client.readResource({ uri: "test://item/7" });
  out.prompt = await client.getPrompt({ name: "t__greet", arguments: { name: "Grace" } });
  out.completion = (
    await client.complete({ ref: { type: "ref/prompt", name: "t__greet" }, argument: { name: "name", value: "b" } })
  ).completion.values;

  await client.close();
}

try {
  await main();
  console.log(JSON.stringify(out));
} catch (err) {
  console.log(JSON.stringify({ fatal: String(err?.stack ?? err), partial: out }));
  process.exit(1);
}
