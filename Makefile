# Convenience targets; each is one documented command.
PY ?= .venv/bin/python

.PHONY: demo test bench readme lint

demo:
	$(PY) -m ray_jobs.demo

test:
	$(PY) -m pytest -q tests

bench:
	$(PY) -m bench.run_all

readme:
	$(PY) tools/update_readme.py

lint:
	$(PY) -m ruff check core ray_jobs tests bench tools
