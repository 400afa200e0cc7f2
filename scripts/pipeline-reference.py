#!/usr/bin/env python3
"""Prints the key reference of docs/pipelines.md from the pipeline files' JSON Schema.

    nomaly schema | python3 scripts/pipeline-reference.py > /tmp/keys.md

The schema is derived from the parser's own types (their doc comments are the descriptions), so
the reference cannot name a key the parser does not take. A unit test of nomaly-pipeline
(reference_tests.rs) fails when docs/pipelines.md misses a key of the schema.
"""
import json
import sys

SECTIONS = [  # (heading, definition name or None for the top level, how the table is written)
    ("Top level", None, ""),
    ("`[[source]]`", "SourceSpec", "[[source]]"),
    ("`[[step]]`", "StepSpec", "[[step]]"),
    ("`[detect]`", "DetectSpec", "[detect]"),
    ("`[[validate]]`", "ValidateSpec", "[[validate]]"),
    ("`[[sink]]`", "SinkSpec", "[[sink]]"),
    ("`[[notify]]`", "NotifySpec", "[[notify]]"),
    ("`[resources]`", "ResourcesSpec", "[resources]"),
    ("`[retry]`", "RetrySpec", "[retry]"),
    ("`[run]`", "RunSpec", "[run]"),
]


def kind(p, defs):
    ref = p.get("$ref") or p.get("items", {}).get("$ref")
    for alt in p.get("anyOf", []) + p.get("oneOf", []) + p.get("allOf", []):
        ref = ref or alt.get("$ref")
    if ref:
        d = defs.get(ref.split("/")[-1], {})
        values = list(d.get("enum") or [])
        for v in d.get("oneOf", []):
            values += v.get("enum") or ([v["const"]] if "const" in v else [])
        if values:
            return " \\| ".join(f'"{v}"' for v in values)
        return "table"
    if "enum" in p:
        return " \\| ".join(f'"{v}"' for v in p["enum"])
    t = p.get("type")
    if isinstance(t, list):
        t = [x for x in t if x != "null"]
        t = t[0] if len(t) == 1 else "/".join(t)
    return {"array": "list", "integer": "integer", "boolean": "bool", "string": "string",
            "number": "number"}.get(t, t or "any")


def rows(props, defs):
    for key, p in props.items():
        text = " ".join((p.get("description") or "").split()).replace("|", "\\|")
        yield f"| `{key}` | {kind(p, defs)} | {text} |"


def main():
    schema = json.load(sys.stdin)
    defs = schema.get("$defs", {})
    print("| key | value | meaning |\n|---|---|---|")
    for heading, name, table in SECTIONS:
        obj = schema if name is None else defs[name]
        print(f"| **{heading}** | | |")
        variants = obj.get("oneOf") or [obj]
        merged = {}
        for v in variants:
            for k, p in v.get("properties", {}).items():
                if "const" in p:  # the tag of a tagged table: every variant's value and meaning
                    prev = merged.get(k, {"description": "", "enum": []})
                    prev["enum"].append(p["const"])
                    meaning = " ".join((v.get("description") or "").split())
                    if meaning:
                        prev["description"] += f'"{p["const"]}": {meaning} '
                    merged[k] = prev
                else:
                    merged.setdefault(k, p)
        for line in rows(merged, defs):
            print(line)


if __name__ == "__main__":
    main()
