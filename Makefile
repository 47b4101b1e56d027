# Entry points: `make demo`, `make test`.  Both install what is missing first.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)
# Debian's python3: the demo and the crash suite import python3-avro and
# python3-confluent-kafka, which another python3 first on PATH may not see.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)

.PHONY: all deps build build-asan build-fuzz test unit integration chaos fuzz demo bench clean format

all: build

deps:
	@./scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DZETL_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

build-fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DZETL_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# The whole suite: unit + integration tests on the optimized build and on the
# sanitizer build, then each fuzzer for a short run.
test: build build-asan build-fuzz
	cd $(BUILD) && ctest --output-on-failure -j 2
	cd $(ASAN_BUILD) && ctest --output-on-failure -j 2
	./tests/fuzz/run.sh $(FUZZ_BUILD)

unit: build
	cd $(BUILD) && ctest --output-on-failure -L '^$$' -E '^integration' -j $(JOBS)

integration: build
	cd $(BUILD) && ctest --output-on-failure -R '^integration' -j 2

# The seeded crash suite, long: `make chaos SEED=123 FAULTS=300` (default: a
# random seed, printed first, and 100 faults).
SEED ?=
FAULTS ?= 100
chaos: build
	ZETL_BIN=$(abspath $(BUILD))/zetl $(PYTHON) tests/chaos/chaos.py --faults $(FAULTS) $(if $(SEED),--seed $(SEED))

fuzz: build-fuzz
	./tests/fuzz/run.sh $(FUZZ_BUILD)

demo: build
	$(PYTHON) scripts/demo.py $(BUILD)/zetl

bench: build
	./bench/run.sh $(BUILD)/zetl

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
