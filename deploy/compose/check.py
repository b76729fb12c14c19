#!/usr/bin/env python3
"""Checks docker-compose.yml without a container engine: against the Compose Specification
schema (the copy docker-compose 1.29.2 ships on PyPI), then against what `docker compose up
--wait` from a clean clone needs and what this project promises (README, "Compose").

Usage: check.py COMPOSE_FILE SCHEMA_JSON
"""
import json
import os
import re
import sys

import jsonschema
import yaml

compose_path, schema_path = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.abspath(compose_path))
with open(compose_path) as f:
    compose = yaml.safe_load(f)
with open(schema_path) as f:
    schema = json.load(f)

problems = []
validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft201909Validator)
for error in validator_class(schema).iter_errors(compose):
    path = "/".join(str(p) for p in error.absolute_path)
    problems.append(f"schema: {path}: {error.message}")

services = compose.get("services", {})
one_shot = {
    name
    for name, service in services.items()
    if service.get("restart") == "no"
}
built = [name for name, service in services.items() if "build" in service]
if len(built) > 1:
    problems.append(f"the image is built by {built}: build it once and share it by name")
local_images = {services[name].get("image") for name in built}

for name, service in services.items():
    image = service.get("image", "")
    if image and image not in local_images:
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        if "@sha256:" not in image and (not tag or tag == "latest" or not re.search(r"\d+\.\d+", tag)):
            problems.append(f"{name}: image `{image}` is not pinned to a version")
    if image in local_images and "build" not in service and service.get("pull_policy") != "never":
        problems.append(f"{name}: uses the locally built `{image}` without pull_policy: never")
    if name not in one_shot and "healthcheck" not in service:
        problems.append(f"{name}: no healthcheck")
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        problems.append(f"{name}: depends_on {depends_on} without conditions")
        depends_on = {}
    for dependency, condition in depends_on.items():
        wanted = condition.get("condition")
        if dependency in one_shot:
            if wanted != "service_completed_successfully":
                problems.append(f"{name}: waits for one-shot {dependency} with {wanted}")
        elif wanted != "service_healthy":
            problems.append(f"{name}: waits for {dependency} with {wanted}, not service_healthy")
    for port in service.get("ports", []):
        if str(port).split(":")[-1] == "5432":
            problems.append(f"{name}: publishes PostgreSQL ({port})")
    for volume in service.get("volumes", []):
        source = str(volume).split(":")[0]
        if source.startswith("."):
            if not os.path.exists(os.path.join(root, source)):
                problems.append(f"{name}: mounts {source}, which is not in the repository")
    for key, value in (service.get("environment") or {}).items():
        if "PASSWORD" in key and not key.endswith("_FILE"):
            problems.append(f"{name}: {key} is a fixed password; use a generated secret file")
        if re.search(r"://[^/@:]+:[^/@$]+@", str(value)):
            problems.append(f"{name}: {key} carries a fixed password in a URL")

simulator = " ".join(str(part) for part in services.get("simulator", {}).get("command", []))
if "forewarn-sim live" not in simulator:
    problems.append("simulator: does not run `forewarn-sim live` (a fleet with kinds that predict scores)")

with open(os.path.join(root, "Dockerfile")) as f:
    dockerfile = f.read()
users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
if not users or users[-1] in ("root", "0"):
    problems.append("Dockerfile: the image runs as root (no USER)")
if "HEALTHCHECK" not in dockerfile:
    problems.append("Dockerfile: no HEALTHCHECK")
with open(os.path.join(root, ".dockerignore")) as f:
    ignored = f.read().split()
for needed in ("target/", "data/"):
    if needed not in ignored:
        problems.append(f".dockerignore: {needed} would be sent to the build")

mosquitto_conf = os.path.join(root, "deploy/mosquitto/mosquitto.conf")
# The cluster file (docker-compose.cluster.yml) runs EMQX instead: no Mosquitto to check.
with open(mosquitto_conf) if "mosquitto" in services else open(os.devnull) as f:
    for line in f:
        key, _, value = line.strip().partition(" ")
        if key in ("password_file", "acl_file"):
            mounted = any(
                value.startswith(str(v).split(":")[1])
                for v in services["mosquitto"].get("volumes", [])
                if ":" in str(v)
            )
            if not mounted:
                problems.append(f"mosquitto.conf: {key} {value} is not mounted into the container")

if problems:
    print(os.path.basename(compose_path) + ": " + str(len(problems)) + " problem(s)")
    for problem in problems:
        print("  - " + problem)
    sys.exit(1)
print(f"{os.path.basename(compose_path)}: valid against the Compose Specification; {len(services)} services, "
      f"every long-running one with a healthcheck, images pinned, one build, secrets generated")
