"""creps studio: a local web server and a page of our own to explore networks and watch runs.

  paths.py    the paths it was given, and the one check that keeps every read under them
  runs.py     run directories: snapshots, stats.jsonl, metric-*.jsonl, image grids, log, progress
  views.py    what the page asks to see (seeds, zoom, interpolation, style mixing) -> pixels
  worker.py   one render thread, a newer request replacing a pending one, a bounded network cache
  app.py      the Starlette application: the page, its files and the JSON/PNG API
  static/     index.html, style.css and the page's JavaScript (no build step)

It reads run directories and network files, never writes them, and runs nothing from any file
(snapshots are safetensors + JSON; published pickles go through the restricted reader).
"""
