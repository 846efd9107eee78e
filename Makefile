# Everything a fresh machine needs: `make demo` and `make test` set up the environment first.
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(if $(CONDA_PREFIX),$(CONDA_PREFIX)/bin/python,.venv/bin/python))

# The oldest stack the project supports (docs/install.md): torch 2.1.2 + torchvision 0.16.2 (PyPI's
# CUDA 12.1 build), mmcv 2.1.0 built against it, as OpenMMLab's own mmcv wheels are; no onnxscript
# (the torch.export-based ONNX exporter needs torch >= 2.5).
COMPAT_VENV := .venv-compat
COMPAT_SETTINGS := MMFOCAL_VENV=$(COMPAT_VENV) MMFOCAL_TORCH=2.1.2 MMFOCAL_TORCHVISION=0.16.2 \
	MMFOCAL_ONNX='onnx==1.23.2 onnxruntime==1.32.0'
# What runs there: the backbones, checkpoints, configs, classifier and deployment.
COMPAT_TESTS := tests/test_environment.py tests/test_backbone.py tests/test_attention_paths.py \
	tests/test_focal_fast.py tests/test_safe_load.py tests/test_hostile_files.py tests/test_paddle_checkpoint.py \
	tests/test_atomic_checkpoint.py tests/test_det_configs.py tests/test_seg_configs.py \
	tests/test_classifier.py tests/test_deployment.py

.PHONY: env test demo bench env-compat test-compat
env:
	bash tools/setup_env.sh

test: env
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

demo: env
	bash tools/demo.sh

bench: env
	$(PY) benchmarks/backbone_speed.py

env-compat:
	$(COMPAT_SETTINGS) bash tools/setup_env.sh

# -rs: each skip with its reason (the torch version it needs).
test-compat: env-compat
	$(COMPAT_VENV)/bin/python -m pytest -q -rs $(COMPAT_TESTS)
