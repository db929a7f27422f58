// `wasi:http/outgoing-handler` for the transpiled component (`jco transpile --map`): the
// shim's handler behind the allow-list of allowlist.js. A refused request fails with
// `HTTP-request-denied`, which the component reports as a `denied` error naming the URL;
// responses of allowed hosts teach it their token realms and redirects.

import { outgoingHandler as shimHandler, types } from "@bytecodealliance/preview2-shim/http";
import { NetworkPolicy, realmsOf } from "./allowlist.js";

let policy = new NetworkPolicy({ learn: false });

/** Sets the policy every later request is checked against. */
export function setPolicy(p) {
  policy = p;
}

/** Which origin each pending response came from, to learn from it once it arrives. */
const origins = new WeakMap();
const decoder = new TextDecoder();
const get = types.FutureIncomingResponse.prototype.get;
types.FutureIncomingResponse.prototype.get = function () {
  const result = get.call(this);
  const origin = origins.get(this);
  if (origin && result?.tag === "ok" && result.val.tag === "ok") {
    origins.delete(this);
    const headers = result.val.val.headers();
    const text = (name) => headers.get(name).map((v) => decoder.decode(v));
    policy.learnFrom(origin.scheme, origin.authority, {
      realms: realmsOf(text("www-authenticate")),
      location: text("location")[0] ?? null,
    });
  }
  return result;
};

/** `wasi:http/outgoing-handler`: the shim's, behind the policy. */
export const outgoingHandler = {
  handle(request, options) {
    const s = request.scheme();
    const scheme = s === undefined ? "https" : s.tag === "other" ? s.val.toLowerCase() : s.tag.toLowerCase();
    const auth = request.authority() ?? "";
    policy.firstRequestAt ??= performance.timeOrigin + performance.now();
    const why = policy.check(scheme, auth);
    if (why !== null) {
      policy.denied.push(`refused ${scheme}://${auth}: ${why}`);
      throw { tag: "HTTP-request-denied" };
    }
    const future = shimHandler.handle(request, options);
    origins.set(future, { scheme, authority: auth });
    return future;
  },
};
