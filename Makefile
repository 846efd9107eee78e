# Everything a fresh machine needs: `make demo` and `make test` set up the environment first.
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,.venv/bin/python)

.PHONY: env test demo bench
env:
	bash tools/setup_env.sh

test: env
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

demo: env
	bash tools/demo.sh

bench: env
	$(PY) benchmarks/backbone_speed.py
