// The allow-list of the Node host, as plain data and pure functions (no I/O): which
// registries the component may reach, built as the Rust host builds its policy
// (host/src/policy.rs). policy.js applies it to every request; allowlist.test.js tests it.
//
// - The registries the command names are allowed; plain HTTP only to loopback ones and to
//   those named with --insecure.
// - Hosts an allowed registry points to (the token realm of its `WWW-Authenticate`
//   challenge, the target of its redirects) are learned as its responses pass, over HTTPS;
//   over plain HTTP only from a loopback registry reached in clear to a loopback target.
//   A target on a loopback, link-local or private address is learned only from a registry
//   on such an address itself.

/** Options of the component's command line that take a value. */
const VALUE_OPTIONS = new Set([
  "-o", "--output", "--base", "--have", "--archive", "--map", "--insecure", "--mount-from",
  "--creds", "--base-creds", "--final-creds", "--dest-creds", "--platform", "--retries",
  "--chunk-size", "--timeout",
]);

/**
 * The image references a command line names (`pull`, `inventory`, `vet`, `push`), and its
 * `--insecure` registries: what the policy allows.
 */
export function referencesOf(args) {
  const positional = [];
  const references = [];
  const insecure = [];
  for (let i = 0; i < args.length; i++) {
    let [flag, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [args[i].slice(0, args[i].indexOf("=")), args[i].slice(args[i].indexOf("=") + 1)]
      : [args[i], undefined];
    if (VALUE_OPTIONS.has(flag)) {
      const value = inline ?? args[++i];
      if (value === undefined) break;
      if (flag === "--base") references.push(value);
      if (flag === "--map") references.push(value.slice(value.indexOf("=") + 1));
      if (flag === "--insecure") insecure.push(value);
    } else if (!flag.startsWith("-") || flag === "-") {
      positional.push(flag);
    }
  }
  const [command, ...rest] = positional;
  if (command === "pull" || command === "inventory") references.push(...rest);
  if (command === "vet" || command === "push") references.push(...rest.slice(1, 2));
  return { references, insecure };
}

/** The API host of a reference's registry (`registry-1.docker.io` for Docker Hub); none
 *  for `scratch`, `oci:` layouts and `-`. */
export function registryOf(reference) {
  if (reference === "scratch" || reference === "-" || reference.startsWith("oci:")) return null;
  const slash = reference.indexOf("/");
  const first = slash < 0 ? reference : reference.slice(0, slash);
  // Before a slash, a name with a dot or port (or localhost) is a registry; with no slash,
  // only `host:port` is (a push destination prefix): `name:tag` is a Docker Hub image.
  const isHost = slash >= 0
    ? first === "localhost" || /[.:[]/.test(first)
    : first === "localhost" || /^(\[[0-9a-fA-F:.]+\]|[^:]+):\d+$/.test(first);
  const host = isHost ? first.toLowerCase() : "docker.io";
  return host === "docker.io" || host === "index.docker.io" ? "registry-1.docker.io" : host;
}

/** `{host, port}` of `host[:port]` (IPv6 in brackets; `port` null when not given). */
function authority(text) {
  const m = /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9._-]+)(?::(\d{1,5}))?$/.exec(text ?? "");
  if (!m) return null;
  let host;
  try {
    // As URLs read it, so `2130706433` and `0x7f.1` are the 127.0.0.1 a realm URL names.
    host = new URL(`http://${m[1]}/`).hostname.replace(/\.$/, "");
  } catch {
    return null;
  }
  return { host, port: m[2] === undefined ? null : Number(m[2]) };
}

/** Whether a request to `b` reaches `a`, a missing port being the scheme's `defaultPort`. */
function covers(a, b, defaultPort) {
  return a.host === b.host && (a.port ?? defaultPort) === (b.port ?? defaultPort);
}

const defaultPort = (scheme) => (scheme === "http" ? 80 : 443);

/** Whether `host` is loopback (`localhost`, 127/8, ::1), as the component sees it. */
function isLoopback(host) {
  return addressClass(host) === "loopback";
}

/** `loopback`, `link-local` or `private` for such an address, IPv4 in any form the
 *  resolver reads (`2130706433`, `0x7f.1`); null otherwise. */
export function addressClass(host) {
  host = host.toLowerCase().replace(/\.$/, "");
  if (host === "localhost" || host.endsWith(".localhost")) return "loopback";
  if (host.startsWith("[")) {
    const v6 = host.slice(1, -1);
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6);
    if (mapped) return addressClass(mapped[1]);
    if (v6 === "::1" || v6 === "::") return "loopback";
    const first = parseInt(v6.split(":")[0] || "0", 16);
    if ((first & 0xffc0) === 0xfe80) return "link-local";
    if ((first & 0xfe00) === 0xfc00) return "private";
    return null;
  }
  const v4 = looseIpv4(host);
  if (v4 === null) return null;
  const [a, b] = [v4 >>> 24, (v4 >>> 16) & 0xff];
  if (a === 127 || a === 0) return "loopback";
  if (a === 169 && b === 254) return "link-local";
  if (a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168)) return "private";
  return null;
}

function looseIpv4(host) {
  const parts = host.split(".").map((p) => {
    if (/^0x[0-9a-f]+$/.test(p)) return parseInt(p.slice(2), 16);
    if (/^0[0-7]+$/.test(p)) return parseInt(p.slice(1), 8);
    if (/^\d+$/.test(p)) return Number(p);
    return NaN;
  });
  if (parts.length === 0 || parts.length > 4 || parts.some(Number.isNaN)) return null;
  const last = parts.pop();
  if (parts.some((p) => p > 255) || last >= 2 ** (8 * (4 - parts.length))) return null;
  return parts.reduce((acc, p, i) => acc + p * 2 ** (8 * (3 - i)), 0) + last;
}


export class NetworkPolicy {
  /**
   * `references`: what the command names; `insecure`: `host[:port]` reached over plain
   * HTTP; `allowHosts`: more `host[:port]` to allow; `learn`: whether hosts the allowed
   * registries point to become allowed.
   */
  constructor({ references = [], insecure = [], allowHosts = [], learn = true } = {}) {
    const named = [...references.map(registryOf).filter(Boolean), ...allowHosts];
    const parse = (h, what) => {
      const a = authority(h);
      if (!a) throw new Error(`${what} ${JSON.stringify(h)} is not host[:port]`);
      return a;
    };
    this.named = named.map((h) => parse(h, "the registry"));
    this.insecure = insecure.map((h) => parse(h, "--insecure"));
    this.learn = learn;
    /** Learned authorities: `{a, plainHttp, private}`. */
    this.learned = [];
    /** Why a host a response pointed to was not learned (or not for plain HTTP): `{a, why}`. */
    this.refused = [];
    /** Every refusal, `refused URL: REASON`, in order. */
    this.denied = [];
    /** When the component first asked for a request (ms since the epoch), for start-up. */
    this.firstRequestAt = null;
  }

  /** Null if `scheme://auth` may be reached, else why not. */
  check(scheme, auth) {
    const a = authority(auth);
    if (!a) return "the authority is malformed";
    if (scheme !== "http" && scheme !== "https") return "only http and https are allowed";
    const port = defaultPort(scheme);
    const plain = scheme === "http";
    const insecure = this.insecure.some((i) => covers(i, a, port));
    if (this.named.some((n) => covers(n, a, port))) {
      return plain && !isLoopback(a.host) && !insecure
        ? "plain HTTP is allowed only for loopback registries and those named with --insecure"
        : null;
    }
    const learned = this.learned.find((l) => covers(l.a, a, port));
    if (learned && (!plain || learned.plainHttp || insecure)) return null;
    const refused = this.refused.find((r) => covers(r.a, a, port));
    return refused?.why ?? (learned
      ? "plain HTTP goes only to registries named on the command line, not to hosts a registry points to"
      : "the command names no registry there (allow it by name to permit it)");
  }

  /**
   * Learns what an allowed `scheme://auth` points to: `realms` from its `WWW-Authenticate`
   * challenges, `location` of a redirect. Call it only for responses of allowed hosts.
   */
  learnFrom(scheme, auth, { realms = [], location = null }) {
    if (!this.learn) return;
    const a = authority(auth);
    if (!a) return;
    const port = defaultPort(scheme);
    const plain = scheme === "http";
    const named = this.named.find((n) => covers(n, a, port));
    const learned = this.learned.find((l) => covers(l.a, a, port));
    // What the hosts it points to inherit from it.
    const via = named
      ? { plainHttp: plain && isLoopback(a.host), private: addressClass(named.host) !== null }
      : learned && { plainHttp: plain && learned.plainHttp, private: learned.private };
    if (!via) return;
    const origin = `${scheme}://${auth}`;
    const targets = [
      ...realms.map((r) => ["the token realm", r]),
      ...(location ? [["the redirect to", location]] : []),
    ];
    for (const [what, url] of targets) {
      let u;
      try {
        u = new URL(url, `${origin}/`);
      } catch {
        continue;
      }
      const targetScheme = u.protocol.slice(0, -1);
      if (targetScheme !== "http" && targetScheme !== "https") continue;
      // As the Rust host: a target named without a port is reached on either scheme's
      // default (then refused over plain HTTP unless learned for it).
      const t = { host: u.hostname.replace(/\.$/, ""), port: u.port ? Number(u.port) : null };
      const cls = addressClass(t.host);
      if (cls && !via.private) {
        this.#refuse(t, `${what} ${u.origin} that ${origin} answered with is on a ${cls} address, and a registry that is not on such an address may not point there (allow it by name to permit it)`);
        continue;
      }
      const plainHttp = targetScheme === "http" && via.plainHttp && isLoopback(t.host);
      if (targetScheme === "http" && !plainHttp) {
        this.#refuse(t, `${what} ${u.origin} that ${origin} answered with: plain HTTP goes only to registries named on the command line, not to hosts a registry points to`);
      }
      const entry = this.learned.find((l) => l.a.host === t.host && l.a.port === t.port);
      if (entry) {
        entry.plainHttp ||= plainHttp;
        entry.private ||= via.private;
      } else {
        this.learned.push({ a: t, plainHttp, private: via.private });
      }
    }
  }

  #refuse(a, why) {
    this.refused = [...this.refused.filter((r) => !(r.a.host === a.host && r.a.port === a.port)), { a, why }];
  }
}

/** The realms of `WWW-Authenticate` challenges (quoted or token values). */
export function realmsOf(values) {
  const realms = [];
  for (const v of values) {
    for (const m of v.matchAll(/(?:^|[\s,])realm\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/gi)) {
      realms.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]);
    }
  }
  return realms;
}

