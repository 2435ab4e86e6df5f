# Wraps the CMake build. `make` builds into build/, `make check` builds the
# sanitizer (ASan+UBSan) tree in build/asan and runs every test there.
BUILD    ?= build
ASAN     ?= build/asan
TSAN     ?= build/tsan
PREFIX   ?= /usr/local
DESTDIR  ?=
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=

.PHONY: all build check check-asan check-tsan lint format demo bench install clean deps

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

check: lint build check-asan

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

demo: build
	@sh scripts/demo.sh $(BUILD)

bench: build
	@sh bench/run.sh $(BUILD)

install: build
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD)
