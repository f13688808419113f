# The two commands of the README's Quick start, plus helpers. Each installs
# what is missing (scripts/setup.sh skips apt when all is present) and
# builds with Bazel.

BAZEL ?= bazel

.PHONY: run test build bench setup

setup:
	@bash scripts/setup.sh

# The main job.
run: setup
	$(BAZEL) build -c opt //cli:peerkv
	./bazel-bin/cli/peerkv demo

# Every test; the last line is "N passed, N failed".
test: setup
	@bash scripts/test.sh

build: setup
	$(BAZEL) build //...

bench: setup
	bash bench/run_merge_bench.sh
