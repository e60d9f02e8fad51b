"""Losses of AME-CAM: Eq. 1 (multi-exit), SupCon / SimCLR pretraining, C2AM (Eq. 3); and of the C&F
reference rows: the Active Contour Without Edges (Chan-Vese) losses (``acwe``). Import from the
submodules, e.g. ``from amecam_lib.losses.exits import multi_exit_loss``."""
