# duplex — the two commands a newcomer needs:
#
#   make run     install what is missing, build, serve the demo
#   make test    install what is missing, build, run every test
#
# and a few more: make fuzz, make bench, make format, make clean.
# The build itself is CMake; this file only drives it (see README.md).
# Debian packages live in one list: scripts/deps.sh.

BUILD        ?= build
ASAN_DIR     := $(BUILD)/asan
RELEASE_DIR  := $(BUILD)/release
JOBS         ?= $(shell nproc 2>/dev/null || echo 2)
PORT         ?= 8080
FUZZ_SECONDS ?= 600
CMAKE        ?= cmake
CTEST        ?= ctest
DUPLEX       := $(RELEASE_DIR)/src/app/duplex

# The sanitizer build runs the tests; the release build is what `make run`
# serves, what the benchmarks measure, and it catches -O2-only warnings.
ASAN_FLAGS    := -DCMAKE_BUILD_TYPE=Debug -DDX_SANITIZE=ON -DDX_TESTS=ON
RELEASE_FLAGS := -DCMAKE_BUILD_TYPE=Release -DDX_TESTS=OFF

FORMAT_DIRS := src include tests bench fuzz examples

.PHONY: all deps deps-apt deps-npm build build-asan build-release test run \
        fuzz bench format clean help

all: build

help:
	@sed -n '/^$$/q;s/^# \{0,1\}//p' Makefile

# ---- set-up -------------------------------------------------------------

deps: deps-apt deps-npm

deps-apt:
	@bash scripts/deps.sh

# Node packages for the interop and browser tests, pinned by
# package-lock.json; `npm ci` runs again only when the lock file is newer
# than node_modules/ (npm writes node_modules/.package-lock.json).
# A no-op without a package.json.
deps-npm: deps-apt
	@if [ -f package.json ]; then \
	  if [ node_modules/.package-lock.json -nt package-lock.json ] && \
	     [ node_modules/.package-lock.json -nt package.json ]; then \
	    echo "deps-npm: node_modules is up to date"; \
	  else \
	    npm ci --no-audit --no-fund; \
	  fi; \
	fi

# ---- builds -------------------------------------------------------------
# Configuring every time is cheap (CMake keeps its cache) and picks up
# changed flags and new source files.

build: build-asan build-release

build-asan: deps
	$(CMAKE) -S . -B $(ASAN_DIR) $(ASAN_FLAGS)
	$(CMAKE) --build $(ASAN_DIR) --parallel $(JOBS)

build-release: deps
	$(CMAKE) -S . -B $(RELEASE_DIR) $(RELEASE_FLAGS)
	$(CMAKE) --build $(RELEASE_DIR) --parallel $(JOBS)

# ---- the two commands -----------------------------------------------------

test: build-asan build-release
	$(CTEST) --test-dir $(ASAN_DIR) --output-on-failure --parallel $(JOBS)

# The demo: duplex serve with the chat and dashboard pages (web/), presence
# on, an echo endpoint, and the ticker publisher feeding the dashboard
# through the HTTP API. Ctrl-C stops both (the server closes with 1012).
run: build-release
	@echo "serving the demo at http://127.0.0.1:$(PORT) (Ctrl-C stops)"
	@$(DUPLEX) serve --port $(PORT) --root web --presence --echo /echo & srv=$$!; \
	  trap 'kill $$srv $$tick 2>/dev/null; wait $$srv' INT TERM EXIT; \
	  sleep 0.5; \
	  node web/ticker.js --url http://127.0.0.1:$(PORT)/api/publish --quiet & tick=$$!; \
	  wait $$srv

# ---- more -----------------------------------------------------------------

# Each libFuzzer target for FUZZ_SECONDS (default 10 minutes), growing the
# corpus kept in fuzz/corpus-run/ between runs. Crashes are saved under
# $(BUILD)/fuzz/artifacts/.
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_CORPUS_DIR=$(CURDIR)/fuzz/corpus-run \
	  FUZZ_BUILD_DIR=$(BUILD)/fuzz \
	  bash tests/scripts/fuzz_smoke.sh $(BUILD) $(CURDIR)

# Every program the bench/ build produces (bench_*), in the release build.
bench: build-release
	@found=0; \
	for b in $(RELEASE_DIR)/bench/bench_*; do \
	  [ -f "$$b" ] && [ -x "$$b" ] || continue; \
	  found=1; echo "== $$b"; "$$b" || exit 1; \
	done; \
	[ $$found = 1 ] || echo "bench: no benchmark programs yet (bench/ is empty)"

format:
	@bash scripts/deps.sh clang-format
	@dirs=$$(for d in $(FORMAT_DIRS); do [ -d $$d ] && echo $$d; done); \
	files=$$(find $$dirs -type f \( -name '*.c' -o -name '*.h' \) -not -path '*/node_modules/*' 2>/dev/null); \
	if [ -n "$$files" ]; then clang-format -i $$files; \
	  echo "format: $$(echo "$$files" | wc -l) files"; fi

clean:
	rm -rf $(BUILD)
