"""Networks: layers, mapping, generators (one file per network) and the discriminator."""
