#!/usr/bin/env python3
"""Checks that Rust source files and functions stay small enough to read.

    python3 scripts/check-sizes.py [--max-file 700] [--max-fn 120] DIR...
    python3 scripts/check-sizes.py --max-fn 0 DIR...     # files only

Prints every file over --max-file lines and every function over --max-fn lines (from its `fn`
line to its closing brace, comments and blank lines included), the largest ones either way, and
exits 1 if any is over. Braces inside strings, chars and comments are skipped; `#[cfg(test)]`
modules count like any other code.
"""
import argparse
import re
import sys
from pathlib import Path

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def code_chars(text):
    """Yields (index, char) of the text outside comments, strings and char literals."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        m = re.match(r'b?r(#*)"', text[i:])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            i = n if j < 0 else j + len(end)
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                i += m.end()
                continue
        yield i, c
        i += 1


def functions(text):
    """(name, first line, last line) of every function with a body."""
    line_of = []
    line = 1
    for ch in text:
        line_of.append(line)
        if ch == "\n":
            line += 1
    starts = {}
    offset = 0
    for number, raw in enumerate(text.splitlines(keepends=True), 1):
        m = FN.match(raw)
        if m:
            starts[offset] = m.group(7)
        offset += len(raw)
    result, stack, pending = [], [], None
    line_starts = sorted(starts)
    k, depth = 0, 0  # depth: open ( and [ since the pending `fn`
    for i, c in code_chars(text):
        while k < len(line_starts) and line_starts[k] <= i:
            pending = (starts[line_starts[k]], line_of[line_starts[k]])
            depth = 0
            k += 1
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == ";" and pending and depth == 0:
            pending = None  # a declaration without a body (a trait method)
        elif c == "{":
            stack.append(pending)
            pending = None
        elif c == "}" and stack:
            top = stack.pop()
            if top:
                result.append((top[0], top[1], line_of[i]))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-file", type=int, default=700)
    ap.add_argument("--max-fn", type=int, default=120)
    ap.add_argument("dirs", nargs="+")
    args = ap.parse_args()
    files, fns = [], []
    for d in args.dirs:
        for path in sorted(Path(d).rglob("*.rs")):
            text = path.read_text()
            files.append((text.count("\n"), str(path)))
            for name, first, last in functions(text):
                fns.append((last - first + 1, f"{path}:{first} {name}"))
    files.sort(reverse=True)
    fns.sort(reverse=True)
    over_files = [f for f in files if f[0] > args.max_file]
    over_fns = [f for f in fns if args.max_fn and f[0] > args.max_fn]
    print(f"{len(files)} files, {len(fns)} functions under {', '.join(args.dirs)}")
    print(f"largest files (limit {args.max_file} lines):")
    for lines, path in files[:3]:
        print(f"  {lines:5} {path}")
    print(f"longest functions (limit {args.max_fn} lines):")
    for lines, where in fns[:3]:
        print(f"  {lines:5} {where}")
    for lines, path in over_files:
        print(f"OVER: file {path} has {lines} lines", file=sys.stderr)
    for lines, where in over_fns:
        print(f"OVER: fn {where} has {lines} lines", file=sys.stderr)
    return 1 if over_files or over_fns else 0


if __name__ == "__main__":
    sys.exit(main())
