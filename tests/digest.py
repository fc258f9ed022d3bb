"""Test helper (not a test): a sha256 digest of a model's weights, to compare runs and ranks,
and the file a test worker leaves it in (param_digest.rank{r}.txt in out_dir)."""
import hashlib
import os


def param_digest(state_dict):
    """Digest of a state dict: names and fp32 bytes of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def digest_path(out_dir, rank):
    return os.path.join(out_dir, f'param_digest.rank{rank}.txt')


def write_param_digest(model, out_dir):
    """This rank's weights' digest (RANK from torchrun, else 0) to digest_path(out_dir, rank)."""
    with open(digest_path(out_dir, os.environ.get('RANK', '0')), 'w') as f:
        f.write(param_digest(model.state_dict()))
