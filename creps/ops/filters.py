"""Low-pass FIR filter design for the alias-free (StyleGAN3) layers, in numpy.

Two designs, both windowed by a Kaiser window whose shape parameter follows Kaiser's
empirical formulas from the number of taps and the transition band:

- `kaiser_lowpass`: a 1-D windowed-sinc low-pass filter, the same taps that
  `scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)` returns (pass band [0, cutoff],
  unit gain at DC). Used separably (outer product with itself) on images.
- `jinc_lowpass`: a radially symmetric 2-D low-pass filter: the ideal circular low-pass
  kernel (a jinc, built from the Bessel function J1) times the separable Kaiser window,
  normalised to unit DC gain. StyleGAN3-R uses it for its rotation-equivariant layers.

`design_lowpass_filter` picks between them and returns a float32 tensor (or None for the
one-tap identity filter), the form the `filtered_lrelu` op and the published buffers use.
Everything is computed in float64 and rounded to float32 once, at the end.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def kaiser_attenuation(numtaps: int, width: float) -> float:
    """Stop-band attenuation (dB) a Kaiser-window filter with `numtaps` taps reaches for a
    transition band `width` (as a fraction of the Nyquist frequency): 2.285 (N-1) pi w + 7.95."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(attenuation: float) -> float:
    """Kaiser window shape parameter beta for a stop-band attenuation in dB (Kaiser's formula)."""
    a = float(attenuation)
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def _window_beta(numtaps: int, width: float, fs: float) -> float:
    """beta of the Kaiser window for a transition band `width` (Hz) at sampling rate `fs`."""
    return kaiser_beta(kaiser_attenuation(numtaps, width / (fs / 2)))


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """Bessel function of the first kind, order 1, from Bessel's integral
    J1(x) = 1/(2 pi) * integral over [0, 2 pi) of cos(t - x sin t) dt.

    The integrand is smooth and periodic, so the midpoint rule with M points is exact up to
    the aliased terms J_{M-1}(x), J_{M+1}(x), ..., negligible once M exceeds |x| by a few dozen:
    float64 accuracy (about 1e-15) for any argument.
    """
    x = np.asarray(x, dtype=np.float64)
    points = int(np.ceil(np.abs(x).max(initial=0.0))) + 64
    t = (np.arange(points) + 0.5) * (2 * math.pi / points)
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def _tap_offsets(numtaps: int) -> np.ndarray:
    """Tap positions in samples, centred on the filter's middle: -(N-1)/2 ... (N-1)/2."""
    return np.arange(numtaps, dtype=np.float64) - (numtaps - 1) / 2


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """1-D Kaiser-windowed sinc low-pass filter with unit DC gain (scipy `firwin` taps).

    cutoff, width and fs share one unit (e.g. cycles per image); `width` is the full width of
    the transition band, which sets the window (not the cutoff).
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    nyquist = fs / 2
    if not 0 < cutoff < nyquist:
        raise ValueError(f"cutoff {cutoff} must lie strictly between 0 and fs/2 = {nyquist}")
    band_edge = cutoff / nyquist  # pass-band edge as a fraction of Nyquist
    ideal = band_edge * np.sinc(band_edge * _tap_offsets(numtaps))  # ideal low-pass impulse response
    taps = ideal * np.kaiser(numtaps, _window_beta(numtaps, width, fs))
    return taps / taps.sum()  # unit gain at DC


def jinc_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Radially symmetric 2-D low-pass filter [numtaps, numtaps]: jinc times a Kaiser window.

    The ideal circular low-pass kernel with cutoff f_c is J1(2 pi f_c r) / (pi r) at radius r
    (its limit at r = 0 is f_c); it is windowed by the outer product of a 1-D Kaiser window and
    normalised so its taps sum to one.
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    pos = _tap_offsets(numtaps) / fs
    radius = np.hypot(pos[None, :], pos[:, None])
    bessel = bessel_j1(2 * math.pi * cutoff * radius)
    centre = radius == 0
    safe_radius = np.where(centre, 1.0, radius)
    kernel = np.where(centre, cutoff, bessel / (math.pi * safe_radius))
    window = np.kaiser(numtaps, _window_beta(numtaps, width, fs))
    kernel = kernel * np.outer(window, window)
    return kernel / kernel.sum()


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> Optional[torch.Tensor]:
    """The low-pass filter a StyleGAN3 layer stores: None for one tap (identity), else the
    separable 1-D Kaiser filter [numtaps] or, with `radial`, the 2-D jinc filter [numtaps, numtaps]."""
    if numtaps == 1:
        return None
    taps = jinc_lowpass(numtaps, cutoff, width, fs) if radial else kaiser_lowpass(numtaps, cutoff, width, fs)
    return torch.as_tensor(taps, dtype=torch.float32)
