"""Shared test settings: offline, deterministic, small thread count."""

import codecs
import hashlib
import os
import socket
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One precision on every CPU: the tools pick bfloat16 where a CPU computes it natively (modeling_shishu.precision),
# which would make the same test compute differently from machine to machine.
os.environ.setdefault("SHISHU_PRECISION", "float32")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from modeling_shishu import ShishuConfig, ShishuForCausalLM  # noqa: E402


torch.set_num_threads(2)


def tiny_config_kwargs(**overrides):
    """A Llama-shaped GQA config small enough to run in milliseconds."""
    kwargs = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread: two threads on a busy 2-core machine spin-wait for each other
    and made tiny-model tests up to 40x slower. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------------
# Tiny builders shared by the test modules


WORDS = [f"w{i}" for i in range(4, 99)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny vocabulary: 0 <pad>, 1 <s>, 2 </s>, 3 <unk>, then w4..w98."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{word: i for i, word in enumerate(WORDS, start=4)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_texts(num_texts: int = 4, words_per_text: int = 600, seed: int = 0) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [
        " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (words_per_text,), generator=generator).tolist())
        for _ in range(num_texts)
    ]


def tiny_llama(**overrides) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(**tiny_config_kwargs(**overrides))).eval()


def tiny_qwen2(**overrides) -> Qwen2ForCausalLM:
    kwargs = tiny_config_kwargs(**overrides)
    kwargs.setdefault("use_sliding_window", False)
    return Qwen2ForCausalLM(Qwen2Config(**kwargs)).eval()


def save_parent(model, folder):
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids).logits


INPUT_IDS = torch.randint(3, 99, (2, 13), generator=torch.Generator().manual_seed(1))


CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def training_text() -> str:
    """The text the tiny BPE is trained on: the Zen of Python (fixed, ships with Python), read without `import this`
    printing it."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13") + "\n0123456789 3.14 42, 1999 and 2048.\n"


TINY_LAYER_TYPES = ["full_attention", "full_attention", "mlp", "mlp", "full_attention", "mlp"]


def tiny_bpe_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE with SmolLM2's pre-tokenizer (single digits, then GPT-2's byte-level split), its
    special tokens and chat template, trained on the Zen of Python."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([training_text()], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_hybrid(layer_types=TINY_LAYER_TYPES, share_groups=((2, 3),), **overrides) -> ShishuForCausalLM:
    """Attention, attention, a shared MLP-only pair, attention, MLP-only; weights large enough that attention
    and every layer matter (random init with initializer_range 0.2)."""
    tokenizer = tiny_bpe_tokenizer()
    kwargs = tiny_config_kwargs(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=len(layer_types),
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        layer_types=list(layer_types),
        mlp_share_groups=[list(g) for g in share_groups],
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = ShishuForCausalLM(ShishuConfig(**kwargs)).eval()
    with torch.no_grad():  # norms away from 1, so that the exported norm weights are checked too
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return model


def save_tiny_hybrid(folder, **overrides):
    model = tiny_hybrid(**overrides)
    model.save_pretrained(folder)
    tiny_bpe_tokenizer().save_pretrained(folder)
    return folder


def parent_tokenizer():
    from transformers import AutoTokenizer

    from modeling_shishu.assets import fetch_parent

    return AutoTokenizer.from_pretrained(fetch_parent("smollm2-135m"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
