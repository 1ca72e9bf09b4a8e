# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision are pinned to the pair that robomimic imports beside (local wheels on our machines).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint format setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PIN)
	$(VPY) -m pip install -q -e ".[dev,metaworld]" $(TORCH_PIN)
	touch $(STAMP)

# pytest exits 5 when it collected no tests: not a failure of the code under test. tests/test_lerobot_io.py builds
# .venv-lerobot on first use (LeRobot 0.4.4's dataset code beside this venv, about 12 s; tests/lerobot_env.py).
test: $(STAMP)
	$(VPY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# ruff (configured in pyproject.toml): lint rules and the formatter's check; `make format` rewrites the tree.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The main job on the embedded default task (configs/experiment/demo.yaml): collect 200 expert demos of
# PickPlace (top camera), train the CPU-sized image + agent_pos flow-matching policy, evaluate it on 50
# fresh episodes, print the table, the video paths and the wall time of each stage. Re-running reuses
# the store and the finished checkpoint (train.py resumes its run directory).
DEMO_DIR := outputs/demo
demo: $(STAMP)
	@t0=$$(date +%s); \
	$(VPY) -m data.collect task=pick_place_top n_workers=2 && t1=$$(date +%s) && \
	$(VPY) train.py +experiment=demo name=demo hydra.run.dir=$(DEMO_DIR)/train && t2=$$(date +%s) && \
	$(VPY) eval.py checkpoint=$(DEMO_DIR)/train/checkpoints/latest.ckpt n_episodes=50 n_envs=2 out_dir=$(DEMO_DIR)/eval && \
	t3=$$(date +%s) && \
	printf "\nmake demo stage times: collect %ss, train %ss, eval %ss; total %ss after setup\n" \
		$$((t1-t0)) $$((t2-t1)) $$((t3-t2)) $$((t3-t0))

clean:
	rm -rf $(VENV) .venv-lerobot outputs
