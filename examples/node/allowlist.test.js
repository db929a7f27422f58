// Tests of the allow-list's pure logic: `node --test` (tests/hosts.rs runs it).

import { test } from "node:test";
import assert from "node:assert/strict";
import { NetworkPolicy, addressClass, realmsOf, referencesOf, registryOf } from "./allowlist.js";

test("a reference's registry is its API host", () => {
  assert.equal(registryOf("quay.io/org/app:v2"), "quay.io");
  assert.equal(registryOf("busybox"), "registry-1.docker.io");
  assert.equal(registryOf("ubuntu:22.04"), "registry-1.docker.io");
  assert.equal(registryOf("org/app"), "registry-1.docker.io");
  assert.equal(registryOf("docker.io/library/app"), "registry-1.docker.io");
  assert.equal(registryOf("localhost/app"), "localhost");
  assert.equal(registryOf("127.0.0.1:5000"), "127.0.0.1:5000", "a push destination prefix");
  assert.equal(registryOf("[::1]:5000/app"), "[::1]:5000");
  for (const none of ["scratch", "oci:/layout:v1", "-"]) assert.equal(registryOf(none), null);
});

test("the references of a command line are the images it names, never its files", () => {
  assert.deepEqual(
    referencesOf(["pull", "-q", "r.io/a:v1", "r.io/a:v2", "-o", "x.tar", "--creds", "u:p", "--insecure=m:1"]),
    { references: ["r.io/a:v1", "r.io/a:v2"], insecure: ["m:1"] },
  );
  assert.deepEqual(
    referencesOf(["pull", "--base", "b.io/x", "--have", "inv.json", "f.io/y", "-o", "-"]).references,
    ["b.io/x", "f.io/y"],
  );
  assert.deepEqual(
    referencesOf(["push", "archive.tar", "m.io/app", "--map", "q.io/a:v2=n.io/a:v2", "--mount-from", "site/app"]).references,
    ["n.io/a:v2", "m.io/app"],
  );
  assert.deepEqual(referencesOf(["verify", "a.tar"]).references, []);
  assert.deepEqual(referencesOf(["inventory", "r.io/a", "--archive", "x.tar", "-o", "i.json"]).references, ["r.io/a"]);
});

test("named registries are allowed, plain HTTP only on loopback or when named insecure", () => {
  const p = new NetworkPolicy({ references: ["quay.io/org/app", "127.0.0.1:5000/app"], insecure: ["mirror.site:5000"], allowHosts: ["mirror.site:5000"] });
  assert.equal(p.check("https", "quay.io"), null);
  assert.equal(p.check("https", "quay.io:443"), null, "the default port");
  assert.match(p.check("https", "quay.io:8443"), /names no registry/);
  assert.match(p.check("http", "quay.io"), /plain HTTP is allowed only/);
  assert.equal(p.check("http", "127.0.0.1:5000"), null);
  assert.equal(p.check("http", "mirror.site:5000"), null);
  assert.match(p.check("https", "example.com"), /names no registry/);
  assert.match(p.check("ftp", "quay.io"), /only http and https/);
  assert.match(p.check("https", "bad host"), /malformed/);
});

test("realms and redirects are learned under the Rust host's rules", () => {
  const p = new NetworkPolicy({ references: ["r.example/app"] });
  p.learnFrom("https", "r.example", {
    realms: realmsOf(['Bearer realm="https://auth.example/token",service="r.example"']),
    location: "http://cdn.example/blob",
  });
  assert.equal(p.check("https", "auth.example"), null, "the realm, over HTTPS");
  assert.match(p.check("http", "auth.example"), /plain HTTP goes only/);
  assert.match(p.check("http", "cdn.example"), /redirect to http:\/\/cdn.example that https:\/\/r.example answered with/);
  // A public registry may not point at the user's own network.
  p.learnFrom("https", "r.example", { location: "https://2130706433/x" });
  assert.match(p.check("https", "2130706433"), /on a loopback address/);
  // A host it never pointed to teaches nothing.
  p.learnFrom("https", "evil.example", { realms: ["https://other.example/t"] });
  assert.match(p.check("https", "other.example"), /names no registry/);

  // A loopback registry over plain HTTP may point to a loopback realm over plain HTTP.
  const local = new NetworkPolicy({ references: ["127.0.0.1:5000/app"] });
  local.learnFrom("http", "127.0.0.1:5000", { realms: realmsOf(["Bearer realm=http://127.0.0.1:5001/token"]) });
  assert.equal(local.check("http", "127.0.0.1:5001"), null);
  assert.match(local.check("http", "127.0.0.1:5002"), /names no registry/);

  // Without learning, only the named registries.
  const strict = new NetworkPolicy({ references: ["r.example/app"], learn: false });
  strict.learnFrom("https", "r.example", { realms: ["https://auth.example/token"] });
  assert.match(strict.check("https", "auth.example"), /names no registry/);
});

test("addresses are classed as the resolver reads them", () => {
  for (const h of ["localhost", "127.0.0.1", "0x7f.1", "2130706433", "[::1]", "[::ffff:127.0.0.1]"]) {
    assert.equal(addressClass(h), "loopback", h);
  }
  assert.equal(addressClass("169.254.169.254"), "link-local");
  assert.equal(addressClass("[fe80::1]"), "link-local");
  for (const h of ["10.1.2.3", "172.16.0.1", "192.168.1.1", "[fd00::1]"]) assert.equal(addressClass(h), "private", h);
  for (const h of ["8.8.8.8", "172.32.0.1", "quay.io", "[2001:db8::1]"]) assert.equal(addressClass(h), null, h);
  assert.deepEqual(realmsOf(['Bearer realm="a\\"b",service=x, Basic realm=c']), ['a"b', "c"]);
});
