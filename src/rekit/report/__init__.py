"""Looking back at runs and studies.

  rundata.py       read a run directory back (tolerates partial runs)
  plots.py         matplotlib figures (Agg) -> PNG bytes
  html.py          a self-contained HTML page: inline CSS, images as data: URIs
  run_report.py    `rekit report RUN_DIR`
  study_report.py  `rekit report STUDY_DIR`
"""
