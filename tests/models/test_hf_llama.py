import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.decoder import Decoder
from models.hf_llama import export_hf_llama, import_hf_llama
from tiny_models import VOCAB, randomize_norms, tiny_decoder_config

transformers = pytest.importorskip("transformers", reason="transformers is only needed for the interop tests")


@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_in_transformers(tmp_path, tied):
    model = randomize_norms(Decoder(tiny_decoder_config(tie_embeddings=tied, rope_theta=500.0))).eval()
    export_hf_llama(model, str(tmp_path), eos_token_id=3)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert hf.config.tie_word_embeddings == tied and hf.config.num_key_value_heads == 2
    ids = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=1e-4)
    assert import_hf_llama(str(tmp_path)).cfg == model.cfg  # and back


def test_import_from_save_pretrained(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=False,
    )
    hf = randomize_norms(transformers.LlamaForCausalLM(config)).eval()
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    model = import_hf_llama(str(tmp_path)).eval()
    assert model.cfg.norm_eps == 1e-6 and model.cfg.n_kv_head == 2 and model.cfg.rope_theta == 500.0
    ids = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=1e-4)


def test_unsupported_rope_scaling_is_an_error(tmp_path):
    export_hf_llama(Decoder(tiny_decoder_config()), str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="llama3"):
        import_hf_llama(str(tmp_path))


def test_models_package_does_not_import_transformers():
    code = "import sys, models, models.hf_llama; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
