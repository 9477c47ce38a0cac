# Two entry points, each doing all of its own set-up on a fresh machine:
#   make demo   install the runtime alone and deblur examples/images with the default method (auto: blind, checked)
#   make test   install the host toolchain and the test tools, then run the tests
# The runtime installs on Python 3.10-3.12; the host toolchain (onnx2tf, TensorFlow) needs 3.12.

PY312 ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12)
PYTHON ?= $(shell command -v python3)
VENV ?= .venv
RUNTIME_VENV ?= .venv-runtime
PYTEST_ARGS ?=

.PHONY: demo test test-runtime-pythons students clean

demo:
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install -q --upgrade pip
	$(RUNTIME_VENV)/bin/pip install -q .
	$(RUNTIME_VENV)/bin/edge-deblur deblur examples/images -o out --compare --save-kernel
	@echo "results in out/, side-by-side pictures in out/compare/"

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PY312) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[convert,test]'
	touch $@

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# The runtime alone (no TensorFlow) on each Python the boards run: 3.10 (JetPack 6), 3.11 (Pi OS).
test-runtime-pythons:
	bash tests/runtime_pythons.sh 3.10 3.11

# Re-make the bundled students (each run resumes if stopped). On 2 CPU cores: rpi5 about 25 min,
# rpi4 about 17 min (it takes rpi5's distillation and fine-tuning sets: same teacher, same crops; its
# unpruned student is its own), jetson-orin about 30 min.
students: $(VENV)/.installed
	$(VENV)/bin/edge-deblur convert --target rpi5 -o build/rpi5
	$(VENV)/bin/edge-deblur convert --target rpi4 -o build/rpi4 --reuse build/rpi5
	# 6000 distillation steps: the wider Jetson base trains slower per step on these 2 cores.
	$(VENV)/bin/edge-deblur convert --target jetson-orin -o build/jetson-orin --distill-steps 6000
	$(VENV)/bin/python -c "from converters.convert import ship; [ship(f'build/{t}') for t in ('rpi5', 'rpi4', 'jetson-orin')]"

clean:
	rm -rf out build *.egg-info
