"""Hyper-parameter search on Optuna: `rekit tune`.

The pipeline, one module each:
  settings.py   the `tune:` section of a config file (search settings + search space)
  space.py      the search space: parse, validate, sample a trial's config overrides
  storage.py    where a study lives: SQLite in the study directory, or any database URL
  objective.py  one trial = one normal run directory; CV score; pruning on each evaluation
  worker.py     one process running trials of a study until the study has enough
  pool.py       `--workers N`: start, watch and replace worker processes; recover killed ones
  study.py      the study directory (study.json), creating/joining a study, export of the best config
"""
