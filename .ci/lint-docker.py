#!/usr/bin/env python3
"""Lints docker/ without a Docker engine: compose.yaml parses and names files that exist, and
every COPY source of the Dockerfile (other than from a build stage) exists in the repository."""
import os
import sys

import yaml

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
docker = os.path.join(root, "docker")
problems = []

with open(os.path.join(docker, "compose.yaml"), encoding="utf-8") as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}
if not services:
    problems.append("compose.yaml: no services")
for name, svc in services.items():
    build = svc.get("build")
    if build:
        context = os.path.normpath(os.path.join(docker, build.get("context", ".")))
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            problems.append(f"compose.yaml: {name}: {dockerfile} does not exist")
    elif not svc.get("image"):
        problems.append(f"compose.yaml: {name}: neither build nor image")
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith(".") and not os.path.exists(os.path.join(docker, src)):
            problems.append(f"compose.yaml: {name}: volume source {src} does not exist")
    for dep in svc.get("depends_on", []):
        if dep not in services:
            problems.append(f"compose.yaml: {name}: depends on unknown service {dep}")

with open(os.path.join(docker, "Dockerfile"), encoding="utf-8") as f:
    lines = f.read().splitlines()
stages = 0
for number, line in enumerate(lines, 1):
    words = line.split("#", 1)[0].split()
    if not words:
        continue
    if words[0].upper() == "FROM":
        stages += 1
    if words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
        continue
    for src in [w for w in words[1:-1] if not w.startswith("--")]:
        if not os.path.exists(os.path.join(root, src)):
            problems.append(f"Dockerfile:{number}: COPY source {src} does not exist")
if stages < 2:
    problems.append("Dockerfile: expected a build stage and a runtime stage")
if not any(l.strip().upper().startswith("USER ") for l in lines):
    problems.append("Dockerfile: the runtime stage should not run as root (no USER)")
health = [l for l in lines if l.strip().upper().startswith("HEALTHCHECK")]
if not health or "/healthz" not in health[0]:
    problems.append("Dockerfile: HEALTHCHECK must ask the service's /healthz")

# The build context is the repository root: target/ (a gigabyte) and .git stay out of it.
ignore_path = os.path.join(root, ".dockerignore")
ignored = set()
if os.path.isfile(ignore_path):
    with open(ignore_path, encoding="utf-8") as f:
        ignored = {l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")}
for must in ("target", ".git"):
    if must not in ignored:
        problems.append(f".dockerignore: {must}/ is not excluded from the build context")

# The compose stack's cluster side is set up by the service (templates, lifecycle).
import tomllib
with open(os.path.join(docker, "defender-dsm.toml"), "rb") as f:
    service_config = tomllib.load(f)
for out in service_config.get("outputs", []):
    if out.get("type") == "bulk" and not out.get("setup"):
        problems.append(f"defender-dsm.toml: bulk output {out.get('name')} without setup = true")

for p in problems:
    print(p)
print(f"docker/: {len(services)} compose services, {stages} Dockerfile stages, {len(problems)} problems")
sys.exit(1 if problems else 0)
