#!/usr/bin/env python3
"""Load defender-dsm's QRadar content into a QRadar console through its REST API.

Written next to the JSON files by `defender-dsm export qradar`. Python 3 standard library only,
so it runs on the console itself. Idempotent: records, mappings and properties that already
exist (same name, same pair) are left alone, so it can be rerun after the mappings change.

    python3 qradar_import.py --url https://qradar.example --log-source-type-id 4021
    (token from the QRADAR_TOKEN environment variable: an authorized service token)
    --dry-run prints the requests instead of sending them.
"""
import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return json.load(f)


class Api:
    def __init__(self, url, token, insecure, dry_run):
        self.url = url.rstrip("/") + "/api"
        self.token = token
        self.dry_run = dry_run
        self.ctx = ssl._create_unverified_context() if insecure else ssl.create_default_context()
        self.next_fake_id = 1

    def call(self, method, path, body=None, query=None):
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if self.dry_run and method != "GET":
            print(method, url, json.dumps(body))
            self.next_fake_id += 1
            return {"id": self.next_fake_id, "identifier": "dry-run-%d" % self.next_fake_id}
        if self.dry_run:
            return []
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "SEC": self.token, "Version": "14.0", "Accept": "application/json",
            "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=60) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            sys.exit("%s %s failed: HTTP %s %s" % (method, path, e.code, e.read().decode(errors="replace")[:500]))


def quoted(s):
    return '"' + s.replace('"', '\\"') + '"'


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="console URL, e.g. https://qradar.example")
    p.add_argument("--log-source-type-id", type=int, help="id of the log source type the events arrive under")
    p.add_argument("--insecure", action="store_true", help="do not verify the console's TLS certificate")
    p.add_argument("--dry-run", action="store_true", help="print the requests, send nothing")
    a = p.parse_args()
    token = os.environ.get("QRADAR_TOKEN", "")
    if not token and not a.dry_run:
        sys.exit("set QRADAR_TOKEN to an authorized service token")
    api = Api(a.url, token, a.insecure, a.dry_run)
    records, mappings, props = load("qid-records.json"), load("dsm-event-mappings.json"), load("custom-properties.json")
    type_id = a.log_source_type_id or next((r["log_source_type_id"] for r in records if r["log_source_type_id"]), None)
    if type_id is None:
        sys.exit("give --log-source-type-id (or export with --log-source-type-id)")

    ids = {}
    for r in records:
        found = api.call("GET", "/data_classification/qid_records", query={
            "filter": "log_source_type_id=%d and name=%s" % (type_id, quoted(r["name"]))})
        if found:
            ids[r["name"]] = found[0]["id"]
            continue
        body = dict(r, log_source_type_id=type_id)
        ids[r["name"]] = api.call("POST", "/data_classification/qid_records", body)["id"]
    for m in mappings:
        found = api.call("GET", "/data_classification/dsm_event_mappings", query={
            "filter": "log_source_type_id=%d and log_source_event_id=%s and log_source_event_category=%s"
            % (type_id, quoted(m["log_source_event_id"]), quoted(m["log_source_event_category"]))})
        if found:
            continue
        api.call("POST", "/data_classification/dsm_event_mappings", {
            "log_source_type_id": type_id, "log_source_event_id": m["log_source_event_id"],
            "log_source_event_category": m["log_source_event_category"],
            "qid_record_id": ids[m["qid_record_name"]]})
    for prop in props:
        found = api.call("GET", "/config/event_sources/custom_properties/regex_properties", query={
            "filter": "name=%s" % quoted(prop["name"])})
        if found:
            ident = found[0]["identifier"]
        else:
            ident = api.call("POST", "/config/event_sources/custom_properties/regex_properties", {
                "name": prop["name"], "description": prop["description"],
                "property_type": prop["property_type"], "use_for_rule_engine": True})["identifier"]
        exprs = api.call("GET", "/config/event_sources/custom_properties/regex_property_expressions", query={
            "filter": "regex_property_identifier=%s and log_source_type_id=%d" % (quoted(ident), type_id)})
        if not exprs:
            api.call("POST", "/config/event_sources/custom_properties/regex_property_expressions", {
                "regex_property_identifier": ident, "log_source_type_id": type_id,
                "regex": prop["regex"], "capture_group": prop["capture_group"], "enabled": True})
    print("qradar_import: %d QID records, %d event mappings, %d custom properties checked or created"
          % (len(records), len(mappings), len(props)))


if __name__ == "__main__":
    main()
