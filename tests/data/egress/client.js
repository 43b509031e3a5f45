"use strict";
// The Node client of the egress tests: `node client.js REQUEST.json`, the request's mode, URL,
// method, headers and body read from the file so that no token is on a command line or in the
// environment. Modes: request, sse.
//
// Prints `STATUS PROTOCOL`, then the body (request) or a line `event INDEX DELAY_US` per
// server-sent event as it arrives (sse), DELAY_US being its arrival less the send time in its
// data. A non-2xx status is a reply, not an error; a failure to connect exits 1.
//
// CA: Node's bundled roots plus NODE_EXTRA_CA_CERTS, read at startup. Proxy: none. Node's `https`
// module ignores HTTPS_PROXY, and is left to: such clients are why the kernel redirects
// connections to the proxy rather than relying on the environment.

const fs = require("fs");

const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const url = new URL(request.url);
const transport = require(url.protocol === "https:" ? "https" : "http");

function send(onResponse) {
  const outgoing = transport.request(url, { method: request.method, headers: request.headers }, (response) => {
    process.stdout.write(`${response.statusCode} HTTP/${response.httpVersion}\n`);
    onResponse(response);
  });
  outgoing.on("error", (error) => {
    console.error(`client.js: ${error.message}`);
    process.exitCode = 1;
  });
  outgoing.end(request.body);
}

// Unix time in µs: the time origin is wall-clock, `now` is monotonic with sub-ms precision.
function unixMicros() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function sse(response) {
  response.setEncoding("utf8");
  let partial = "";
  response.on("data", (chunk) => {
    const arrival = unixMicros();
    const lines = (partial + chunk).split("\n");
    partial = lines.pop();
    for (const line of lines.filter((line) => line.startsWith("data: "))) {
      const [index, sent] = line.slice("data: ".length).split(" ");
      process.stdout.write(`event ${index} ${arrival - Number(sent)}\n`);
    }
  });
}

const modes = {
  request: () => send((response) => response.pipe(process.stdout)),
  sse: () => send(sse),
};

modes[request.mode]();
