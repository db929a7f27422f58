// One operation of the component, in a worker thread of host.js: the component runs
// synchronously, so here it blocks only this thread, never the embedding program's event
// loop. A fresh worker per operation also gives each its own WASI state (arguments,
// preopens, policy), which preview2-shim keeps per module instance.

import { parentPort, workerData } from "node:worker_threads";
import { renameSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { cli, filesystem } from "@bytecodealliance/preview2-shim";
import { NetworkPolicy } from "./allowlist.js";
import { setPolicy } from "./policy.js";

const { module, args, preopens, call, policy: policyOptions } = workerData;
const started = performance.timeOrigin + performance.now();

// Nothing the caller did not grant: no directory, no environment variable.
filesystem._setPreopens(preopens ?? {});
cli._setEnv({});
cli._setArgs(["imo", ...(args ?? [])]);
const policy = new NetworkPolicy(policyOptions);
setPolicy(policy);

const imo = await import(module);

/** A component error (`result::err`) as its case (`kind`) and the message it carries. */
function message(e) {
  const p = e?.payload;
  if (p && typeof p === "object" && "tag" in p) {
    const val = Array.isArray(p.val) ? `the destination lacks ${p.val.join(", ")}` : p.val;
    return { kind: p.tag, message: val ?? p.tag };
  }
  return { kind: "host", message: e instanceof Error ? e.message : String(e) };
}

/** A file for the component: a stream the shim makes, through a directory opened for this
 *  one file. Returns the stream and what finishes or undoes the file. */
function open(path, how) {
  const dir = dirname(path);
  const name = basename(path);
  const [[root]] = filesystem.createFilesystem({ preopens: { "/": dir } }).preopens.getDirectories();
  if (how === "read") {
    const file = root.openAt({ symlinkFollow: true }, name, {}, { read: true });
    return { value: file.readViaStream(0n), done() {}, undo() {} };
  }
  // Written under a fresh name and renamed once whole, as the component's own `-o` does.
  const partial = `.${name}.node-${process.pid}-${Date.now()}.partial`;
  const file = root.openAt({}, partial, { create: true, exclusive: true }, { write: true });
  return {
    value: file.writeViaStream(0n),
    done() {
      renameSync(join(dir, partial), path);
    },
    undo() {
      rmSync(join(dir, partial), { force: true });
    },
  };
}

const firstRequest = () => policy.firstRequestAt && policy.firstRequestAt - started;

if (call) {
  const files = [];
  try {
    const params = call.params.map((p) => {
      if (!(p && typeof p === "object" && "file" in p)) return p;
      try {
        const f = open(p.file, p.how);
        files.push(f);
        return f.value;
      } catch (e) {
        // The shim throws a `wasi:filesystem` error code (`no-entry`, `access`, ...).
        throw new Error(`${p.file}: ${typeof e === "string" ? e : e?.message ?? e}`);
      }
    });
    const result = imo.overlay[call.name](...params);
    for (const f of files) f.done();
    parentPort.postMessage({ result, denied: policy.denied, firstRequestMs: firstRequest() });
  } catch (e) {
    for (const f of files) f.undo();
    parentPort.postMessage({ error: message(e), denied: policy.denied, firstRequestMs: firstRequest() });
  }
} else {
  let status = 0;
  try {
    imo.run.run();
  } catch (e) {
    // `wasi:cli/run` returned an error: the component has said why on stderr.
    if (!(e?.payload === undefined && e?.constructor?.name === "ComponentError")) {
      process.stderr.write(`imo-node: ${message(e).message}\n`);
    }
    status = 1;
  }
  parentPort.postMessage({ status, denied: policy.denied, firstRequestMs: firstRequest() });
}
