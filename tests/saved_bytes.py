"""Test helper (not a test): count the bytes autograd saves for backward, outside the model's
parameters, one entry per storage (a storage saved twice counts once).

    with saved_for_backward(model) as saved:
        loss = model(x, targets=y)
    sum(saved.values())   # bytes
"""
import contextlib

import torch


def param_storages(model):
    return {p.untyped_storage().data_ptr() for p in model.parameters()}


@contextlib.contextmanager
def saved_for_backward(model):
    """A dict {storage pointer: bytes} filled while the block runs (saved_tensors_hooks)."""
    params, saved = param_storages(model), {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved
