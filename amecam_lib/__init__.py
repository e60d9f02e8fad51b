"""amecam_lib: the helper library behind the AME-CAM tutorial notebooks.

AME-CAM (Attentive Multiple-Exit CAM, Chen et al., MICCAI 2023) segments the whole brain tumour in
MRI slices from slice-level labels only. Modules are small and do one job each; see
ARCHITECTURE.md for the map. Import names from the modules explicitly, e.g.
``from amecam_lib.config import get_preset``.
"""

__version__ = "0.1.0"
