# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision are pinned to the pair that robomimic imports beside (local wheels on our machines).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PIN)
	$(VPY) -m pip install -q -e ".[dev]" $(TORCH_PIN)
	touch $(STAMP)

# pytest exits 5 when it collected no tests: not a failure of the code under test.
test: $(STAMP)
	$(VPY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# Until train.py/eval.py land, the demo collects expert demonstrations for the default task
# (PushT), prints the store summary and writes a rollout video.
DEMO_DIR := outputs/demo
demo: $(STAMP)
	$(VPY) -m data.collect task=push_t n_episodes=20 out=$(DEMO_DIR)/push_t.zarr
	$(VPY) -m envs.record_video --env actchunk/PushT-v0 --out $(DEMO_DIR)/push_t.mp4 --episodes 2


clean:
	rm -rf $(VENV) outputs
