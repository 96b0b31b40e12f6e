"""Scoring explanations: fidelity metrics (consistency, minimal size, deletion / insertion), the
grid pointing game, model-randomisation sanity checks, and the statistics that compare methods.

``fidelity`` masks images by their attributions and scores them with ``perturb.masked_scores``;
``pointing`` builds the B-cos papers' mosaics; ``sanity`` randomises a model layer by layer;
``stats`` summarises per-image scores (mean, sd, bootstrap interval) and runs paired tests;
``plots`` draws them.  ``ops/consistency.py`` ties them to checkpoints and files."""
