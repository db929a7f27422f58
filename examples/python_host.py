#!/usr/bin/env python3
"""Run the imo component in a second host: Python's `wasmtime` package (PyPI, 50.x).

    pip install wasmtime==50.0.1
    imo component -o imo.wasm

    python3 python_host.py imo.wasm [--preopen] pull BASE FINAL ARCHIVE [IMO-OPTION...]
    python3 python_host.py imo.wasm [--preopen] vet  ARCHIVE DESTINATION [IMO-OPTION...]
    python3 python_host.py imo.wasm [--preopen] push ARCHIVE DESTINATION [IMO-OPTION...]

The component's own command line (`wasi:cli/run`) does the work. The archive travels as the
component's stdout (pull) or stdin (vet, push), so by default the component is granted no
directory at all. `--preopen` instead grants the archive's directory, writable for pull and
read-only for vet and push, and passes the file's path in there. ARCHIVE may be `-`: this
process's stdout (pull) or stdin (vet, push). IMO-OPTIONs are the component's own (`--insecure`,
`--creds`, `--platform`, `--no-referrers`, `--retries`, `-q`, ...).

The compiled component is cached, as the `imo` command caches its own: in `$IMO_CACHE_DIR`,
else `$XDG_CACHE_HOME/imo` or `~/.cache/imo`, a directory made private (0700) if missing. A
compiled component is native code run outside the sandbox, so a directory or file that is not
the user's own, is writable by group or others, or is a symbolic link is not used (a line on
stderr says why) and the component is compiled in memory; a file whose contents do not match
the digest sealed into it is compiled again.

The `wasmtime` package can call only the component's `imo:overlay/overlay` functions that take
no resource (`inventory`): the others take a `wasi:io` stream, and the package can neither
make one nor get one from its WASI context (passing anything else fails with "mismatched
resource types"). Nor can it confine `wasi:http`: the component can reach every host this
process can. See docs/embedding.md.

Exit status: 0 on success, 1 when the component reports a failure (its message is on
stderr), 2 on a usage error.
"""

import hashlib
import importlib.metadata
import os
import stat
import sys

from wasmtime import Engine, ExitTrap, Store, WasiConfig
from wasmtime.component import Component, Linker

USAGE = __doc__.split("\n\n")[2]


# A cache file is this, the SHA-256 of the compiled code, a newline, then the code.
SEAL = b"imo compiled component (wasmtime-py) sha256:"


def cache_dir():
    """Where compiled components are kept, as the `imo` command keeps its own."""
    if os.environ.get("IMO_CACHE_DIR"):
        return os.environ["IMO_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "imo")


def untrusted(st, want_dir):
    """Why an entry with stat `st` may not hold code this process runs, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if want_dir and not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if not want_dir and not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs this"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by its group or by others"
    return None


def read_trusted(path):
    """The cache file's bytes, None if there is none; raises ValueError if untrusted.
    Opened without following a symbolic link and checked on the open file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError("it is a symbolic link" if os.path.islink(path) else str(e))
    with os.fdopen(fd, "rb") as f:
        why = untrusted(os.fstat(f.fileno()), want_dir=False)
        if why:
            raise ValueError(why)
        return f.read()


def load_component(engine, wasm):
    """The compiled component: from the cache if it holds it for this component and this
    package version, else compiled (and cached if the directory may be trusted)."""
    with open(wasm, "rb") as f:
        component_bytes = f.read()
    key = hashlib.sha256(
        component_bytes + b"\0" + importlib.metadata.version("wasmtime").encode() + SEAL
    ).hexdigest()[:32]
    directory = cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        why = untrusted(os.lstat(directory), want_dir=True)
    except OSError:
        return Component(engine, component_bytes)  # no cache to be had: compile
    if why:
        print(f"python_host: not using the compiled-code cache {directory}: {why}; "
              "compiling in memory (make it the user's own and private, or set IMO_CACHE_DIR)",
              file=sys.stderr)
        return Component(engine, component_bytes)
    path = os.path.join(directory, f"python-{key}.cwasm")
    try:
        sealed = read_trusted(path)
    except ValueError as e:
        print(f"python_host: not using the compiled-code cache file {path}: {e}; "
              "compiling it again", file=sys.stderr)
        sealed = None
    if sealed is not None:
        digest, _, code = sealed.removeprefix(SEAL).partition(b"\n")
        if sealed.startswith(SEAL) and hashlib.sha256(code).hexdigest().encode() == digest:
            try:
                # Safe only because the file is the user's own, in a directory only the
                # user can write, and matches the digest sealed into it.
                return Component.deserialize(engine, code)
            except Exception:
                pass  # another build of the package: compile again
    component = Component(engine, component_bytes)
    # Written exclusively under a fresh name, private, then renamed into place: a planted
    # file or symlink is replaced, never written through. A cache that cannot be written
    # costs only start-up time.
    code = bytes(component.serialize())
    temp = os.path.join(directory, f".python-{key}.{os.getpid()}.partial")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(SEAL + hashlib.sha256(code).hexdigest().encode() + b"\n" + code)
        os.replace(temp, path)
    except OSError:
        try:
            os.remove(temp)
        except OSError:
            pass
    return component


def run_component(wasm, argv, *, stdout=None, stdin_file=None, preopens=()):
    """Runs the component's `wasi:cli/run` export once; returns its exit status.

    `stdout` is a callable receiving each chunk the component writes to its stdout (None:
    inherit this process's stdout); `stdin_file` a path read as its stdin (None: inherit this
    process's stdin). `preopens` lists `(host_dir, guest_dir, writable)` grants; nothing else
    on the file system is visible. stderr, where progress and error messages go, is
    inherited. The component sees no environment variables.
    """
    engine = Engine()
    component = load_component(engine, wasm)

    # Every import of the component is standard WASI 0.2: the package's own implementations.
    linker = Linker(engine)
    linker.add_wasip2()
    linker.add_wasi_http()

    wasi = WasiConfig()
    wasi.argv = ["imo", *argv]
    if stdout is None:
        wasi.inherit_stdout()
    else:
        wasi.stdout_custom = stdout
    if stdin_file is None:
        wasi.inherit_stdin()
    else:
        wasi.stdin_file = stdin_file
    wasi.inherit_stderr()
    for host_dir, guest_dir, writable in preopens:
        wasi.preopen_dir(host_dir, guest_dir, writable)

    store = Store(engine)
    store.set_wasi(wasi)
    store.set_wasi_http()  # after set_wasi, before instantiating
    instance = linker.instantiate(store, component)

    run_interface = instance.get_export_index(store, "wasi:cli/run@0.2.12")
    run = instance.get_func(store, instance.get_export_index(store, "run", run_interface))
    try:
        result = run(store)  # `result` without payloads: Variant(tag="ok" | "err")
        run.post_return(store)
    except ExitTrap as e:  # the component called wasi:cli/exit
        return e.code
    return 0 if result.tag == "ok" else 1


def pull(wasm, base, final, archive, options, preopen):
    """Writes the difference archive to `archive`; it appears only when complete."""
    if archive == "-":
        return run_component(wasm, ["pull", base, final, "-o", "-", *options])
    archive = os.path.abspath(archive)
    if preopen:
        # The component writes ARCHIVE.partial in the granted directory and renames it.
        directory, name = os.path.split(archive)
        return run_component(
            wasm,
            ["pull", base, final, "-o", "/archive/" + name, *options],
            preopens=[(directory, "/archive", True)],
        )
    # The archive streams through this process: the component writes it to its stdout, and
    # each chunk lands here. Written under a temporary name, renamed once the component says
    # it is complete; on failure whatever arrived is discarded.
    partial = archive + ".partial"
    with open(partial, "wb") as out:
        status = run_component(
            wasm, ["pull", base, final, "-o", "-", *options], stdout=out.write
        )
    if status == 0:
        os.replace(partial, archive)
    else:
        os.remove(partial)
    return status


def vet_or_push(wasm, command, archive, destination, options, preopen):
    """Runs `vet` or `push` with the archive as the component's stdin (or a read-only grant)."""
    if archive == "-":
        return run_component(wasm, [command, "-", destination, *options])
    archive = os.path.abspath(archive)
    if not os.path.isfile(archive):
        print(f"python_host: {archive}: no such file", file=sys.stderr)
        return 1
    if preopen:
        directory, name = os.path.split(archive)
        return run_component(
            wasm,
            [command, "/archive/" + name, destination, *options],
            preopens=[(directory, "/archive", False)],
        )
    return run_component(
        wasm, [command, "-", destination, *options], stdin_file=archive
    )


def main(args):
    preopen = "--preopen" in args
    args = [a for a in args if a != "--preopen"]
    if len(args) < 4:
        print(USAGE, file=sys.stderr)
        return 2
    wasm, command, first, second, *rest = args
    if command == "pull" and rest:
        return pull(wasm, first, second, rest[0], rest[1:], preopen)
    if command in ("vet", "push"):
        return vet_or_push(wasm, command, first, second, rest, preopen)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
