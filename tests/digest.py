"""Test helper (not a test): a sha256 digest of a model's weights, to compare runs and ranks,
the file a test worker leaves it in (param_digest.rank{r}.txt in out_dir), and a digest of a
whole output folder (to show a refused run changed nothing)."""
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


def folder_digest(folder):
    """Digest of every file's name and bytes below folder, in sorted order."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(root, name), 'rb') as f:
                h.update(f.read())
    return h.hexdigest()
