"""The loader's two backends behind one interface (:class:`~.base.Backend`): DALI graphs (``dali``) and a
torch DataLoader (``torch``). :func:`create_backend` is the one place that chooses; each backend is
imported only when chosen, so the torch backend runs where DALI is not installed."""
from vitdata.loader.backends.base import Backend, BackendContext, RawBatch

__all__ = ["Backend", "BackendContext", "RawBatch", "create_backend"]


def create_backend(name: str, ctx: BackendContext) -> Backend:
    """The backend ``name`` ("dali" | "torch") for ``ctx``."""
    if name == "dali":
        from vitdata.loader.backends.dali import DaliBackend
        from vitdata.loader.host import dali_device_id, default_hw_decoder_load

        device_id = dali_device_id(ctx.device)
        load = ctx.cfg.hw_decoder_load if ctx.cfg.hw_decoder_load is not None else default_hw_decoder_load(device_id)
        return DaliBackend(ctx, device_id, load)
    if name == "torch":
        from vitdata.loader.backends.torch import TorchBackend

        return TorchBackend(ctx)
    raise ValueError(f"unknown backend {name!r}")
