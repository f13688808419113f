# The two commands of the README's Quick start, plus helpers. Each installs
# what is missing (scripts/setup.sh skips apt when all is present) and
# builds with Bazel.

BAZEL ?= bazel

.PHONY: run test build demo bench bench-merge bench-redis bench-converge bench-watch setup

setup:
	@bash scripts/setup.sh

# The main job: a replica server on 127.0.0.1:7700 with its data in
# ./peerkv-data, in the foreground (Ctrl-C stops it cleanly).
run: setup
	$(BAZEL) build -c opt //cli:peerkv
	./bazel-bin/cli/peerkv serve --data ./peerkv-data --listen 127.0.0.1:7700

# Every test, plain and under AddressSanitizer; the last line is
# "N passed, N failed".
test: setup
	@bash scripts/test.sh

build: setup
	$(BAZEL) build //...

# The phone/tablet/pc walkthrough on three local replica servers.
demo: setup
	$(BAZEL) build -c opt //cli:peerkv
	./bazel-bin/cli/peerkv demo

bench: bench-merge bench-redis bench-converge bench-watch

bench-merge: setup
	bash bench/run_merge_bench.sh

bench-redis: setup
	bash bench/vs_redis.sh

bench-converge: setup
	bash bench/run_converge_bench.sh

bench-watch: setup
	bash bench/run_watch_bench.sh
