#!/usr/bin/env python3
"""Writes scripts/hot-text.ld from callgrind profiles of pushprobe (see scripts/hot-text.sh).

usage: hot_text.py BINARY OUT.ld NAME=CALLGRIND_OUT [NAME=CALLGRIND_OUT ...]

BINARY is the build the profiles were taken of, with its symbol table (not stripped) and
without the hot-text layout (valgrind attributes code outside `.text` to no object). Each
profile was recorded with `--dump-instr=yes`, so it lists every instruction address that ran.

The script maps those addresses to the binary's functions and writes a linker script that
gathers the input sections of those functions into one output section, `.text.hot`, placed
before `.text`: first the functions every workload ran, then those of each workload in the
order given. A function's section is named after its symbol (`.text.<symbol>`, or
`.text.unlikely.<symbol>` for code the compiler judged cold). Symbols carry hashes that
change with the toolchain, the dependencies and even the build profile (`strip`), and
numbered suffixes that change with each build, so the patterns leave them out (see
`patterns`). A legacy pattern then matches every instantiation of a generic function, which
costs some code that did not run; a name with its hash would match nothing in any other
build, and each function that ran but is left in `.text` maps the pages around it. (v0
names keep their back-references, which can shift with a crate hash's length.)
"""

import bisect
import os
import re
import subprocess
import sys
from collections import defaultdict

# Rust legacy mangling: `17h<16 hex digits>E` ends every symbol.
LEGACY_HASH = re.compile(r"17h[0-9a-f]{16}E$")
# Rust v0 mangling: `Cs<base-62 hash>_` names a crate (the standard library's are v0).
V0_CRATE = re.compile(r"Cs[0-9A-Za-z]+_")
# LLVM's numbered copies of a symbol (`.1045`, `.llvm.1234`), numbered anew in each build.
NUMBER_SUFFIX = re.compile(r"(\.llvm)?\.\d+$")
# GCC's clones of C functions (zstd, ring) keep their origin's name before a suffix.
CLONE_SUFFIX = re.compile(r"\.(constprop|isra|part|cold|lto_priv)(\.\d+)*$")
POSITION = re.compile(r"^(0x[0-9a-fA-F]+|[+-]\d+|\*|\d+)")
NAMED = re.compile(r"^(c?ob)=\((\d+)\)(?: (.*))?$")


def executed_addresses(profile, binary):
    """Instruction addresses in `binary`'s object that ran, from one callgrind profile."""
    binary = os.path.realpath(binary)
    objects, current, addr, out = {}, None, 0, set()
    with open(profile, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = NAMED.match(line)
            if m:
                kind, ident, name = m.groups()
                if name:
                    objects[ident] = name
                if kind == "ob":
                    current = os.path.realpath(objects.get(ident, ""))
                continue
            m = POSITION.match(line)
            if not m:
                continue
            p = m.group(1)
            if p.startswith("0x"):
                addr = int(p, 16)
            elif p[0] == "+":
                addr += int(p[1:])
            elif p[0] == "-":
                addr -= int(p[1:])
            elif p != "*":
                addr = int(p)
            if current == binary:
                out.add(addr)
    return out


def text_symbols(binary):
    """The binary's function symbols as sorted (address, size, name)."""
    nm = subprocess.run(
        ["nm", "--defined-only", "-S", binary], check=True, capture_output=True, text=True
    ).stdout
    syms = []
    for line in nm.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            syms.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    syms.sort()
    return syms


def patterns(name):
    """The globs a symbol's section is matched with, without hashes or numbered suffixes.

    A legacy Rust symbol matches by everything before its hash, so every instantiation of a
    generic function matches; any other symbol matches by its whole name, with any suffix
    after a dot (a numbered copy, a clone) and, in v0 names, any crate hash.
    """
    base = CLONE_SUFFIX.sub("", NUMBER_SUFFIX.sub("", name))
    if LEGACY_HASH.search(base):
        return (LEGACY_HASH.sub("", base) + "17h*",)
    if base.startswith("_R"):
        base = V0_CRATE.sub("Cs*_", base)
    return (base, base + ".*")


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    binary, out_path, profiles = argv[1], argv[2], argv[3:]
    syms = text_symbols(binary)
    if not syms:
        sys.exit(f"hot_text: {binary} has no symbol table; build it with strip = none")
    starts = [s[0] for s in syms]
    ran = defaultdict(set)  # symbol name -> workloads that ran it
    order = []  # symbol names, in address order, workload by workload
    workloads = []
    for spec in profiles:
        workload, _, path = spec.partition("=")
        workloads.append(workload)
        addrs = executed_addresses(path, binary)
        if not addrs:
            sys.exit(f"hot_text: {path} has no instruction of {binary}: was it profiled?")
        unmatched = 0
        for a in sorted(addrs):
            i = bisect.bisect_right(starts, a) - 1
            if i < 0 or a >= syms[i][0] + syms[i][1]:
                unmatched += 1
                continue
            name = syms[i][2]
            if name not in ran:
                order.append(name)
            ran[name].add(workload)
        if unmatched > len(addrs) // 10:
            sys.exit(
                f"hot_text: {unmatched} of {len(addrs)} addresses in {path} fall in no function "
                f"of {binary}: was the profile taken of this build?"
            )
    # Bytes each pattern matches in this build, counted once per pattern.
    matched = defaultdict(int)
    for _, size, name in syms:
        matched[patterns(name)] += size

    # Group 0 holds what every workload ran; group i the rest of what workload i (from 1) was
    # the first to run. A pattern shared by functions of several groups joins the first.
    every = set(workloads)
    titles = ["every workload"] + [f"{w} (first), not by every workload" for w in workloads]

    def group(name):
        runs = ran[name]
        return 0 if runs == every else 1 + min(workloads.index(w) for w in runs)

    placed, lines, hot_bytes = set(), [], 0
    for g, title in enumerate(titles):
        lines.append(f"    /* Run by {title}. */")
        for name in order:
            globs = patterns(name)
            if globs in placed or group(name) != g:
                continue
            placed.add(globs)
            hot_bytes += matched[globs]
            sections = " ".join(f".text.{p} .text.unlikely.{p}" for p in globs)
            lines.append(f"    *({sections})")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(
            "/* pushprobe's hot text: the functions its workloads run, gathered before the\n"
            " * rest of the code so that they share as few pages as possible. Generated by\n"
            " * scripts/hot-text.sh from callgrind profiles; see docs/performance.md. A pattern\n"
            " * that matches nothing (a renamed function, another toolchain's hash) is harmless.\n"
            " */\n"
            "SECTIONS\n{\n  .text.hot :\n  {\n"
        )
        f.write("\n".join(lines))
        f.write("\n  }\n}\nINSERT BEFORE .text;\n")
    print(
        f"hot_text: {len(ran)} functions ran ({', '.join(workloads)}); "
        f"{len(lines) - len(titles)} patterns, about {hot_bytes / 1024:.0f} KiB of hot text"
    )


if __name__ == "__main__":
    main(sys.argv)
