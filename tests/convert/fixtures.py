"""Tiny Hugging Face checkpoints built from configs (never downloaded) and SageMaker-style tarballs.

Shared by the convert tests and benchmarks/convert. Weights are random but seeded, so two builds
of the same checkpoint are identical.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLASSIFIER_WORDS = "the a good bad movie film great awful is was i love hate it this not very".split()
GENERATOR_TEXT = [
    "hello world the quick brown fox jumps over the lazy dog",
    "models trained on sagemaker become mlflow models",
    "a tiny language model says hello",
]
SAGEMAKER_EXTRAS = ("training_args.bin", "processor_config.json", "special_tokens_map.json")


def build_text_classifier(directory: str | Path, *, seed: int = 0) -> Path:
    """A 1-layer BERT sequence classifier (NEGATIVE/POSITIVE) with a WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CLASSIFIER_WORDS]
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab_file=str(vocab_file))
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )  # fmt: skip
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _add_sagemaker_extras(directory, tokenizer)
    return directory


def build_causal_lm(
    directory: str | Path, *, n_embd: int = 16, n_layer: int = 1, n_head: int = 2, seed: int = 0
) -> Path:
    """A GPT-2-style causal LM with a byte-level BPE tokenizer trained on a few sentences.

    Defaults give a ~30 KB model; ``n_embd=1536, n_layer=32`` gives > 1 GB (the benchmark).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(GENERATOR_TEXT * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    config = GPT2Config(
        vocab_size=bpe.get_vocab_size(), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _add_sagemaker_extras(directory, tokenizer)
    return directory


def _add_sagemaker_extras(directory: Path, tokenizer) -> None:
    """What a SageMaker Hugging Face training job leaves next to the model."""
    special = {key: str(value) for key, value in tokenizer.special_tokens_map.items()}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    (directory / "processor_config.json").write_text(json.dumps({"processor_class": None}), encoding="utf-8")
    # training_args.bin is a pickle in real tarballs; this one is a plain dict (never unpickled by us).
    (directory / "training_args.bin").write_bytes(pickle.dumps({"output_dir": "/opt/ml/model", "seed": 42}))


def sagemaker_tarball(checkpoint: str | Path, tarball: str | Path, *, compresslevel: int = 6) -> Path:
    """``model.tar.gz`` the SageMaker way: the checkpoint's files at the archive root."""
    checkpoint, tarball = Path(checkpoint), Path(tarball)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz", compresslevel=compresslevel) as archive:
        for path in sorted(checkpoint.iterdir()):
            archive.add(path, arcname=path.name)
    return tarball


def tarball_with(tarball: str | Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A gzip tarball of hand-made members (for malicious archives): (TarInfo, content or None)."""
    tarball = Path(tarball)
    with tarfile.open(tarball, "w:gz") as archive:
        for info, content in members:
            if content is not None:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
            else:
                archive.addfile(info)
    return tarball


def file_member(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def link_member(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def device_member(name: str, kind: bytes = tarfile.CHRTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None
