#!/usr/bin/env node
// A Node host for the imo component: jco transpiles it to JavaScript over preview2-shim, with
// `wasi:http/outgoing-handler` mapped to policy.js, which lets the component reach only the
// registries the command names (and the token realms and redirects they point to).
//
//   npm ci                      # @bytecodealliance/jco and preview2-shim, pinned
//   imo component -o imo.wasm
//   node host.js imo.wasm [HOST-OPTION...] COMMAND ARG...      the component's command line
//   node host.js imo.wasm [HOST-OPTION...] --call EXPORT ARG... one imo:overlay export
//
// HOST-OPTIONs: `--dir HOST_DIR[::GUEST_DIR]` grants a directory (writable; none by default),
// `--allow-host HOST[:PORT]` allows one more host, `--only-registry HOST[:PORT]` allows that
// registry instead of those the command names (repeatable), `--no-learn` allows no realm or
// redirect they point to, `--timing` reports how soon the component's first request came,
// `--options JSON` sets fields of the exports' `options` record (`{"mountFrom": ["org/base"]}`). Exports (`--call`): `pull BASE FINAL FILE`, `inventory
// SOURCE...`, `push-vet FILE DESTINATION`, `push FILE DESTINATION`, `verify FILE`, `inspect
// FILE`; the result is printed as JSON. Exit status: 0, 1 when the component fails (its
// message on stderr), 2 on a usage error.
//
// As a module: `transpile(wasm)` once, then `run(module, args, grants)` and
// `call(module, name, params, grants)`; each operation runs in its own worker thread, so the
// caller's event loop keeps turning while the component works.

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { referencesOf } from "./allowlist.js";

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Transpiles the component once per content into `transpiled/<digest>/` beside this file
 * (where `@bytecodealliance/preview2-shim` resolves), with the outgoing handler mapped to
 * policy.js. Returns the module's URL.
 */
export async function transpile(wasm) {
  const digest = createHash("sha256").update(readFileSync(wasm)).digest("hex").slice(0, 16);
  const out = join(here, "transpiled", digest);
  if (!existsSync(join(out, "imo.js"))) {
    const partial = `${out}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    await promisify(execFile)(join(here, "node_modules/.bin/jco"), [
      "transpile", resolve(wasm), "--quiet", "--name", "imo", "-o", partial,
      "--map", `wasi:http/outgoing-handler@0.2.12=${join(here, "policy.js")}#outgoingHandler`,
    ]);
    writeFileSync(join(partial, "package.json"), '{ "type": "module" }\n');
    mkdirSync(dirname(out), { recursive: true });
    try {
      renameSync(partial, out);
    } catch (e) {
      // Another process transpiled the same component meanwhile: use its copy.
      rmSync(partial, { recursive: true, force: true });
      if (!existsSync(join(out, "imo.js"))) throw e;
    }
  }
  return pathToFileURL(join(out, "imo.js")).href;
}

function inWorker(data) {
  return new Promise((resolveResult, reject) => {
    const worker = new Worker(join(here, "worker.js"), { workerData: data });
    let answer;
    worker.on("message", (m) => (answer = m));
    worker.on("error", reject);
    // A component calling `wasi:cli/exit` ends its worker with that status.
    worker.on("exit", (code) => resolveResult(answer ?? { status: code, denied: [] }));
  });
}

/**
 * The policy for a grant: the registries of `references`, or only `grants.registries` when
 * given (`host[:port]`: an embedder's own list); `grants.allowHosts` more hosts; and
 * `grants.learn` (default true) whether their realms and redirects are learned.
 */
function policyFor(references, insecure, { learn = true, allowHosts = [], registries } = {}) {
  return registries
    ? { references: [], insecure, learn, allowHosts: [...registries, ...allowHosts] }
    : { references, insecure, learn, allowHosts };
}

/**
 * Runs the component's command line (`wasi:cli/run`) with `args`. `grants.preopens` maps
 * guest directories to host ones. Resolves to `{ status, denied, firstRequestMs }`: the
 * exit status, the requests the policy refused (`refused URL: why`), and how long the worker
 * took from its start to the component's first request.
 */
export async function run(module, args, grants = {}) {
  const { references, insecure } = referencesOf(args);
  const preopens = Object.fromEntries(Object.entries(grants.preopens ?? {}).map(([guest, host]) => [guest, resolve(host)]));
  return inWorker({ module, args, preopens, policy: policyFor(references, insecure, grants) });
}

/** What every export takes as `options`, as imo's command line sets it by default. */
export function defaultOptions() {
  return {
    baseCredentials: undefined,
    finalCredentials: undefined,
    pushCredentials: undefined,
    registryCredentials: [],
    insecureRegistries: [],
    mountFrom: [],
    platforms: [],
    referrers: true,
    maxRetries: 4,
    chunkSize: 0n,
    progress: false,
    destinationMap: [],
    mountFromArchive: false,
    deltas: false,
  };
}

/**
 * Calls one `imo:overlay` export. Files are host paths: the worker opens them through the
 * shim and hands the component a stream, the only thing it sees of them. Resolves to the
 * export's result; rejects with an Error whose message is the component's (`not-found:
 * ...`), `kind` its error case, and `denied` the requests refused.
 */
export async function call(module, name, params, grants = {}) {
  const options = { ...defaultOptions(), ...(grants.options ?? {}) };
  const file = (path, how) => ({ file: resolve(path), how });
  const [a, b, c] = params;
  const plan = {
    pull: () => [[a, b], ["pull", [a, b, file(c, "write"), options]]],
    inventory: () => [[...params], ["inventory", [params, options]]],
    "push-vet": () => [[b], ["pushVet", [file(a, "read"), b, options]]],
    push: () => [[b], ["push", [file(a, "read"), b, options]]],
    verify: () => [[], ["verify", [file(a, "read")]]],
    inspect: () => [[], ["inspect", [file(a, "read")]]],
  }[name];
  if (!plan) throw new Error(`no export ${name}: pull, inventory, push-vet, push, verify or inspect`);
  const [references, [exportName, exportParams]] = plan();
  references.push(...options.destinationMap.map(([, to]) => to));
  const answer = await inWorker({
    module,
    call: { name: exportName, params: exportParams },
    policy: policyFor(references, options.insecureRegistries, grants),
  });
  if (answer.error) {
    const e = new Error(answer.error.message);
    e.kind = answer.error.kind;
    e.denied = answer.denied;
    throw e;
  }
  return answer.result;
}

const USAGE = `usage: node host.js IMO.wasm [--dir HOST[::GUEST]]... [--allow-host HOST]...
         [--only-registry HOST]... [--no-learn] [--timing] [--options JSON]
         (COMMAND ARG... | --call EXPORT ARG...)`;

async function main(argv) {
  const [wasm, ...rest] = argv;
  const started = performance.now();
  const grants = { preopens: {}, allowHosts: [], learn: true };
  let timing = false;
  let i = 0;
  for (; i < rest.length; i++) {
    if (rest[i] === "--dir" && rest[i + 1]) {
      const [host, guest] = rest[++i].split("::");
      grants.preopens[guest ?? host] = resolve(host);
    } else if (rest[i] === "--allow-host" && rest[i + 1]) {
      grants.allowHosts.push(rest[++i]);
    } else if (rest[i] === "--only-registry" && rest[i + 1]) {
      (grants.registries ??= []).push(rest[++i]);
    } else if (rest[i] === "--no-learn") {
      grants.learn = false;
    } else if (rest[i] === "--timing") {
      timing = true;
    } else if (rest[i] === "--options" && rest[i + 1]) {
      // JSON, with `chunkSize` as a number.
      const options = JSON.parse(rest[++i]);
      if ("chunkSize" in options) options.chunkSize = BigInt(options.chunkSize);
      grants.options = options;
    } else {
      break;
    }
  }
  const args = rest.slice(i);
  if (!wasm || args.length === 0) {
    console.error(USAGE);
    return 2;
  }
  const module = await transpile(wasm);
  if (args[0] === "--call") {
    try {
      const result = await call(module, args[1], args.slice(2), grants);
      const json = typeof result === "string" ? result : JSON.stringify(result, (_, v) => (typeof v === "bigint" ? Number(v) : v));
      process.stdout.write(json + "\n");
      return 0;
    } catch (e) {
      for (const d of e.denied ?? []) console.error(d);
      console.error(`error: ${e.message}`);
      return e.kind === undefined ? 2 : 1;
    }
  }
  const transpiled = performance.now();
  const { status, denied, firstRequestMs } = await run(module, args, grants);
  for (const d of denied) console.error(d);
  if (timing && firstRequestMs) {
    const total = firstRequestMs + (transpiled - started);
    console.error(`first request ${firstRequestMs.toFixed(0)} ms after the worker started, ${total.toFixed(0)} ms after the host did`);
  }
  return status;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
