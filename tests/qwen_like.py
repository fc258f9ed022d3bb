"""Test helper (not a test): a tiny checkpoint shaped like Qwen3's vocabulary. Its own
tokenizer.json knows V0 ids and has no budget tokens; its embedding has padding rows past V0
(Qwen3: 151,669 ids, 151,936 rows). load_tokenizer(folder) appends the six budget tokens at
ids V0..V0+5, inside the padding rows, so no resize notices them."""
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from data import IM_END, IM_START, PAD_TOKEN, THINK_END, THINK_START
from model import Qwen3, Qwen3Config

PADDING_ROWS = 16
PADDING_VALUE = 5.0  # what the untrained rows hold: far from any trained row's mean


def qwen_like_checkpoint(folder, hidden=32):
    """Write the checkpoint into folder; returns its path (a str)."""
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[PAD_TOKEN, IM_START, IM_END, THINK_START, THINK_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(['What is 3 plus 4? The answer is 7.'] * 20, trainer)
    n_ids = tk.get_vocab_size(with_added_tokens=True)
    cfg = Qwen3Config(vocab_size=n_ids + PADDING_ROWS, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                      max_position_embeddings=128, rope_theta=1e4, tie_word_embeddings=False, torch_dtype='float32')
    model = Qwen3(cfg).init_weights(seed=0)
    model.model.embed_tokens.weight.data[n_ids:] = PADDING_VALUE
    model.lm_head.weight.data[n_ids:] = PADDING_VALUE
    model.save_pretrained(str(folder))
    tk.save(str(folder / 'tokenizer.json'))
    return str(folder)
