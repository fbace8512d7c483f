"""``memsel report``: one self-contained HTML page (and its PNGs) about a run directory or an MLflow experiment.

- :mod:`memsel.reporting.collect` reads MLflow: which runs, their metric histories, their run folders;
- :mod:`memsel.reporting.figures` draws the learning curves, PBT's schedules and the haystack heatmap;
- :mod:`memsel.reporting.attention` draws what a selector attended to, hop by hop, for a few test stories;
- :mod:`memsel.reporting.haystack` reads the haystack evaluation's result files;
- :mod:`memsel.reporting.page` writes the HTML; :mod:`memsel.reporting.build` puts it all together and logs
  each figure as an MLflow artifact of the runs it shows.
"""
