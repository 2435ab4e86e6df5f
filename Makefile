# Wraps the CMake build. `make` builds into build/, `make check` builds the
# sanitizer (ASan+UBSan) tree in build/asan and runs every test there.
BUILD    ?= build
ASAN     ?= build/asan
TSAN     ?= build/tsan
PREFIX   ?= /usr/local
DESTDIR  ?=
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=

.PHONY: check-fresh check-compat deps-run demo-move chaos soak all build check check-asan check-tsan check-systemd lint format demo bench bench-takeover bench-session fuzz deb install clean deps

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	@sh scripts/deps.sh
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN)/CMakeCache.txt:
	@sh scripts/deps.sh
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DBATON_SANITIZE=ON

check-asan: $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The real servers the baton run tests drive; their tests skip (77) only
# when these cannot be installed (not root, no mirror).
deps-run:
	-@sh scripts/deps-run.sh

check: deps-run lint build check-asan

# Real Debian servers restarted under load by `baton run`, one line per case
# (COMPAT_CASES="node redis" for some); installs them with apt-get and
# writes tests/compat/results.md.
check-compat: build
	@bash tests/compat/run.sh $(BUILD) $(COMPAT_CASES)

$(TSAN)/CMakeCache.txt:
	@sh scripts/deps.sh
	cmake -S . -B $(TSAN) -DCMAKE_BUILD_TYPE=Debug -DBATON_TSAN=ON

check-tsan: $(TSAN)/CMakeCache.txt
	cmake --build $(TSAN) -j $(JOBS)
	cd $(TSAN) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

lint:
	@sh scripts/deps.sh
	@sh scripts/lint.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# The build's output goes to $(BUILD)/build.log (shown if it fails), so
# that the demo's own summary is what the terminal shows.
demo:
	@JOBS=$(JOBS) PREFIX=$(PREFIX) sh scripts/build-quiet.sh $(BUILD)
	@sh scripts/demo.sh $(BUILD)

# Two session servers and game bots; every session moves A->B->A.
demo-move:
	@JOBS=$(JOBS) PREFIX=$(PREFIX) sh scripts/build-quiet.sh $(BUILD)
	@bash scripts/demo-move.sh $(BUILD)

# The long fault runs: 1,000 chaos rounds, 10,000 upgrades under load.
chaos: check-asan
	bash scripts/chaos.sh $(ASAN)

soak: build
	bash scripts/soak.sh $(BUILD)

bench: build bench-takeover bench-session
	@bash bench/run.sh $(BUILD)

# 1,000 sessions moved between network namespaces and back, the default
# move window against every MOVE at once (root; skipped otherwise).
bench-session: build
	@bash bench/session-move.sh $(BUILD) 1000 $${BENCH_SESSION_RUNS:-5}; r=$$?; \
	  if [ $$r -eq 77 ]; then echo "bench-session: skipped (needs root)"; else exit $$r; fi

bench-takeover: build
	$(BUILD)/bin/baton-bench-takeover --runs $${BENCH_TAKEOVER_RUNS:-200}
	$(BUILD)/bin/baton-bench-conn-handoff --runs $${BENCH_CONN_RUNS:-20}
	$(BUILD)/bin/baton-bench-touch
	bash bench/pause-standby.sh $(BUILD) $${BENCH_PAUSE_RUNS:-3} $${BENCH_PAUSE_UPGRADES:-20}
	$(BUILD)/bin/baton-bench-steer
	$(BUILD)/bin/baton-bench-run-udp
	@echo "echo client through 10 upgrades (largest client-visible pause):"
	@bash examples/echo-upgrades.sh $(BUILD) 10 | tail -n 1

# libFuzzer needs clang (installed if missing). Each target runs for
# FUZZ_SECONDS on a scratch copy of its corpus; new findings are saved in
# build/fuzz/findings/.
FUZZ_SECONDS ?= 60
FUZZ ?= build/fuzz
fuzz:
	@command -v clang >/dev/null || (apt-get update -q && apt-get install -y -q clang)
	CC=clang cmake -S . -B $(FUZZ) -DBATON_FUZZ=ON -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Debug
	cmake --build $(FUZZ) -j $(JOBS) --target $$(for t in fuzz/corpus/*; do printf 'fuzz-%s ' $$(basename $$t); done)
	@for t in fuzz/corpus/*; do n=$$(basename $$t); \
	  mkdir -p $(FUZZ)/scratch/$$n $(FUZZ)/findings/$$n; cp $$t/* $(FUZZ)/scratch/$$n/; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
	  $(FUZZ)/bin/fuzz-$$n -max_total_time=$(FUZZ_SECONDS) -max_len=70000 \
	    -artifact_prefix=$(FUZZ)/findings/$$n/ $(FUZZ)/scratch/$$n 2>&1 | tail -3 || exit 1; done

deb:
	@sh scripts/deps.sh
	sh packaging/build-debs.sh $(BUILD)/pkg

# Boots Debian 12 with systemd in a container of its own (debootstrap +
# systemd-nspawn; never on this machine's root), installs the .debs,
# upgrades them under load, and crashes the service with the fd store.
check-systemd:
	bash scripts/systemd-test.sh $(BUILD)

# A new user's first hour on a fresh Debian 12 minbase root of its own
# (debootstrap + chroot; root): clones HEAD, make demo, make install, the
# README's quick start built with pkg-config and taken over, make deb,
# dpkg -i, the packaged baton-httpd and baton run. A line per step.
check-fresh:
	bash scripts/check-fresh.sh $(BUILD)

# The libraries, headers, pkg-config files, tool, examples and man pages. The
# packages' extra files (units, /etc/default) come with `make deb` only.
# Into the real root (no DESTDIR), ldconfig then refreshes the linker's
# cache, without which programs linked to libbaton.so.0 do not start; a
# PREFIX whose lib directory the linker does not search is named.
# The prefix is also compiled into baton.pc and the tool (where `baton run`
# finds the shim), so a PREFIX other than the build's reconfigures first.
install: build
	@grep -qxF 'CMAKE_INSTALL_PREFIX:PATH=$(PREFIX)' $(BUILD)/CMakeCache.txt || \
	  { cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null && cmake --build $(BUILD) -j $(JOBS); }
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX) --component Unspecified
	@if [ -z "$(DESTDIR)" ]; then sh scripts/install-ldconfig.sh $(BUILD); fi

clean:
	rm -rf $(BUILD)
