"""chameleon-audio: an ``audio`` modality for chameleon-sdk, shipped as its own distribution.

Installed, it registers through the ``chameleon_sdk`` entry-point group (``pyproject.toml``)::

    pipe = chameleon_sdk.Pipeline.from_config({"modalities": [{"name": "audio", "options": {"downsample": 8}}]})
    doc = chameleon_sdk.Document.of("a 440 Hz tone", Segment("audio", Waveform.tone(440, 0.1)))

Modules: ``codec`` (DCT resampling and mu-law, pure functions), ``waveform`` (the payload and WAV
input/output), ``modality`` (the modality, its options and its generation constraint), ``tones``
(synthetic tone data and the measurements: SNR, FFT pitch, captions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_audio.modality import AudioBlock, AudioModality, AudioOptions
    from chameleon_audio.waveform import SAMPLE_RATE, AudioError, Waveform

__all__ = ["SAMPLE_RATE", "AudioBlock", "AudioError", "AudioModality", "AudioOptions", "Waveform"]
__version__ = "0.1.0"
# the classes import torch; registering by reference keeps `chameleon plugins` from importing it
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_modalities(register):
    register("audio", "chameleon_audio.modality:AudioModality", options="chameleon_audio.modality:AudioOptions")
