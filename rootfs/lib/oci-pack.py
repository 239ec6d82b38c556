#!/usr/bin/env python3
"""Packs a root filesystem directory into a one-layer OCI image layout (no registry, no Docker).

usage: oci-pack.py ROOTFS OUT [--env K=V]... [--cmd JSON] [--workdir DIR]

The layer is a gzip'd tar made by GNU tar (sorted, numeric owners, device nodes and the
contents of /dev, /proc, /sys left out: sandpit provides those and refuses device nodes).
OUT is replaced atomically.
"""
import argparse, gzip, hashlib, json, os, shutil, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("rootfs")
ap.add_argument("out")
ap.add_argument("--env", action="append", default=[])
ap.add_argument("--cmd", default="[]")
ap.add_argument("--workdir", default="")
a = ap.parse_args()

parent = os.path.dirname(os.path.abspath(a.out))
os.makedirs(parent, exist_ok=True)
tmp = tempfile.mkdtemp(prefix=".oci-pack.", dir=parent)
try:
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return h

    # The layer: tar's output hashed (diff_id) while gzip'd into a file (hashed after).
    tar = subprocess.Popen(
        ["tar", "-C", a.rootfs, "--sort=name", "--numeric-owner", "--one-file-system",
         "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
         "--exclude=./.sandpit-recipe", "-cf", "-", "."],
        stdout=subprocess.PIPE)
    diff = hashlib.sha256()
    layer_tmp = os.path.join(tmp, "layer.tar.gz")
    with open(layer_tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
            while True:
                chunk = tar.stdout.read(1 << 20)
                if not chunk:
                    break
                diff.update(chunk)
                gz.write(chunk)
    if tar.wait() != 0:
        sys.exit("oci-pack: tar failed")
    blob = hashlib.sha256()
    with open(layer_tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            blob.update(chunk)
    layer_hex = blob.hexdigest()
    layer_size = os.path.getsize(layer_tmp)
    os.rename(layer_tmp, os.path.join(blobs, layer_hex))

    cfg = {"Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    cmd = json.loads(a.cmd)
    if cmd:
        cfg["Cmd"] = cmd
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff.hexdigest()]},
        "history": [{"created_by": "sandpit rootfs recipe"}],
    }, sort_keys=True).encode()
    config_hex = put(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + config_hex, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + layer_hex, "size": layer_size}],
    }, sort_keys=True).encode()
    manifest_hex = put(manifest)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": "sha256:" + manifest_hex, "size": len(manifest),
                            "platform": {"architecture": "amd64", "os": "linux"}}]}
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.rename(tmp, a.out)
    tmp = None
    print(f"packed {a.out}: layer {layer_size >> 20} MiB gzip'd")
finally:
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
