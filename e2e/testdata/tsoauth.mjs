// tsoauth.mjs connects the official TypeScript MCP SDK client to a toolgate
// project that accepts OAuth access tokens, through the SDK's OAuth support:
// an OAuthClientProvider that holds a token the test got from its OpenID
// provider (the SDK sends it as "Authorization: Bearer"). It cannot run an
// interactive flow: when the SDK would start one, the provider records the
// authorization URL and the attempt fails.
//
// Usage: TOOLGATE_TOKEN=token node tsoauth.mjs GATEWAY_MCP_URL
//
// It prints one JSON object on stdout: the tools it sees, the result of
// t__echo, and, when TOOLGATE_TOKEN is refused, the error the SDK raised
// and whether it asked for an authorization flow.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = process.argv[2];
const token = process.env.TOOLGATE_TOKEN ?? "";
const out = { tools: null, echo: null, error: null, redirected: null };

// provider is an OAuthClientProvider with one token and no way to get
// another.
const provider = {
  get redirectUrl() {
    return "http://127.0.0.1:1/callback";
  },
  get clientMetadata() {
    return { client_name: "toolgate-e2e", redirect_uris: ["http://127.0.0.1:1/callback"] };
  },
  clientInformation: () => ({ client_id: "toolgate-e2e" }),
  saveClientInformation: () => {},
  tokens: () => ({ access_token: token, token_type: "Bearer" }),
  saveTokens: () => {},
  redirectToAuthorization: (u) => {
    out.redirected = String(u);
    throw new Error("no interactive authorization in this test");
  },
  saveCodeVerifier: () => {},
  codeVerifier: () => "unused",
};

async function main() {
  const client = new Client({ name: "toolgate-e2e-ts-oauth", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  try {
    await client.connect(transport);
    out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
    out.echo = await client.callTool({ name: "t__echo", arguments: { text: "from the TypeScript SDK with a token" } });
  } catch (err) {
    out.error = String(err?.message ?? err);
  }
  await client.close().catch(() => {});
}

await main();
console.log(JSON.stringify(out));
