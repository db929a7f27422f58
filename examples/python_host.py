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

The `wasmtime` package cannot call the component's `imo:overlay/overlay` functions: each takes
a `wasi:io` stream, and the package can neither make one nor get one from its WASI context
(passing anything else fails with "mismatched resource types"). Nor can it confine
`wasi:http`: the component can reach every host this process can. See docs/embedding.md.

Exit status: 0 on success, 1 when the component reports a failure (its message is on
stderr), 2 on a usage error.
"""

import os
import sys

from wasmtime import Engine, ExitTrap, Store, WasiConfig
from wasmtime.component import Component, Linker

USAGE = __doc__.split("\n\n")[2]


def run_component(wasm, argv, *, stdout=None, stdin_file=None, preopens=()):
    """Runs the component's `wasi:cli/run` export once; returns its exit status.

    `stdout` is a callable receiving each chunk the component writes to its stdout (None:
    inherit this process's stdout); `stdin_file` a path read as its stdin (None: inherit this
    process's stdin). `preopens` lists `(host_dir, guest_dir, writable)` grants; nothing else
    on the file system is visible. stderr, where progress and error messages go, is
    inherited. The component sees no environment variables.
    """
    engine = Engine()
    component = Component.from_file(engine, wasm)

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
