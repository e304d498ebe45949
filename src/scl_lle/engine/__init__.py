"""The enhancer: device and backend choice, tiling, exposure and finishing around DCE-Net."""
