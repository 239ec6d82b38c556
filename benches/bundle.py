#!/usr/bin/env python3
"""Writes an OCI runtime bundle config for crun/runc: `crun spec` defaults, the rootfs
read-only, no cgroup namespace or /sys/fs/cgroup mount, no resources.
Usage: bundle.py CONFIG_JSON ROOTFS CWD CGROUPS_PATH|- ARGS..."""
import json, sys

path, rootfs, cwd, cgroups_path, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"].update(args=args, terminal=False, cwd=cwd)
c["linux"].pop("resources", None)
c["linux"].pop("cgroupsPath", None)
if cgroups_path != "-":
    c["linux"]["cgroupsPath"] = cgroups_path
c["linux"]["namespaces"] = [x for x in c["linux"]["namespaces"] if x["type"] != "cgroup"]
c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]
json.dump(c, open(path, "w"))
