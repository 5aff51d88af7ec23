"""Training: losses, EMA, statistics and the loop."""
