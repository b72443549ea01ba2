"""Layout, weights' headers, tokenizer and task checks on real (tiny) checkpoints, then broken copies."""

from __future__ import annotations

import json
import struct

import pytest

from mlflow_sync.convert.checkpoint import (
    check_safetensors_header,
    inspect_checkpoint,
    resolve_task,
    tasks_for_architecture,
)
from mlflow_sync.convert.errors import InvalidCheckpoint, TaskMismatch


def test_sagemaker_checkpoints_pass_with_inferred_tasks(tiny_models):
    classifier = inspect_checkpoint(tiny_models["classifier"]["dir"])
    assert (classifier.architecture, classifier.task) == ("BertForSequenceClassification", "text-classification")
    assert classifier.weight_format == "safetensors" and classifier.tensors > 10
    assert set(classifier.extra_files) == {"training_args.bin", "processor_config.json"}
    generator = inspect_checkpoint(tiny_models["generator"]["dir"])
    assert (generator.architecture, generator.task) == ("GPT2LMHeadModel", "text-generation")


def test_checkpoint_inside_a_single_top_level_folder_is_found(tiny_models, tmp_path):
    import shutil

    shutil.copytree(tiny_models["classifier"]["dir"], tmp_path / "model")
    assert inspect_checkpoint(tmp_path).path == tmp_path / "model"


@pytest.mark.parametrize(
    "architecture, encoder_decoder, task",
    [
        ("BertForSequenceClassification", False, "text-classification"),
        ("LlamaForCausalLM", False, "text-generation"),
        ("GPT2LMHeadModel", False, "text-generation"),
        ("RobertaForTokenClassification", False, "token-classification"),
        ("DistilBertForQuestionAnswering", False, "question-answering"),
        ("BertForMaskedLM", False, "fill-mask"),
        ("T5ForConditionalGeneration", True, "text2text-generation"),
        ("BartForConditionalGeneration", True, "text2text-generation"),
    ],
)
def test_task_inferred_from_architecture(architecture, encoder_decoder, task):
    assert resolve_task(architecture, None, is_encoder_decoder=encoder_decoder) == task


def test_aliases_and_translation_pairs_are_accepted():
    assert resolve_task("BertForTokenClassification", "ner") == "token-classification"
    assert resolve_task("MarianMTModelForSeq2SeqLM", "translation_en_to_de") == "translation_en_to_de"


@pytest.mark.parametrize(
    "architecture, task, message",
    [
        ("BertForSequenceClassification", "text-generation", "does not fit architecture BertForSequenceClassification"),
        ("GPT2LMHeadModel", "text-classification", "does not fit architecture GPT2LMHeadModel"),
        ("BertForSequenceClassification", "image-classification", "unsupported task"),
        ("ViTForImageClassification", None, "cannot infer a task"),
    ],
)
def test_wrong_or_unknown_task_is_refused(architecture, task, message):
    with pytest.raises(TaskMismatch, match=message):
        resolve_task(architecture, task)


def test_multimodal_conditional_generation_is_not_taken_for_seq2seq():
    assert tasks_for_architecture("LlavaForConditionalGeneration", is_encoder_decoder=False) == ()


def test_missing_config(checkpoint_copy):
    (checkpoint_copy / "config.json").unlink()
    with pytest.raises(InvalidCheckpoint, match="no config.json"):
        inspect_checkpoint(checkpoint_copy)


def test_config_without_architectures(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    del config["architectures"]
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidCheckpoint, match="no 'architectures'"):
        inspect_checkpoint(checkpoint_copy)


def test_no_weights(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(InvalidCheckpoint, match="no weights"):
        inspect_checkpoint(checkpoint_copy)


def test_truncated_safetensors(checkpoint_copy):
    weights = checkpoint_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InvalidCheckpoint, match="corrupt or truncated"):
        inspect_checkpoint(checkpoint_copy)


def test_garbage_safetensors(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").write_bytes(struct.pack("<Q", 12) + b"not json!!!!" + bytes(64))
    with pytest.raises(InvalidCheckpoint, match="header is not JSON"):
        inspect_checkpoint(checkpoint_copy)


def test_safetensors_header_length_beyond_the_file(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(InvalidCheckpoint, match="does not fit the file"):
        check_safetensors_header(checkpoint_copy / "model.safetensors")


def test_padding_after_the_last_tensor_is_caught(checkpoint_copy):
    weights = checkpoint_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + bytes(16))
    with pytest.raises(InvalidCheckpoint, match="16 bytes beyond the last tensor"):
        inspect_checkpoint(checkpoint_copy)


def test_header_checks_agree_with_the_safetensors_library(tiny_models):
    from safetensors import safe_open

    path = tiny_models["generator"]["dir"] / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        assert check_safetensors_header(path) == len(list(handle.keys()))


def test_sharded_index_naming_a_missing_shard(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (checkpoint_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidCheckpoint, match="model-00002-of-00002.safetensors"):
        inspect_checkpoint(checkpoint_copy)


def test_sharded_checkpoint_is_accepted(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").rename(checkpoint_copy / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {"x": "model-00001-of-00001.safetensors"}}
    (checkpoint_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    checked = inspect_checkpoint(checkpoint_copy)
    assert checked.weight_files == ("model-00001-of-00001.safetensors",)


def test_pytorch_bin_weights(checkpoint_copy):
    import torch

    (checkpoint_copy / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, checkpoint_copy / "pytorch_model.bin")
    assert inspect_checkpoint(checkpoint_copy).weight_format == "pytorch"
    (checkpoint_copy / "pytorch_model.bin").write_bytes(b"\x80\x04 a legacy pickle")
    with pytest.raises(InvalidCheckpoint, match="not a torch.save archive"):
        inspect_checkpoint(checkpoint_copy)


def test_missing_tokenizer(checkpoint_copy):
    for name in ("tokenizer.json", "vocab.txt"):
        (checkpoint_copy / name).unlink()
    with pytest.raises(InvalidCheckpoint, match="no tokenizer"):
        inspect_checkpoint(checkpoint_copy)


def test_tokenizer_with_an_empty_vocabulary(checkpoint_copy):
    (checkpoint_copy / "vocab.txt").unlink()
    document = json.loads((checkpoint_copy / "tokenizer.json").read_text())
    document["model"]["vocab"] = {}
    (checkpoint_copy / "tokenizer.json").write_text(json.dumps(document))
    with pytest.raises(InvalidCheckpoint, match="empty vocabulary"):
        inspect_checkpoint(checkpoint_copy)
