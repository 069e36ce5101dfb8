import pytest
import torch

from tiny_models import randomize_norms, tiny_decoder_config, tiny_encoder_config
from models.decoder import Decoder
from models.encoder import Encoder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def decoder() -> Decoder:
    torch.manual_seed(0)
    return randomize_norms(Decoder(tiny_decoder_config())).eval()


@pytest.fixture
def encoder() -> Encoder:
    torch.manual_seed(0)
    return randomize_norms(Encoder(tiny_encoder_config())).eval()
