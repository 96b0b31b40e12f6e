"""Building blocks of ``interp compare``, ``interp report`` and ``interp plot-log``.

``runs`` reads runs (checkpoint headers, metric JSON files) into flat records, groups them and
pairs them by seed / fold; ``groupstats`` compares groups of runs (Welch and paired t-tests,
Hedges' g, Holm); ``figures`` draws the violin plot and training curves (``curves``: from
``RUN.log.jsonl`` files); ``html`` writes the
self-contained page, and ``sections`` turns each kind of ``interp`` output folder into one
section of it (``provenance``: the checkpoint behind each section).  Nothing here knows the CLI.
"""
