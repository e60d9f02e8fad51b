"""Networks of AME-CAM: the multi-exit ResNet (phase 1), its SupCon projection head, and the
attention network of phase 2; and those of reference rows: C2AM's class-agnostic head
(``c2am_head``) and LFI-CAM's network (``lfi_cam``). Import from the submodules, e.g.
``from amecam_lib.models.multi_exit import MultiExitResNet``."""
