"""Round-trip quality of the audio codec: SNR (dB) of decode(encode(clip)) on test signals.

    python plugins/chameleon-audio/examples/snr_report.py

Signals are 0.25 s at 16 kHz. A signal with content above the new Nyquist frequency (8 kHz /
downsample) loses it by design, so its SNR is low: the codec keeps the band below, and only that.
"""

from __future__ import annotations

import numpy as np
from chameleon_audio import AudioModality, AudioOptions, Waveform
from chameleon_audio.tones import snr_db

SECONDS = 0.25


def test_signals() -> dict[str, Waveform]:
    t = np.arange(round(SECONDS * 16000)) / 16000
    rng = np.random.default_rng(0)
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 0.5 * (900 - 100) / SECONDS * t**2))  # 100 -> 900 Hz
    return {
        "tone 220 Hz": Waveform.tone(220, SECONDS, amplitude=0.6, phase=0.4),
        "tone 440 Hz": Waveform.tone(440, SECONDS, amplitude=0.6, phase=0.4),
        "tone 440 Hz, quiet (-34 dBFS)": Waveform.tone(440, SECONDS, amplitude=0.02, phase=0.4),
        "tone 880 Hz": Waveform.tone(880, SECONDS, amplitude=0.6, phase=0.4),
        "tone 1500 Hz": Waveform.tone(1500, SECONDS, amplitude=0.6, phase=0.4),
        "chord 220+330+440 Hz": Waveform(0.2 * sum(np.sin(2 * np.pi * f * t) for f in (220, 330, 440))),
        "chirp 100-900 Hz": Waveform(chirp),
        "white noise (full band)": Waveform(np.clip(0.2 * rng.standard_normal(len(t)), -1, 1)),
    }


def main() -> None:
    settings = [(4, 8), (8, 8), (8, 6), (16, 8)]
    header = "signal".ljust(32) + "".join(f"d={d},{b}bit".rjust(12) for d, b in settings)
    print(header)
    for name, clip in test_signals().items():
        row = []
        for d, b in settings:
            audio = AudioModality(AudioOptions(downsample=d, bits=b))
            row.append(f"{snr_db(clip, audio.decode(audio.encode(clip))):12.1f}")
        print(name.ljust(32) + "".join(row))
    print("(d: downsampling factor, kept band 0 .. 8000/d Hz; codes per second 16000/d)")


if __name__ == "__main__":
    main()
