"""Networks of AME-CAM: the multi-exit ResNet (phase 1), its SupCon projection head, and the
attention network of phase 2. Import from the submodules, e.g.
``from amecam_lib.models.multi_exit import MultiExitResNet``."""
