"""Supply-chain checks that run offline (SECURITY.md, "Supply chain"), from `cargo metadata`:

1. Licences: every dependency's licence expression must be satisfiable with the licences
   allowed below (an OR needs one allowed term, an AND needs all; `/` is an old spelling of OR).
2. Duplicate majors: a crate present in two semver-incompatible versions is listed; one not in
   scripts/known-duplicates.txt fails the check, so a new duplicate is a decision, not an accident.

Advisories (RustSec) need the advisory database from GitHub, which our CI machines cannot reach;
run `cargo deny check advisories` where it can.

    python3 scripts/check-deps.py            # exit 0, or 1 with the offending crates
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = {
    "MIT", "MIT-0", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause",
    "BSD-3-Clause", "ISC", "Zlib", "Unicode-3.0", "CC0-1.0", "BSL-1.0", "0BSD", "Unlicense",
    "bzip2-1.0.6",
}


def allowed(expr: str) -> bool:
    """Whether an SPDX expression (AND, OR, WITH, parentheses) is satisfiable by ALLOWED."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expr.replace("/", " OR "))
    pos = 0

    def term():
        nonlocal pos
        if tokens[pos] == "(":
            pos += 1
            value = either()
            pos += 1  # ")"
            return value
        name = tokens[pos]
        pos += 1
        if pos < len(tokens) and tokens[pos] == "WITH":
            name = f"{name} WITH {tokens[pos + 1]}"
            pos += 2
        return name in ALLOWED

    def both():
        nonlocal pos
        value = term()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            value = term() and value
        return value

    def either():
        nonlocal pos
        value = both()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            value = both() or value
        return value

    return either()


def major(version: str) -> str:
    parts = version.split("+")[0].split("-")[0].split(".")
    if parts[0] != "0":
        return parts[0]
    return f"0.{parts[1]}" if parts[1] != "0" else f"0.0.{parts[2]}"


def self_test() -> None:
    """The licence rule on expressions whose answer is known (run before every check)."""
    for expr, want in [
        ("MIT", True), ("GPL-3.0", False), ("MIT OR GPL-3.0", True), ("MIT AND GPL-3.0", False),
        ("(MIT OR Apache-2.0) AND Unicode-3.0", True), ("(MIT OR GPL-3.0) AND AGPL-3.0", False),
        ("MIT/Apache-2.0", True), ("Apache-2.0 WITH LLVM-exception", True),
        ("GPL-2.0 WITH Classpath-exception-2.0", False),
    ]:
        assert allowed(expr) == want, f"licence rule is wrong on {expr!r}"
    assert (major("1.2.3"), major("0.14.2"), major("0.0.7")) == ("1", "0.14", "0.0.7")


def main() -> int:
    self_test()
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    ours = set(meta["workspace_members"])
    packages = [p for p in meta["packages"] if p["id"] not in ours]
    bad = [f"{p['name']} {p['version']}: {p.get('license') or 'no licence'}"
           for p in packages if not p.get("license") or not allowed(p["license"])]
    versions = {}
    for p in packages:
        versions.setdefault(p["name"], set()).add(major(p["version"]))
    duplicates = sorted(n for n, v in versions.items() if len(v) > 1)
    known_file = os.path.join(ROOT, "scripts", "known-duplicates.txt")
    with open(known_file) as f:
        known = {line.split("#")[0].strip() for line in f} - {""}
    new = [n for n in duplicates if n not in known]
    print(f"check-deps: {len(packages)} dependencies; licences: {len(bad)} not allowed; "
          f"{len(duplicates)} crates in two majors ({len(new)} not in known-duplicates.txt)")
    for line in bad:
        print(f"  licence not allowed: {line}")
    for n in new:
        print(f"  new duplicate: {n} {sorted(versions[n])} (add it to {known_file} if intended)")
    gone = sorted(known - set(duplicates))
    for n in gone:
        print(f"  no longer duplicated, remove from known-duplicates.txt: {n}")
    return 1 if bad or new or gone else 0


if __name__ == "__main__":
    sys.exit(main())
