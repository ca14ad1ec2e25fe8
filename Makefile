# The two entry points of a fresh machine: `make demo` and `make test`.
# Both install what they need first (idempotent, cached outside the repository).

CARGO ?= cargo
BIN := $(or $(CARGO_TARGET_DIR),target)/debug
RELEASE_BIN := $(or $(CARGO_TARGET_DIR),target)/release

.PHONY: demo test deps lint crds bench bench-operator-scale compare-mineru

## The local demo on embedded defaults: the worker parses a sample document, then a real
## control plane, Prometheus, workers and the vLLM simulator run a rollout that is promoted and
## one that is rolled back.
demo: deps
	$(CARGO) build --workspace --bins
	$(BIN)/mineru-worker parse examples/documents/sample.pdf -o target/demo
	@echo
	@echo "=== target/demo/sample/sample.md (text backend, no GPU) ==="
	@cat target/demo/sample/sample.md
	@echo
	$(BIN)/mineru-demo

## Every check CI runs: formatting, lints, unit, component and end-to-end tests.
test: deps lint
	$(CARGO) test --workspace --all-targets --no-fail-fast

deps:
	bash e2e/scripts/install-deps.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Regenerate the CRD manifest and its reference page from the API types.
crds:
	$(CARGO) run -q -p mineru-crds --bin crdgen manifest crds/minerudeployments.yaml
	cp crds/minerudeployments.yaml charts/mineru-operator/crds/minerudeployments.yaml
	$(CARGO) run -q -p mineru-crds --bin crdgen reference docs/crd-reference.md

## The worker's per-page CPU cost next to MinerU's Python path on the same pages
## (docs/benchmarks.md).
bench:
	CARGO="$(CARGO)" bash bench/run.sh

## The operator's own cost at scale (about 15 minutes, release build): 500 MineruDeployments on
## kwok nodes; convergence, writes and CPU at rest, memory, reconcile latency, a restart, one
## rollback while the others rest; then that rollback with a golden round comparing
## (docs/benchmarks.md).
bench-operator-scale: deps
	$(CARGO) build --release -p mineru-operator -p mineru-worker -p mineru-e2e --bins
	$(RELEASE_BIN)/operator-scale --objects 500
	$(RELEASE_BIN)/operator-scale --objects 2 --rest-seconds 10
	$(RELEASE_BIN)/operator-scale --objects 2 --rest-seconds 10 --quality-round

## The worker's vlm output against MinerU's own: installs MinerU 3.4.5 from PyPI (about 850 MB,
## cached), runs it and the worker against the vLLM simulator on the golden PDFs, rewrites
## e2e/golden/mineru-3.4.5/ and prints the block-level agreement (docs/mineru-compatibility.md).
compare-mineru: deps
	$(CARGO) build --workspace --bins
	$(BIN)/compare-mineru --regenerate
