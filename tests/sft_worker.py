"""Test helper (not a test): runs train_sft.main() the way `python train_sft.py` does, with two
hooks the tests need and the script does not carry:
- SFT_KILL_AT_STEP=s: the process exits (os._exit, no cleanup) when the loop reaches optimizer
  step s (0-based), i.e. a run killed between its checkpoints;
- every rank writes the digest of its final weights to out_dir/param_digest.rank{r}.txt;
- under FSDP every rank writes the dtype the first block's gate_proj weight has while it computes
  (what FSDP all-gathered) to out_dir/compute_dtype_rank{r}.txt.
Used directly and under torchrun (gloo).

    python tests/sft_worker.py [config.py] [--key=value ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_sft  # noqa: E402
from configurator import apply_config  # noqa: E402
from digest import write_param_digest  # noqa: E402


def kill_at(step_to_kill, lr_at):
    # the loop asks for each step's lr first: exiting there = killed right before that step
    def lr_or_exit(step, *args):
        if step == step_to_kill:
            print(f'SFT_KILL_AT_STEP={step}: exiting without cleanup', flush=True)
            os._exit(1)
        return lr_at(step, *args)
    return lr_or_exit


def record_compute_dtype(shard_with_fsdp):
    def shard_and_hook(model, *args):
        shard_with_fsdp(model, *args)

        def hook(module, inputs):
            path = os.path.join(train_sft.out_dir, f"compute_dtype_rank{os.environ.get('RANK', '0')}.txt")
            if not os.path.exists(path):
                with open(path, 'w') as f:
                    f.write(str(module.weight.dtype))
        model.model.layers[0].mlp.gate_proj.register_forward_pre_hook(hook)
    return shard_and_hook


if __name__ == '__main__':
    apply_config(vars(train_sft), sys.argv[1:])
    train_sft.shard_with_fsdp = record_compute_dtype(train_sft.shard_with_fsdp)
    if os.environ.get('SFT_KILL_AT_STEP'):
        train_sft.lr_at = kill_at(int(os.environ['SFT_KILL_AT_STEP']), train_sft.lr_at)
    model = train_sft.main()
    if not train_sft.fsdp:  # FSDP weights are sharded DTensors; the checkpoint holds the gathered copy
        write_param_digest(model, train_sft.out_dir)
