"""Every shipped middlebox documents its configuration: ``nfs.load(name)`` gives its DEFAULTS (the
README's promise), a VNF set up with exactly those keys works, and a key outside them is refused."""

from __future__ import annotations

import importlib
import json

import pytest

from vnfkit import nfs
from vnfkit.state import SharedState
from vnfkit.vnf import Context


@pytest.mark.parametrize("name", nfs.names())
def test_every_nf_has_defaults_that_set_it_up(name):
    cls, defaults = nfs.load(name)
    assert defaults, f"{name}: no DEFAULTS"
    module = importlib.import_module(nfs.REGISTRY[name][0])
    assert "DEFAULTS" in module.__all__, f"{module.__name__}: DEFAULTS not exported"
    json.dumps(defaults)  # what --config takes: a JSON object of these keys
    vnf = cls()
    vnf.setup(Context(0, 1, shared=SharedState()), **defaults)  # every key accepted as given
    with pytest.raises(TypeError, match="no_such_key"):
        cls().setup(Context(0, 1, shared=SharedState()), **defaults, no_such_key=1)


def test_wanopt_encoder_and_decoder_have_their_own_defaults():
    from vnfkit.nfs import wanopt

    enc, enc_defaults = nfs.load("wanopt")
    dec, dec_defaults = nfs.load("wanopt-decoder")
    assert enc_defaults == wanopt.DEFAULTS and dec_defaults == wanopt.DECODER_DEFAULTS
    assert {"window", "min_match", "anchor_bits", "table_bits", "isolate_queues"} <= set(enc_defaults)
    assert "wait_us" in dec_defaults and "window" not in dec_defaults
    e = enc()
    e.setup(Context(0, 1), **{**enc_defaults, "cache_size": 1 << 16})
    assert (e.cache.window, e.cache.min_match, e.cache.anchor_bits) == (32, 32, 4)
