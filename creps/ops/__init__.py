"""Pure-tensor kernels. Nothing in here imports the rest of the package."""
