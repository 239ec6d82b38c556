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
APT_PACKAGES := busybox-static file bubblewrap crun runc hyperfine mmdebstrap python3 openssl curl iproute2 systemd dpkg-dev
OCI := $(BUILD)/oci
# The data directory of `make run` and `make install`: the command line's default too.
DATA ?= /var/lib/sandpit
# The tests' own data directory (the shipped environments, imported by `make rootfs`).
TEST_DATA := $(RUNTREE)/data
SANDPIT := $(CURDIR)/target/release/sandpit
ENVS := busybox python3 c
PREFIX ?= /usr/local
# cargo-deb builds the Debian package (`make deb`); pinned, installed from crates.io.
CARGO_DEB_VERSION := 3.8.0

export SANDPIT_TEST_ROOTFS := $(ROOTFS)/busybox
export SANDPIT_TEST_DATA := $(TEST_DATA)

.PHONY: setup images rootfs build test bench run install uninstall deb clean lint

$(STAMP): Makefile tools/apt.sh
	@mkdir -p $(BUILD)
	@bash tools/apt.sh install-missing $(APT_PACKAGES)
	@command -v rustup >/dev/null && { echo "sandpit: checking rustfmt and clippy (rustup)"; rustup component add rustfmt clippy >/dev/null 2>&1; } || true
	@touch $@

setup: $(STAMP)

# The shipped environments as OCI image layouts in build/oci. Each step is cached (stamp on
# its recipe's hash): a second run takes seconds.
images: setup
	@bash rootfs/busybox/build.sh $(ROOTFS)/busybox
	@bash rootfs/lib/pack-dir.sh $(ROOTFS)/busybox $(OCI)/busybox '["/bin/sh"]'
	@bash rootfs/python3/build.sh $(OCI)/python3
	@bash rootfs/c/build.sh $(OCI)/c

# The test fixtures: the busybox rootfs and the environments imported into the tests' data dir.
rootfs: images build
	@bash rootfs/lib/import.sh $(SANDPIT) $(TEST_DATA) $(OCI) $(ENVS)

build: setup
	$(CARGO) build --release

# The host run, then the same test binaries inside VMs booting Debian 12's kernels (6.1 and
# 6.12) with cgroup v2, in the root cgroup, in a delegated service and (6.1) in a login session
# scope (tools/vm-test.sh; about 32 minutes under emulation on 2 cores). A host that cannot
# boot a VM says so loudly and skips that part; VM_TEST=0 skips it on purpose.
test: rootfs
	$(CARGO) test --release --workspace -- --test-threads=2
	@left=$$(find /sys/fs/cgroup -name 'sandpit-*[0-9]*' -type d 2>/dev/null | while read -r d; do \
	  pid=$$(basename "$$d" | grep -o '[0-9][0-9]*' | head -1); [ -d "/proc/$$pid" ] || echo "$$d"; done); \
	  if [ -n "$$left" ]; then echo "test: cgroups left by engines that have ended:"; echo "$$left"; exit 1; fi
	bash tests/sh/run.sh
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
	bash benches/python_row.sh $(SANDPIT) $(TEST_DATA)
	bash benches/cpu_overshoot.sh $(SANDPIT) $(ROOTFS)/busybox
	$(CARGO) run --release -q -p sandbox --example phases -- $(ROOTFS)/busybox
	$(CARGO) run --release -q -p sandbox --example phases -- $(ROOTFS)/busybox 100 --pool
	$(CARGO) run --release -q -p sandbox --example phases -- $(ROOTFS)/busybox 50 --one-shot
	$(CARGO) run --release -q -p sandbox --example throughput -- $(ROOTFS)/busybox
	$(CARGO) bench --bench api
	$(CARGO) bench --bench pipes
	$(CARGO) bench --bench kept
	$(CARGO) bench --bench judge

# The main job: the HTTP execution API on the embedded store (SQLite in $(DATA)), with the
# shipped environments imported there. The master token is created in $(DATA)/master_token on
# first start (unless SANDPIT_MASTER_TOKEN is set).
run: images build
	@bash rootfs/lib/import.sh $(SANDPIT) $(DATA) $(OCI) $(ENVS)
	@printf '%s\n' "sandpit: starting the API on http://127.0.0.1:8080 (Ctrl-C stops it). Try, from another terminal:" \
	  "  curl --fail-with-body -s -H \"Authorization: Bearer \$$(cat $(DATA)/master_token)\" -H 'Content-Type: application/json' -d '{\"environment\":\"busybox\",\"command\":[\"sh\",\"-c\",\"echo hello from the sandbox\"],\"wait\":true}' http://127.0.0.1:8080/api/v1/executions"
	$(SANDPIT) --data $(DATA) serve --listen 127.0.0.1:8080

# sandpit in $(PREFIX)/bin, the systemd unit (not enabled) and the README, and the shipped
# environments imported into $(DATA).
install: images build
	install -D -m 0755 $(SANDPIT) $(DESTDIR)$(PREFIX)/bin/sandpit
	install -d -m 0700 $(DESTDIR)$(DATA)
	@mkdir -p $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed -e 's|/usr/bin/sandpit|$(PREFIX)/bin/sandpit|; s|/var/lib/sandpit|$(DATA)|g' packaging/sandpit.service \
	  >$(DESTDIR)$(PREFIX)/lib/systemd/system/sandpit.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/sandpit/README.md
	@bash rootfs/lib/import.sh $(DESTDIR)$(PREFIX)/bin/sandpit $(DESTDIR)$(DATA) $(OCI) $(ENVS)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "sandpit: installed $(PREFIX)/bin/sandpit and the unit sandpit.service (start it: systemctl enable --now sandpit); data in $(DATA)"

# Removes what `make install` put in $(PREFIX); the data directory stays.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/sandpit $(DESTDIR)$(PREFIX)/lib/systemd/system/sandpit.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/sandpit

# The Debian package (binary, unit, postinst creating the data dir), in target/debian/.
deb: build
	@$(CARGO) deb --version 2>/dev/null | grep -qx 'cargo-deb $(CARGO_DEB_VERSION)' || \
	  { echo "sandpit: installing cargo-deb $(CARGO_DEB_VERSION) from crates.io (a few minutes, once)"; \
	    $(CARGO) install cargo-deb --version $(CARGO_DEB_VERSION) --locked; }
	$(CARGO) deb --no-build

clean:
	rm -rf $(BUILD) $(RUNTREE)
