# Two commands. Each builds .venv on first use (and when pyproject.toml changes), then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test clean-venv

$(STAMP): pyproject.toml ros2_ws/src/ptq4ris_ros/setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[full,ros,test,cluster]" -e ros2_ws/src/ptq4ris_ros
	@touch $(STAMP)

## make demo: the main job on the default model (see README)
demo: $(STAMP)
	$(PY) -m ptq4ris_core.demo

## make test: the whole test suite
test: $(STAMP)
	$(PY) -m pytest -q tests ros2_ws/src/ptq4ris_ros/test

clean-venv:
	rm -rf $(VENV)
