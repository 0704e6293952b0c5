# Skyvote: `make demo` runs the whole product on this machine; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: demo test venv migrate seed lint format bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

migrate: venv
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py seed_demo --port $(PORT)

# Web (gunicorn) + one Celery worker per queue on the embedded broker: "short" (ingest, exports,
# aggregation; beat for the job sweep) and "gpu" (training, scoring, embedding), so an export never
# waits behind a training round.
demo: seed
	PORT=$(PORT) $(BIN)/honcho start -f Procfile

test: venv
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/broker var/staticfiles
