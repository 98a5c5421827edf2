"""``parameters_on_meta``: parameters become placeholders, buffers keep their constructed values."""

from __future__ import annotations

import threading

import torch
from torch import nn

import chameleon_sdk
from chameleon_sdk import plugin_api


class WithBuffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.gain = nn.Parameter(torch.ones(3))
        self.register_buffer("table", torch.arange(6.0).cos(), persistent=False)
        self.register_buffer("counts", torch.tensor([1, 2]))


def test_parameters_are_meta_and_buffers_keep_their_values():
    with plugin_api.parameters_on_meta():
        module = WithBuffers()
    assert all(p.is_meta for p in module.parameters())
    assert module.linear.weight.shape == (3, 4) and module.linear.weight.dtype == torch.float32
    assert torch.equal(module.table, torch.arange(6.0).cos())
    assert torch.equal(module.counts, torch.tensor([1, 2]))
    assert not any(p.is_meta for p in WithBuffers().parameters())  # the hook is gone after the block


def test_other_threads_build_real_modules_meanwhile():
    built: list[nn.Module] = []
    with plugin_api.parameters_on_meta():
        worker = threading.Thread(target=lambda: built.append(nn.Linear(2, 2)))
        worker.start()
        worker.join()
        here = nn.Linear(2, 2)
    assert not built[0].weight.is_meta
    assert here.weight.is_meta


def test_a_meta_built_chameleon_model_takes_weights_without_copying():
    config = chameleon_sdk.ModelConfig(dim=16, num_layers=1, num_heads=2, vocab_size=20, ffn_dim=24)
    known = chameleon_sdk.build_model(config, stability=["qk-norm"]).eval()
    with plugin_api.parameters_on_meta():
        empty = chameleon_sdk.build_model(config, stability=["qk-norm"])
    state = {key: value.clone() for key, value in known.state_dict().items()}
    plugin_api.load_weights(empty, state, source="memory")
    assert all(param.data_ptr() == state[name].data_ptr() for name, param in empty.named_parameters())
    assert all(param.requires_grad for param in empty.parameters())
    ids = torch.randint(0, 20, (2, 5))
    with torch.no_grad():
        assert torch.equal(empty.eval()(ids).logits, known(ids).logits)


def test_initialisers_on_meta_placeholders_return_at_once_and_real_tensors_are_still_filled():
    real = torch.zeros(3)
    with plugin_api.parameters_on_meta():
        placeholder = torch.empty(4, 4, device="meta")
        assert nn.init.normal_(placeholder, std=0.1) is placeholder
        assert nn.init.trunc_normal_(tensor=placeholder) is placeholder
        assert placeholder.normal_() is placeholder
        nn.init.ones_(real)
    assert torch.equal(real, torch.ones(3))
