"""creps: train, evaluate and render CREPS and StyleGAN-family GANs in plain PyTorch."""

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Load the networks of a snapshot written by creps (safetensors + JSON; never unpickles).

    Returns a `creps.checkpoint.Snapshot` with `.G`, `.D`, `.G_ema` and `.config`.
    """
    from creps.checkpoint import load_snapshot

    return load_snapshot(path, device=device)
