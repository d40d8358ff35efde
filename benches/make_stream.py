#!/usr/bin/env python3
"""Writes a load corpus for the output benchmarks: FILES Event Hubs messages of RECORDS records
each, made from the Device* fixture records with a unique ReportId per record (so each event
has its own record id and Elasticsearch stores every one).

usage: make_stream.py OUT_DIR [FILES] [RECORDS]
"""
import glob
import json
import os
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
out_dir = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 100
per_file = int(sys.argv[3]) if len(sys.argv) > 3 else 10000

templates = []
for path in sorted(glob.glob(os.path.join(root, "device-*", "*.input.json"))):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    for rec in doc.get("records", []) if isinstance(doc, dict) else []:
        if isinstance(rec.get("properties"), dict):
            templates.append(rec)
if not templates:
    sys.exit("no Device* fixture records found under " + root)

os.makedirs(out_dir, exist_ok=True)
n = 0
for i in range(files):
    recs = []
    for _ in range(per_file):
        rec = json.loads(json.dumps(templates[n % len(templates)]))
        rec["properties"]["ReportId"] = 10_000_000 + n
        recs.append(rec)
        n += 1
    with open(os.path.join(out_dir, f"stream-{i:04d}.json"), "w", encoding="utf-8") as f:
        json.dump({"records": recs}, f, separators=(",", ":"))
print(f"{n} records in {files} files under {out_dir}")
