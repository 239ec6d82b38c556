# sandpit: `make run` (main job) and `make test` set everything up by themselves on a fresh
# Debian 12 machine, as root.
SHELL := /bin/bash
CARGO ?= cargo
BUILD := $(CURDIR)/build
# The sandbox's root (an unprivileged host uid) must be able to walk to the root filesystems
# and image layers it mounts; a checkout may sit below a 0700 directory (/root, mktemp -d), so
# they live under a world-traversable directory, one per checkout.
RUNTREE := /var/tmp/sandpit-build/$(shell printf '%s' '$(CURDIR)' | sha256sum | cut -c1-12)
ROOTFS := $(RUNTREE)/rootfs
STAMP := $(BUILD)/.setup-done
APT_PACKAGES := busybox-static file bubblewrap crun runc hyperfine mmdebstrap python3 openssl
OCI := $(BUILD)/oci
DATA := $(RUNTREE)/data
SANDPIT := $(CURDIR)/target/release/sandpit
ENVS := busybox python3 c

export SANDPIT_TEST_ROOTFS := $(ROOTFS)/busybox
# The data directory holding the shipped environments (busybox, python3, c), imported by `make rootfs`.
export SANDPIT_TEST_DATA := $(DATA)

.PHONY: setup rootfs build test bench run clean lint

$(STAMP): Makefile
	@mkdir -p $(BUILD)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	fi
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true
	@touch $@

setup: $(STAMP)

# Each step is cached (stamp on its recipe's hash): a second run takes seconds.
rootfs: setup build
	@bash rootfs/busybox/build.sh $(ROOTFS)/busybox
	@bash rootfs/lib/pack-dir.sh $(ROOTFS)/busybox $(OCI)/busybox '["/bin/sh"]'
	@bash rootfs/python3/build.sh $(OCI)/python3
	@bash rootfs/c/build.sh $(OCI)/c
	@bash rootfs/lib/import.sh $(SANDPIT) $(DATA) $(OCI) $(ENVS)

build: setup
	$(CARGO) build --release

# The host run, then the same test binaries inside VMs booting Debian 12's kernels (6.1 and
# 6.12) with cgroup v2, in the root cgroup and in a delegated service (tools/vm-test.sh; about
# 20 minutes under emulation on 2 cores). A host that cannot boot a VM says so loudly and skips
# that part; VM_TEST=0 skips it on purpose.
test: rootfs
	$(CARGO) test --release --workspace -- --test-threads=2
	@if [ "$${VM_TEST:-1}" = 0 ]; then echo "vm-test: skipped (VM_TEST=0)"; else \
	  bins=$$($(CARGO) test --release --workspace --no-run --message-format=json 2>/dev/null | \
	    python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]]'); \
	  bash tools/vm-test.sh $$bins; fi

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: rootfs build
	$(CARGO) bench --bench run_true -- --warm-up-time 1 --measurement-time 5
	bash benches/side_by_side.sh $(ROOTFS)/busybox
	bash benches/python_row.sh $(SANDPIT) $(DATA)
	$(CARGO) bench --bench api

# The main job: the HTTP execution API on the embedded store (SQLite in $(DATA)), with the
# environments built by `make rootfs`. The master token is created in $(DATA)/master_token on
# first start (unless SANDPIT_MASTER_TOKEN is set).
run: rootfs build
	@printf '%s\n' "sandpit: starting the API on http://127.0.0.1:8080 (Ctrl-C stops it). Try, from another terminal:" \
	  "  curl -s -H \"Authorization: Bearer \$$(cat $(DATA)/master_token)\" -H 'Content-Type: application/json' -d '{\"environment\":\"busybox\",\"command\":[\"sh\",\"-c\",\"echo hello from the sandbox\"],\"wait\":true}' http://127.0.0.1:8080/api/v1/executions"
	$(SANDPIT) --data $(DATA) serve --listen 127.0.0.1:8080

clean:
	rm -rf $(BUILD) $(RUNTREE)
