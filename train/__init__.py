"""The trainer: 3D Pix2Pix with a MONAI SwinUNETR generator (PyTorch + MONAI)."""
