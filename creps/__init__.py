"""creps: train, evaluate and render CREPS and StyleGAN-family GANs in plain PyTorch."""

__version__ = "0.1.0"


def load(path, device="cpu"):
    """Load the networks of a creps snapshot (safetensors + JSON) or of a published network
    pickle (.pkl of the StyleGAN2-ADA / StyleGAN3 / CREPS code, read without running any code
    from it), given by path or URL (downloaded once into the cache).

    Returns a `creps.checkpoint.Snapshot` with `.G`, `.D`, `.G_ema`, `.config` and `.meta`.
    """
    from creps.checkpoint import load_snapshot

    return load_snapshot(path, device=device)
