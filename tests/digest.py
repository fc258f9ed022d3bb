"""Test helper (not a test): a sha256 digest of a model's weights, to compare runs and ranks."""
import hashlib


def param_digest(state_dict):
    """Digest of a state dict: names and fp32 bytes of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
