# keapsync. `make` alone prints this help.
.DEFAULT_GOAL := help
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
FAKE_KEAP_ADDR ?= 127.0.0.1:9090

.PHONY: help demo test bench build lint db db/stop db/reset migrate serve fake-keap supabase/migrations

help: ## show the targets
	@grep -E '^[a-zA-Z/_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

demo: ## run the whole OAuth flow end to end against the fake Keap on local ports
	@scripts/demo.sh

test: ## go vet + all tests with -race against real Postgres, with coverage
	@scripts/test.sh

bench: ## benchmarks against same-run baselines: table + bench/latest.json (see BENCHMARKS.md)
	@scripts/bench.sh

build: ## build bin/keapsync
	@mkdir -p bin && go build -o bin/keapsync ./cmd/keapsync

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	@go vet ./...

db: ## print the URL of a Postgres that answers (starts one under .data/ if needed)
	@scripts/db.sh url

db/stop: ## stop the throwaway Postgres under .data/
	@scripts/db.sh stop

db/reset: ## stop and delete the throwaway Postgres under .data/
	@scripts/db.sh stop; rm -rf .data

migrate: build ## apply migrations to DATABASE_URL (from .env if present; creates the database)
	@scripts/env.sh bin/keapsync migrate

serve: build ## run keapsync serve with .env (copy .env.example first)
	@scripts/env.sh bin/keapsync serve

fake-keap: build ## run the fake Keap on FAKE_KEAP_ADDR (127.0.0.1:9090) with .env's client credentials
	@scripts/env.sh bin/keapsync fake-keap --addr $(FAKE_KEAP_ADDR)

supabase/migrations: ## regenerate supabase/migrations from sql/migrations
	@scripts/supabase-migrations.sh
