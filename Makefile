# Two commands that work on a fresh machine:
#   make test   installs what is missing, runs the test suite
#   make demo   installs what is missing, runs the pipeline on the embedded demo dataset
PYTHON ?= python3
DEMO_DIR ?= demo_work

.PHONY: install test demo lint bench

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	@$(PYTHON) -c "import mrisr, SimpleITK, blosc2, batchgenerators, acvl_utils, skimage, pywt, nibabel, nilearn, brisque, cv2, pytest, ruff, tqdm, matplotlib" 2>/dev/null \
		&& $(PYTHON) -c "from importlib.metadata import entry_points as e; assert e(group='mrisr.trainers')" 2>/dev/null \
		&& command -v mrisr_plan_and_preprocess >/dev/null && command -v mrisr_install_model >/dev/null && command -v mrisr_throughplane >/dev/null \
		|| $(PYTHON) -m pip install -q -e ".[demo,test]"

test: install
	$(PYTHON) -m ruff check mrisr tests benchmarks
	$(PYTHON) -m pytest tests --durations=15

demo: install
	$(PYTHON) -m mrisr.cli.demo --workdir $(DEMO_DIR)

lint: install
	$(PYTHON) -m ruff check mrisr tests benchmarks
	$(PYTHON) -m ruff format --check mrisr tests benchmarks

bench: install
	$(PYTHON) benchmarks/bench_crop.py
