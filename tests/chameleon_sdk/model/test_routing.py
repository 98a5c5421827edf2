"""Per-token parameter routing: grouped projections and norms against a per-token reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from chameleon_sdk import ConfigError
from chameleon_sdk.model.routing import GroupedLinear, GroupedRMSNorm, TokenRoute, routed
from chameleon_sdk.plugin_api import ParameterGroups


def per_token_linear(layer: GroupedLinear, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The naive reference: each token through its own group's matrix, one token at a time."""
    flat, flat_groups = x.reshape(-1, x.shape[-1]), groups.reshape(-1)
    rows = [layer.weight[int(g)] @ token for token, g in zip(flat, flat_groups, strict=True)]
    return torch.stack(rows).view(*x.shape[:-1], -1)


@st.composite
def routed_batch(draw):
    count = draw(st.integers(1, 4))
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    groups = draw(st.lists(st.integers(0, count - 1), min_size=batch * length, max_size=batch * length))
    return count, torch.tensor(groups).view(batch, length)


@settings(max_examples=30, deadline=None)
@given(case=routed_batch(), seed=st.integers(0, 2**16))
def test_grouped_linear_equals_the_per_token_reference_with_gradients(case, seed):
    count, groups = case
    torch.manual_seed(seed)
    layer = GroupedLinear(6, 5, count)
    torch.nn.init.normal_(layer.weight)
    x = torch.randn(*groups.shape, 6, requires_grad=True)
    got = layer(x, TokenRoute(groups, count))
    expected = per_token_linear(layer, x, groups)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(got)
    grads = torch.autograd.grad((got * upstream).sum(), [x, layer.weight])
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [x, layer.weight])
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(case=routed_batch(), seed=st.integers(0, 2**16))
def test_the_every_group_path_of_compiled_steps_equals_the_sorted_path(case, seed):
    count, groups = case
    torch.manual_seed(seed)
    layer = GroupedLinear(4, 3, count)
    torch.nn.init.normal_(layer.weight)
    x = torch.randn(*groups.shape, 4)
    sorted_route, every_group = TokenRoute(groups, count), TokenRoute(groups, count)
    every_group.sizes = None  # what a compiled one-token step builds (no host-side counts)
    torch.testing.assert_close(layer(x, every_group), layer(x, sorted_route), atol=1e-6, rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(case=routed_batch(), seed=st.integers(0, 2**16))
def test_grouped_rms_norm_uses_each_tokens_gain(case, seed):
    count, groups = case
    torch.manual_seed(seed)
    norm = GroupedRMSNorm(6, 1e-5, count)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(*groups.shape, 6)
    got = norm(x, TokenRoute(groups, count))
    expected = F.rms_norm(x, (6,), eps=1e-5) * norm.weight[groups]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_one_group_is_bit_identical_to_the_plain_modules():
    torch.manual_seed(0)
    dense = torch.nn.Linear(8, 4, bias=False)
    torch.manual_seed(0)
    grouped = GroupedLinear(8, 4, 1)
    assert torch.equal(grouped.weight[0], dense.weight)
    x = torch.randn(2, 3, 8)
    route = TokenRoute(torch.zeros(2, 3, dtype=torch.long), 1)
    assert torch.equal(grouped(x, route), dense(x))


def test_parameter_groups_are_checked_where_they_are_made():
    with pytest.raises(ConfigError, match="1-D int64"):
        ParameterGroups(token_group=torch.zeros(4), count=2, untie=frozenset({"ffn"}))
    with pytest.raises(ConfigError, match=r"groups in \[0, 2\)"):
        ParameterGroups(token_group=torch.tensor([0, 2]), count=2, untie=frozenset({"ffn"}))
    with pytest.raises(ConfigError, match="unknown parts"):
        ParameterGroups(token_group=torch.tensor([0, 1]), count=2, untie=frozenset({"embeddings"}))
    with pytest.raises(ConfigError, match="integer >= 1"):
        ParameterGroups(token_group=torch.tensor([0]), count=0, untie=frozenset())


def test_a_grouped_module_without_a_route_is_a_clear_error():
    with pytest.raises(ConfigError, match="token route"):
        routed(GroupedLinear(2, 2, 2), torch.zeros(1, 1, 2), None)
