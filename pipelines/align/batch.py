"""What the RLHF roles share: loading a checkpoint onto an actor's device (through pipelines.checkpoints), and laying a batch of (prompt, response)
pairs out as tensors.

Layout: a sample is its prompt's token ids followed by the response's sampled tokens. `layout` right-pads the
concatenations into ids (N, L) and builds the "shifted" view every role computes in: position t of an (N, L - 1)
tensor holds what the model predicts for token t + 1, so the response's tokens are the positions
[P - 1, P - 1 + T) of a row with a P-token prompt and a T-token response. Per-token values that arrive as
response-aligned lists (log-probs, advantages) are placed there; `response_view` takes them back out.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from pipelines import checkpoints


def pick_device(num_gpus: float) -> torch.device:
    return torch.device("cuda") if num_gpus and torch.cuda.is_available() else torch.device("cpu")


def load_role_model(checkpoint: str, device: torch.device, torch_threads: int | None):
    """(model in eval mode on `device`, its tokenizer, meta) from a checkpoint directory (local or URI), with the
    actor's torch threads set first."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = checkpoints.load(checkpoint, device=device)
    return loaded.model, loaded.tok, loaded.meta


def numpy_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays: through Ray's object store they are read zero-copy."""
    return {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}


def load_numpy_weights(model: torch.nn.Module, weights: dict[str, np.ndarray]) -> None:
    with warnings.catch_warnings():  # object-store arrays are read-only; load_state_dict copies them
        warnings.simplefilter("ignore", UserWarning)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})


def layout(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device=None,
           per_token: dict[str, list] | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(ids (N, L), response mask (N, L - 1), {name: (N, L - 1) float tensor}) of prompt + response rows."""
    N = len(prompts)
    L = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((N, L), pad_id, dtype=torch.long)
    mask = torch.zeros((N, L - 1))
    extra = {name: torch.zeros((N, L - 1)) for name in (per_token or {})}
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        mask[i, len(p) - 1:len(p) - 1 + len(r)] = 1
        for name, values in (per_token or {}).items():
            extra[name][i, len(p) - 1:len(p) - 1 + len(r)] = torch.as_tensor(values[i], dtype=torch.float32)
    return ids.to(device), mask.to(device), {k: v.to(device) for k, v in extra.items()}


def response_view(x: torch.Tensor, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
    """Per-token values of the shifted (N, L - 1) layout, back as one list per response."""
    return [x[i, len(p) - 1:len(p) - 1 + len(r)].tolist() for i, (p, r) in enumerate(zip(prompts, responses))]


def padded(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-token lists -> ((N, T) values, (N, T) 1/0 mask), right-padded with zeros."""
    T = max(1, max(len(r) for r in rows))
    values, mask = torch.zeros(len(rows), T), torch.zeros(len(rows), T)
    for i, r in enumerate(rows):
        values[i, :len(r)], mask[i, :len(r)] = torch.as_tensor(r, dtype=torch.float32), 1
    return values, mask
