# Conveyor — every entry point installs what it needs into git-ignored paths inside the repo.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
CARGO_LAMBDA := $(VENV)/bin/cargo-lambda

.PHONY: help setup tools build lint test unit release size bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## local AWS: moto server into .venv
	tests/localaws/setup.sh

tools: setup ## cargo-lambda (and zig) into .venv, for release builds
	@[ -x $(CARGO_LAMBDA) ] || $(VENV)/bin/pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2

build: ## debug build of the function binaries (the integration tests run them)
	cargo build --workspace --bins --locked

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit: ## fast unit tests of the pure logic, no network
	cargo test --workspace --lib --locked

test: setup lint build ## everything: lint, unit tests, integration tests against local AWS
	cargo test --workspace --locked

release: tools ## Lambda release builds (bootstrap per function) with cargo-lambda
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO_LAMBDA) lambda build --release --workspace --locked

size: release ## release binary sizes
	@ls -l target/lambda/*/bootstrap | awk '{printf "%-40s %6.1f MiB\n", $$9, $$5/1048576}'

clean: ## remove build output and the venv
	cargo clean
	rm -rf $(VENV)
