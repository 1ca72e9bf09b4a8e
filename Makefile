# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision are pinned to the pair that robomimic imports beside (local wheels on our machines).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test setup bench clean

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

demo: $(STAMP)
	$(VPY) -m data.demo

bench: $(STAMP)
	$(VPY) benchmarks/bench_data.py

clean:
	rm -rf $(VENV) outputs
