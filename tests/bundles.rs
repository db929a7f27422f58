//! Inventories and bundles against real registries: a site holding v1 of two images is
//! inventoried; v2 of both is pulled against that inventory into one archive that carries
//! exactly what the site lacks (a blob both images share, once); vet and push put both
//! images there byte-exact; an inventory that claims too much makes vet name the blob.

mod support;

use std::collections::BTreeSet;
use support::proxy::{Fault, Proxy, Rule};
use support::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Layers: app and db each share a base layer with their v1, and both v2 add the same new
/// layer (`shared-v2`) plus one of their own.
struct World {
    src: Registry,
    site: Registry,
    app_v1: Layout,
    db_v1: Layout,
    app_v2: Layout,
    db_v2: Layout,
}

fn world() -> World {
    let src = Registry::start();
    let site = Registry::start();
    let app_v1 = oci_layout("v1", &[("app-base", 200_000), ("app-v1", 50_000)]);
    let db_v1 = oci_layout("v1", &[("db-base", 150_000), ("db-v1", 40_000)]);
    let app_v2 = oci_layout(
        "v2",
        &[
            ("app-base", 200_000),
            ("shared-v2", 120_000),
            ("app-v2", 60_000),
        ],
    );
    let db_v2 = oci_layout(
        "v2",
        &[
            ("db-base", 150_000),
            ("shared-v2", 120_000),
            ("db-v2", 30_000),
        ],
    );
    for (layout, repo) in [
        (&app_v1, "app:v1"),
        (&db_v1, "db:v1"),
        (&app_v2, "app:v2"),
        (&db_v2, "db:v2"),
    ] {
        seed(layout, &src.image(repo), None);
    }
    seed(&app_v1, &site.image("app:v1"), None);
    seed(&db_v1, &site.image("db:v1"), None);
    World {
        src,
        site,
        app_v1,
        db_v1,
        app_v2,
        db_v2,
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints a summary")
}

#[test]
fn an_inventory_drives_a_bundle_of_two_images_into_the_site() {
    let w = world();
    let work = TempDir::new("bundle");
    let inv = work.join("site.json");

    // The site's inventory: every tag of both repositories.
    imo_ok(&[
        "inventory",
        "-q",
        &w.site.image("app"),
        &w.site.image("db"),
        "-o",
        s(&inv),
    ]);
    let inventory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&inv).unwrap()).unwrap();
    assert_eq!(inventory["imoInventoryVersion"], 1);
    let listed: BTreeSet<String> = inventory["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_owned())
        .collect();
    let mut held: BTreeSet<String> = BTreeSet::new();
    for l in [&w.app_v1, &w.db_v1] {
        held.insert(l.config_digest.clone());
        held.extend(l.layer_digests.iter().cloned());
    }
    assert_eq!(listed, held, "the inventory lists exactly the site's blobs");
    let app_base = &w.app_v1.layer_digests[0];
    let entry = inventory["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["digest"] == app_base.as_str())
        .unwrap();
    assert_eq!(entry["repositories"], serde_json::json!(["app"]));
    let manifests: Vec<&str> = inventory["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert!(manifests.contains(&w.app_v1.manifest_digest.as_str()));

    // One archive of both v2 images against the inventory.
    let bundle = work.join("bundle.tar");
    let pulled = imo_ok(&[
        "pull",
        "--json",
        "--have",
        s(&inv),
        &w.src.image("app:v2"),
        &w.src.image("db:v2"),
        "-o",
        s(&bundle),
    ]);
    let carried: Vec<String> = archive_blobs(&bundle);
    let manifests_in = [&w.app_v2.manifest_digest, &w.db_v2.manifest_digest];
    let blobs: BTreeSet<String> = carried
        .iter()
        .filter(|d| !manifests_in.contains(d))
        .cloned()
        .collect();
    let shared = w.app_v2.layer_digests[1].clone();
    assert_eq!(shared, w.db_v2.layer_digests[1]);
    let expected: BTreeSet<String> = [
        w.app_v2.config_digest.clone(),
        w.db_v2.config_digest.clone(),
        shared.clone(),
        w.app_v2.layer_digests[2].clone(),
        w.db_v2.layer_digests[2].clone(),
    ]
    .into();
    assert_eq!(blobs, expected, "exactly the blobs the site lacks");
    assert_eq!(
        carried.iter().filter(|d| **d == shared).count(),
        1,
        "the shared blob is carried once"
    );
    let summary = json(&pulled);
    assert_eq!(summary["images"].as_array().unwrap().len(), 2);
    assert_eq!(summary["blobs_omitted"], 2);

    // index.json names both images.
    let index: serde_json::Value = serde_json::from_slice(
        &archive_entries(&bundle)
            .into_iter()
            .find(|(p, _)| p == "index.json")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);

    // Vet and push into the site: the destination is a prefix (the registry itself), under
    // which each image keeps its repository path and tag.
    let site = w.site.image("");
    let site = site.trim_end_matches('/');
    imo_ok(&["vet", "-q", s(&bundle), site]);
    let pushed = json(&imo_ok(&["push", "--json", s(&bundle), site]));
    assert_eq!(pushed["blobs_uploaded"], 5, "{pushed}");
    assert_eq!(
        pushed["blobs_mounted"], 1,
        "the shared blob is uploaded once and mounted into the other repository: {pushed}"
    );
    for (layout, repo) in [(&w.app_v2, "app:v2"), (&w.db_v2, "db:v2")] {
        let raw = raw_manifest(&w.site.image(repo));
        assert_eq!(sha256(&raw), layout.manifest_digest, "{repo} byte-exact");
        copy_out(&w.site.image(repo));
    }

    // An inventory of the shipped archive lists what the site now holds of those images.
    let inv2 = work.join("shipped.json");
    imo_ok(&["inventory", "-q", "--archive", s(&bundle), "-o", s(&inv2)]);
    let shipped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&inv2).unwrap()).unwrap();
    let n = shipped["blobs"].as_array().unwrap().len();
    assert_eq!(
        n, 7,
        "every blob both v2 images reference, the shared one once: {shipped}"
    );
}

#[test]
fn an_inventory_that_claims_too_much_fails_vet_naming_the_blob() {
    let w = world();
    let work = TempDir::new("bundle-wrong");
    // Taken from the source, not the site: it claims app:v2's new layers.
    let wrong = work.join("wrong.json");
    imo_ok(&["inventory", "-q", &w.src.image("app:v2"), "-o", s(&wrong)]);
    let bundle = work.join("bundle.tar");
    imo_ok(&[
        "pull",
        "-q",
        "--have",
        s(&wrong),
        "--base",
        &w.src.image("db:v1"),
        &w.src.image("app:v2"),
        &w.src.image("db:v2"),
        "-o",
        s(&bundle),
    ]);
    let site = w.site.image("");
    let site = site.trim_end_matches('/');
    let err = imo_err(&["vet", s(&bundle), site]);
    let own = &w.app_v2.layer_digests[2];
    assert!(err.contains(own.as_str()), "vet names {own}: {err}");
    assert!(
        !err.contains(w.app_v1.layer_digests[0].as_str()),
        "the site holds app's base layer: {err}"
    );
    let err = imo_err(&["push", s(&bundle), site]);
    assert!(err.contains(own.as_str()), "{err}");
    assert!(!exists(&w.site.image("app:v2")));
    assert!(!exists(&w.site.image("db:v2")));
}

#[test]
fn explicit_mappings_place_images_and_unknown_ones_are_refused() {
    let w = world();
    let work = TempDir::new("bundle-map");
    let bundle = work.join("bundle.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &w.src.image("app:v2"),
        &w.src.image("db:v2"),
        "-o",
        s(&bundle),
    ]);
    let site = w.site.image("mirror");
    let app_to = w.site.image("apps/frontend:stable");
    let mapping = format!("{}={app_to}", w.src.image("app:v2"));
    let err = imo_err(&[
        "push",
        s(&bundle),
        &site,
        "--map",
        &format!("{}=x", w.src.image("web:v2")),
    ]);
    assert!(err.contains("not an image of this archive"), "{err}");
    imo_ok(&["push", "-q", s(&bundle), &site, "--map", &mapping]);
    assert_eq!(sha256(&raw_manifest(&app_to)), w.app_v2.manifest_digest);
    let db_to = w.site.image("mirror/db:v2");
    assert_eq!(sha256(&raw_manifest(&db_to)), w.db_v2.manifest_digest);
    copy_out(&db_to);
}

/// Runs the bare component under the wasmtime CLI with `dir` preopened as /work.
fn wasmtime(dir: &TempDir, wasm: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("wasmtime")
        .args(["run", "-S", "http", "--dir"])
        .arg(format!("{}::/work", dir.path().display()))
        .arg(wasm)
        .args(args)
        .output()
        .expect("running the wasmtime CLI (cargo install wasmtime-cli@48.0.8 --locked)");
    assert!(
        out.status.success(),
        "wasmtime {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_bare_component_inventories_and_pulls_a_bundle_as_the_host_does() {
    let w = world();
    let work = TempDir::new("bundle-wasi");
    let wasm = work.join("imo.wasm");
    imo_ok(&["component", "-o", s(&wasm)]);
    let (app, db) = (w.site.image("app"), w.site.image("db"));
    imo_ok(&[
        "inventory",
        "-q",
        &app,
        &db,
        "-o",
        s(&work.join("host.json")),
    ]);
    wasmtime(
        &work,
        &wasm,
        &["inventory", "-q", &app, &db, "-o", "/work/wasi.json"],
    );
    assert_eq!(
        std::fs::read(work.join("wasi.json")).unwrap(),
        std::fs::read(work.join("host.json")).unwrap(),
        "the same inventory"
    );
    let finals = [w.src.image("app:v2"), w.src.image("db:v2")];
    let mut host_args = vec!["pull", "-q", "--have"];
    let host_json = work.join("host.json");
    host_args.push(s(&host_json));
    host_args.extend(finals.iter().map(String::as_str));
    let host_tar = work.join("host.tar");
    host_args.extend(["-o", s(&host_tar)]);
    imo_ok(&host_args);
    let mut wasi_args = vec!["pull", "-q", "--have", "/work/wasi.json"];
    wasi_args.extend(finals.iter().map(String::as_str));
    wasi_args.extend(["-o", "/work/wasi.tar"]);
    wasmtime(&work, &wasm, &wasi_args);
    assert_eq!(
        archive_blobs(&work.join("wasi.tar")),
        archive_blobs(&host_tar),
        "the same blobs, in the same order"
    );
    let site = w.site.image("");
    wasmtime(
        &work,
        &wasm,
        &["vet", "/work/wasi.tar", site.trim_end_matches('/')],
    );
}

#[test]
fn blobs_an_inventory_places_in_another_repository_are_mounted() {
    let w = world();
    let work = TempDir::new("bundle-mount");
    let inv = work.join("site.json");
    imo_ok(&["inventory", "-q", &w.site.image("app"), "-o", s(&inv)]);
    let archive = work.join("app.tar");
    imo_ok(&[
        "pull",
        "-q",
        "--have",
        s(&inv),
        &w.src.image("app:v2"),
        "-o",
        s(&archive),
    ]);
    // A repository the site has never seen: the base layer lives in `app`, as the inventory
    // (carried in the archive) says, which the user trusts.
    let dest = w.site.image("elsewhere/app:v2");
    let trusted = "--mount-from-archive";
    let pushed = json(&imo_ok(&["push", trusted, "--json", s(&archive), &dest]));
    assert_eq!(pushed["blobs_mounted"], 1, "{pushed}");
    assert_eq!(sha256(&raw_manifest(&dest)), w.app_v2.manifest_digest);
    copy_out(&dest);

    // Where the registry refuses mounts (a web page for an answer), the blob the archive
    // omits is copied across from `app`, and counted as uploaded.
    let proxy = Proxy::start(
        &w.site.addr,
        vec![Rule::new("POST", "mount=", 100, Fault::HtmlPage(404))],
    );
    let out = imo_ok(&[
        "push",
        trusted,
        s(&archive),
        &proxy.image("declined/app:v2"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let base = &w.app_v2.layer_digests[0][..19];
    assert!(
        stderr.contains(&format!(
            "copied {base} from app into declined/app (the registry declined the mount"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("; 0 mounted from"), "{stderr}");
    assert_eq!(proxy.count("POST", "mount="), 1);
    let dest = w.site.image("declined/app:v2");
    assert_eq!(sha256(&raw_manifest(&dest)), w.app_v2.manifest_digest);
    copy_out(&dest);
}

/// app:v2 and db:v2 (sharing the layer `shared-v2`) in one registry, and one archive
/// carrying both whole.
struct Two {
    src: Registry,
    app_v2: Layout,
    db_v2: Layout,
    /// Holds the archive.
    _work: TempDir,
    archive: std::path::PathBuf,
}

fn two_images() -> Two {
    let w = world();
    let work = TempDir::new("bundle-two");
    let archive = work.join("bundle.tar");
    imo_ok(&[
        "pull",
        "-q",
        "scratch",
        &w.src.image("app:v2"),
        &w.src.image("db:v2"),
        "-o",
        s(&archive),
    ]);
    Two {
        src: w.src,
        app_v2: w.app_v2,
        db_v2: w.db_v2,
        _work: work,
        archive,
    }
}

/// A registry that declines mounts is a normal registry: with a 202 and an upload session
/// (distribution behind a proxy that drops the mount's parameters), or with a web page. The
/// layer both images share streams from the archive once, into `app`; `db` gets a copy
/// from there, reported as copied and counted as uploaded.
#[test]
fn a_bundle_pushes_where_the_registry_declines_mounts() {
    let two = two_images();
    let shared = &two.app_v2.layer_digests[1];
    assert_eq!(shared, &two.db_v2.layer_digests[1]);
    // db's own 3 blobs, the mount, and for a refused mount a new session for the copy.
    for (fault, posts) in [(Fault::DropQuery, 4), (Fault::HtmlPage(404), 5)] {
        let dst = Registry::start();
        let proxy = Proxy::start(
            &dst.addr,
            vec![Rule::new("POST", "mount=", 100, fault.clone())],
        );
        let out = imo_ok(&["push", s(&two.archive), &proxy.addr]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(proxy.count("POST", "mount="), 1, "{fault:?}: {stderr}");
        let db_posts = proxy.count("POST", "/v2/db/blobs/uploads/");
        assert_eq!(db_posts, posts, "{fault:?}: the session offered is used");
        let fetched = proxy.count("GET", &format!("/v2/app/blobs/{shared}"));
        assert_eq!(fetched, 1, "{fault:?}: the copy streams from app");
        assert!(
            stderr.contains(&format!(
                "copied {} from app into db (the registry declined the mount",
                &shared[..19]
            )),
            "{fault:?}: {stderr}"
        );
        assert!(
            stderr.contains("uploaded 8 blob(s)") && stderr.contains("; 0 mounted from"),
            "7 blobs from the archive and 1 copy, none mounted: {fault:?}: {stderr}"
        );
        for (layout, repo) in [(&two.app_v2, "app:v2"), (&two.db_v2, "db:v2")] {
            let raw = raw_manifest(&dst.image(repo));
            assert_eq!(sha256(&raw), layout.manifest_digest, "{fault:?} {repo}");
            copy_out(&dst.image(repo));
        }
    }
}

/// Images mapped into one repository share its blobs: the shared layer is uploaded once,
/// and nothing is mounted into the repository it is already in.
#[test]
fn a_bundle_mapped_into_one_repository_mounts_nothing() {
    let two = two_images();
    let dst = Registry::start();
    // A registry that declines mounts, so a mount asked for would fail the old way.
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new("POST", "mount=", 100, Fault::DropQuery)],
    );
    let maps = [
        format!("{}={}", two.src.image("app:v2"), proxy.image("all:app")),
        format!("{}={}", two.src.image("db:v2"), proxy.image("all:db")),
    ];
    let out = imo_ok(&[
        "push",
        s(&two.archive),
        &proxy.addr,
        "--map",
        &maps[0],
        "--map",
        &maps[1],
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(proxy.count("POST", "mount="), 0, "{stderr}");
    assert!(
        stderr.contains("uploaded 7 blob(s)") && stderr.contains("; 0 mounted from"),
        "{stderr}"
    );
    for (layout, tag) in [(&two.app_v2, "all:app"), (&two.db_v2, "all:db")] {
        assert_eq!(
            sha256(&raw_manifest(&dst.image(tag))),
            layout.manifest_digest
        );
        copy_out(&dst.image(tag));
    }
}

/// A push reports a blob uploaded only once the registry accepts its `PUT`: the next blob
/// streams while the registry commits the last, and the answer (here a refusal, with no
/// retries) may still fail it.
#[test]
fn a_blob_is_reported_uploaded_only_once_its_put_is_accepted() {
    let v1 = oci_layout("v1", &[("up-a", 80_000), ("up-b", 60_000)]);
    let work = TempDir::new("uploaded");
    let archive = work.join("full.tar");
    let fin = format!("oci:{}:v1", v1.dir.path().display());
    imo_ok(&["pull", "-q", "scratch", &fin, "-o", s(&archive)]);

    let dst = Registry::start();
    let proxy = Proxy::start(
        &dst.addr,
        vec![Rule::new(
            "PUT",
            "/blobs/uploads/",
            1,
            Fault::Status(500, None),
        )],
    );
    let out = imo(&[
        "push",
        "--retries",
        "0",
        s(&archive),
        &proxy.image("app:v1"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(proxy.faults(), 1, "the first blob's PUT was refused");
    let refused = stderr
        .lines()
        .find_map(|l| l.split("uploading ").nth(1)?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no upload started: {stderr}"));
    assert!(
        !stderr.contains(&format!("uploaded {refused}")),
        "{refused} was reported uploaded though its PUT was refused: {stderr}"
    );
}

/// An archive whose `imo.json` names another team's private repository as its base does not
/// choose where the pusher's credentials read from: `secret/private` is neither asked about
/// nor put in a token scope, and the layer the archive omits is missing, with a hint naming
/// the opt-in. The user's `--mount-from secret/private` or `--mount-from-archive` mounts it.
#[test]
fn an_archive_naming_a_private_base_does_not_choose_the_mount_source() {
    use support::token::{Account, TokenServer};
    let src = Registry::start();
    let secret = oci_layout("v1", &[("secret", 100_000)]);
    let app = oci_layout("v2", &[("secret", 100_000), ("own", 50_000)]);
    seed(&secret, &src.image("public/base:v1"), None);
    seed(&app, &src.image("app:v2"), None);
    let work = TempDir::new("bundle-crafted");
    let real = work.join("real.tar");
    imo_ok(&[
        "pull",
        "-q",
        &src.image("public/base:v1"),
        &src.image("app:v2"),
        "-o",
        s(&real),
    ]);

    // The site: one account that may read the private repository and push the public ones.
    let tokens = TokenServer::start(vec![
        Account::new("pusher", "push-pw")
            .may("secret/private", &["pull", "push"])
            .may("public/app", &["pull", "push"])
            .may("public/other", &["pull", "push"]),
    ]);
    let site = Registry::start_with(&tokens.registry_config());
    skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        "pusher:push-pw",
        &format!("oci:{}:v1", secret.dir.path().display()),
        &format!("docker://{}", site.image("secret/private:v1")),
    ]);
    let crafted = work.join("crafted.tar");
    let private = site.image("secret/private:v1");
    rewrite_metadata(&real, &crafted, |meta| {
        meta["bases"][0]["reference"] = private.clone().into();
    });
    let proxy = Proxy::start(&site.addr, vec![]);
    let creds = ["--dest-creds", "pusher:push-pw"];
    let layer = &secret.layer_digests[0];

    let before = tokens.count();
    let dest = proxy.image("public/app:v2");
    for op in ["vet", "push"] {
        let out = imo(&[&[op], &creds[..], &[s(&crafted), &dest]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{op}: {stderr}");
        assert!(
            stderr.contains(layer.as_str()) && stderr.contains("--mount-from-archive"),
            "{op} names the blob and the opt-in: {stderr}"
        );
    }
    assert_eq!(proxy.count("POST", "from=secret"), 0, "no mount from it");
    assert_eq!(
        proxy.count("HEAD", "/v2/secret/"),
        0,
        "not even asked about"
    );
    let scopes: Vec<String> = (tokens.requests_since(before).into_iter())
        .flat_map(|r| r.scopes)
        .collect();
    assert!(!scopes.is_empty(), "the push asked for tokens");
    assert!(
        scopes.iter().all(|s| !s.contains("secret")),
        "no token scope names it: {scopes:?}"
    );
    assert_eq!(
        proxy.count("PUT", "/v2/public/app/manifests/"),
        0,
        "nothing tagged"
    );

    // The user trusts the archive, or names the repository: the layer is mounted.
    for (flags, repo) in [
        (&["--mount-from-archive"][..], "public/app"),
        (&["--mount-from", "secret/private"][..], "public/other"),
    ] {
        let dest = proxy.image(&format!("{repo}:v2"));
        let args = [
            &["push", "--json"],
            &creds[..],
            flags,
            &[s(&crafted), &dest],
        ]
        .concat();
        let pushed = json(&imo_ok(&args));
        assert_eq!(pushed["blobs_mounted"], 1, "{flags:?}: {pushed}");
        let mount = format!(
            "/v2/{repo}/blobs/uploads/?mount=sha256%3A{}&from=secret%2Fprivate",
            &layer[7..]
        );
        assert_eq!(proxy.count("POST", &mount), 1, "{flags:?}");
    }
    assert_eq!(proxy.count("POST", "from=secret"), 2);
}
