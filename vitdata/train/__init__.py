"""``vitdata train``: a small timm ViT training loop on the public loader API, every seed method a switch.

Owns the loop (:mod:`.loop`), its options and presets (:mod:`.config`), the learning-rate schedules
(:mod:`.lr`), the model-side methods (:mod:`.models`: PSS token selection, DRLoc head, locality
feed-forward), run checkpoints (:mod:`.checkpoint`), the run log (:mod:`.log`), the end-of-run report
(:mod:`.report`) and ``vitdata preview`` (:mod:`.preview`).

May import everything below it: ``vitdata.errors``, ``vitdata.io``, ``vitdata.optional``, ``vitdata.data``,
``vitdata.curriculum``, ``vitdata.oracle``, ``vitdata.kernels``, ``vitdata.loader``. It does not
re-implement loader pieces: it uses ``create_loader``, ``loader.loss`` and the loader's state.
"""
