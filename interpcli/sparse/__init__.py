"""Sparse decision layers (Wong, Santurkar, Madry, ICML 2021): the elastic-net path over deep
features, the choice of one point on it, the features it keeps and their pictures."""
